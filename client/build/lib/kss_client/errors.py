"""The one exception the client raises, and what each error means to a model.

Anything that keeps code from running or a request from being answered (an HTTP error
status, a server that cannot be reached, no answer in time, a dropped WebSocket, a frame
the server rejected) raises `KssError` carrying the server's `code` and `message`, or one
of the client's own codes below. An execution that ran and failed is not an exception: it
is an `ExecutionResult` with `status` `error` or `timeout`.

`explain` turns an error into the one plain line a model should read instead of a Python
traceback of the client: what happened, whether the code ran, and what to do next.
"""

from __future__ import annotations

# Codes the client itself uses, beside the server's (docs/api.md, "Errors").
UNREACHABLE = "unreachable"  # no connection: the server is down or the address is wrong
NO_ANSWER = "no_answer"  # connected, but no answer within the client's timeout
DISCONNECTED = "disconnected"  # a WebSocket dropped and could not be resumed
BAD_ANSWER = "bad_answer"  # an answer that is not the JSON the API documents


class KssError(Exception):
    """An API call that failed: the server's error `code` and `message`, and the status."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    def __reduce__(self) -> tuple[type[KssError], tuple[str, str, int | None]]:
        return (type(self), (self.code, self.message, self.status))


_NOT_RUN = "the code did not run"

_EXPLAIN: dict[str, str] = {
    UNREACHABLE: f"The code interpreter cannot be reached right now; {_NOT_RUN}. "
    "Tell the user the Python tool is unavailable, or try again later.",
    NO_ANSWER: "The code interpreter did not answer in time; the code may still be running. "
    "Wait, then check with a short call before running it again.",
    DISCONNECTED: "The connection to the code interpreter dropped; the code may or may not "
    "have run. Check the state with a short call before running it again.",
    BAD_ANSWER: f"The code interpreter gave an answer the client could not read; {_NOT_RUN}.",
    "unauthorized": f"The code interpreter refused the API key (a configuration problem, not "
    f"a problem with the code); {_NOT_RUN}. Tell the user the Python tool is misconfigured.",
    "queue_full": f"Too many executions are already waiting in this session; {_NOT_RUN}. "
    "Wait for the earlier ones to finish, then try again.",
    "capacity_exceeded": f"The code interpreter is at capacity (too many sessions); {_NOT_RUN}. "
    "Try again in a minute.",
    "kernel_start_failed": f"The Python kernel could not be started; {_NOT_RUN}. "
    "Try again in a minute.",
    "kernel_died": "The Python kernel died; its variables are gone. The next call starts a "
    "fresh kernel: re-run the code that defines what you need.",
    "session_closed": f"The session was closed while the request waited; {_NOT_RUN}. "
    "Run it again: a fresh kernel starts, earlier variables are gone.",
    "payload_too_large": f"The code or file is larger than the server accepts; {_NOT_RUN}. "
    "Send smaller code, or read the data from a file instead of inlining it.",
    "file_too_large": "The file is larger than the server accepts per file.",
    "quota_exceeded": "The user's file storage is full: delete files before writing more.",
    "file_not_found": "There is no such file in the work dir; list the files to see their names.",
    "file_expired": "That file has expired and was deleted.",
    "bad_file_name": "That file name is not allowed (use a plain relative name, no '..').",
    "session_not_found": "There is no session for this user yet: run some code first.",
}


def explain(error: KssError) -> str:
    """One plain line for a model: what went wrong, whether the code ran, what to do."""
    known = _EXPLAIN.get(error.code)
    if known is not None:
        return known
    status = f"HTTP {error.status} " if error.status is not None else ""
    return f"The code interpreter answered {status}{error.code}: {error.message}"
