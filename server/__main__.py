"""`python -m server`: read settings, serve, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import tornado.httpserver

from .app import drain, lifespan, make_app
from .config import Settings, load_settings
from .http_server import make_http_server
from .logs import configure_logging, flush_dropped
from .metrics_http import metrics_app

log = logging.getLogger("server")


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; then drain (`server.app.drain`) and stop. A second
    signal cuts the drain short."""
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def signalled() -> None:
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled)
    async with lifespan(settings) as state, contextlib.AsyncExitStack() as stack:
        server = make_http_server(make_app(state), settings)
        server.listen(settings.port, settings.host)
        if settings.metrics_port:
            metrics_server = tornado.httpserver.HTTPServer(metrics_app(state))
            metrics_server.listen(settings.metrics_port, settings.host)
            stack.callback(metrics_server.stop)
        url = f"http://{settings.host}:{settings.port}"
        log.info("listening on %s (sandbox %s)", url, state.pool.launcher.mode)
        print(f"kernel session server on {url}", flush=True)
        if settings.generated_key:
            key = settings.api_keys[0][1]
            print(
                f"API key (tenant 'default', kept in {settings.data_dir}/api-key): {key}",
                flush=True,
            )
        await stop.wait()
        log.info("draining for up to %g s", settings.drain_timeout)
        draining = asyncio.ensure_future(drain(state, settings.drain_timeout))
        hurried = asyncio.ensure_future(hurry.wait())
        await asyncio.wait([draining, hurried], return_when=asyncio.FIRST_COMPLETED)
        for task in (draining, hurried):
            task.cancel()
        [outcome, _] = await asyncio.gather(draining, hurried, return_exceptions=True)
        if isinstance(outcome, Exception):
            log.error("drain failed: %r", outcome)
        if hurry.is_set():
            log.warning("second signal: stopping without waiting for executions")
        log.info("stopping")
        server.stop()
        await asyncio.wait_for(server.close_all_connections(), 5)
    log.info("stopped")


def main() -> None:
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    handler = configure_logging(settings)
    try:
        asyncio.run(serve(settings))
    except RuntimeError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        flush_dropped(handler)


if __name__ == "__main__":
    main()
