"""The OpenAPI 3.1 description of the API, served at `GET /api/openapi.json`.

One document, built once from the tables below: every route of `server.app.route_table()`
with every method its handler has, every field of every request and answer, every error
code each operation can answer, with its status. `docs/api.md` is the prose reference; this
is the same contract for machines (client generators, gateways, validators).

Kept true by `tests/server/test_openapi.py` (a valid OpenAPI document; every route and
method described and nothing else; every error code the server can produce listed under
its status) and by `tests/openapi_check.py`, which validates every answer the REST tests
receive against the operation it came from.

Requests that match no route are described once, in the root extension `x-unrouted`:
there is no way to write "any other path" as an OpenAPI path.
"""

from __future__ import annotations

import functools
import json
import re
from http import HTTPStatus
from importlib import metadata
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from files.area import LIST_LIMIT, MAX_LIST_LIMIT
from kernels.states import SessionState

from .console_http import CONTENT_TYPES
from .errors import RETRY_AFTER
from .protocol import EXEC_ID_RE, MAX_PACKAGES, USER_RE

OPENAPI_PATH = "/api/openapi.json"
DOCS = "docs/api.md"

# Every error code the server answers, with its status and what it means. An operation
# lists the codes it can answer; its responses are grouped from them by status.
ERRORS: dict[str, tuple[int, str]] = {
    "bad_request": (
        400,
        "malformed HTTP (request line, headers, a `Content-Length` that is not one "
        "non-negative integer, chunked encoding, undecodable path or query); the "
        "connection closes",
    ),
    "invalid_json": (400, "the body is not a JSON object (or is nested too deeply)"),
    "missing_field": (400, "a required field is absent"),
    "invalid_field": (400, "a field or query parameter has the wrong type or range"),
    "invalid_user": (400, "`{user}` is not 1-128 of `A-Z a-z 0-9 . _ @ -` (or is `.`/`..`)"),
    "invalid_since": (400, "`since` is not a non-negative integer"),
    "bad_file_name": (
        400,
        "a file name that is refused (`..`, absolute, NUL or control characters, a leading "
        "`.`, over 255 bytes, through a symlink, a directory) or sent twice in one form",
    ),
    "bad_multipart": (400, "a malformed `multipart/form-data` body (the message says what)"),
    "no_files": (400, "the form has no file parts (parts with a filename)"),
    "bad_notebook": (
        400,
        "a resume body that is not a notebook (JSON nbformat 4 with code cells), or has a "
        "cell over `--max-code-bytes`",
    ),
    "bad_bundle": (
        400,
        "a resume body that is not a bundle the server can take (not a zip, no notebook "
        "in it, a refused file name, a file over the limits)",
    ),
    "unauthorized": (
        401,
        "missing, malformed or unknown key; a token whose signature does not hold, whose "
        "key was removed, or used outside its user's session (`WWW-Authenticate: Bearer`)",
    ),
    "token_expired": (401, "the scoped token has expired"),
    "invalid_link": (403, "a signed link whose `sig` does not match its path and `exp`"),
    "link_expired": (403, "a signed link past its `exp`"),
    "origin_not_allowed": (
        403,
        "a CORS preflight or a WebSocket from a page whose origin is not allowed "
        "(`--allowed-origins`)",
    ),
    "package_not_allowed": (403, "a package that is not on the allowlist"),
    "packages_disabled": (403, "this server installs no packages (`--package-allowlist off`)"),
    "forbidden": (403, "a console path that is not a file of the console (a directory)"),
    "not_found": (404, "no such route (or `/metrics` without `--metrics-token`)"),
    "session_not_found": (404, "no session (nor anything recorded) for this user"),
    "file_not_found": (404, "no such file"),
    "file_expired": (404, "the file expired (`--file-ttl-seconds` after its last change)"),
    "method_not_allowed": (405, "the route has no such method"),
    "request_timeout": (
        408,
        "the headers did not all arrive within `--header-timeout`, or the body sent "
        "nothing for `--body-idle-timeout`; the connection closes",
    ),
    "session_closed": (409, "the session was closed while the request waited"),
    "file_busy": (409, "the file kept changing while it was read; try again"),
    "file_area_purged": (409, "the user's files were purged while the upload arrived"),
    "payload_too_large": (413, "code over `--max-code-bytes`, or a body over the request limit"),
    "file_too_large": (413, "a file over `--file-max-bytes`"),
    "quota_exceeded": (413, "the user's files would exceed `--user-quota-bytes`"),
    "package_install_failed": (422, "pip could not install it (pip's reason in the message)"),
    "upgrade_required": (
        426,
        "a request to the WebSocket route that is not a WebSocket handshake (`Upgrade: "
        "websocket`, `Connection: Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version: 13`)",
    ),
    "queue_full": (429, "more than `--max-queue` executions wait in this session"),
    "headers_too_large": (431, "request line and headers over 64 KB; the connection closes"),
    "internal_error": (500, "a bug (never a traceback)"),
    "purge_failed": (500, "the user's files could not all be removed"),
    "capacity_exceeded": (503, "`--max-sessions` (or the tenant's cap) reached, all busy"),
    "kernel_start_failed": (503, "no kernel could be started for the session"),
    "server_busy": (503, "the server ran out of file descriptors or memory for a moment"),
    "draining": (503, "the server is stopping and takes nothing new: try another"),
    "store_unavailable": (
        503,
        "MongoDB cannot be reached: a read of the store, or a new session, which needs it",
    ),
    "replica_unavailable": (
        503,
        "replicas: the replica running the user does not answer and its lease is still held",
    ),
    "session_elsewhere": (
        503,
        "replicas: a forwarded request whose user has meanwhile moved to another replica; retry",
    ),
    "package_install_timeout": (504, "the install took over `--package-install-timeout`"),
}

# Groups of codes, by what a route does.
EDGE = ("bad_request", "request_timeout", "payload_too_large", "headers_too_large")
BUG = ("internal_error",)
ANY = (*EDGE, *BUG)  # any request at all, routed or not
IO = (*ANY, "server_busy", "store_unavailable")  # a route that touches files, the store...
AUTH = ("unauthorized", "token_expired")
# A route of one user's session; with replicas it may be forwarded to the user's replica.
USER = (*IO, *AUTH, "invalid_user", "replica_unavailable", "session_elsewhere")
LINK = ("invalid_link", "link_expired")
SESSION = ("capacity_exceeded", "kernel_start_failed", "draining", "session_closed")
BODY = ("invalid_json", "missing_field", "invalid_field")

