"""Pure rules: iopub messages -> client events and notebook outputs, with output caps.

Nothing here touches a kernel or a socket, so it is tested with recorded messages. One
`OutputCollector` per execution turns messages into events (what clients are sent), keeps the
nbformat-style outputs of the cell (stream coalescing, `clear_output(wait=True)`, display
updates by `display_id`, as Jupyter applies them) and enforces the two caps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]
Output = dict[str, Any]

TRUNCATION_MARKER = "\n[output truncated: {what} exceeded {limit} bytes for this execution]\n"
COUNT_MARKER = "\n[output truncated: more than {limit} outputs for this execution]\n"
TRACEBACK_LIMIT = 64 * 1024
# What one event costs besides its payload (framing, seq, id, the store's row): an empty
# display counts, so a loop of them is held by the byte cap as well as the count cap.
EVENT_OVERHEAD = 64


def _bundle_size(data: dict[str, Any]) -> int:
    size = 0
    for value in data.values():
        size += len(value) if isinstance(value, str) else len(str(value))
    return size


def event_size(event: Event) -> int:
    """Approximate payload bytes of an event, for the per-execution cap."""
    kind = event["type"]
    if kind == "stream":
        return len(event["text"])
    if kind in ("display", "result"):
        return _bundle_size(event["data"])
    if kind == "error":
        return sum(len(line) for line in event["traceback"]) + len(event["evalue"])
    return 0


class MalformedMessage(ValueError):
    """A kernel message of a known type whose content does not have that type's shape."""


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} is not a string")
    return value


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MalformedMessage(f"{what} is not an object")
    return value


def _bundle(value: Any) -> dict[str, Any]:
    """A MIME bundle as nbformat allows it: text (or lines of text); any JSON for */json."""
    data = _mapping(value, "data")
    for mime, item in data.items():
        if isinstance(item, str):
            continue
        if isinstance(item, list) and all(isinstance(line, str) for line in item):
            continue
        if mime.endswith("json") and isinstance(item, dict | list):
            continue
        raise MalformedMessage(f"data[{mime[:40]!r}] is not text")
    return data


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _stream(content: dict[str, Any]) -> Event:
    name = content.get("name")
    if name not in ("stdout", "stderr"):
        raise MalformedMessage("stream name is not stdout or stderr")
    return {"name": name, "text": _text(content.get("text"), "text")}


def _display(content: dict[str, Any]) -> Event:
    event: Event = {
        "data": _bundle(content.get("data", {})),
        "metadata": _mapping(content.get("metadata", {}), "metadata"),
    }
    display_id = _mapping(content.get("transient") or {}, "transient").get("display_id")
    if display_id:
        event["display_id"] = _text(display_id, "display_id")
    return event


def _result(content: dict[str, Any]) -> Event:
    return {"execution_count": _count(content.get("execution_count")), **_display(content)}


def _error(content: dict[str, Any]) -> Event:
    return error_event(
        content.get("ename", ""), content.get("evalue", ""), content.get("traceback", [])
    )


def _clear(content: dict[str, Any]) -> Event:
    return {"wait": bool(content.get("wait", False))}


@dataclass(frozen=True)
class Kind:
    """One kind of output, in its three vocabularies: the iopub message a kernel sends, the
    event clients are sent, and the nbformat output a cell keeps (None: it changes outputs
    rather than adding one)."""

    event: str
    output: str | None
    parse: Callable[[dict[str, Any]], Event]  # message content -> event fields, checked


# The one table. `event_from_message` reads it forwards, `output_from_event` (and with it
# the transcript's recovery, which rebuilds cells from stored events) backwards.
KINDS: dict[str, Kind] = {
    "stream": Kind("stream", "stream", _stream),
    "display_data": Kind("display", "display_data", _display),
    "update_display_data": Kind("display", None, _display),  # replaces one by display_id
    "execute_result": Kind("result", "execute_result", _result),
    "error": Kind("error", "error", _error),
    "clear_output": Kind("clear_output", None, _clear),
}
OUTPUT_FIELDS = {
    "stream": ("name", "text"),
    "display_data": ("data", "metadata"),
    "execute_result": ("execution_count", "data", "metadata"),
    "error": ("ename", "evalue", "traceback"),
}
_OUTPUT_OF_EVENT = {k.event: k.output for k in KINDS.values() if k.output is not None}


def event_from_message(msg_type: str, content: Any) -> Event | None:
    """Map one iopub message to a client event, or None for messages clients don't see.

    The kernel is untrusted: a known message type whose content is off raises
    `MalformedMessage` rather than letting a bad value travel on into events and cells.
    """
    kind = KINDS.get(msg_type)
    if kind is None:
        return None
    event = {"type": kind.event, **kind.parse(_mapping(content, "content"))}
    if msg_type == "update_display_data":
        event["update"] = True
    return event


def error_event(ename: Any, evalue: Any, traceback: Any = ()) -> Event:
    """An `error` event; the kernel's fields are checked and its traceback bounded."""
    lines = list(traceback) if isinstance(traceback, list | tuple) else []
    if not all(isinstance(line, str) for line in lines):
        raise MalformedMessage("traceback is not a list of strings")
    while lines and sum(map(len, lines)) > TRACEBACK_LIMIT:
        lines.pop(0)
    return {
        "type": "error",
        "ename": _text(ename, "ename"),
        "evalue": _text(evalue, "evalue"),
        "traceback": lines,
    }


