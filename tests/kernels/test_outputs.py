"""The pure output rules, driven by recorded iopub message contents (no kernel)."""

import pytest

from kernels.outputs import EVENT_OVERHEAD, MalformedMessage, OutputCollector, event_from_message


def collect(messages, client_cap=10_000, text_cap=1_000, max_events=20_000):
    c = OutputCollector(client_cap=client_cap, text_cap=text_cap, max_events=max_events)
    sent = []
    for msg_type, content in messages:
        event = event_from_message(msg_type, content)
        if event is not None:
            sent.extend(c.accept(event))
    return c, sent


def test_streams_coalesce_per_name_like_nbclient():
    c, sent = collect(
        [
            ("stream", {"name": "stdout", "text": "a"}),
            ("stream", {"name": "stdout", "text": "b"}),
            ("stream", {"name": "stderr", "text": "e"}),
            ("stream", {"name": "stdout", "text": "c"}),
        ]
    )
    assert [e["text"] for e in sent] == ["a", "b", "e", "c"]  # clients get every chunk
    assert c.outputs == [
        {"output_type": "stream", "name": "stdout", "text": "ab"},
        {"output_type": "stream", "name": "stderr", "text": "e"},
        {"output_type": "stream", "name": "stdout", "text": "c"},
    ]
    assert sent[0]["text"] == "a"  # coalescing never mutates what was sent
    assert (c.stdout.text, c.stderr.text) == ("abc", "e")


def test_result_error_and_display():
    c, sent = collect(
        [
            (
                "display_data",
                {
                    "data": {"image/png": "iVBOR", "text/plain": "<Figure>"},
                    "metadata": {},
                    "transient": {},
                },
            ),
            ("execute_result", {"execution_count": 3, "data": {"text/plain": "2"}, "metadata": {}}),
            ("error", {"ename": "ValueError", "evalue": "bad", "traceback": ["tb"]}),
            ("status", {"execution_state": "idle"}),
        ]
    )
    assert [e["type"] for e in sent] == ["display", "result", "error"]
    assert c.result == {"text/plain": "2"}
    assert c.error == {"ename": "ValueError", "evalue": "bad", "traceback": ["tb"]}
    assert [o["output_type"] for o in c.outputs] == ["display_data", "execute_result", "error"]


def test_clear_output_wait_clears_on_next_output():
    c, _ = collect(
        [
            ("stream", {"name": "stdout", "text": "1"}),
            ("clear_output", {"wait": True}),
            ("stream", {"name": "stdout", "text": "2"}),
        ]
    )
    assert c.outputs == [{"output_type": "stream", "name": "stdout", "text": "2"}]
    c, _ = collect([("stream", {"name": "stdout", "text": "1"}), ("clear_output", {"wait": False})])
    assert c.outputs == []


def test_update_display_data_replaces_by_display_id():
    c, sent = collect(
        [
            (
                "display_data",
                {"data": {"text/plain": "v1"}, "metadata": {}, "transient": {"display_id": "d"}},
            ),
            ("stream", {"name": "stdout", "text": "x"}),
            (
                "update_display_data",
                {"data": {"text/plain": "v2"}, "metadata": {}, "transient": {"display_id": "d"}},
            ),
        ]
    )
    assert sent[-1]["update"] is True and sent[-1]["display_id"] == "d"
    assert c.outputs[0]["data"] == {"text/plain": "v2"}
    assert len(c.outputs) == 2


def test_client_cap_truncates_with_marker_and_drops_the_rest():
    messages = [("stream", {"name": "stdout", "text": "x" * 400})] * 10
    c, sent = collect(messages, client_cap=1000)
    assert c.truncated
    # two chunks fit, the third is cut to the room left, then one marker, then nothing;
    # every event also costs EVENT_OVERHEAD bytes of the cap
    room = 1000 - 3 * EVENT_OVERHEAD - 800
    assert [len(e["text"]) for e in sent[:-1]] == [400, 400, room]
    assert "output truncated" in sent[-1]["text"]
    assert c.outputs[0]["text"].startswith("x" * (800 + room))


def test_empty_events_are_capped_by_count_and_by_their_overhead():
    empty = ("display_data", {"data": {}, "metadata": {}})
    c, sent = collect([empty] * 500, client_cap=10**9, max_events=100)
    assert len(sent) == 101 and c.truncated and "more than 100 outputs" in sent[-1]["text"]
    for kind in (empty, ("clear_output", {"wait": True})):
        c, sent = collect([kind] * 500, client_cap=100 * EVENT_OVERHEAD)
        assert len(sent) == 101 and c.truncated and "output truncated" in sent[-1]["text"]


@pytest.mark.parametrize(
    "msg_type, content",
    [
        ("stream", {"name": "stdout", "text": 123}),
        ("stream", {"name": "nowhere", "text": "x"}),
        ("stream", "not an object"),
        ("display_data", {"data": "x", "metadata": {}}),
        ("display_data", {"data": {"text/plain": 5}, "metadata": {}}),
        ("display_data", {"data": {}, "metadata": [], "transient": {}}),
        ("display_data", {"data": {}, "metadata": {}, "transient": {"display_id": 7}}),
        ("execute_result", {"data": {"text/plain": ["ok", 3]}, "metadata": {}}),
        ("error", {"ename": None, "evalue": "v", "traceback": []}),
        ("error", {"ename": "E", "evalue": "v", "traceback": [1, 2]}),
    ],
)
def test_malformed_outputs_are_refused_not_passed_on(msg_type, content):
    with pytest.raises(MalformedMessage):
        event_from_message(msg_type, content)


def test_error_passes_the_cap_so_the_failure_is_visible():
    messages = [
        ("stream", {"name": "stdout", "text": "x" * 2000}),
        ("error", {"ename": "E", "evalue": "v", "traceback": []}),
    ]
    c, sent = collect(messages, client_cap=1000)
    assert sent[-1]["type"] == "error" and c.error["ename"] == "E"


def test_text_cap_marks_truncation():
    c, _ = collect([("stream", {"name": "stdout", "text": "y" * 5000})], text_cap=100)
    assert c.stdout.truncated
    assert c.stdout.text.startswith("y" * 100)
    assert "output truncated" in c.stdout.text


def test_huge_traceback_is_bounded():
    event = event_from_message(
        "error", {"ename": "E", "evalue": "v", "traceback": ["z" * 10_000] * 100}
    )
    assert sum(map(len, event["traceback"])) <= 64 * 1024


def test_long_trickles_coalesce_correctly_around_other_outputs_and_clears():
    display = ("display_data", {"data": {"text/plain": "d"}, "metadata": {}, "transient": {}})
    chunks = [("stream", {"name": "stdout", "text": f"{i}\n"}) for i in range(1000)]
    c, sent = collect([*chunks, display, *chunks[:3]], client_cap=10**9, text_cap=10**9)
    assert len(sent) == 1004
    assert c.outputs[0]["text"] == "".join(f"{i}\n" for i in range(1000))
    assert c.outputs[1]["output_type"] == "display_data"
    assert c.outputs[2]["text"] == "0\n1\n2\n"
    c, _ = collect([*chunks[:5], ("clear_output", {"wait": False}), *chunks[5:7]])
    assert c.outputs == [{"output_type": "stream", "name": "stdout", "text": "5\n6\n"}]
    c, _ = collect([*chunks[:5], ("clear_output", {"wait": True}), *chunks[5:7]])
    assert c.outputs == [{"output_type": "stream", "name": "stdout", "text": "5\n6\n"}]
