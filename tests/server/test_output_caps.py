"""Output floods and caps, with a server configured for small caps."""

import psutil
import pytest_asyncio

from tests.conftest import make_settings, running_server


@pytest_asyncio.fixture(scope="module")
async def small(tmp_path_factory):
    settings = make_settings(
        tmp_path_factory.mktemp("small"), output_cap_bytes=300_000, text_cap_bytes=10_000
    )
    async with running_server(settings) as srv:
        yield srv


async def test_output_flood_is_capped_over_rest(small):
    rss_before = psutil.Process().memory_info().rss
    r = await small.api.execute("flood", "while True: print('x' * 1000)", timeout=3)
    assert r["status"] == "timeout" and r["truncated"] is True
    assert len(r["stdout"]) <= 10_000 + 200 and "output truncated" in r["stdout"]
    sent = sum(len(o.get("text", "")) for o in r["outputs"])
    assert sent <= 300_000 + 200
    grew = psutil.Process().memory_info().rss - rss_before
    assert grew < 200 * 1024 * 1024, f"server grew by {grew} bytes"
    r = await small.api.execute("flood", "'usable'")
    assert r["status"] == "ok" and r["truncated"] is False


async def test_output_flood_is_capped_over_websocket(small):
    ws = await small.api.ws("wsflood")
    events = await ws.run("while True: print('y' * 1000)", "f", timeout=3)
    streamed = sum(len(e["text"]) for e in events if e["type"] == "stream")
    assert streamed <= 300_000 + 200
    assert "output truncated" in [e for e in events if e["type"] == "stream"][-1]["text"]
    assert events[-1]["truncated"] is True and events[-1]["status"] == "timeout"
    ws.close()