def output_from_event(event: Event) -> Output | None:
    """The nbformat v4 output for an event (None for events that are not outputs)."""
    output_type = _OUTPUT_OF_EVENT.get(event["type"])
    if output_type is None or event.get("update"):
        return None
    return {"output_type": output_type, **{k: event[k] for k in OUTPUT_FIELDS[output_type]}}


@dataclass
class CappedText:
    """Text accumulated up to `limit` characters, then a marker and nothing more."""

    limit: int
    parts: list[str] = field(default_factory=list)
    size: int = 0
    truncated: bool = False

    def add(self, text: str) -> None:
        if self.truncated:
            return
        room = self.limit - self.size
        if len(text) > room:
            self.parts.append(text[:room])
            self.parts.append(TRUNCATION_MARKER.format(what="text", limit=self.limit))
            self.size = self.limit
            self.truncated = True
        else:
            self.parts.append(text)
            self.size += len(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class OutputCollector:
    """Everything one execution produced, as clients received it."""

    client_cap: int
    text_cap: int
    max_events: int = 20_000
    _outputs: list[Output] = field(default_factory=list)
    events: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    sent_bytes: int = 0
    truncated: bool = False
    _clear_pending: bool = False
    # Text chunks of the last output while it is a growing stream, joined when read: adding
    # to a str each time would copy it whole, quadratic in a long trickle of output.
    _stream_parts: list[str] = field(default_factory=list)
    _display_index: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stdout = CappedText(self.text_cap)
        self.stderr = CappedText(self.text_cap)

    @property
    def outputs(self) -> list[Output]:
        """The cell's nbformat outputs so far."""
        self._seal_stream()
        return self._outputs

    def take_outputs(self) -> list[Output]:
        """The outputs gathered since the last call, handed over and forgotten (the caps'
        counts stay). Displays updated later by id are no longer in reach."""
        outputs = self.outputs
        self._outputs = []
        self._display_index.clear()
        return outputs

    def _seal_stream(self) -> None:
        if self._stream_parts:
            self._outputs[-1]["text"] = "".join(self._stream_parts)
            self._stream_parts = []

    def accept(self, event: Event) -> list[Event]:
        """Record `event`; return the events to send to clients (capped, maybe with marker).

        Two caps, both per execution: bytes (payload plus `EVENT_OVERHEAD` each) and the
        number of events. Errors always pass, so a failure stays visible.
        """
        if event["type"] == "error":
            self.events += 1
            self._apply(event)
            return [event]
        if self.truncated:
            return []
        size = event_size(event) + EVENT_OVERHEAD
        if self.events >= self.max_events:
            return [self.truncate(COUNT_MARKER.format(limit=self.max_events))]
        if self.sent_bytes + size > self.client_cap:
            sent = []
            room = self.client_cap - self.sent_bytes - EVENT_OVERHEAD
            if event["type"] == "stream" and room > 0:
                head = {**event, "text": event["text"][:room]}
                self.sent_bytes += room + EVENT_OVERHEAD
                self.events += 1
                self._apply(head)
                sent.append(head)
            name = event["name"] if event["type"] == "stream" else "stderr"
            sent.append(
                self.truncate(TRUNCATION_MARKER.format(what="output", limit=self.client_cap), name)
            )
            return sent
        self.sent_bytes += size
        self.events += 1
        self._apply(event)
        return [event]

    def truncate(self, text: str, name: str = "stderr") -> Event:
        """Stop taking output; return the marker event that says so (recorded once)."""
        self.truncated = True
        marker = {"type": "stream", "name": name, "text": text}
        self._apply(marker)
        return marker

    def _apply(self, event: Event) -> None:
        kind = event["type"]
        if kind == "clear_output":
            if event["wait"]:
                self._clear_pending = True
            else:
                self._clear()
            return
        if kind == "display" and event.get("update"):
            self._update_display(event)
            return
        if self._clear_pending:
            self._clear()
        if kind == "stream":
            (self.stdout if event["name"] == "stdout" else self.stderr).add(event["text"])
            last = self._outputs[-1] if self._outputs else None
            if last and last["output_type"] == "stream" and last["name"] == event["name"]:
                if not self._stream_parts:
                    self._stream_parts.append(last["text"])
                self._stream_parts.append(event["text"])
                return
        elif kind == "result":
            self.result = event["data"]
        elif kind == "error":
            self.error = {k: event[k] for k in OUTPUT_FIELDS["error"]}
        output = output_from_event(event)
        if output is None:
            return
        if kind == "stream":
            output = dict(output)  # coalescing appends to it; never mutate the event
        display_id = event.get("display_id")
        if display_id:
            self._display_index.setdefault(display_id, []).append(len(self._outputs))
        self._seal_stream()
        self._outputs.append(output)

    def _clear(self) -> None:
        self._stream_parts = []
        self._outputs.clear()
        self._display_index.clear()
        self._clear_pending = False

    def _update_display(self, event: Event) -> None:
        replacement = output_from_event({**event, "update": False})
        for index in self._display_index.get(event.get("display_id", ""), []):
            self._outputs[index] = replacement