# Codes of a WebSocket `rejected` event: a frame the server will not take, or a request the
# session refused. The socket stays open; these are not HTTP answers.
FRAME_ERRORS: dict[str, str] = {
    "invalid_frame": "a binary frame (frames are JSON text)",
    "invalid_json": ERRORS["invalid_json"][1],
    "missing_field": "`type` (or an execute frame's `code`) is absent",
    "unknown_type": "a `type` other than `execute`, `interrupt`, `restart`",
    "invalid_field": ERRORS["invalid_field"][1],
    "payload_too_large": ERRORS["payload_too_large"][1],
    "queue_full": ERRORS["queue_full"][1],
    "session_closed": ERRORS["session_closed"][1],
    "draining": ERRORS["draining"][1],
    "kernel_start_failed": "a `restart` frame: no kernel could be started",
}

JSON = "application/json"
NOTEBOOK = "application/x-ipynb+json"


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema(name: str) -> dict[str, str]:
    return ref("schemas", name)


def obj(
    properties: dict[str, Any], required: tuple[str, ...] | None = None, **extra: Any
) -> dict[str, Any]:
    """A closed object: these properties (all required unless said), nothing else."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
        **extra,
    }


def nullable(s: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [s, {"type": "null"}]}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
COUNT = {"type": "integer", "minimum": 0}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}
UNIX_TIME = {"type": "number", "description": "unix time, seconds"}
BACKEND = {"enum": ["sqlite", "mongodb"]}


def schemas() -> dict[str, Any]:
    session_fields = {
        "user": STRING,
        "state": {
            "enum": [str(s) for s in SessionState],
            "description": "`closed`: no kernel now (shut down, culled, or from before a "
            "server restart); its notebook and files remain",
        },
        "created": UNIX_TIME,
        "last_activity": UNIX_TIME,
        "execution_count": COUNT,
        "queued": {**COUNT, "description": "executions waiting behind the running one"},
        "connections": {**COUNT, "description": "WebSockets watching the session"},
    }
    live_only = ("queued", "connections")  # a recorded session without a kernel has neither
    session_required = tuple(k for k in session_fields if k not in live_only)
    mime_bundle = {
        "type": "object",
        "description": "a MIME bundle: text (or lines of text) per MIME type, any JSON for "
        "`*json` types; images base64",
        "patternProperties": {"json$": {"type": ["object", "array", "string"]}},
        "additionalProperties": {
            "anyOf": [STRING, {"type": "array", "items": STRING}],
        },
    }
    traceback = {"type": "array", "items": STRING}
    store_health = {
        "state": {"enum": ["ok", "degraded"]},
        "held": {**COUNT, "description": "transcript items waiting for the store"},
        "dropped": {**COUNT, "description": "items a full `--transcript-buffer` dropped"},
        "since": {**UNIX_TIME, "description": "when the store went away"},
        "error": {**STRING, "description": "why the store cannot be reached"},
    }
    lost = {
        "type": "array",
        "items": obj({"name": STRING, "why": {**STRING, "examples": ["open file", "too large"]}}),
    }
    package = obj(
        {
            "name": STRING,
            "version": STRING,
            "state": {
                "enum": ["installed", "cached", "present"],
                "description": "`installed` just now, `cached` installed before (for anyone), "
                "`present` in the kernels' environment",
            },
        }
    )
    file_change = obj(
        {
            "name": STRING,
            "size": COUNT,
            "event": {"enum": ["created", "modified"]},
            "url": {**STRING, "description": "download path (signed with `?links=signed`)"},
        }
    )
    out = {
        "Error": obj(
            {
                "error": obj(
                    {
                        "code": {"enum": sorted(ERRORS), "description": "stable; see the table"},
                        "message": {**STRING, "description": "for people; may change"},
                    }
                )
            },
            description="Every error, on every route: a stable `code` and a message.",
        ),
        "Health": obj(
            {
                "status": {"enum": ["ok", "draining", "degraded"]},
                "store": obj(
                    {"backend": BACKEND, **store_health},
                    ("backend", "state", "held", "dropped"),
                    description="with `degraded` only: the store does not take writes now",
                ),
            },
            ("status",),
        ),
        "Status": obj(
            {
                "sessions": {**COUNT, "description": "the tenant's live sessions (this replica)"},
                "sandbox": {"enum": ["uid", "userns", "off"]},
                "store": obj(
                    {
                        "backend": BACKEND,
                        "sessions": {**COUNT, "description": "the tenant's recorded sessions"},
                        "cells": {**COUNT, "description": "the tenant's stored cells"},
                        **store_health,
                    },
                    ("backend", "state", "held", "dropped"),
                    description="`sessions` and `cells` are left out while the store is "
                    "unreachable",
                ),
                "replay_memory": obj(
                    {
                        "bytes": {
                            **COUNT,
                            "description": "what the tenant's sessions' replay buffers hold "
                            "in the server's memory",
                        },
                        "limit_bytes": {
                            **COUNT,
                            "description": "`--replay-total-bytes`, shared by every tenant's "
                            "sessions: over it the oldest events of any session leave memory "
                            "(a reconnect gets them from the transcript)",
                        },
                    },
                    ("bytes", "limit_bytes"),
                ),
            },
            description="All about the calling tenant; nothing about other tenants.",
        ),
        "SessionInfo": obj(session_fields, session_required),
        "RestartedSession": obj(
            {**session_fields, "restart_ms": {**NUMBER, "minimum": 0}},
            (*session_required, "restart_ms"),
        ),
        "SessionList": obj({"sessions": {"type": "array", "items": schema("SessionInfo")}}),
        "ClosedSession": obj(
            {
                "user": STRING,
                "state": {"const": "closed"},
                "purged": {**BOOLEAN, "description": "`?purge=true` was given"},
            }
        ),
        "Interrupted": obj(
            {"interrupted": {**BOOLEAN, "description": "false: nothing was running"}}
        ),
        "ExecuteRequest": execute_request(),
        "MimeBundle": mime_bundle,
        "Output": {
            "description": "an nbformat v4 output, as Jupyter stores it",
            "oneOf": [
                obj(
                    {
                        "output_type": {"const": "stream"},
                        "name": {"enum": ["stdout", "stderr"]},
                        "text": STRING,
                    }
                ),
                obj(
                    {
                        "output_type": {"const": "display_data"},
                        "data": schema("MimeBundle"),
                        "metadata": {"type": "object"},
                    }
                ),
                obj(
                    {
                        "output_type": {"const": "execute_result"},
                        "execution_count": nullable(INTEGER),
                        "data": schema("MimeBundle"),
                        "metadata": {"type": "object"},
                    }
                ),
                obj(
                    {
                        "output_type": {"const": "error"},
                        "ename": STRING,
                        "evalue": STRING,
                        "traceback": traceback,
                    }
                ),
            ],
        },
        "ExecutionError": obj(
            {
                "ename": {**STRING, "examples": ["ZeroDivisionError", "KernelDied"]},
                "evalue": STRING,
                "traceback": {**traceback, "description": "lines as IPython colours them"},
                "text": {**STRING, "description": "plain text, ending with `ename: evalue`"},
            }
        ),
        "FileChange": file_change,
        "ExecuteResult": obj(
            {
                "id": STRING,
                "status": {
                    "enum": ["ok", "error", "timeout", "aborted"],
                    "description": "`error`: an exception, an interrupt or the kernel's death; "
                    "`timeout`: interrupted (and replaced if it hung); `aborted`: a restart "
                    "or a shutdown ended it",
                },
                "execution_count": nullable(INTEGER),
                "stdout": {**STRING, "description": "capped at `--text-cap-bytes`"},
                "stderr": {**STRING, "description": "capped at `--text-cap-bytes`"},
                "result": nullable(schema("MimeBundle")),
                "outputs": {"type": "array", "items": schema("Output")},
                "error": nullable(schema("ExecutionError")),
                "files": {
                    "type": "array",
                    "items": schema("FileChange"),
                    "description": "files the code created or modified",
                },
                "duration_ms": {**NUMBER, "minimum": 0},
                "kernel_restarted": {
                    **BOOLEAN,
                    "description": "another kernel than the previous execution's: "
                    "variables from before are gone",
                },
                "truncated": BOOLEAN,
                "restored": {
                    "type": "array",
                    "items": STRING,
                    "description": "names restored from hibernation before the code ran "
                    "(only on the first execution after the session's kernel was freed)",
                },
                "lost": {**lost, "description": "names hibernation could not bring back, why"},
            },
            (
                "id",
                "status",
                "execution_count",
                "stdout",
                "stderr",
                "result",
                "outputs",
                "error",
                "files",
                "duration_ms",
                "kernel_restarted",
                "truncated",
            ),
        ),
        "ResumeResult": obj(
            {
                "id": {**STRING, "description": "the prefix of the executions' ids"},
                "files": {
                    "type": "array",
                    "items": STRING,
                    "description": "files a bundle's body brought into the work dir",
                },
                "ran": {"type": "array", "items": schema("ResumedCell")},
                "failed": nullable(
                    {
                        "allOf": [
                            schema("ResumedCell"),
                            {
                                "type": "object",
                                "properties": {"error": nullable(schema("ExecutionError"))},
                            },
                        ],
                        "description": "the cell that stopped the run (not tagged "
                        "`raises-exception`), with its error",
                    }
                ),
                "skipped": {
                    "type": "array",
                    "items": obj(
                        {
                            "cell": COUNT,
                            "id": nullable(STRING),
                            "why": {
                                **STRING,
                                "examples": [
                                    "setup",
                                    "empty",
                                    "after a failure",
                                    "the client went away",
                                ],
                            },
                        }
                    ),
                },
            }
        ),
        "ResumedCell": {
            "type": "object",
            "required": ["cell", "id", "exec_id", "status", "execution_count"],
            "properties": {
                "cell": {**COUNT, "description": "the cell's index in the notebook"},
                "id": {**nullable(STRING), "description": "the cell's own id"},
                "exec_id": {**STRING, "description": "`<id>-<cell index>`"},
                "status": {"enum": ["ok", "error", "timeout", "aborted"]},
                "execution_count": nullable(INTEGER),
                "error": nullable(schema("ExecutionError")),
            },
        },
        "PackagesRequest": {
            "type": "object",
            "required": ["packages"],
            "properties": {
                "packages": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_PACKAGES,
                    "items": {**STRING, "minLength": 1, "maxLength": 200},
                    "examples": [["plotly", "networkx>=3"]],
                }
            },
        },
        "Package": package,
        "PackagesResult": obj({"packages": {"type": "array", "items": schema("Package")}}),
        "TokenRequest": {
            "type": "object",
            "properties": {
                "ttl": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "seconds; default 3600, at most `--max-token-ttl`",
                }
            },
        },
        "Token": obj(
            {
                "token": {**STRING, "pattern": r"^kss1\.", "description": "`kss1.<claims>.<sig>`"},
                "user": STRING,
                "expires_at": TIME,
            }
        ),
        "NotebookLink": obj(
            {
                "url": {**STRING, "description": "the notebook's path with `exp` and `sig`"},
                "expires_at": TIME,
            }
        ),
        "NoteRequest": {
            "type": "object",
            "required": ["markdown"],
            "properties": {"markdown": {**STRING, "description": "at most `--max-code-bytes`"}},
        },
        "Note": obj(
            {
                "id": STRING,
                "seq": {
                    **nullable(COUNT),
                    "description": "the `note` event's seq; null when no kernel runs",
                },
            }
        ),
        "Notebook": {
            "type": "object",
            "description": "nbformat 4 (validated with nbformat in the tests): one code cell "
            "per execution with `metadata.kss`, markdown notes and restart markers",
            "required": ["nbformat", "nbformat_minor", "metadata", "cells"],
            "properties": {
                "nbformat": {"const": 4},
                "nbformat_minor": COUNT,
                "metadata": {"type": "object"},
                "cells": {"type": "array", "items": {"type": "object"}},
            },
        },
        "FileInfo": obj(
            {
                "name": STRING,
                "size": COUNT,
                "modified": TIME,
                "expires_at": TIME,
                "origin": {"enum": ["upload", "generated"]},
                "sha256": STRING,
                "url": {**STRING, "description": "download path (signed with `?links=signed`)"},
            }
        ),
        "FileListing": obj(
            {
                "files": {"type": "array", "items": schema("FileInfo")},
                "next": {**nullable(STRING), "description": "`after` of the next page"},
                "truncated": {
                    **BOOLEAN,
                    "description": "the work dir has more entries than one listing visits",
                },
            }
        ),
        "UploadedFiles": obj({"files": {"type": "array", "items": schema("FileInfo")}}),
        "DeletedFile": obj({"name": STRING, "deleted": {"const": True}}),
        "MultipartUpload": {
            "type": "object",
            "description": "one or more file parts; each part's `filename` (or RFC 5987 "
            "`filename*`) is the file's name; parts without a filename are ignored",
            "additionalProperties": {"type": "string", "contentMediaType": "*/*"},
        },
    }
    out.update(websocket_schemas(mime_bundle, traceback, package, file_change, lost))
    return out


def websocket_schemas(
    mime_bundle: dict[str, Any],
    traceback: dict[str, Any],
    package: dict[str, Any],
    file_change: dict[str, Any],
    lost: dict[str, Any],
) -> dict[str, Any]:
    """Frames and events of the WebSocket (`x-websocket` of its operation)."""
    numbered = {"seq": {**COUNT, "description": "per session, increasing"}}
    of_execution = {
        "id": {**STRING, "description": "the execution's id"},
        "late": {"const": True, "description": "printed by a thread after the execution"},
    }

    def event(kind: str, fields: dict[str, Any], optional: tuple[str, ...] = ()) -> dict:
        properties = {"type": {"const": kind}, **fields, **numbered, **of_execution}
        required = [k for k in ("type", *fields, "seq") if k not in optional]
        return obj(properties, tuple(required))

    def payload(s: dict[str, Any]) -> dict[str, Any]:
        return dict(s["properties"])

    display = {"data": mime_bundle, "metadata": {"type": "object"}}
    events = [
        event("status", {"state": {"enum": [str(s) for s in SessionState]}}),
        event("queued", {"position": {**COUNT, "description": "executions ahead"}}),
        event("stream", {"name": {"enum": ["stdout", "stderr"]}, "text": STRING}),
        event(
            "display",
            {**display, "display_id": STRING, "update": {"const": True}},
            ("display_id", "update"),
        ),
        event("clear_output", {"wait": BOOLEAN}),
        event(
            "result",
            {"execution_count": nullable(INTEGER), **display, "display_id": STRING},
            ("display_id",),
        ),
        event("error", {"ename": STRING, "evalue": STRING, "traceback": traceback}),
        event("file", payload(file_change)),
        event("note", {"markdown": STRING}),
        event("package", payload(package)),
        event(
            "restored",
            {"restored": {"type": "array", "items": STRING}, "lost": lost},
        ),
        event(
            "done",
            {
                "status": {"enum": ["ok", "error", "timeout", "aborted"]},
                "execution_count": nullable(INTEGER),
                "duration_ms": {**NUMBER, "minimum": 0},
                "kernel_restarted": BOOLEAN,
                "truncated": BOOLEAN,
            },
        ),
    ]
    return {
        "WsExecuteFrame": {
            "type": "object",
            "required": ["type", "code"],
            "properties": {"type": {"const": "execute"}, **execute_request()["properties"]},
        },
        "WsControlFrame": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["interrupt", "restart"]}},
        },
        "WsEvent": {
            "description": "an event of the session, seen by every socket of it",
            "oneOf": events,
        },
        "WsRejected": obj(
            {
                "type": {"const": "rejected"},
                "error": obj(
                    {
                        "code": {
                            "enum": list(FRAME_ERRORS),
                            "description": "; ".join(
                                f"`{c}`: {m}" for c, m in FRAME_ERRORS.items()
                            ),
                        },
                        "message": STRING,
                    }
                ),
                "id": {**STRING, "description": "the frame's `id`, when it had one"},
            },
            ("type", "error"),
            description="a frame the server will not take; to this socket only, no `seq`; "
            "the socket stays open",
        ),
        "WsGap": obj(
            {"type": {"const": "gap"}, "from_seq": COUNT, "to_seq": COUNT},
            description="on reconnect, a run of events no longer kept; this socket only",
        ),
        "WsMessage": {
            "description": "anything the server sends on the socket",
            "oneOf": [schema("WsEvent"), schema("WsRejected"), schema("WsGap")],
        },
    }


def execute_request() -> dict[str, Any]:
    """An execution asked for: the REST body, and the WebSocket frame's fields."""
    return {
        "type": "object",
        "required": ["code"],
        "properties": {
            "code": {**STRING, "description": "at most `--max-code-bytes` (1 MB) of UTF-8"},
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "seconds; default `--exec-timeout` (60), at most "
                "`--max-exec-timeout` (600)",
            },
            "id": {
                **STRING,
                "pattern": EXEC_ID_RE.pattern,
                "description": "echoed on the result and events; generated if absent",
            },
            "install_packages": {
                "type": "array",
                "maxItems": MAX_PACKAGES,
                "items": {**STRING, "minLength": 1, "maxLength": 200},
                "description": "requirements installed (from the allowlist) before the "
                "code runs; a refusal or failure ends the execution as an `error`",
            },
        },
    }


