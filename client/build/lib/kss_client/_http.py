"""HTTP to the server: one pooled `httpx.AsyncClient`, every failure as a `KssError`.

httpx because it is async, typed, pools keep-alive connections (a round trip pays no TCP
handshake) and streams request and response bodies. Transport failures are told apart:
no connection at all (`unreachable`: the code never ran) is not the same as a connection
that gave no answer in time (`no_answer`: the code may still be running).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Mapping
from typing import Any

import httpx

from .errors import BAD_ANSWER, DISCONNECTED, NO_ANSWER, UNREACHABLE, KssError

CONNECT_TIMEOUT_S = 10.0
DEFAULT_TIMEOUT_S = 60.0


def api_base(url: str) -> str:
    """The server's root URL from what a user typed: with or without `/api`, a slash."""
    url = url.rstrip("/")
    return url[: -len("/api")] if url.endswith("/api") else url


def error_from_response(response: httpx.Response) -> KssError:
    """The server's `{"error": {"code", "message"}}`, or a code made from the status."""
    try:
        body = response.json()
        err = body["error"]
        return KssError(str(err["code"]), str(err.get("message", "")), response.status_code)
    except (ValueError, KeyError, TypeError):
        reason = response.reason_phrase or "error"
        code = reason.lower().replace(" ", "_")
        return KssError(code, response.text[:200] or reason, response.status_code)


class Http:
    """Requests to one server with one API key; raises `KssError` for anything but 2xx."""

    def __init__(self, url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.base = api_base(url)
        self.api_key = api_key
        self.timeout = timeout
        self._client = httpx.AsyncClient(
            base_url=self.base,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """The response to a 2xx request; `timeout` (seconds) for the answer, else default."""
        data = None if json_body is None else json.dumps(json_body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        read = self.timeout if timeout is None else timeout
        try:
            response = await self._client.request(
                method,
                path,
                content=data if data is not None else content,
                params=params,
                headers=headers,
                timeout=httpx.Timeout(read, connect=CONNECT_TIMEOUT_S),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise KssError(UNREACHABLE, f"cannot connect to {self.base}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise KssError(NO_ANSWER, f"no answer from {self.base} within {read:g} s") from exc
        except httpx.TransportError as exc:
            raise KssError(DISCONNECTED, f"connection to {self.base} failed: {exc!r}") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request`, answered with JSON."""
        response = await self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise KssError(BAD_ANSWER, f"{method} {path} did not answer JSON") from exc
