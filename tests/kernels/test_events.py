"""The event log: sequence numbers, replay, slow subscribers."""

import json

from kernels.events import EndReason, EventLog, ReplayBudget


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


async def test_what_is_ready_is_taken_at_once_and_the_end_stays_last():
    log = EventLog(max_events=100, max_bytes=10_000, subscriber_bytes=300)
    sub = log.subscribe()
    for i in range(3):
        log.publish({"type": "stream", "text": str(i)})
    first = json.loads(await sub.get())
    assert [first["seq"], *(json.loads(e)["seq"] for e in sub.ready())] == [1, 2, 3]
    assert sub.ready() == []
    log.publish({"type": "stream", "text": "x" * 200})  # fits: what was taken is not owed
    sub.close(EndReason.SESSION_CLOSED)
    assert [json.loads(e)["text"] for e in sub.ready()] == ["x" * 200]
    assert await sub.get() is None  # the end is still there after a ready()


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


def _fill(log: EventLog, n: int, size: int = 100) -> None:
    for _ in range(n):
        log.publish({"type": "stream", "text": "x" * size})


async def test_a_shared_budget_bounds_every_log_together_oldest_first():
    budget = ReplayBudget(limit_bytes=1_500)
    a = EventLog(100, 1_000_000, 1_000_000, budget=budget, owner="t1")
    b = EventLog(100, 1_000_000, 1_000_000, budget=budget, owner="t2")
    _fill(a, 5)
    assert budget.used == a.buffered_bytes and budget.usage("t1") == budget.used
    _fill(b, 8)  # over the budget: a's events are the oldest, they go first
    assert budget.used <= budget.limit
    assert budget.used == a.buffered_bytes + b.buffered_bytes
    assert a.oldest_seq > 1 and b.oldest_seq == 1
    _fill(a, 4)  # now b's are the oldest
    assert b.oldest_seq > 1 and a.oldest_seq <= 6
    assert budget.usage("t1") + budget.usage("t2") == budget.used <= budget.limit
    assert [json.loads(e)["seq"] for e in a.replay(0)] == list(range(a.oldest_seq, 10))


async def test_a_logs_own_bounds_and_its_close_give_budget_back():
    budget = ReplayBudget(limit_bytes=1_000_000)
    a = EventLog(3, 1_000_000, 1_000_000, budget=budget, owner="t1")
    b = EventLog(100, 250, 1_000_000, budget=budget, owner="t1")
    _fill(a, 10)
    _fill(b, 10)
    assert len(a.replay(0)) == 3 and len(b.replay(0)) == 1
    assert budget.used == a.buffered_bytes + b.buffered_bytes == budget.usage("t1")
    a.close()
    b.close()
    assert budget.used == 0 and budget.usage("t1") == 0 and not budget._heads
    assert budget.status("t1") == {"bytes": 0, "limit_bytes": 1_000_000}


async def test_an_event_larger_than_the_budget_is_sent_but_not_kept():
    budget = ReplayBudget(limit_bytes=50)
    log = EventLog(100, 1_000_000, 1_000_000, budget=budget, owner="t1")
    sub = log.subscribe()
    _fill(log, 2)
    assert budget.used == 0 and log.oldest_seq == 3  # memory holds nothing
    assert json.loads(await sub.get())["seq"] == 1  # subscribers still got it
    for i in range(50):  # logs that empty and refill are ranked once
        log.publish({"type": "x", "i": i})
    assert len(budget._heads) <= 1
