"""Tool schemas for the three APIs, and tool calls shaped as each SDK sends them (dicts and
objects), carried out end to end against a real server."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from client_faults import dead_url
from kss_client import Client, KssError, handle_tool_call, handle_tool_calls, tool_schemas

from tests.conftest import KEY

PLOT = "import matplotlib.pyplot as plt\nx = 41\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()\n"


def chat_call(call_id: str, code: str, name: str = "run_python") -> dict[str, Any]:
    arguments = json.dumps({"code": code})
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_schemas_for_the_three_apis_say_what_is_true_of_this_server() -> None:
    chat = tool_schemas("openai_chat", timeout=30, files=["sales.csv"])
    assert [t["function"]["name"] for t in chat] == ["run_python", "list_files"]
    run = chat[0]["function"]
    assert chat[0]["type"] == "function" and run["strict"] is True
    assert run["parameters"]["required"] == ["code"]
    assert run["parameters"]["additionalProperties"] is False
    description = run["description"]
    for fact in ("State persists", "/mnt/data", "sales.csv", "pandas", "no network", "30 seconds"):
        assert fact in description
    responses = tool_schemas("openai_responses", list_files=False)
    assert responses == [
        {
            "type": "function",
            "name": "run_python",
            "description": responses[0]["description"],
            "parameters": run["parameters"],
            "strict": True,
        }
    ]
    anthropic = tool_schemas("anthropic")
    assert set(anthropic[0]) == {"name", "description", "input_schema"}
    assert anthropic[1]["input_schema"]["properties"] == {}
    json.dumps([chat, responses, anthropic])


async def test_openai_chat_tool_calls_then_a_user_message_with_the_figure(client: Client) -> None:
    s = client.session("tools-chat")
    sdk_like = SimpleNamespace(
        id="call_2",
        type="function",
        function=SimpleNamespace(name="run_python", arguments=json.dumps({"code": "x + 1"})),
    )
    messages = await handle_tool_calls(s, [chat_call("call_1", PLOT), sdk_like])
    assert [m["role"] for m in messages] == ["tool", "tool", "user"]
    first, second, images = messages
    assert first["tool_call_id"] == "call_1" and first["content"].startswith("status: ok")
    assert "images: 1 attached" in first["content"]
    assert second["tool_call_id"] == "call_2" and second["content"].endswith("result:\n42")
    assert images["content"][0]["type"] == "text" and "call_1" in images["content"][0]["text"]
    assert images["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


async def test_openai_responses_function_call_output_carries_the_image(client: Client) -> None:
    s = client.session("tools-responses")
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_9",
        "name": "run_python",
        "arguments": json.dumps({"code": PLOT}),
    }
    [item] = await handle_tool_call(s, call)
    assert item["type"] == "function_call_output" and item["call_id"] == "call_9"
    assert [part["type"] for part in item["output"]] == ["input_text", "input_image"]
    [text_only] = await handle_tool_call(s, {**call, "arguments": '{"code": "x"}'})
    assert text_only["output"].endswith("result:\n41")


async def test_anthropic_tool_results_in_one_user_message(client: Client) -> None:
    s = client.session("tools-anthropic")
    blocks = [
        {"type": "tool_use", "id": "toolu_1", "name": "run_python", "input": {"code": "y = 1"}},
        SimpleNamespace(type="tool_use", id="toolu_2", name="run_python", input={"code": "y / 0"}),
        {"type": "tool_use", "id": "toolu_3", "name": "list_files", "input": {}},
    ]
    [message] = await handle_tool_calls(s, blocks, "anthropic")
    assert message["role"] == "user"
    ok, failed, files = message["content"]
    assert (ok["type"], ok["tool_use_id"], ok["is_error"]) == ("tool_result", "toolu_1", False)
    assert failed["is_error"] is True
    text = failed["content"][0]["text"]
    assert "----> 1 y / 0" in text and text.endswith("ZeroDivisionError: division by zero")
    assert files["content"][0]["text"] == "The work dir is empty."


async def test_list_files_names_sizes_and_urls(client: Client) -> None:
    s = client.session("tools-files")
    await s.upload("sales.csv", b"a,b\n1,2\n")
    [message] = await handle_tool_call(s, chat_call("c", "", name="list_files"))
    assert message["content"] == (
        "1 file in the work dir (download URLs need the API key):\n"
        f"- sales.csv (8 B, upload): {s.file_url('sales.csv')}"
    )


async def test_bad_calls_are_answered_not_run(client: Client) -> None:
    s = client.session("tools-bad")
    broken = {"id": "c1", "type": "function", "function": {"name": "run_python", "arguments": "{"}}
    unknown = chat_call("c2", "1", name="shell")
    empty = chat_call("c3", "   ")
    messages = await handle_tool_calls(s, [broken, unknown, empty])
    assert "arguments are not valid JSON" in messages[0]["content"]
    assert "Unknown tool 'shell'" in messages[1]["content"]
    assert "'code' must be a non-empty string" in messages[2]["content"]
    with pytest.raises(ValueError):
        await handle_tool_call(s, {"name": "run_python"})  # no provider's shape


async def test_a_server_that_is_down_is_one_line_for_the_model() -> None:
    async with Client(dead_url(), KEY) as c:
        s = c.session("down")
        call = {"type": "tool_use", "id": "t", "name": "run_python", "input": {"code": "1"}}
        [message] = await handle_tool_call(s, call)
        [result] = message["content"]
        assert result["is_error"] is True
        [text] = result["content"]
        assert text["text"].startswith("The code interpreter cannot be reached right now")
        assert "\n" not in text["text"] and "Traceback" not in text["text"]
        with pytest.raises(KssError) as err:
            await handle_tool_call(s, call, raise_errors=True)
        assert err.value.code == "unreachable"
