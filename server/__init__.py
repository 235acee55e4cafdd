"""Web layer and wiring: routes, auth, parsing, REST and WebSocket handlers, the lifespan
that builds everything (see docs/architecture.md)."""
