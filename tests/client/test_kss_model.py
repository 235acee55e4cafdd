"""Model-ready results, as pure functions over results recorded from a real server
(tests/client/recorded/, sandboxed kernel) and over made-up extremes."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kss_client import ExecutionResult, for_model, model_view
from kss_client.client import follow_pages
from kss_client.errors import KssError
from kss_client.text import cut, settle_carriage_returns, share, strip_ansi
from kss_client.tracebacks import short_traceback

RECORDED = Path(__file__).parent / "recorded"
BASE = "http://kss.example:8765"


def recorded(name: str) -> ExecutionResult:
    return ExecutionResult.from_json(json.loads((RECORDED / f"{name}.json").read_text()), BASE)


def made(**fields: Any) -> ExecutionResult:
    body = {
        "id": "x",
        "status": "ok",
        "execution_count": 1,
        "stdout": "",
        "stderr": "",
        "result": None,
        "outputs": [],
        "error": None,
        "files": [],
        "duration_ms": 5.0,
        "kernel_restarted": False,
        "truncated": False,
    }
    return ExecutionResult.from_json({**body, **fields}, BASE)


def png(size: int) -> str:
    return base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8)).decode()


def test_status_comes_first_and_ok_is_short() -> None:
    view = model_view(recorded("stderr_warn"))
    assert view.text.splitlines()[0].startswith("status: ok (")
    assert "stderr:\n" in view.text and "UserWarning: careful" in view.text
    assert view.text.endswith("result:\n42") and not view.is_error


def test_a_megabyte_of_stdout_is_cut_head_and_tail_within_the_budget() -> None:
    lines = [f"line {i:07d}\n" for i in range(80_000)]  # ~1 MB
    text = "".join(lines)
    result = made(
        stdout=text[:100_000] + "\n[output truncated: text exceeded 100000 bytes]\n",
        outputs=[{"output_type": "stream", "name": "stdout", "text": text}],
        truncated=True,
    )
    view = model_view(result, max_chars=4000)
    assert len(view.text) <= 4000
    assert "line 0000000" in view.text and "line 0079999" in view.text  # head and tail
    assert "characters cut" in view.text and "lines ..." in view.text
    assert "server cut this execution's output" in view.text


def test_cut_marker_says_how_much_went() -> None:
    text = "a" * 500 + "\n" + "b" * 500
    out = cut(text, 200)
    assert len(out) <= 200 and out.startswith("a") and out.endswith("b")
    head, rest = out.split("\n[... ", 1)
    said, tail = rest.split(" ...]\n", 1)
    assert said == f"{len(text) - len(head) - len(tail)} characters cut, 1 line"
    assert cut("short", 200) == "short"


def test_share_keeps_small_sections_whole() -> None:
    assert share(100, [10, 500, 500]) == [10, 45, 45]
    assert share(100, [10, 20]) == [10, 20]
    assert share(0, [5]) == [0]


def test_ansi_and_progress_bars_are_settled() -> None:
    assert strip_ansi("\x1b[31mred\x1b[39m plain") == "red plain"
    assert settle_carriage_returns("10%\r50%\r100%\ndone\n") == "100%\ndone\n"
    view = model_view(
        made(outputs=[{"output_type": "stream", "name": "stdout", "text": "\x1b[1mB\x1b[0m\r"}])
    )
    assert "\x1b" not in view.text


def test_an_error_is_a_short_plain_traceback_with_the_users_frames() -> None:
    view = model_view(recorded("pandas_keyerror"))
    text = view.text
    assert view.is_error and text.startswith("status: error (KeyError)")
    assert "\x1b" not in text and "site-packages" not in text
    assert "Cell In[2], line 3" in text and "----> 3 df['Revenue'].sum()" in text
    assert "... 2 frames in pandas ..." in text and "... 5 frames in pandas ..." in text
    assert "The above exception was the direct cause" in text
    assert text.rstrip().endswith("KeyError: 'Revenue'")


def test_nested_user_frames_stay_and_stdlib_frames_fold() -> None:
    tb = short_traceback(recorded("nested_user").error)  # type: ignore[arg-type]
    assert "in outer()" in tb and "in inner()" in tb
    assert "... 3 frames in json ..." in tb and "decoder.py" not in tb
    assert tb.splitlines()[-1].startswith("JSONDecodeError: Expecting property name")


def test_syntax_errors_and_name_errors() -> None:
    tb = short_traceback(recorded("syntax_error").error)  # type: ignore[arg-type]
    assert tb.splitlines()[-1] == "SyntaxError: invalid syntax" and "def f(:" in tb
    text = model_view(recorded("name_error")).text
    assert "stdout:\nbefore" in text
    assert text.endswith("NameError: name 'undefined_name' is not defined")


def test_the_final_line_is_always_there_even_when_the_traceback_is_huge() -> None:
    frame = (
        "\x1b[36mCell In[1], line 2\x1b[39m, in f(n)\n"
        "      1 def f(n):\n"
        "----> 2     return f(n + 1)\n"
    )
    error = {
        "ename": "RecursionError",
        "evalue": "maximum recursion depth exceeded",
        "traceback": ["RecursionError  Traceback (most recent call last)"] + [frame] * 3000,
    }
    view = model_view(made(status="error", error=error), max_chars=3000)
    assert len(view.text) <= 3000
    assert view.text.endswith("RecursionError: maximum recursion depth exceeded")
    assert "[the frame above repeated 2,999 more times]" in view.text
    long = made(status="error", error={**error, "evalue": "x" * 50_000})
    text = model_view(long, max_chars=3000).text
    assert len(text) <= 3000 and "characters cut" in text


def test_a_timeout_is_explained_as_a_timeout() -> None:
    text = model_view(recorded("timeout")).text
    assert text.startswith("status: timeout: the code was still running at its time limit")
    assert "stdout:\nstart" in text and "time.sleep(30)" in text


def test_a_dead_kernel_and_the_restart_after_it() -> None:
    died = model_view(recorded("kernel_died")).text
    assert "the Python process died (the kernel process exited with code 3)" in died
    after = model_view(recorded("after_death")).text
    assert "kernel was restarted" in after and "variables" in after
    assert after.endswith("result:\n2")


def test_a_dataframe_is_its_text_form() -> None:
    text = model_view(recorded("dataframe_200")).text
    assert "[200 rows x 3 columns]" in text and "<table" not in text
    assert len(text) < 600


def test_written_files_are_listed_with_absolute_urls() -> None:
    text = model_view(recorded("files_written")).text
    assert f"- chart.png (22.5 KB, created): {BASE}/api/sessions/rec/files/chart.png" in text


def test_figures_become_image_blocks_for_each_provider() -> None:
    result = recorded("three_figures")
    anthropic = for_model(result, "anthropic")
    assert anthropic[0]["type"] == "text" and "images: 3 attached" in anthropic[0]["text"]
    images = anthropic[1:]
    assert [b["type"] for b in images] == ["image"] * 3
    assert images[0]["source"]["type"] == "base64"
    assert images[0]["source"]["media_type"] == "image/png"
    assert base64.b64decode(images[0]["source"]["data"]).startswith(b"\x89PNG")
    assert "iVBOR" not in anthropic[0]["text"]  # no base64 in the text
    responses = for_model(result, "openai_responses")
    assert responses[0]["type"] == "input_text"
    assert responses[1]["type"] == "input_image"
    assert responses[1]["image_url"].startswith("data:image/png;base64,iVBOR")
    chat = for_model(result, "openai_chat")
    assert chat[0]["type"] == "text" and chat[1]["type"] == "image_url"
    assert chat[1]["image_url"]["url"].startswith("data:image/png;base64,")
    json.dumps(chat)


def test_images_are_capped_by_count_and_size() -> None:
    outputs = [
        {"output_type": "display_data", "data": {"image/png": png(size), "text/plain": "<Figure>"}}
        for size in (1000, 5_000_000, 1000, 1000)
    ]
    view = model_view(made(outputs=outputs), max_images=2, max_image_bytes=1_000_000)
    assert len(view.images) == 2
    assert "images: 2 attached; 1 more left out (at most 2 per call)" in view.text
    assert "1 left out for size (over 976.6 KB)" in view.text
    assert "<Figure>" not in view.text


def test_a_provider_name_that_does_not_exist() -> None:
    with pytest.raises(ValueError):
        for_model(recorded("after_death"), "gemini")


async def test_listing_pages_are_followed_until_next_is_absent() -> None:
    pages = {
        None: {"files": [{"name": "a"}, {"name": "b"}], "next": "b"},
        "b": {"files": [{"name": "c"}], "next": "c"},
        "c": {"files": [], "next": None},
    }
    asked: list[str | None] = []

    async def fetch(after: str | None) -> Any:
        asked.append(after)
        return pages[after]

    assert [f["name"] for f in await follow_pages(fetch)] == ["a", "b", "c"]
    assert asked == [None, "b", "c"]

    async def unpaginated(after: str | None) -> Any:
        return {"files": [{"name": "only"}]}

    assert await follow_pages(unpaginated) == [{"name": "only"}]

    async def looping(after: str | None) -> Any:
        return {"files": [{"name": "x"}], "next": "same"}

    assert len(await follow_pages(looping)) == 2  # a repeated cursor ends the walk

    async def broken(after: str | None) -> Any:
        return {"items": []}

    with pytest.raises(KssError):
        await follow_pages(broken)


def test_a_restore_from_hibernation_tells_the_model_what_came_back() -> None:
    result = made(
        kernel_restarted=True,
        restored=["df", "model"],
        lost=[{"name": "fh", "why": "open file"}],
    )
    view = model_view(result)
    assert "restored the earlier variables: df, model." in view.text
    assert "Not restored (re-create them if you need them): fh (open file)." in view.text
    assert "are gone" not in view.text
    assert "are gone" in model_view(made(kernel_restarted=True)).text
