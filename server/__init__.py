"""Web layer: routes, auth, protocol, REST and WebSocket handlers, store."""
