"""Installing packages from the allowlist into kernels that have no network, through the
server in both sandbox modes, from a directory of wheels the test makes (never the outside
index)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import RunningServer, make_settings, running_server, sandbox_modes
from tests.packages.wheels import make_wheel


@pytest_asyncio.fixture(scope="module", params=sandbox_modes(), ids=lambda m: f"sandbox-{m}")
async def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningServer]:
    base = tmp_path_factory.mktemp("packages")
    wheels = base / "wheels"
    make_wheel(wheels, "kss-demo-top", "1.0", requires=("kss-demo-dep>=2",))
    make_wheel(wheels, "kss-demo-dep", "2.1", body="def hello():\n    return 'dep'\n")
    make_wheel(wheels, "kss-demo-solo", "0.3")
    make_wheel(wheels, "kss-demo-pipped", "0.1")
    (wheels / "kss_demo_broken-1.0-py3-none-any.whl").write_bytes(b"not a zip at all")
    allow = base / "allow.txt"
    allow.write_text("kss-demo-top\nkss-demo-solo\nkss-demo-pipped\nkss-demo-broken\n")
    settings = make_settings(
        base / "data",
        sandbox=request.param,
        package_allowlist=str(allow),
        package_index=str(wheels),
        kernel_uid_first=2_095_000,
        kernel_uid_last=2_095_099,
    )
    async with running_server(settings) as server:
        yield server


@pytest.fixture(autouse=True)
def _close_sockets(srv: RunningServer) -> Iterator[None]:
    yield
    srv.api.close_sockets()


async def install(srv: RunningServer, user: str, *names: str) -> tuple[int, dict]:
    r = await srv.api.call("POST", f"/api/sessions/{user}/packages", {"packages": list(names)})
    return r.status, r.json


async def test_an_allowed_package_and_its_dependency_import_in_the_same_session(srv):
    await srv.api.execute("alice", "before = 1")
    status, body = await install(srv, "alice", "kss-demo-top")
    assert status == 200, body
    assert {p["name"] for p in body["packages"]} == {"kss-demo-top", "kss-demo-dep"}
    r = await srv.api.execute("alice", "import kss_demo_top, kss_demo_dep\nkss_demo_dep.hello()")
    assert r["status"] == "ok" and r["result"] == {"text/plain": "'dep'"}, r
    assert r["kernel_restarted"] is False  # mounted into the running kernel
    # a kernel that replaces this one gets the packages back
    assert (await srv.api.call("POST", "/api/sessions/alice/restart")).status == 200
    r = await srv.api.execute("alice", "import kss_demo_top\nkss_demo_top.VERSION")
    assert r["result"] == {"text/plain": "'1.0'"} and r["kernel_restarted"] is True, r


async def test_a_package_off_the_allowlist_is_refused_saying_how_to_allow_it(srv):
    status, body = await install(srv, "bob", "requests")
    assert status == 403 and body["error"]["code"] == "package_not_allowed", body
    assert "requests" in body["error"]["message"]
    assert "--package-allowlist" in body["error"]["message"]
    r = await srv.api.execute("bob", "1", install_packages=["kss-demo-dep"])  # needed only
    assert r["status"] == "error" and r["error"]["ename"] == "PackageRefused", r


async def test_a_broken_wheel_fails_clearly_and_leaves_nothing(srv):
    status, body = await install(srv, "carol", "kss-demo-broken")
    assert status == 422 and body["error"]["code"] == "package_install_failed", body
    cache = srv.settings.data_dir / "packages"
    assert not [p for p in cache.iterdir() if "broken" in p.name and not p.name.startswith(".")]
    r = await srv.api.execute("carol", "import kss_demo_broken")
    assert r["error"]["ename"] == "ModuleNotFoundError"


async def test_two_sessions_installing_at_once_install_once(srv):
    before = srv.state.registry.packages.installs
    both = await asyncio.gather(
        install(srv, "dave", "kss-demo-solo"), install(srv, "erin", "kss-demo-solo")
    )
    assert [status for status, _ in both] == [200, 200], both
    assert srv.state.registry.packages.installs - before <= 1
    for user in ("dave", "erin"):
        r = await srv.api.execute(user, "import kss_demo_solo\nkss_demo_solo.VERSION")
        assert r["result"] == {"text/plain": "'0.3'"}, r


async def test_pip_install_in_code_goes_to_the_server_and_other_pip_commands_are_refused(srv):
    ws = await srv.api.ws("frank")
    code = "%pip install kss-demo-pipped\nimport kss_demo_pipped\nprint(kss_demo_pipped.VERSION)"
    events = await ws.run(code, "p1", wait=120)
    packages = [e for e in events if e["type"] == "package"]
    assert packages and packages[0]["name"] == "kss-demo-pipped", events
    out = "".join(e["text"] for e in events if e["type"] == "stream")
    assert "[packages]" in out and out.endswith("0.1\n") and events[-1]["status"] == "ok"
    nb = json.loads((await srv.api.call("GET", "/api/sessions/frank/notebook?setup=false")).body)
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "[packages]" in "".join(o.get("text", "") for o in cell["outputs"])
    r = await srv.api.execute("frank", "!pip uninstall -y pandas")
    assert r["status"] == "error" and r["error"]["ename"] == "PipCommandRefused", r


async def test_the_kernel_still_has_no_network_after_installs(srv):
    await install(srv, "gina", "kss-demo-solo")
    probe = (
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', "
        f"{srv.settings.port}), timeout=2)\n    got = 'connected'\nexcept OSError as e:\n"
        "    got = type(e).__name__\ngot"
    )
    r = await srv.api.execute("gina", probe)
    sandboxed = srv.settings.sandbox == "on"  # unsandboxed, a kernel has the host's network
    assert (r["result"]["text/plain"] == "'connected'") is not sandboxed, r


def test_wheels_helper_makes_installable_wheels(tmp_path: Path):
    wheel = make_wheel(tmp_path, "kss-demo-x", "9.9")
    assert wheel.name == "kss_demo_x-9.9-py3-none-any.whl" and wheel.stat().st_size > 0
