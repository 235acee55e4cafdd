"""The three model APIs' shapes: content blocks, tool schemas, tool calls, tool results.

Shapes as the official SDKs type them (openai-python `types/chat`, `types/responses`;
anthropic-sdk-python `types/message_param`), and the choices made:

OpenAI Chat Completions (`openai_chat`)
    tool:        {"type": "function", "function": {"name", "description", "parameters",
                  "strict": true}}
    tool call:   message.tool_calls[i] = {"id", "type": "function",
                  "function": {"name", "arguments": "<JSON string>"}}
    tool result: {"role": "tool", "tool_call_id", "content": "<text>"}. A tool message's
                 content may only be text (`ChatCompletionToolMessageParam`), so images go
                 in ONE following {"role": "user", "content": [text, image_url parts]}
                 message, after the tool messages of every call of that turn (the API
                 wants all tool messages right after the assistant message). Image parts
                 are {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}.
OpenAI Responses (`openai_responses`)
    tool:        {"type": "function", "name", "description", "parameters", "strict": true}
    tool call:   output item {"type": "function_call", "call_id", "name", "arguments"}
    tool result: {"type": "function_call_output", "call_id", "output"}: `output` is the
                 text, or, with images, a list of {"type": "input_text", "text"} and
                 {"type": "input_image", "image_url": "data:...", "detail": "auto"}.
Anthropic Messages (`anthropic`)
    tool:        {"name", "description", "input_schema"}
    tool call:   content block {"type": "tool_use", "id", "name", "input": {...}}
    tool result: one {"role": "user", "content": [{"type": "tool_result", "tool_use_id",
                 "content": [text and image blocks], "is_error"}, ...]} message for all the
                 calls of a turn; an image block is {"type": "image", "source": {"type":
                 "base64", "media_type", "data"}}.

Tool calls are read from plain dicts or SDK objects alike (attribute or key access).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Provider(StrEnum):
    OPENAI_CHAT = "openai_chat"
    OPENAI_RESPONSES = "openai_responses"
    ANTHROPIC = "anthropic"


Block = dict[str, Any]


def field_of(obj: Any, name: str, default: Any = None) -> Any:
    """`obj[name]` for a mapping, `obj.name` for an SDK object."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def data_url(mime: str, data: str) -> str:
    return f"data:{mime};base64,{data}"


def content_blocks(text: str, images: list[tuple[str, str]], provider: Provider) -> list[Block]:
    """`text` then each (mime, base64) image as `provider`'s content blocks."""
    if provider is Provider.ANTHROPIC:
        return [{"type": "text", "text": text}] + [
            {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
            for mime, data in images
        ]
    if provider is Provider.OPENAI_RESPONSES:
        return [{"type": "input_text", "text": text}] + [
            {"type": "input_image", "image_url": data_url(mime, data), "detail": "auto"}
            for mime, data in images
        ]
    return [{"type": "text", "text": text}] + [
        {"type": "image_url", "image_url": {"url": data_url(mime, data)}} for mime, data in images
    ]


def _is_text(block: Block) -> bool:
    return block.get("type") in ("text", "input_text")


def tool_schema(
    provider: Provider, name: str, description: str, parameters: dict[str, Any]
) -> dict[str, Any]:
    """A function tool definition for `provider`."""
    if provider is Provider.ANTHROPIC:
        return {"name": name, "description": description, "input_schema": parameters}
    if provider is Provider.OPENAI_RESPONSES:
        return {
            "type": "function",
            "name": name,
            "description": description,
            "parameters": parameters,
            "strict": True,
        }
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": parameters,
            "strict": True,
        },
    }


@dataclass(frozen=True)
class ToolCall:
    """A model's request to run a tool; `problem` says why its arguments are unusable."""

    id: str
    name: str
    arguments: dict[str, Any]
    problem: str = ""


def detect(call: Any) -> Provider:
    """The provider a tool call object comes from, by its shape."""
    kind = field_of(call, "type")
    if kind == "tool_use":
        return Provider.ANTHROPIC
    if kind == "function_call":
        return Provider.OPENAI_RESPONSES
    if field_of(call, "function") is not None:
        return Provider.OPENAI_CHAT
    raise ValueError(f"not a tool call of a known provider: {call!r:.200}")


def _arguments(raw: Any) -> tuple[dict[str, Any], str]:
    if isinstance(raw, dict):
        return raw, ""
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError) as exc:
        return {}, f"the tool call's arguments are not valid JSON ({exc})"
    if not isinstance(value, dict):
        return {}, "the tool call's arguments are not a JSON object"
    return value, ""


def parse_tool_call(call: Any, provider: Provider) -> ToolCall:
    """The id, name and arguments of `provider`'s tool call object."""
    if provider is Provider.ANTHROPIC:
        args, problem = _arguments(field_of(call, "input"))
        return ToolCall(str(field_of(call, "id")), str(field_of(call, "name")), args, problem)
    if provider is Provider.OPENAI_RESPONSES:
        args, problem = _arguments(field_of(call, "arguments"))
        return ToolCall(str(field_of(call, "call_id")), str(field_of(call, "name")), args, problem)
    function = field_of(call, "function")
    args, problem = _arguments(field_of(function, "arguments"))
    return ToolCall(str(field_of(call, "id")), str(field_of(function, "name")), args, problem)


@dataclass(frozen=True)
class ToolOutput:
    """What one tool call produced, as `provider` content blocks."""

    call_id: str
    blocks: list[Block]
    is_error: bool = False


def tool_result_messages(provider: Provider, outputs: list[ToolOutput]) -> list[dict[str, Any]]:
    """The messages (or Responses input items) that answer every tool call of one turn."""
    if provider is Provider.ANTHROPIC:
        results = [
            {
                "type": "tool_result",
                "tool_use_id": out.call_id,
                "content": out.blocks,
                "is_error": out.is_error,
            }
            for out in outputs
        ]
        return [{"role": "user", "content": results}]
    if provider is Provider.OPENAI_RESPONSES:
        items: list[dict[str, Any]] = []
        for out in outputs:
            only_text = all(_is_text(b) for b in out.blocks)
            output: Any = "\n".join(b["text"] for b in out.blocks) if only_text else out.blocks
            items.append({"type": "function_call_output", "call_id": out.call_id, "output": output})
        return items
    messages: list[dict[str, Any]] = []
    images: list[Block] = []
    for out in outputs:
        text = "\n".join(b["text"] for b in out.blocks if _is_text(b))
        messages.append({"role": "tool", "tool_call_id": out.call_id, "content": text})
        pictures = [b for b in out.blocks if not _is_text(b)]
        if pictures:
            caption = f"Images from the code interpreter (tool call {out.call_id}):"
            images += [{"type": "text", "text": caption}, *pictures]
    if images:
        messages.append({"role": "user", "content": images})
    return messages