def parameters() -> dict[str, Any]:
    def query(name: str, s: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": s,
                "description": description}  # fmt: skip

    return {
        "user": {
            "name": "user",
            "in": "path",
            "required": True,
            "schema": {**STRING, "pattern": USER_RE.pattern, "not": {"enum": [".", ".."]}},
            "description": "the user whose session this is (one per tenant and user); "
            "anything else is `400 invalid_user`",
        },
        "name": {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {**STRING, "minLength": 1},
            "description": "a file name or a relative path in the user's work dir: it may "
            "contain `/` between directories, sent as is (the rest of the path)",
            "x-greedy": True,
        },
        "purge": query(
            "purge",
            BOOLEAN,
            "also delete the transcript, the record, the files and their records "
            "(`1` and `yes` count as true too)",
        ),
        "since_restart": query(
            "since_restart", BOOLEAN, "only the current kernel's cells (`1`/`0` also taken)"
        ),
        "setup": query(
            "setup",
            {**BOOLEAN, "default": True},
            "start with the setup cell that makes the notebook run on its own (`1`/`0` also taken)",
        ),
        "resume_id": query(
            "id",
            {**STRING, "pattern": EXEC_ID_RE.pattern, "maxLength": 100},
            "the prefix of the cells' execution ids (`<id>-<cell index>`); generated if absent",
        ),
        "resume_timeout": query(
            "timeout",
            {"type": "number", "exclusiveMinimum": 0},
            "each cell's timeout, seconds (default `--exec-timeout`)",
        ),
        "limit": query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": LIST_LIMIT},
            "files per page",
        ),
        "after": query("after", STRING, "the previous page's `next`"),
        "links": query(
            "links",
            {"enum": ["signed"]},
            "answer signed file URLs (`?exp=&sig=`) that open without a key",
        ),
        "ttl": query(
            "ttl",
            {"type": "integer", "minimum": 1},
            "seconds a signed link lives: default 3600, at most `--max-token-ttl`",
        ),
        "since": query(
            "since",
            COUNT,
            "replay every event after this seq (from memory or the durable transcript), "
            "then follow live",
        ),
        "status_events": query(
            "status",
            {"enum": ["on", "off", "true", "false", "1", "0"]},
            "`off`: this socket gets no `status` events, live or replayed (a small "
            "execution is then two frames, `result` and `done`); default `on`",
        ),
    }


