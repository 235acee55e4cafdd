"""Every answer the tests receive, checked against the OpenAPI document the server serves
(`server/openapi.py`): a test whose request got an answer the document does not describe
fails, however the test itself judged the answer.

The operation is found as the server finds its handler: the request path against the route
patterns of the document's path templates (`server.app.pattern`), then the method. A
request no operation describes is held to the document's `x-unrouted` responses (404 for a
path it does not list, 405 for a method a path does not have). Then:

- the status must be one of the operation's responses (or its `default`);
- headers the response marks `required` must be there (`Retry-After` on 429 and 503...);
- a body needs a documented content, its `Content-Type` one of the documented media types
  (a `*/*` matches any); a JSON one must validate against its schema, JSON Schema 2020-12
  with `$ref`s resolved in the whole document.

WebSocket messages are checked against `components/schemas/WsMessage`. Validators are
compiled once per schema location.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any
from urllib.parse import quote, urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from server.app import pattern
from server.openapi import openapi_document

DOC = openapi_document()
DOC_URI = "urn:kss:openapi"
REGISTRY: Registry = Registry().with_resource(
    DOC_URI, Resource(contents=DOC, specification=DRAFT202012)
)
TEMPLATES = [(re.compile(pattern(t)), t) for t in DOC["paths"]]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
NO_ANSWER = 599  # tornado's client: no HTTP answer at all (a closed connection, a timeout)


def pointer(*segments: str) -> str:
    """A JSON pointer into the document, as a URI fragment."""
    return "".join("/" + quote(s.replace("~", "~0").replace("/", "~1"), safe="") for s in segments)


@functools.cache
def validator(location: str) -> Draft202012Validator:
    return Draft202012Validator(
        {"$ref": f"{DOC_URI}#{location}"},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def resolve(item: dict[str, Any]) -> dict[str, Any]:
    """A `$ref` to `#/components/...` replaced by what it names."""
    ref = item.get("$ref")
    if ref is None:
        return item
    node: Any = DOC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def operation_of(method: str, path: str) -> tuple[str, tuple[str, ...]]:
    """What describes a request: (its name in messages, the pointer to its responses)."""
    for regex, template in TEMPLATES:
        if regex.fullmatch(path):
            if method.lower() in DOC["paths"][template]:
                where = f"{method.upper()} {template}"
                return where, ("paths", template, method.lower(), "responses")
            where = f"{method.upper()} {template} (no such method)"
            return where, ("x-unrouted", "unknownMethod", "responses")
    return f"{method.upper()} {path[:100]} (no such route)", (
        "x-unrouted",
        "unknownPath",
        "responses",
    )


def media_type(content_type: str | None, content: dict[str, Any]) -> str | None:
    """The documented media type key an answer's `Content-Type` falls under."""
    base = (content_type or "").split(";")[0].strip().lower()
    keys = {key.split(";")[0].strip().lower(): key for key in content}
    major = base.split("/")[0]
    return keys.get(base) or keys.get(f"{major}/*") or keys.get("*/*")


def is_json(media: str) -> bool:
    base = media.split(";")[0].strip()
    return base == "application/json" or base.endswith("+json")


def check_answer(method: str, url: str, status: int, headers: Any, body: bytes) -> None:
    """AssertionError unless the answer is one the document describes."""
    if status == NO_ANSWER:
        return
    path = urlsplit(url).path or "/"
    where, at = operation_of(method, path)
    responses = functools.reduce(lambda node, key: node[key], at, DOC)
    key = str(status) if str(status) in responses else "default"
    if key not in responses:
        raise AssertionError(
            f"{where}: status {status} is not documented (only {sorted(responses)}); "
            f"body {body[:300]!r}"
        )
    response = responses[key]
    for name, header in response.get("headers", {}).items():
        if resolve(header).get("required") and name not in headers:
            raise AssertionError(f"{where} -> {status}: no {name} header, which is documented")
    content = response.get("content")
    if not content:
        if body:
            raise AssertionError(f"{where} -> {status}: a body where none is documented")
        return
    if method.upper() == "HEAD" and not body:
        return
    content_type = headers.get("Content-Type")
    media = media_type(content_type, content)
    if media is None:
        raise AssertionError(
            f"{where} -> {status}: Content-Type {content_type!r} is not one of {sorted(content)}"
        )
    if not is_json(media):
        return
    try:
        value = json.loads(body)
    except ValueError:
        raise AssertionError(f"{where} -> {status}: not JSON: {body[:300]!r}") from None
    location = pointer(*at, key, "content", media, "schema")
    error = best_match(validator(location).iter_errors(value))
    if error is not None:
        raise AssertionError(
            f"{where} -> {status}: the body does not match the document at "
            f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message[:500]}"
        )


def check_message(message: Any) -> None:
    """AssertionError unless `message` is something the WebSocket may send."""
    location = pointer("components", "schemas", "WsMessage")
    error = best_match(validator(location).iter_errors(message))
    if error is not None:
        raise AssertionError(
            f"WebSocket message {json.dumps(message)[:300]} does not match the document: "
            f"{error.message[:300]}"
        )
