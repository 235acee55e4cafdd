"""The server's own secret (server/keys.py): made once, private, the same on every call and
for every process that races to make it."""

from __future__ import annotations

import asyncio
import stat
import sys
import textwrap
from pathlib import Path
from subprocess import PIPE

import pytest

from server.keys import BadSecret, server_secret
from tests.polling import until

REPO = Path(__file__).resolve().parents[2]


def test_made_once_private_and_stable(tmp_path: Path) -> None:
    data = tmp_path / "data"  # not there yet: made with the secret
    first = server_secret(data)
    assert len(first) == 32
    path = data / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes.fromhex(path.read_text().strip()) == first
    assert server_secret(data) == first
    assert [p.name for p in data.iterdir()] == ["secret"]  # no temp file left behind
    assert server_secret(tmp_path / "elsewhere") != first


def test_a_corrupt_secret_is_never_replaced(tmp_path: Path) -> None:
    # Work dir names are HMACs under the secret: a new one would orphan every user's files.
    (tmp_path / "secret").write_text("not hex\n")
    with pytest.raises(BadSecret, match="cannot be read as the server's secret"):
        server_secret(tmp_path)
    assert (tmp_path / "secret").read_text() == "not hex\n"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from server.keys import BadSecret, server_secret
    go = Path(sys.argv[2]) / "go"
    Path(sys.argv[2], "ready-" + sys.argv[3]).touch()
    while not go.exists():
        pass  # spin: all racers leave at once
    print(server_secret(Path(sys.argv[2]) / "data").hex())
    """
)


async def test_racing_processes_agree_on_one_secret(tmp_path: Path) -> None:
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", RACER, str(REPO), str(tmp_path), str(i), stdout=PIPE
        )
        for i in range(4)
    ]
    try:
        await until(lambda: len(list(tmp_path.glob("ready-*"))) == len(racers), timeout=30)
        (tmp_path / "go").touch()
        async with asyncio.timeout(30):
            outputs = [(await racer.communicate())[0].decode().strip() for racer in racers]
    finally:
        for racer in racers:
            if racer.returncode is None:
                racer.kill()
                await racer.wait()
    assert [racer.returncode for racer in racers] == [0] * len(racers)
    assert len(set(outputs)) == 1
    assert bytes.fromhex(outputs[0]) == server_secret(tmp_path / "data")


def test_threads_of_one_process_racing_agree(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        values = list(pool.map(lambda _: server_secret(tmp_path), range(32)))
    assert len(set(values)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]
