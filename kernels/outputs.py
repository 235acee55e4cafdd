"""Pure rules: iopub messages -> client events and notebook outputs, with output caps.

Nothing here touches a kernel or a socket, so it is tested with recorded messages. One
`OutputCollector` per execution turns messages into events (what clients are sent), keeps the
nbformat-style outputs of the cell (stream coalescing, `clear_output(wait=True)`, display
updates by `display_id`, as Jupyter applies them) and enforces the two caps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Event = dict[str, Any]
Output = dict[str, Any]

TRUNCATION_MARKER = "\n[output truncated: {what} exceeded {limit} bytes for this execution]\n"
TRACEBACK_LIMIT = 64 * 1024


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


def event_from_message(msg_type: str, content: dict[str, Any]) -> Event | None:
    """Map one iopub message to a client event, or None for messages clients don't see."""
    if msg_type == "stream":
        return {"type": "stream", "name": content["name"], "text": content["text"]}
    if msg_type in ("display_data", "update_display_data"):
        event: Event = {
            "type": "display",
            "data": content.get("data", {}),
            "metadata": content.get("metadata", {}),
        }
        display_id = content.get("transient", {}).get("display_id")
        if display_id:
            event["display_id"] = display_id
        if msg_type == "update_display_data":
            event["update"] = True
        return event
    if msg_type == "execute_result":
        return {
            "type": "result",
            "execution_count": content.get("execution_count"),
            "data": content.get("data", {}),
            "metadata": content.get("metadata", {}),
        }
    if msg_type == "error":
        traceback = list(content.get("traceback", []))
        while traceback and sum(map(len, traceback)) > TRACEBACK_LIMIT:
            traceback.pop(0)
        return {
            "type": "error",
            "ename": content.get("ename", ""),
            "evalue": content.get("evalue", ""),
            "traceback": traceback,
        }
    if msg_type == "clear_output":
        return {"type": "clear_output", "wait": bool(content.get("wait", False))}
    return None


def output_from_event(event: Event) -> Output | None:
    """The nbformat v4 output for an event (None for events that are not outputs)."""
    kind = event["type"]
    if kind == "stream":
        return {"output_type": "stream", "name": event["name"], "text": event["text"]}
    if kind == "display":
        return {"output_type": "display_data", "data": event["data"], "metadata": event["metadata"]}
    if kind == "result":
        return {
            "output_type": "execute_result",
            "execution_count": event["execution_count"],
            "data": event["data"],
            "metadata": event["metadata"],
        }
    if kind == "error":
        return {
            "output_type": "error",
            "ename": event["ename"],
            "evalue": event["evalue"],
            "traceback": event["traceback"],
        }
    return None


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
    _outputs: list[Output] = field(default_factory=list)
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

    def _seal_stream(self) -> None:
        if self._stream_parts:
            self._outputs[-1]["text"] = "".join(self._stream_parts)
            self._stream_parts = []

    def accept(self, event: Event) -> list[Event]:
        """Record `event`; return the events to send to clients (capped, maybe with marker)."""
        size = event_size(event)
        if self.truncated and event["type"] != "error":
            return []
        if self.sent_bytes + size > self.client_cap and event["type"] != "error":
            self.truncated = True
            sent = []
            room = self.client_cap - self.sent_bytes
            if event["type"] == "stream" and room > 0:
                head = {**event, "text": event["text"][:room]}
                self.sent_bytes += room
                self._apply(head)
                sent.append(head)
            marker = {
                "type": "stream",
                "name": event["name"] if event["type"] == "stream" else "stderr",
                "text": TRUNCATION_MARKER.format(what="output", limit=self.client_cap),
            }
            self._apply(marker)
            sent.append(marker)
            return sent
        self.sent_bytes += size
        self._apply(event)
        return [event]

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
            self.error = {k: event[k] for k in ("ename", "evalue", "traceback")}
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
        for index in self._display_index.get(event.get("display_id", ""), []):
            self._outputs[index] = {
                "output_type": "display_data",
                "data": event["data"],
                "metadata": event["metadata"],
            }