def security_schemes() -> dict[str, Any]:
    return {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <API key>`: a tenant's key, on every "
            "route of that tenant",
        },
        "scopedToken": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "kss1.<claims>.<signature>",
            "description": "`Authorization: Bearer <token>` minted by `POST "
            "/api/sessions/{user}/token`: opens that user's session routes and nothing else",
        },
        "queryToken": {
            "type": "apiKey",
            "in": "query",
            "name": "token",
            "description": "the key or a scoped token as `?token=`, on the WebSocket only "
            "(browsers cannot set headers there)",
        },
        "linkExpiry": {
            "type": "apiKey",
            "in": "query",
            "name": "exp",
            "description": "a signed link's expiry (unix seconds); always with `sig`",
        },
        "linkSignature": {
            "type": "apiKey",
            "in": "query",
            "name": "sig",
            "description": "a signed link's signature over its path and `exp`: opens that "
            "one path with a plain GET, no header",
        },
        "metricsToken": {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <--metrics-token>` (not an API key)",
        },
    }


def headers() -> dict[str, Any]:
    def header(description: str, s: dict[str, Any] = STRING, required: bool = True) -> dict:
        return {"description": description, "required": required, "schema": s}

    waits = ", ".join(f"`{code}` {s} s" for code, s in RETRY_AFTER.items())
    return {
        "Retry-After": header(
            f"seconds to wait before trying again ({waits}, else 5)", {"type": "integer"}
        ),
        "WWW-Authenticate": header('`Bearer realm="kss"`'),
        "Content-Disposition": header("`attachment` with the file name (RFC 6266)"),
        "ETag": header("the version served"),
        "Last-Modified": header("when the file last changed"),
        "X-Content-Type-Options": header("`nosniff`"),
        "Content-Security-Policy": header("the console's strict policy (see docs/api.md)"),
        "X-Frame-Options": header("`DENY`"),
        "Referrer-Policy": header("`no-referrer`"),
        "Content-Range": header("the part sent, or `bytes */<size>` on a 416"),
        "Allow": header("the methods of the route"),
        "Access-Control-Allow-Origin": header(
            "the page's origin, when it is in `--allowed-origins`", required=False
        ),
        "Access-Control-Allow-Methods": header("`GET, POST, PUT, DELETE`", required=False),
        "Access-Control-Allow-Headers": header("`Authorization, Content-Type`", required=False),
        "Access-Control-Max-Age": header("`600`", required=False),
        "Upgrade": header("`websocket`"),
        "Connection": header("`Upgrade`"),
        "Sec-WebSocket-Accept": header("the handshake's answer (RFC 6455)"),
        "Sec-WebSocket-Version": header("`13`, the version this server speaks"),
        "X-Bundle-Omitted-Files": header(
            "how many files were left out (past the user's quota)", {"type": "integer"}, False
        ),
    }


def hdr(*names: str) -> dict[str, Any]:
    return {name: ref("headers", name) for name in names}


def json_answer(description: str, s: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": s}}, **extra}


def error_responses(codes: tuple[str, ...]) -> dict[str, Any]:
    """One response per status, listing (and allowing only) its codes."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):
        by_status.setdefault(ERRORS[code][0], []).append(code)
    out: dict[str, Any] = {}
    for status in sorted(by_status):
        listed = by_status[status]
        lines = "\n".join(f"- `{code}`: {ERRORS[code][1]}" for code in listed)
        answer = json_answer(
            f"{HTTPStatus(status).phrase}:\n\n{lines}",
            {
                "$ref": "#/components/schemas/Error",
                "properties": {"error": {"properties": {"code": {"enum": listed}}}},
            },
        )
        if status in (429, 503):
            answer["headers"] = hdr("Retry-After")
        elif status == 401:
            answer["headers"] = hdr("WWW-Authenticate")
        elif status == 426:
            answer["headers"] = hdr("Upgrade", "Sec-WebSocket-Version")
        out[str(status)] = answer
    return out


def operation(
    op_id: str,
    summary: str,
    tag: str,
    answers: dict[int, dict[str, Any]],
    errors: tuple[str, ...],
    *,
    security: list[dict[str, list[str]]],
    params: tuple[str, ...] = (),
    body: dict[str, Any] | None = None,
    description: str = "",
    **extra: Any,
) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    op["security"] = security
    if params:
        op["parameters"] = [ref("parameters", p) for p in params]
    if body is not None:
        op["requestBody"] = body
    responses = {str(status): answer for status, answer in answers.items()}
    for status, answer in error_responses(errors).items():
        if status in responses:  # an answer of the route shares the status (a drain's 503)
            merged = responses[status]
            merged["description"] += "; or an error:\n\n" + answer["description"]
            merged["content"][JSON]["schema"] = {
                "oneOf": [merged["content"][JSON]["schema"], answer["content"][JSON]["schema"]]
            }
        else:
            responses[status] = answer
    op["responses"] = dict(sorted(responses.items()))
    op.update(extra)
    return op


def json_body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema(name)}}}


KEY_ONLY = [{"apiKey": []}]
USER_ACCESS = [{"apiKey": []}, {"scopedToken": []}]
LINK_ACCESS = [*USER_ACCESS, {"linkSignature": [], "linkExpiry": []}]
NO_AUTH: list[dict[str, list[str]]] = []

SIGNED = ("links", "ttl")


def preflight(path: str) -> dict[str, Any]:
    """`OPTIONS`: the CORS preflight every REST route answers, without a key."""
    words = re.findall(r"[a-z]+", path.replace("{", "").replace("}", ""))
    return operation(
        "preflight" + "".join(w.title() for w in words),
        "CORS preflight",
        "cors",
        {
            204: {
                "description": "an allowed origin (or no `Origin`): the methods and headers "
                "it may use",
                "headers": hdr(
                    "Allow",
                    "Access-Control-Allow-Origin",
                    "Access-Control-Allow-Methods",
                    "Access-Control-Allow-Headers",
                    "Access-Control-Max-Age",
                ),
            }
        },
        (*ANY, "origin_not_allowed"),
        security=NO_AUTH,
        description="Answered without a key. A page of an origin in `--allowed-origins` "
        "gets the CORS headers; another origin gets `403 origin_not_allowed` without them, "
        "so the browser stops there.",
    )


def console_answers(types: list[str], description: str) -> dict[int, dict[str, Any]]:
    page = hdr(
        "Content-Security-Policy",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
        "ETag",
    )
    content = {t: {"schema": {"type": "string"}} for t in types}
    return {
        200: {"description": description, "headers": page, "content": content},
        206: {
            "description": "the part a `Range` header asked for",
            "headers": {**page, **hdr("Content-Range")},
            "content": content,
        },
        304: {"description": "unchanged since the `If-None-Match` ETag", "headers": page},
        416: {
            "description": "a `Range` past the end (empty body)",
            "headers": hdr("Content-Range"),
            "content": {"text/plain": {"schema": {"type": "string", "maxLength": 0}}},
        },
    }


def websocket_operation() -> dict[str, Any]:
    def messages(*names: str) -> dict[str, Any]:
        return {"oneOf": [schema(n) for n in names]}

    return operation(
        "openWebSocket",
        "A WebSocket on the session: run code, stream its events",
        "websocket",
        {
            101: {
                "description": "the upgrade: from here on JSON text frames (`x-websocket`)",
                "headers": hdr("Upgrade", "Connection", "Sec-WebSocket-Accept"),
            }
        },
        (
            *USER,
            *SESSION,
            "invalid_since",
            "invalid_field",
            "origin_not_allowed",
            "upgrade_required",
        ),
        security=[*USER_ACCESS, {"queryToken": []}],
        params=("since", "status_events"),
        description="Creates the session if needed. A page whose origin is neither the "
        "server's own nor in `--allowed-origins` is refused at the upgrade. Everything "
        "before the upgrade is an HTTP answer (the errors below, JSON); after it the socket "
        "carries JSON text frames: client frames `execute`, `interrupt`, `restart`; server "
        "events with `seq`, every socket of the session sees them; `rejected` and `gap` to "
        "one socket only. Close codes: 1001 the server is stopping, 1009 a frame over twice "
        f"the request limit, 4000 the socket fell over 64 MB behind. See {DOCS}#websocket.",
        **{
            "x-websocket": {
                "docs": f"{DOCS}#websocket",
                "clientFrames": messages("WsExecuteFrame", "WsControlFrame"),
                "serverMessages": schema("WsMessage"),
                "closeCodes": {
                    "1001": "the server is shutting down (reconnect to another)",
                    "1009": "a frame over twice the request limit",
                    "4000": "the socket fell more than 64 MB behind; reconnect with `since`",
                },
            }
        },
    )


def paths() -> dict[str, dict[str, Any]]:
    ok = json_answer
    sessions = {
        "/api/health": {
            "get": operation(
                "getHealth",
                "Liveness, for load balancers",
                "health",
                {
                    200: ok("serving", schema("Health")),
                    503: ok(
                        "draining for a stop: route elsewhere",
                        schema("Health"),
                        headers=hdr("Retry-After"),
                    ),
                },
                ANY,
                security=NO_AUTH,
            )
        },
        "/api/status": {
            "get": operation(
                "getStatus",
                "The tenant's own sessions and stored cells, the sandbox mode, the store",
                "health",
                {200: ok("the tenant's status", schema("Status"))},
                (*IO, *AUTH),
                security=KEY_ONLY,
            )
        },
        "/api/sessions": {
            "get": operation(
                "listSessions",
                "The tenant's live and recorded sessions",
                "sessions",
                {200: ok("by user", schema("SessionList"))},
                (*IO, *AUTH),
                security=KEY_ONLY,
            )
        },
        "/api/sessions/{user}": {
            "put": operation(
                "ensureSession",
                "Ensure a session: a warm kernel is claimed (or one started)",
                "sessions",
                {
                    200: ok("it existed", schema("SessionInfo")),
                    201: ok("created", schema("SessionInfo")),
                },
                (*USER, *SESSION),
                security=USER_ACCESS,
                description="At `--max-sessions` (or the tenant's cap) the least recently "
                "used idle session is closed to make room; only when every session in reach "
                "is busy is the answer `503 capacity_exceeded`.",
            ),
            "get": operation(
                "getSession",
                "Session info",
                "sessions",
                {
                    200: ok(
                        "live, or `closed` when recorded without a kernel", schema("SessionInfo")
                    )
                },
                (*USER, "session_not_found"),
                security=USER_ACCESS,
            ),
            "delete": operation(
                "closeSession",
                "Shut the kernel down (`?purge=true`: delete everything)",
                "sessions",
                {200: ok("closed", schema("ClosedSession"))},
                (*USER, "session_not_found", "purge_failed"),
                security=USER_ACCESS,
                params=("purge",),
                description="The transcript and files stay unless `purge`. A purge ends the "
                "user's uploads in flight (`409 file_area_purged`) and is `404` only when "
                "there is nothing at all.",
            ),
        },
        "/api/sessions/{user}/execute": {
            "post": operation(
                "execute",
                "Run code and answer with the whole result",
                "execute",
                {200: ok("the execution ended (whatever its status)", schema("ExecuteResult"))},
                (*USER, *SESSION, *BODY, "queue_full"),
                security=USER_ACCESS,
                params=SIGNED,
                body=json_body("ExecuteRequest"),
                description="Creates the session if needed and waits its turn (one "
                "execution at a time per session, in arrival order). Code that fails is a "
                "result (`status` `error`/`timeout`), not an HTTP error.",
            ),
        },
        "/api/sessions/{user}/interrupt": {
            "post": operation(
                "interrupt",
                "Interrupt the running execution (queued ones still run)",
                "sessions",
                {200: ok("whether something was running", schema("Interrupted"))},
                (*USER, "session_not_found"),
                security=USER_ACCESS,
            ),
        },
        "/api/sessions/{user}/restart": {
            "post": operation(
                "restart",
                "Replace the kernel; a running execution ends `aborted`",
                "sessions",
                {200: ok("the fresh kernel's session", schema("RestartedSession"))},
                (*USER, "session_not_found", "session_closed", "kernel_start_failed"),
                security=USER_ACCESS,
            ),
        },
        "/api/sessions/{user}/packages": {
            "post": operation(
                "installPackages",
                "Install packages from the allowlist into the user's kernels",
                "packages",
                {200: ok("installed, cached or present", schema("PackagesResult"))},
                (
                    *USER,
                    *SESSION,
                    *BODY,
                    "package_not_allowed",
                    "packages_disabled",
                    "package_install_failed",
                    "package_install_timeout",
                ),
                security=USER_ACCESS,
                body=json_body("PackagesRequest"),
                description="Creates the session if needed; installed in the running kernel "
                "at once and in every later kernel of the session.",
            ),
        },
        "/api/sessions/{user}/notebook": {
            "get": operation(
                "getNotebook",
                "The session as a Jupyter notebook",
                "notebook",
                {
                    200: {
                        "description": "nbformat 4; works after shutdown and restarts, until "
                        "the transcript expires",
                        "headers": hdr("Content-Disposition"),
                        "content": {NOTEBOOK: {"schema": schema("Notebook")}},
                    }
                },
                (*USER, *LINK, "invalid_field", "session_not_found"),
                security=LINK_ACCESS,
                params=("since_restart", "setup"),
                description="Starts with a setup cell (`?setup=false` leaves it out) so the "
                "notebook runs on its own; failed cells carry the `raises-exception` tag.",
            ),
            "post": operation(
                "resumeNotebook",
                "Run a notebook's code cells (or a bundle's) again in the session",
                "notebook",
                {200: ok("what ran, what failed, what was skipped", schema("ResumeResult"))},
                (
                    *USER,
                    *SESSION,
                    "invalid_field",
                    "bad_notebook",
                    "bad_bundle",
                    "bad_file_name",
                    "file_too_large",
                    "quota_exceeded",
                    "queue_full",
                ),
                security=USER_ACCESS,
                params=("resume_id", "resume_timeout"),
                body={
                    "required": True,
                    "description": "an `.ipynb` (JSON), or a bundle zip (its files are "
                    "copied into the work dir first)",
                    "content": {
                        NOTEBOOK: {"schema": schema("Notebook")},
                        JSON: {"schema": schema("Notebook")},
                        "application/zip": {
                            "schema": {"type": "string", "contentMediaType": "application/zip"}
                        },
                    },
                },
                description="Each code cell runs as an ordinary execution with id "
                "`<id>-<cell index>` (watch them on the WebSocket); the run stops at the "
                "first failing cell not tagged `raises-exception`. Everything is checked "
                "before anything is copied or run.",
            ),
        },
        "/api/sessions/{user}/bundle": {
            "get": operation(
                "getBundle",
                "A zip of the notebook and the user's files that reproduces the session",
                "notebook",
                {
                    200: {
                        "description": "unzip it and run the notebook",
                        "headers": hdr(
                            "Content-Disposition",
                            "X-Content-Type-Options",
                            "X-Bundle-Omitted-Files",
                        ),
                        "content": {
                            "application/zip": {
                                "schema": {"type": "string", "contentMediaType": "application/zip"}
                            }
                        },
                    }
                },
                (*USER, "session_not_found"),
                security=USER_ACCESS,
            ),
        },
        "/api/sessions/{user}/notebook/link": {
            "get": operation(
                "getNotebookLink",
                "A signed link to the notebook, for a browser or a model's host",
                "notebook",
                {200: ok("the link", schema("NotebookLink"))},
                (*USER, "invalid_field"),
                security=USER_ACCESS,
                params=("ttl",),
            ),
        },
        "/api/sessions/{user}/token": {
            "post": operation(
                "mintToken",
                "A scoped token for this user's session alone",
                "tokens",
                {201: ok("minted", schema("Token"))},
                (*USER, "invalid_json", "invalid_field"),
                security=KEY_ONLY,
                body=json_body("TokenRequest", required=False),
                description="Only the tenant's key mints (a token cannot). The token "
                "expires, and stops working when its key is removed.",
            ),
        },
        "/api/sessions/{user}/notes": {
            "post": operation(
                "addNote",
                "A markdown note at the current end of the transcript",
                "notebook",
                {201: ok("added (watchers get a `note` event)", schema("Note"))},
                (*USER, *BODY, "session_not_found"),
                security=USER_ACCESS,
                body=json_body("NoteRequest"),
            ),
        },
        "/api/sessions/{user}/ws": {"get": websocket_operation()},
    }
    files = {
        "/api/sessions/{user}/files": {
            "get": operation(
                "listFiles",
                "One page of the user's files, by name",
                "files",
                {200: ok("a page", schema("FileListing"))},
                (*USER, "invalid_field"),
                security=USER_ACCESS,
                params=("limit", "after", *SIGNED),
            ),
            "post": operation(
                "uploadFiles",
                "Upload files: a multipart form, all or nothing",
                "files",
                {201: ok("every file, committed", schema("UploadedFiles"))},
                (
                    *USER,
                    "invalid_field",
                    "bad_multipart",
                    "no_files",
                    "bad_file_name",
                    "file_not_found",
                    "file_too_large",
                    "quota_exceeded",
                    "file_area_purged",
                ),
                security=USER_ACCESS,
                params=SIGNED,
                body={
                    "required": True,
                    "content": {"multipart/form-data": {"schema": schema("MultipartUpload")}},
                },
                description="Each file streams to disk as it arrives, its limits checked "
                "(`413`); all files are committed only once the whole body arrived.",
            ),
        },
        "/api/sessions/{user}/files/{name}": {
            "put": operation(
                "putFile",
                "Upload one file: the raw body, replacing any file of that name atomically",
                "files",
                {201: ok("stored", schema("FileInfo"))},
                (
                    *USER,
                    "invalid_field",
                    "bad_file_name",
                    "file_not_found",
                    "file_too_large",
                    "quota_exceeded",
                    "file_area_purged",
                ),
                security=USER_ACCESS,
                params=SIGNED,
                body={
                    "required": True,
                    "description": "the file's bytes, any content type",
                    "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "*/*"}}},
                },
                description="A signed link does not open this (it only reads).",
            ),
            "get": operation(
                "getFile",
                "Download a file: one complete version of it",
                "files",
                {
                    200: {
                        "description": "the bytes, streamed, with the file's content type",
                        "headers": hdr(
                            "Content-Disposition",
                            "ETag",
                            "Last-Modified",
                            "X-Content-Type-Options",
                        ),
                        "content": {
                            "application/octet-stream": {
                                "schema": {
                                    "type": "string",
                                    "contentMediaType": "application/octet-stream",
                                }
                            },
                            "*/*": {"schema": {"type": "string", "contentMediaType": "*/*"}},
                        },
                    }
                },
                (*USER, *LINK, "bad_file_name", "file_not_found", "file_expired", "file_busy"),
                security=LINK_ACCESS,
            ),
            "delete": operation(
                "deleteFile",
                "Delete a file",
                "files",
                {200: ok("deleted", schema("DeletedFile"))},
                (*USER, "bad_file_name", "file_not_found"),
                security=USER_ACCESS,
            ),
        },
    }
    rest = {
        "/metrics": {
            "get": operation(
                "getMetrics",
                "Prometheus metrics, for operators",
                "operations",
                {
                    200: {
                        "description": "the Prometheus text exposition format",
                        "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                    }
                },
                (*ANY, "unauthorized", "not_found"),
                security=[{"metricsToken": []}],
                description="With `--metrics-token`: that token as a bearer token (an API "
                "key does not open it; `401` otherwise); without it, `404`. `--metrics-port` "
                "serves the same without a token on its own port. See docs/operations.md.",
            )
        },
        "/": {
            "get": operation(
                "getConsole",
                "The web console's page",
                "console",
                console_answers(["text/html"], "the page"),
                IO,
                security=NO_AUTH,
                description="No credential is needed for the console's files; the page asks "
                "for a key or a scoped token and calls the API with it.",
            ),
            "head": operation(
                "headConsole",
                "The console page's headers",
                "console",
                console_answers(["text/html"], "the page's headers, no body"),
                IO,
                security=NO_AUTH,
            ),
        },
        "/console/{name}": {
            method: operation(
                f"{method}ConsoleFile",
                "A file of the console: scripts, stylesheet, vendored DOMPurify and licences",
                "console",
                console_answers(
                    sorted({*CONTENT_TYPES.values(), "application/octet-stream"}), "the file"
                ),
                (*IO, "forbidden", "not_found"),
                security=NO_AUTH,
            )
            for method in ("get", "head")
        },
        OPENAPI_PATH: {
            "get": operation(
                "getOpenApi",
                "This document",
                "meta",
                {
                    200: {
                        "description": "OpenAPI 3.1",
                        "headers": hdr("ETag"),
                        "content": {JSON: {"schema": {"type": "object"}}},
                    },
                    304: {
                        "description": "unchanged since the `If-None-Match` ETag",
                        "headers": hdr("ETag"),
                    },
                },
                ANY,
                security=NO_AUTH,
            )
        },
    }
    out = {**sessions, **files, **rest}
    for path, item in out.items():
        if path not in NO_PREFLIGHT:
            item["options"] = preflight(path)
        in_path = re.findall(r"\{(\w+)\}", path)
        if in_path:  # on the path item: every method (the preflight too) has them
            item["parameters"] = [ref("parameters", p) for p in in_path]
    return out


# Routes whose handlers are not REST handlers (`ApiHandler`) have no preflight.
NO_PREFLIGHT = ("/", "/console/{name}", "/api/sessions/{user}/ws")


def unrouted() -> dict[str, Any]:
    """`x-unrouted`: how requests that no operation describes are answered."""
    return {
        "description": "Requests no operation describes, all answered with JSON errors "
        "(besides the edge's, which any request may meet).",
        "unknownPath": {
            "description": "A path that is not in `paths`, with any method: `404 not_found`, "
            "no credential needed.",
            "responses": error_responses((*ANY, "not_found")),
        },
        "unknownMethod": {
            "description": "A path in `paths` with a method it does not list: `405 "
            "method_not_allowed`, after the route's own checks of the request (its "
            "credential; on the WebSocket route the origin, `since` and the handshake).",
            "responses": error_responses(
                (
                    *IO,
                    *AUTH,
                    *LINK,
                    "method_not_allowed",
                    "invalid_since",
                    "origin_not_allowed",
                    "upgrade_required",
                )
            ),
        },
    }


