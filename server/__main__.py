"""`python -m server`: read settings, serve, stop cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .app import lifespan, make_app
from .config import Settings, load_settings
from .http_server import make_http_server
from .logs import configure_logging, flush_dropped

log = logging.getLogger("server")


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with lifespan(settings) as state:
        server = make_http_server(make_app(state), settings)
        server.listen(settings.port, settings.host)
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
