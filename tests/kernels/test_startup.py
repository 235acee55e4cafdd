"""The kernel start-up code (kernels/startup/00_kss.py) in real kernels, and the file area
seen from inside a kernel: upload then analyse, a generated chart detected and downloaded.

Kernels are started the way production starts them (the launcher's argv, with
`--IPKernelApp.exec_files`), with jupyter_client's AsyncKernelManager, cwd a temp work dir.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from files.area import FileArea, FileChange
from files.pool import FairPool
from files.transfer import Ledger
from kernels.launcher import KernelCommand, default_kernel_python, startup_files
from transcript.store.sqlite import SqliteStore

pytestmark = pytest.mark.asyncio(loop_scope="module")

KERNEL_PYTHON = default_kernel_python()
VENV_MPLCONFIG = Path(KERNEL_PYTHON).parent.parent / "mplconfig"

MAKE_FIXTURES = r"""
import os
import pandas as pd
from PIL import Image

df = pd.DataFrame({"region": ["north", "south", "north"], "amount": [10, 20, 5]})
df.to_csv("sales.csv", index=False)
df.to_csv("sales.tsv", sep="\t", index=False)
df.to_csv("european.csv", sep=";", index=False)
df.to_excel("sales.xlsx", index=False)
df.to_json("sales.json", orient="records")
df.to_json("sales.jsonl", orient="records", lines=True)
df.to_parquet("sales.parquet")
df.to_parquet("actually-parquet.csv")
df.to_csv("no_extension", index=False)
with open("config.json", "w") as f:
    f.write('{"name": "demo", "version": 2}')
with open("menu.csv", "wb") as f:
    f.write("plat,prix\ncafé,2\ncrème,3\n".encode("cp1252"))
with open("notes.txt", "w") as f:
    f.write("hello\nworld\n")
Image.new("RGB", (7, 5), "red").save("pixel.png")
Image.new("L", (3, 2)).save("gray.jpg")
with open("blob.bin", "wb") as f:
    f.write(bytes(range(256)) * 4)
os.makedirs("reports")
with open("reports/q1.txt", "w") as f:
    f.write("q1")
os.makedirs(".ipynb_checkpoints")
with open(".ipynb_checkpoints/sales-checkpoint.csv", "w") as f:
    f.write("x")
with open(".hidden", "w") as f:
    f.write("x")
"""


class Kernel:
    """A started kernel and its client, with a helper to run code and collect stdout."""

    def __init__(self, km: AsyncKernelManager) -> None:
        self.km = km
        self.kc = km.client()

    async def run(self, code: str) -> str:
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "execute_result":
                out.append(content["data"]["text/plain"] + "\n")
            elif kind == "error":
                errors.append("\n".join(content["traceback"]))

        reply = await self.kc.execute_interactive(code, output_hook=hook, timeout=60)
        if reply["content"]["status"] != "ok":
            raise AssertionError("kernel error:\n" + "\n".join(errors))
        return "".join(out)

    async def json(self, code: str) -> object:
        return json.loads((await self.run(code)).strip().splitlines()[-1])


async def start_kernel(root: Path, cwd: Path, files: list[str]) -> Kernel:
    home, mpl, specs = root / "home", root / "mpl", root / "kernelspecs" / "kss-test"
    for d in (home, mpl, specs):
        d.mkdir(parents=True, exist_ok=True)
    if VENV_MPLCONFIG.is_dir():  # the font cache built by `make`, so matplotlib starts fast
        shutil.copytree(VENV_MPLCONFIG, mpl, dirs_exist_ok=True)
    command = KernelCommand(python=KERNEL_PYTHON, extra_env={"MPLBACKEND": "Agg"})
    spec = {
        "argv": command.argv("{connection_file}", files),
        "display_name": "kss test",
        "language": "python",
    }
    (specs / "kernel.json").write_text(json.dumps(spec))
    km = AsyncKernelManager(
        kernel_name="kss-test",
        kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs.parent)]),
        transport="ipc",  # no TCP port race, as in production
        connection_file=str(root / "kernel.json"),
    )
    await km.start_kernel(cwd=str(cwd), env=command.env(home=str(home), mplconfig=str(mpl)))
    kernel = Kernel(km)
    kernel.kc.start_channels()
    try:
        await kernel.kc.wait_for_ready(timeout=60)
    except BaseException:
        await stop_kernel(kernel)
        raise
    return kernel


async def stop_kernel(kernel: Kernel) -> None:
    kernel.kc.stop_channels()
    await kernel.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("work")
    subprocess.run([KERNEL_PYTHON, "-c", MAKE_FIXTURES], cwd=work, check=True, timeout=120)
    return work


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def area(tmp_path_factory: pytest.TempPathFactory, work_dir: Path) -> AsyncIterator[FileArea]:
    """The file area of the kernel's work dir, with its store and pool."""
    data = tmp_path_factory.mktemp("data")
    store = SqliteStore(data / "kss.sqlite3")
    await store.open()
    pool = FairPool(1)
    (data / "staging").mkdir()
    try:
        yield FileArea(
            work_dir,
            tenant="t",
            user="u",
            staging=data / "staging",
            store=store,
            lane=pool.lane(("t", "u")),
            ledger=Ledger(),
        )
    finally:
        await pool.close()
        await store.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def kernel(tmp_path_factory: pytest.TempPathFactory, work_dir: Path) -> AsyncIterator[Kernel]:
    k = await start_kernel(tmp_path_factory.mktemp("runtime"), work_dir, startup_files())
    try:
        yield k
    finally:
        await stop_kernel(k)


