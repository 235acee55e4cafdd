"""The states a session and a cell can be in: each vocabulary written down once."""

from enum import StrEnum


class SessionState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    RESTARTING = "restarting"
    DEAD = "dead"
    CLOSED = "closed"


class CellStatus(StrEnum):
    """How an execution ended (`running` while it runs, in the transcript only)."""

    RUNNING = "running"
    OK = "ok"
    ERROR = "error"  # an exception, an interrupt, the kernel's death, a lost reply
    TIMEOUT = "timeout"  # interrupted for its timeout (and the kernel replaced if it hung)
    ABORTED = "aborted"  # a restart or a shutdown ended it, or the kernel aborted it
    INTERRUPTED = "interrupted"  # left running by a server that died (found at start-up)
