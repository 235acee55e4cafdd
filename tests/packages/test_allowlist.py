"""The allowlist: names as PEP 503 normalises them; anything else refused, saying how an
operator allows it."""

import pytest

from packages.allowlist import DEFAULT, Allowlist
from packages.errors import PackageRefused


def test_names_compare_normalised_and_versions_may_be_pinned(tmp_path):
    path = tmp_path / "allow.txt"
    path.write_text("# comment\nScikit_Image\nplotly  # inline comment\n\n")
    allow = Allowlist.read(path)
    parsed = allow.check(["scikit-image", "PLOTLY>=5", "plotly[express]==5.1"])
    assert [r.name for r in parsed] == ["scikit-image", "PLOTLY", "plotly"]


@pytest.mark.parametrize(
    "requirement, words",
    [
        ("evil-package", ["'evil-package'", "allowlist", "--package-allowlist"]),
        ("plotly @ https://example.invalid/x.whl", ["URL"]),
        ("not a requirement!", ["is not a requirement"]),
    ],
)
def test_anything_else_is_refused_clearly(tmp_path, requirement, words):
    path = tmp_path / "allow.txt"
    path.write_text("plotly\n")
    with pytest.raises(PackageRefused) as err:
        Allowlist.read(path).check([requirement])
    for word in words:
        assert word in str(err.value)


def test_the_default_list_offers_what_a_code_interpreter_is_expected_to():
    allow = Allowlist.read(DEFAULT)
    for name in ("plotly", "bokeh", "altair", "xgboost", "lightgbm", "catboost", "networkx"):
        assert allow.check([name])
    for name in ("numba", "nltk", "gensim", "wordcloud", "imageio", "scikit-image", "tabulate"):
        assert allow.check([name])
