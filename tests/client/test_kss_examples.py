"""The examples: the scripted-model chatbot loop runs against a real server; the OpenAI
and Anthropic ones import and explain themselves without their SDKs or keys."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import nbformat

from examples.scripted_model import run_conversation
from tests.conftest import KEY, RunningServer

ROOT = Path(__file__).resolve().parents[2]


async def test_the_scripted_chatbot_loop(kss: RunningServer) -> None:
    talk = await run_conversation(kss.base, KEY, "scripted")
    model = talk.model
    assert len(model.seen) == 7
    load, group, share, chart, failed, _, mean = model.seen
    assert load.endswith("result:\n(24, 3)")
    assert "north    810" in group  # built on df from the turn before
    assert "'north': 0.321" in share  # built on by_region from the turn before
    assert model.images == [0, 0, 0, 1, 0, 0, 0]  # the chart reached the model as an image
    assert "images: 1 attached" in chart
    assert failed.startswith("status: error (KeyError)") and "KeyError: 'Revenue'" in failed
    assert model.amount_column == "amount" and mean.endswith("result:\n105.0")
    assert talk.answer.endswith("Mean monthly amount: 105.0.")
    nb = nbformat.from_dict(talk.notebook)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 7 and nb.cells[-1].cell_type == "markdown"
    assert any("image/png" in o.get("data", {}) for o in code[3].outputs)


async def test_the_llm_examples_exit_with_a_clear_message_without_a_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    for name in ("openai_chat.py", "anthropic_chat.py"):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples" / name),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == 1
        message = err.decode().strip()
        assert message.startswith(("This example needs the", "Set ")), message
        assert "Traceback" not in message