async def test_startup_file_is_found_by_the_launcher() -> None:
    assert any(f.endswith("00_kss.py") for f in startup_files())


async def test_namespace_gains_only_load_file_and_files(
    kernel: Kernel, tmp_path: Path, work_dir: Path
) -> None:
    code = "print(__import__('json').dumps(sorted(get_ipython().user_ns)))"
    doc = "print(__import__('json').dumps(__doc__))"
    baseline = await start_kernel(tmp_path, work_dir, [])
    try:
        plain = set(await baseline.json(code))  # type: ignore[arg-type]
        plain_doc = await baseline.json(doc)
    finally:
        await stop_kernel(baseline)
    ours = set(await kernel.json(code))  # type: ignore[arg-type]
    assert ours - plain == {"load_file", "FILES"}
    assert plain - ours == set()
    assert await kernel.json(doc) == plain_doc
    heavy = "import sys, json; print(json.dumps(['PIL.Image' in sys.modules]))"
    assert await kernel.json(heavy) == [False]  # PIL is imported on first use only


async def test_the_kernel_starts_without_the_debugger_and_user_code_can_still_import_it(
    kernel: Kernel, work_dir: Path
) -> None:
    """The launcher keeps debugpy out of ipykernel's start (kernels/launcher.py: LAUNCH), and
    out of the user's way: it imports, and so does a module in the work dir."""
    kernel.kc.kernel_info()
    info = await kernel.kc.get_shell_msg(timeout=30)
    assert info["msg_type"] == "kernel_info_reply"
    assert "debugger" not in info["content"]["supported_features"]
    before = "import sys, json; print(json.dumps('debugpy' in sys.modules))"
    assert await kernel.json(before) is False
    (work_dir / "kss_local_mod.py").write_text("VALUE = 42\n")
    try:
        code = (
            "import json, debugpy, kss_local_mod; "
            "print(json.dumps([debugpy.__name__, kss_local_mod.VALUE]))"
        )
        assert await kernel.json(code) == ["debugpy", 42]
    finally:
        (work_dir / "kss_local_mod.py").unlink()


async def test_load_file_detects_each_type(kernel: Kernel) -> None:
    code = r"""
import json as _json
_summary = {}
for _name in ["sales.csv", "sales.tsv", "european.csv", "sales.xlsx", "sales.json",
              "sales.jsonl", "sales.parquet", "actually-parquet.csv", "no_extension"]:
    _df = load_file(_name)
    _summary[_name] = [type(_df).__name__, list(_df.columns), int(_df["amount"].sum())]
_summary["menu.csv"] = load_file("menu.csv")["plat"].tolist()
_summary["config.json"] = load_file("config.json").to_dict("records")
_summary["notes.txt"] = load_file("notes.txt")
_img = load_file("pixel.png")
_summary["pixel.png"] = [type(_img).__module__, _img.size, _img.mode]
_summary["gray.jpg"] = load_file("gray.jpg").format
_summary["reports/q1.txt"] = load_file("reports/q1.txt")
print(_json.dumps(_summary))
"""
    summary = await kernel.json(code)
    table = ["DataFrame", ["region", "amount"], 35]
    assert summary == {
        "sales.csv": table,
        "sales.tsv": table,
        "european.csv": table,
        "sales.xlsx": table,
        "sales.json": table,
        "sales.jsonl": table,
        "sales.parquet": table,
        "actually-parquet.csv": table,
        "no_extension": table,
        "menu.csv": ["café", "crème"],
        "config.json": [{"name": "demo", "version": 2}],
        "notes.txt": "hello\nworld\n",
        "pixel.png": ["PIL.PngImagePlugin", [7, 5], "RGB"],
        "gray.jpg": "JPEG",
        "reports/q1.txt": "q1",
    }


