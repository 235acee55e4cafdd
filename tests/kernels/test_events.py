"""The event log: sequence numbers, replay, slow subscribers."""

import json

from kernels.events import EndReason, EventLog


async def test_seq_increases_and_replay_returns_what_was_missed():
    log = EventLog(max_events=100, max_bytes=10_000, subscriber_bytes=10_000)
    for i in range(5):
        log.publish({"type": "stream", "text": str(i)})
    assert log.last_seq == 5
    sub = log.subscribe(since=3)
    got = [json.loads(await sub.get()) for _ in range(2)]
    assert [e["seq"] for e in got] == [4, 5]
    log.publish({"type": "stream", "text": "live"})
    assert json.loads(await sub.get())["text"] == "live"


async def test_buffer_is_bounded_and_reports_oldest():
    log = EventLog(max_events=3, max_bytes=10_000, subscriber_bytes=10_000)
    for i in range(10):
        log.publish({"type": "x", "i": i})
    assert log.oldest_seq == 8
    assert len(log.replay(0)) == 3


async def test_slow_subscriber_is_closed_not_buffered_forever():
    log = EventLog(max_events=100, max_bytes=10_000_000, subscriber_bytes=200)
    sub = log.subscribe()
    for _ in range(20):
        log.publish({"type": "stream", "text": "x" * 50})
    assert sub.closed and sub.reason is EndReason.BEHIND and sub.reason.code == 4000
    assert log.subscriber_count == 0
