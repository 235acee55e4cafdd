"""Typed forms of what the server answers: execution results, files, sessions, events.

Each type keeps every field of the REST answer (docs/api.md) and is built by one
`from_json`, which tolerates fields a newer server adds. File URLs arrive as paths
(`/api/sessions/{user}/files/{name}`); `from_json` takes the client's base URL and makes
them absolute, so a chatbot can hand them on as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import BAD_ANSWER, KssError

JsonObject = dict[str, Any]


class ExecutionStatus(StrEnum):
    OK = "ok"
    ERROR = "error"  # an exception, an interrupt, or the kernel's death
    TIMEOUT = "timeout"  # interrupted at its time limit (the kernel replaced if it hung)
    ABORTED = "aborted"  # a restart or a shutdown ended it


class EventType(StrEnum):
    STATUS = "status"
    QUEUED = "queued"
    STREAM = "stream"
    DISPLAY = "display"
    CLEAR_OUTPUT = "clear_output"
    RESULT = "result"
    ERROR = "error"
    FILE = "file"
    NOTE = "note"
    RESTORED = "restored"  # hibernated variables restored before an execution
    DONE = "done"
    REJECTED = "rejected"
    GAP = "gap"


def absolute(base: str, url: str) -> str:
    """`url` made absolute on `base` (server answers carry paths)."""
    return url if "://" in url else base.rstrip("/") + "/" + url.lstrip("/")


def _object(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise KssError(BAD_ANSWER, f"expected a JSON object for {what}, got {type(raw).__name__}")
    return raw


@dataclass(frozen=True)
class ExecutionError:
    """The exception an execution ended with; `traceback` as IPython formats it (ANSI), and
    `text`, the server's plain-text form of it (empty from servers that do not send it)."""

    ename: str
    evalue: str
    traceback: list[str] = field(default_factory=list)
    text: str = ""

    @classmethod
    def from_json(cls, raw: Any) -> ExecutionError:
        body = _object(raw, "error")
        return cls(
            str(body.get("ename", "")),
            str(body.get("evalue", "")),
            [str(line) for line in body.get("traceback") or []],
            str(body.get("text") or ""),
        )


@dataclass(frozen=True)
class FileChange:
    """A file an execution created or modified in the work dir."""

    name: str
    size: int
    event: str  # created | modified
    url: str

    @classmethod
    def from_json(cls, raw: Any, base: str) -> FileChange:
        body = _object(raw, "file")
        return cls(
            str(body["name"]),
            int(body.get("size", 0)),
            str(body.get("event", "")),
            absolute(base, str(body.get("url", ""))),
        )


@dataclass(frozen=True)
class ExecutionResult:
    """The whole result of one execution (`POST .../execute`), every field of the answer."""

    id: str
    status: ExecutionStatus
    execution_count: int | None
    stdout: str
    stderr: str
    result: JsonObject | None  # the last expression's mime bundle
    outputs: list[JsonObject]  # nbformat v4 outputs, images base64
    error: ExecutionError | None
    files: list[FileChange]
    duration_ms: float
    kernel_restarted: bool
    truncated: bool
    extra: JsonObject = field(default_factory=dict)  # fields a newer server added

    @property
    def ok(self) -> bool:
        return self.status is ExecutionStatus.OK

    @classmethod
    def from_json(cls, raw: Any, base: str) -> ExecutionResult:
        body = _object(raw, "execution result")
        try:
            status = ExecutionStatus(body["status"])
            error = body.get("error")
            known = cls.__dataclass_fields__.keys()
            return cls(
                id=str(body.get("id", "")),
                status=status,
                execution_count=body.get("execution_count"),
                stdout=str(body.get("stdout") or ""),
                stderr=str(body.get("stderr") or ""),
                result=body.get("result"),
                outputs=list(body.get("outputs") or []),
                error=None if error is None else ExecutionError.from_json(error),
                files=[FileChange.from_json(f, base) for f in body.get("files") or []],
                duration_ms=float(body.get("duration_ms") or 0.0),
                kernel_restarted=bool(body.get("kernel_restarted")),
                truncated=bool(body.get("truncated")),
                extra={k: v for k, v in body.items() if k not in known},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise KssError(BAD_ANSWER, f"unreadable execution result: {exc!r}") from exc


@dataclass(frozen=True)
class FileInfo:
    """A file in the user's work dir, as `GET .../files` and uploads describe it."""

    name: str
    size: int
    url: str
    modified: float | None = None
    expires_at: float | None = None
    origin: str | None = None  # upload | generated
    sha256: str | None = None

    @classmethod
    def from_json(cls, raw: Any, base: str, user_path: str) -> FileInfo:
        body = _object(raw, "file")
        name = str(body["name"])
        url = str(body.get("url") or f"{user_path}/files/{name}")
        return cls(
            name=name,
            size=int(body.get("size", 0)),
            url=absolute(base, url),
            modified=body.get("modified"),
            expires_at=body.get("expires_at"),
            origin=body.get("origin"),
            sha256=body.get("sha256"),
        )


@dataclass(frozen=True)
class SessionInfo:
    """`GET /api/sessions/{user}`; `restart_ms` only in a restart's answer."""

    user: str
    state: str  # starting | idle | busy | restarting | dead | closed
    created: float | None = None
    last_activity: float | None = None
    execution_count: int | None = None
    queued: int | None = None
    connections: int | None = None
    restart_ms: float | None = None

    @classmethod
    def from_json(cls, raw: Any) -> SessionInfo:
        body = _object(raw, "session")
        return cls(
            user=str(body.get("user", "")),
            state=str(body.get("state", "")),
            created=body.get("created"),
            last_activity=body.get("last_activity"),
            execution_count=body.get("execution_count"),
            queued=body.get("queued"),
            connections=body.get("connections"),
            restart_ms=body.get("restart_ms"),
        )


@dataclass(frozen=True)
class Event:
    """One WebSocket event. `seq` is None for `rejected` and `gap`; `fields` is the whole
    event as sent, so `event["text"]` reads any field."""

    type: str
    seq: int | None
    exec_id: str | None
    fields: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def is_done(self) -> bool:
        return self.type == EventType.DONE

    @classmethod
    def from_json(cls, raw: Any) -> Event:
        body = _object(raw, "event")
        seq = body.get("seq")
        exec_id = body.get("id")
        return cls(
            str(body.get("type", "")),
            seq if isinstance(seq, int) else None,
            exec_id if isinstance(exec_id, str) else None,
            body,
        )
