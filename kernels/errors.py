"""Domain errors of the kernel layer. The web layer maps them to HTTP statuses."""


class KernelError(Exception):
    """Base of every error the kernel layer raises on purpose."""

    code = "kernel_error"


class KernelStartFailed(KernelError):
    code = "kernel_start_failed"


class SessionNotFound(KernelError):
    code = "session_not_found"


class SessionClosed(KernelError):
    code = "session_closed"


class CapacityExceeded(KernelError):
    code = "capacity_exceeded"


class QueueFull(KernelError):
    code = "queue_full"


class PackagesDisabled(KernelError):
    code = "packages_disabled"


class Draining(KernelError):
    """The server is shutting down: it takes no new sessions or executions."""

    code = "draining"


class SessionElsewhere(KernelError):
    """Another server replica runs the user's kernel; `where` says how to reach it."""

    code = "session_elsewhere"

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where
