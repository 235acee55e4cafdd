"""`GET /metrics`: the API port's handler (a bearer token) and the metrics port's app."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST

from .api import ApiHandler, NotFoundHandler
from .protocol import ProtocolError

if TYPE_CHECKING:
    from .state import AppState


class MetricsHandler(ApiHandler):
    """`GET /metrics` on the API port: the metrics token as a bearer token, else 404/401."""

    auth_required = False
    token_required = True

    def get(self) -> None:
        if self.token_required:
            self._check_token()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(self.state.metrics.exposition())

    def _check_token(self) -> None:
        token = self.state.settings.metrics_token
        if not token:
            raise ProtocolError(
                404, "not_found", "metrics are not served here (see --metrics-token)"
            )
        scheme, _, given = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            raise ProtocolError(401, "unauthorized", "a valid metrics token is required")


class OpenMetricsHandler(MetricsHandler):
    """`GET /metrics` on `--metrics-port`: no token (bind that port to a private network)."""

    token_required = False


def metrics_app(state: AppState) -> tornado.web.Application:
    """The whole app of `--metrics-port`: `/metrics`, and JSON 404s for anything else."""
    return tornado.web.Application(
        [(r"/metrics", OpenMetricsHandler, {"state": state})],
        default_handler_class=NotFoundHandler,
        default_handler_args={"state": state},
        log_function=lambda handler: None,  # scrapes every few seconds: not worth a line
    )
