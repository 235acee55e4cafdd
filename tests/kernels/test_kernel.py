"""One Kernel (kernels/kernel.py) with a real ipykernel: its runtime paths, routing by
request, output budgets and the size limit, and how its end reaches listeners."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from jupyter_client.session import Session

from kernels.kernel import Kernel, KernelExit, OutputBudget, decode
from tests.kernels.driving import execute, start_local_kernel


def test_runtime_paths_fit_unix_socket_limit(tmp_path):
    runtime = Path("/tmp") / f"kss-{os.getuid()}-0123456789"
    assert len(f"{runtime}/0123456789ab/s-5") < 107


async def test_the_runtime_dir_is_the_layout_the_limit_assumes(kernel: Kernel) -> None:
    slot = kernel.slot
    assert slot.runtime_dir.name == kernel.id[:12] and len(slot.runtime_dir.name) == 12
    assert slot.ipc_prefix == str(slot.runtime_dir / "s")
    assert slot.connection_file.parent == slot.runtime_dir
    assert slot.runtime_dir.stat().st_mode & 0o777 in (0o700, 0o711)


async def test_messages_reach_the_listener_of_their_request(kernel: Kernel) -> None:
    first = await execute(kernel, "print('one'); 1")
    second = await execute(kernel, "print('two'); 2")
    assert (first.stdout, first.result) == ("one\n", "1")
    assert (second.stdout, second.result) == ("two\n", "2")
    assert first.reply["status"] == second.reply["status"] == "ok"
    assert (await execute(kernel, "y = 5")).reply["status"] == "ok"
    assert (await execute(kernel, "y")).result == "5"


async def test_output_past_a_budget_is_dropped_and_said_once(kernel: Kernel) -> None:
    code = "for i in range(50):\n    print('x' * 20, flush=True)"
    done = await execute(kernel, code, budget=OutputBudget(bytes=200, messages=1000))
    assert [d.reason for d in done.dropped] == ["budget"]
    assert len(done.stdout) <= 200 and done.reply["status"] == "ok"


async def test_a_message_over_the_size_limit_is_dropped_not_read(tmp_path: Path) -> None:
    kernel = await start_local_kernel(tmp_path / "run", max_message_bytes=64 * 1024)
    try:
        done = await execute(kernel, "print('x' * 200_000, flush=True)")
        [dropped] = done.dropped
        assert (dropped.channel, dropped.reason) == ("iopub", "oversize")
        assert dropped.size > 200_000 and done.stdout == ""
        assert (await execute(kernel, "'still here'")).result == "'still here'"
        killed = kernel.listen("anyone")
        kernel.kill()
        end = await kernel.exited
        assert end.expected is False and await killed.get() == end
    finally:
        await kernel.stop()
    assert kernel.exit == KernelExit(end.returncode, expected=False)
    assert not kernel.slot.runtime_dir.exists()


def test_decode_checks_signatures_as_jupyter_client_does() -> None:
    """The kernel is untrusted: a message whose signature is missing, wrong or already seen
    is refused; a good one decodes as `Session.deserialize` would, dates left as text."""
    kernel_side = Session(key=b"k" * 32)
    ours = Session(key=b"k" * 32)
    request = ours.msg("execute_request", {"code": "1"})
    reply = kernel_side.msg("execute_reply", {"status": "ok"}, parent=request)

    def parts(msg: dict, signer: Session = kernel_side) -> list[bytes]:
        wire = signer.serialize(msg)
        return wire[wire.index(b"<IDS|MSG>") + 1 :]

    def run(frames: list[bytes]) -> dict:
        return decode(ours, frames, ours.unpack(frames[1]), ours.unpack(frames[2]))

    good = parts(reply)
    msg = run(good)
    expected = Session(key=b"k" * 32).deserialize(good)
    assert msg["content"] == expected["content"] == {"status": "ok"}
    assert msg["msg_type"] == "execute_reply" and msg["metadata"] == expected["metadata"]
    assert msg["parent_header"]["msg_id"] == request["header"]["msg_id"]
    assert isinstance(msg["header"]["date"], str)
    with pytest.raises(ValueError):
        run(good)  # the same signature again: a replay
    tampered = parts(kernel_side.msg("execute_reply", {"status": "ok"}, parent=request))
    tampered[4] = b'{"status": "error"}'
    with pytest.raises(ValueError):
        run(tampered)
    unsigned = parts(kernel_side.msg("status", {"execution_state": "idle"}))
    unsigned[0] = b""
    with pytest.raises(ValueError):
        run(unsigned)
    with pytest.raises(ValueError):
        other = Session(key=b"x" * 32)
        run(parts(other.msg("status", {}), other))  # signed with another key
