"""`GET /api/openapi.json`: the OpenAPI description of the API (`server/openapi.py`), with no
credential. The same bytes for every request, so tornado's ETag makes revalidation a 304."""

from __future__ import annotations

from .api import ApiHandler
from .openapi import openapi_json


class OpenApiHandler(ApiHandler):
    auth_required = False

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "public, max-age=300")
        self.finish(openapi_json())
