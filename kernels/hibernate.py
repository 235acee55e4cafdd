"""Hibernation: a session's variables outlive its kernel.

When an idle session is closed to free its kernel (culling, a reclaim at capacity, a
graceful shutdown), the kernel is asked, in a silent execute, to save its user namespace
into a hidden dir of its own work dir (`kernels/snapshot_script.py` does the saving:
cloudpickle, one variable at a time, imports as imports, bounded in bytes and time). The
next execution of the user's next session restores it into the fresh kernel before the
user's code runs, even after a server restart: the snapshot is on disk. The kernel only
ever reads what a kernel of the same user wrote; the server never unpickles anything.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kernel import Dropped, Kernel, KernelExit

log = logging.getLogger(__name__)

SCRIPT = (Path(__file__).with_name("snapshot_script.py")).read_text()
REPORT_MIME = "application/vnd.kss.snapshot+json"
PART_BYTES = 16 << 20  # one file of a pickle: well under the kernel's largest-file rlimit
REPLY_GRACE = 2.0  # seconds past the script's own time cap for its reply


class SnapshotFailed(Exception):
    """The kernel did not save or restore (timed out, died, raised)."""


@dataclass(frozen=True)
class Saved:
    """What a save kept and lost."""

    saved: list[str]
    imports: list[str]
    lost: list[dict[str, str]]
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Restore:
    """What a restore brought back (`restored`) and what it could not (`lost`, each with
    `why`); `failed`: the restore itself failed and the kernel was replaced by a clean one."""

    restored: list[str]
    lost: list[dict[str, str]]
    failed: bool = False
    seconds: float = 0.0
    plan: list[str] = field(default_factory=list)

    def event(self) -> dict[str, Any]:
        """The `restored` event, published before the execution's own events."""
        return {"type": "restored", "restored": self.restored, "lost": self.lost}

    def answer(self) -> dict[str, Any]:
        """Its part of the REST execute answer."""
        return {"restored": self.restored, "lost": self.lost}

    def record(self) -> dict[str, Any]:
        return {"restored": self.restored, "lost": self.lost, "failed": self.failed}


def script(action: str, directory: str, **params: Any) -> str:
    """The code of one silent execute that runs `action` (save or restore) in a namespace of
    its own: the user's namespace gets no name from it."""
    params = {"dir": directory, **params}
    call = f"{SCRIPT}\n{action}(PARAMS)\n"
    return f"exec(compile({call!r}, '<kss-snapshot>', 'exec'), {{'PARAMS': {params!r}}})"


async def run(kernel: Kernel, code: str, timeout: float) -> list[dict[str, Any]]:
    """Run `code` silently; its reports, once its reply and idle status are in. Raises
    SnapshotFailed with what the reports so far were when it fails or takes too long."""
    msg_id = kernel.execute(code, silent=True)
    queue = kernel.listen(msg_id)
    reports: list[dict[str, Any]] = []
    reply: dict[str, Any] | None = None
    idle = False
    try:
        async with asyncio.timeout(timeout):
            while reply is None or not idle:
                item = await queue.get()
                if isinstance(item, KernelExit):
                    raise SnapshotFailed("the kernel ended")
                if isinstance(item, Dropped):
                    continue
                channel, msg = item
                content = msg["content"]
                if channel == "shell":
                    reply = content if isinstance(content, dict) else {"status": "error"}
                elif msg["msg_type"] == "status":
                    idle = isinstance(content, dict) and content.get("execution_state") == "idle"
                elif msg["msg_type"] == "display_data":
                    body = _report(content)
                    if body is not None:
                        reports.append(body)
    except TimeoutError:
        raise SnapshotFailed(f"it took more than {timeout:g} s", reports) from None
    finally:
        kernel.unlisten(msg_id)
    if reply.get("status") != "ok":
        why = f"{reply.get('ename', 'Error')}: {reply.get('evalue', '')}"[:300]
        raise SnapshotFailed(why, reports)
    return reports


def _report(content: Any) -> dict[str, Any] | None:
    data = content.get("data") if isinstance(content, dict) else None
    body = data.get(REPORT_MIME) if isinstance(data, dict) else None
    if isinstance(body, str):  # some front ends send JSON mime data as text
        try:
            body = json.loads(body)
        except ValueError:
            return None
    return body if isinstance(body, dict) else None


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _lost(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        return []
    return [
        {"name": str(x.get("name", "?")), "why": str(x.get("why", ""))[:200]}
        for x in value
        if isinstance(x, dict)
    ]


async def save(kernel: Kernel, directory: str, max_bytes: int, timeout: float) -> Saved:
    """Save the kernel's user namespace into `directory` (as the kernel sees it)."""
    code = script("save", directory, max_bytes=max_bytes, part_bytes=PART_BYTES, seconds=timeout)
    reports = await run(kernel, code, timeout + REPLY_GRACE)
    body = reports[-1] if reports else {}
    return Saved(
        saved=_names(body.get("saved")),
        imports=_names(body.get("imports")),
        lost=_lost(body.get("lost")),
        bytes=int(body.get("bytes") or 0),
        seconds=float(body.get("seconds") or 0),
    )


async def restore(kernel: Kernel, directory: str, timeout: float) -> Restore:
    """Load the snapshot in `directory` into the kernel's user namespace, then delete it.
    Raises SnapshotFailed (with the names it meant to restore, when it got that far)."""
    code = script("restore", directory, seconds=timeout)
    try:
        reports = await run(kernel, code, timeout + REPLY_GRACE)
    except SnapshotFailed as exc:
        plans = [r for r in (exc.args[1] if len(exc.args) > 1 else []) if "plan" in r]
        raise SnapshotFailed(exc.args[0], _names(plans[0]["plan"]) if plans else []) from None
    body = next((r for r in reversed(reports) if "restored" in r), {})
    plan = next((_names(r["plan"]) for r in reports if "plan" in r), [])
    return Restore(
        _names(body.get("restored")),
        _lost(body.get("lost")),
        seconds=float(body.get("seconds") or 0),
        plan=plan,
    )


def failed_restore(why: str, plan: list[str]) -> Restore:
    """A restore that failed: everything it meant to bring back is lost, saying why."""
    text = f"the restore failed ({why}); the session goes on in a clean kernel"
    names = plan or ["*"]
    return Restore([], [{"name": name, "why": text} for name in names], failed=True)
