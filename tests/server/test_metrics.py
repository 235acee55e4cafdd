"""`GET /metrics`: who may read it, what it counts, and that it names no tenant or user."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer

from server.metrics_http import metrics_app
from tests.client import Api
from tests.conftest import KEY, RunningServer, free_port, make_settings, running_server
from tests.polling import until

TOKEN = "metrics-token-for-the-tests-0123456789"
TENANTS_AND_USERS = {"t1", "t2", "metrics-alice", "metrics-bob"}


@pytest_asyncio.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    settings = make_settings(tmp_path_factory.mktemp("metrics"), metrics_token=TOKEN)
    async with running_server(settings) as server:
        yield server


async def scrape(api: Api, token: str | None = TOKEN) -> dict[str, dict[tuple, float]]:
    """name -> {sorted label items: value} of every sample."""
    resp = await api.call("GET", "/metrics", key=token)
    assert resp.status == 200, resp.body
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def test_metrics_need_the_metrics_token_not_an_api_key(srv: RunningServer) -> None:
    for key in (None, KEY, "wrong-token"):
        resp = await srv.api.call("GET", "/metrics", key=key)
        assert resp.status == 401, (key, resp.body)
        assert resp.json["error"]["code"] == "unauthorized"
    await scrape(srv.api)


async def test_without_a_token_setting_metrics_are_not_on_the_api_port(tmp_path) -> None:
    async with running_server(make_settings(tmp_path, pool_size=0)) as server:
        resp = await server.api.call("GET", "/metrics", key=TOKEN)
        assert resp.status == 404 and resp.json["error"]["code"] == "not_found"


async def test_the_metrics_port_serves_them_without_a_token_and_nothing_else(
    srv: RunningServer,
) -> None:
    port = free_port()
    http = HTTPServer(metrics_app(srv.state))
    http.listen(port, "127.0.0.1")
    client = AsyncHTTPClient()
    base = f"http://127.0.0.1:{port}"
    try:  # not through `Api`: the API's OpenAPI document does not describe this port
        resp = await client.fetch(base + "/metrics")
        assert resp.code == 200 and resp.headers["Content-Type"].startswith("text/plain")
        assert "kss_sessions" in resp.body.decode()
        for path in ("/api/health", "/api/sessions", "/"):
            headers = {"Authorization": f"Bearer {KEY}"}
            resp = await client.fetch(base + path, headers=headers, raise_error=False)
            assert resp.code == 404 and json.loads(resp.body)["error"]["code"] == "not_found"
    finally:
        http.stop()


async def test_executions_sessions_kernels_and_limits_are_counted(srv: RunningServer) -> None:
    before = await scrape(srv.api)
    assert (await srv.api.execute("metrics-alice", "print('x' * 1000)"))["status"] == "ok"
    assert (await srv.api.execute("metrics-alice", "1/0"))["status"] == "error"
    timed_out = await srv.api.execute("metrics-alice", "import time; time.sleep(5)", timeout=0.5)
    assert timed_out["status"] == "timeout"
    sock = await srv.api2.ws("metrics-bob")
    await sock.run("print('hi')", "b1")
    after = await scrape(srv.api)

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return value(after, name, **labels) - value(before, name, **labels) >= by

    assert grew("kss_executions_total", status="ok", by=2)
    assert grew("kss_executions_total", status="error")
    assert grew("kss_executions_total", status="timeout")
    assert grew("kss_execution_duration_seconds_count", by=4)
    assert grew("kss_execution_duration_seconds_bucket", le="+Inf", by=4)
    assert grew("kss_output_bytes_total", by=1000)
    assert grew("kss_sandbox_limit_hits_total", limit="timeout")
    assert value(after, "kss_sessions", state="idle") >= 2
    assert value(after, "kss_kernels_started_total") >= 2
    assert value(after, "kss_websocket_connections") >= 1
    assert value(after, "kss_store_write_duration_seconds_count") >= 1
    route = "/api/sessions/{user}/execute"
    assert grew(
        "kss_http_request_duration_seconds_count", method="POST", route=route, status="200", by=3
    )
    sock.close()
    await until(lambda: not srv.state.sockets)
    assert value(await scrape(srv.api), "kss_websocket_connections") == 0


async def test_a_restart_is_counted_as_a_replaced_kernel(srv: RunningServer) -> None:
    await srv.api.execute("metrics-alice", "1")
    before = value(await scrape(srv.api), "kss_kernels_replaced_total", reason="restart")
    resp = await srv.api.call("POST", "/api/sessions/metrics-alice/restart")
    assert resp.status == 200
    after = value(await scrape(srv.api), "kss_kernels_replaced_total", reason="restart")
    assert after == before + 1


async def test_file_bytes_stored_come_from_the_janitors_sweep(srv: RunningServer) -> None:
    resp = await srv.api.call("PUT", "/api/sessions/metrics-alice/files/data.bin", raw=b"z" * 5000)
    assert resp.status == 201
    await srv.state.janitor.sweep()
    assert value(await scrape(srv.api), "kss_file_bytes_stored") >= 5000


async def test_no_label_names_a_tenant_or_a_user(srv: RunningServer) -> None:
    await srv.api.execute("metrics-alice", "1")
    samples = await scrape(srv.api)
    for name, series in samples.items():
        for labels in series:
            assert not {k for k, _ in labels} & {"tenant", "user"}, name
            assert not {v for _, v in labels} & TENANTS_AND_USERS, (name, labels)
    assert all(name.startswith(("kss_", "process_")) for name in samples)
    assert value(samples, "process_resident_memory_bytes") > 0  # the server's own