DESCRIPTION = f"""\
A self-hosted code interpreter: one stateful, sandboxed IPython kernel per (tenant, user), \
run over HTTP or a WebSocket. The prose reference is {DOCS}; this document describes the \
same routes, fields and errors for machines, and a test keeps the two and the server in \
step: every route is described, and every answer the REST tests receive validates \
against it.

**Authentication.** `Authorization: Bearer <API key>` (a tenant's key) or a scoped token \
of one user's session; signed links (`?exp=&sig=`) open one file or notebook with a plain \
GET; the WebSocket also takes `?token=`. Another tenant's sessions and files answer 404, \
exactly like ones that do not exist.

**Errors.** Every error is `{{"error": {{"code", "message"}}}}`; each operation lists the \
codes it can answer under their status. `429` and `503` carry `Retry-After`, `401` carries \
`WWW-Authenticate`. Malformed HTTP, stalled bodies and oversized headers (`400`, `408`, \
`413`, `431`) are answered before any route and close the connection.

**Other requests.** A path not listed here answers `404 not_found`; a listed path with a \
method it does not list answers `405 method_not_allowed` (see `x-unrouted`).

**CORS.** Every REST route answers a preflight (`OPTIONS`) without a key; pages of \
`--allowed-origins` get CORS headers on every answer."""


TAGS = [
    ("health", "liveness and the tenant's status"),
    ("sessions", "one kernel per user: ensure, inspect, interrupt, restart, shut down"),
    ("execute", "run code, whole result"),
    ("websocket", "run code, streamed events"),
    ("packages", "installs from the allowlist"),
    ("notebook", "the transcript as a notebook, and notes"),
    ("files", "the user's work dir"),
    ("tokens", "scoped tokens"),
    ("operations", "metrics"),
    ("console", "the web console's static files"),
    ("meta", "this description"),
    ("cors", "preflights"),
]


def version() -> str:
    try:
        return metadata.version("kernel-session-server")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once; callers must not change it)."""
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Kernel session server",
            "version": version(),
            "summary": "One stateful, sandboxed IPython kernel per user, over HTTP and WebSocket",
            "description": DESCRIPTION,
        },
        "tags": [{"name": name, "description": d} for name, d in TAGS],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "parameters": parameters(),
            "headers": headers(),
            "securitySchemes": security_schemes(),
        },
        "x-unrouted": unrouted(),
    }


@functools.cache
def openapi_json() -> bytes:
    """The document as the route answers it."""
    return json.dumps(openapi_document(), separators=(",", ":")).encode()
