"""`Limits`: what the executions of one session may take (a part of the server's settings:
each field with help is a server option, declared here once)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .kernel import OutputBudget


@dataclass(frozen=True)
class Limits:
    """What the executions of one session may take. Fields with help are server options."""

    default_timeout: float = field(
        default=60,
        metadata={"option": "exec_timeout", "help": "default execution timeout, seconds"},
    )
    max_timeout: float = field(
        default=600,
        metadata={
            "option": "max_exec_timeout",
            "help": "largest timeout a request may ask for, seconds",
        },
    )
    interrupt_grace: float = field(
        default=3, metadata={"help": "seconds a timed-out kernel gets to answer an interrupt"}
    )
    client_cap: int = field(
        default=10_000_000,
        metadata={
            "option": "output_cap_bytes",
            "help": "output sent to clients per execution (each event also counts 64 bytes)",
        },
    )
    max_events: int = field(
        default=20_000,
        metadata={
            "option": "output_cap_events",
            "help": "output events sent to clients per execution",
        },
    )
    text_cap: int = field(
        default=100_000,
        metadata={
            "option": "text_cap_bytes",
            "help": "stdout/stderr text in the REST execute answer",
        },
    )
    max_queue: int = field(default=100, metadata={"help": "executions that may wait per session"})
    replay_events: int = field(
        default=10_000, metadata={"help": "events kept per session for reconnect replay"}
    )
    replay_bytes: int = field(
        default=32_000_000,
        metadata={"help": "bytes of events kept per session for reconnect replay"},
    )
    max_message_bytes: int = field(
        default=16 << 20,
        metadata={
            "option": "kernel_message_max_bytes",
            "help": "largest message read from a kernel; the rest of a larger one is dropped",
        },
    )
    stop_strays: bool = field(
        default=True,
        metadata={"help": "stop the processes an execution leaves running (on or off)"},
    )
    hibernate: bool = field(
        default=True,
        metadata={
            "help": "save an idle session's variables when its kernel is closed to free it "
            "(culling, reclaim, shutdown) and restore them at its next execution (on or off)"
        },
    )
    hibernate_max_bytes: int = field(
        default=200_000_000,
        metadata={
            "help": "most bytes one session's saved variables may take (also held to the "
            "user's quota: they are kept among the user's files)"
        },
    )
    hibernate_timeout: float = field(
        default=30,
        metadata={"help": "seconds a kernel gets to save, and to restore, its variables"},
    )
    disk_check_interval: float = 1.0  # how often a busy kernel's disk use is checked
    subscriber_bytes: int = 64_000_000  # a WebSocket further behind than this is closed

    def budget(self) -> OutputBudget:
        """What an execution may put in the server's memory before its output is dropped
        unread: its caps, with room for encoding (UTF-8, JSON escapes) and one message."""
        return OutputBudget(4 * self.client_cap + self.max_message_bytes, self.max_events + 1)
