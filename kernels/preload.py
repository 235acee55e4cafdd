"""What a warm kernel runs before it is claimed: the data stack's imports, and a first figure.

A new user's first real call (`import pandas, numpy, matplotlib.pyplot`, a DataFrame, a plot)
spends most of its time importing; the same call afterwards is fast. So the pool has each
spare import the `--preload` modules right after it starts, as one silent execution: into
`sys.modules` only, never into the user's namespace (a function does the work and is deleted,
as the start-up files do), not counted in the execution count, not in the transcript.

Importing is not all a first plot pays: resolving pyplot's backend (the inline backend
registers itself with IPython then), loading fonts, the first Agg render and PNG encoding,
pandas' plotting module and its HTML repr. The code warms those too, for the modules it
imported, on a figure it closes and never shows.

A module that fails to import is skipped; the execution then ends with an `ImportError`
naming every failure, which the pool logs. The kernel is used as it is.
"""

from __future__ import annotations

import re

MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
DATA_STACK = ("numpy", "pandas", "matplotlib.pyplot")

_CODE = """
def _kss_preload(names):
    import importlib
    import sys

    failed = []

    def step(what, run):
        try:
            run()
        except BaseException as exc:  # a module may raise anything at import
            failed.append(f"{what}: {exc!r}")

    for name in names:
        step(name, lambda: importlib.import_module(name))
    plt = sys.modules.get("matplotlib.pyplot")
    pd = sys.modules.get("pandas")
    if plt is not None:

        def first_figure():
            import io

            # Resolves the backend (the inline one then turns interactive mode on, as in any
            # notebook); closed, the figure is never shown: the inline backend shows open
            # figures only.
            fig = plt.figure(figsize=(2, 2))
            try:
                ax = fig.add_subplot()
                ax.plot([0, 1], [1, 0], label="a")
                ax.set_title("t")
                ax.legend()
                fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
            finally:
                plt.close(fig)

        step("first figure", first_figure)
        if pd is not None:
            step("pandas plotting", lambda: importlib.import_module("pandas.plotting._matplotlib"))
    if pd is not None:
        step("pandas repr", lambda: pd.DataFrame({"a": [1.0, 2.0]}).describe()._repr_html_())
    if failed:
        raise ImportError("preload: " + "; ".join(failed))


try:
    _kss_preload(%(names)r)
finally:
    del _kss_preload
"""


def check_modules(names: tuple[str, ...]) -> tuple[str, ...]:
    """`names` if each is a dotted module name; else ValueError naming the first bad one."""
    for name in names:
        if not MODULE_NAME.match(name):
            raise ValueError(f"preload: {name!r} is not a module name")
    return names


def preload_code(names: tuple[str, ...]) -> str:
    """The silent execution that imports `names` (and warms what they make slow at first)."""
    return _CODE % {"names": list(check_modules(names))}