async def test_load_file_passes_kwargs_and_explains_failures(kernel: Kernel) -> None:
    code = r"""
import json as _json
_out = {"usecols": list(load_file("sales.csv", usecols=["amount"]).columns)}
for _bad in ["missing.csv", "blob.bin"]:
    try:
        load_file(_bad)
    except Exception as _exc:
        _out[_bad] = [type(_exc).__name__, str(_exc)]
print(_json.dumps(_out))
"""
    out = await kernel.json(code)
    assert out["usecols"] == ["amount"]  # type: ignore[index]
    kind, message = out["missing.csv"]  # type: ignore[index]
    assert kind == "FileNotFoundError" and "sales.csv" in message  # names what exists
    kind, message = out["blob.bin"]  # type: ignore[index]
    assert kind == "ValueError" and "open('blob.bin', 'rb')" in message


async def test_files_is_live_and_skips_hidden(kernel: Kernel, work_dir: Path) -> None:
    names = await kernel.json("print(__import__('json').dumps(list(FILES)))")
    assert "sales.csv" in names and "reports/q1.txt" in names  # type: ignore[operator]
    assert not any(n.startswith(".") or "checkpoint" in n for n in names)  # type: ignore[union-attr]
    (work_dir / "new.csv").write_text("a\n1\n")
    out = await kernel.run("print(len(FILES), 'new.csv' in FILES, FILES == sorted(FILES))\nFILES")
    first, *listing = out.splitlines()
    assert first == f"{len(names) + 1} True True"  # type: ignore[arg-type]
    assert listing[0].startswith(f"FILES: {len(names) + 1} files in {work_dir}")  # type: ignore[arg-type]
    assert any(line.split()[0] == "new.csv" for line in listing[1:])
    (work_dir / "new.csv").unlink()


async def test_upload_then_analyse_in_the_kernel(kernel: Kernel, area: FileArea) -> None:
    up = await area.aopen_upload("uploaded_sales.csv")
    await up.awrite(b"region,amount\nnorth,10\nsouth,")
    await up.awrite(b"20\nnorth,5\n")
    await area.acommit(up)
    code = """
import pandas as pd
_df = pd.read_csv("uploaded_sales.csv")
print(_df.groupby("region")["amount"].sum().to_json())
"""
    assert await kernel.json(code) == {"north": 15, "south": 20}
    assert await kernel.json("print(load_file('uploaded_sales.csv')['amount'].max())") == 20


async def test_generated_chart_is_detected_and_downloads_byte_identical(
    kernel: Kernel, work_dir: Path, area: FileArea
) -> None:
    before = await area.asnapshot()
    code = """
import hashlib
import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [3, 1, 2])
plt.savefig("chart.png")
plt.close("all")
with open("sales.csv", "a") as _f:
    _f.write("east,1\\n")
print(__import__("json").dumps(hashlib.sha256(open("chart.png", "rb").read()).hexdigest()))
"""
    kernel_sha = await kernel.json(code)
    changes = await area.achanges_since(before)
    size = (work_dir / "chart.png").stat().st_size
    assert changes == [
        FileChange("chart.png", size, "created"),
        FileChange("sales.csv", (work_dir / "sales.csv").stat().st_size, "modified"),
    ]
    with await area.aopen_for_download("chart.png") as download:
        assert download.mime_type == "image/png"
        data = b"".join([chunk async for chunk in download.chunks()])
    assert hashlib.sha256(data).hexdigest() == kernel_sha
    info = {f.name: f for f in (await area.alist()).files}["chart.png"]
    assert (info.origin, info.sha256, info.size) == ("generated", kernel_sha, len(data))
