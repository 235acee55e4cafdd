"""The chatbot loop with a scripted model in place of an LLM, against a real server.

    KSS_API_KEY=... python examples/scripted_model.py [--url ...] [--user ...] [--out DIR]

The same loop as examples/anthropic_chat.py, but the "model" is a script that decides its
next tool call from what the tool results really said, so the whole path runs without an
LLM key (the test suite runs it): a CSV is uploaded; three analysis turns build on each
other's variables (load, group, shares); a chart reaches the model as an image block; a
wrong column name fails and the model recovers by asking for the columns and using the
right one; the notebook of the session is downloaded at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kss_client

CSV = "region,month,amount\n" + "".join(
    f"{region},{month},{base + 10 * month}\n"
    for region, base in (("north", 100), ("south", 80), ("east", 60), ("west", 40))
    for month in range(1, 7)
)


def tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in message["content"] if b.get("type") == "tool_result"]


def text_of(result: dict[str, Any]) -> str:
    return "\n".join(b["text"] for b in result["content"] if b["type"] == "text")


@dataclass
class ScriptedModel:
    """Anthropic-shaped replies chosen from what the conversation really contains."""

    calls: int = 0
    seen: list[str] = field(default_factory=list)  # each tool result's text
    images: list[int] = field(default_factory=list)  # image blocks per tool result
    amount_column: str = ""

    def _use(self, code: str) -> dict[str, Any]:
        self.calls += 1
        block = {"type": "tool_use", "id": f"toolu_{self.calls}", "name": "run_python"}
        return {"role": "assistant", "content": [{**block, "input": {"code": code}}]}

    def reply(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        last = messages[-1]
        if last["role"] == "user" and isinstance(last["content"], list):
            for result in tool_results(last):
                self.seen.append(text_of(result))
                self.images.append(sum(b["type"] == "image" for b in result["content"]))
        step = len(self.seen)
        if step == 0:
            return self._use("import pandas as pd\ndf = pd.read_csv('sales.csv')\ndf.shape")
        if step == 1:
            return self._use("by_region = df.groupby('region')['amount'].sum()\nby_region")
        if step == 2:
            return self._use("share = (by_region / by_region.sum()).round(3)\nshare.to_dict()")
        if step == 3:
            plot = "import matplotlib.pyplot as plt\nby_region.plot.bar(title='Sales')\nplt.show()"
            return self._use(plot)
        if step == 4:
            return self._use("df['Revenue'].mean()")  # a column that does not exist
        if step == 5:
            if "KeyError: 'Revenue'" not in self.seen[-1]:
                raise AssertionError(f"expected the KeyError, got {self.seen[-1]!r}")
            return self._use("list(df.columns)")  # recover: look at what is there
        if step == 6:
            columns = re.findall(r"'([^']+)'", self.seen[-1].split("result:", 1)[1])
            self.amount_column = next(c for c in columns if "amount" in c.lower())
            return self._use(f"float(round(df[{self.amount_column!r}].mean(), 2))")
        shares = self.seen[2].split("result:", 1)[1].strip()
        mean = self.seen[6].split("result:", 1)[1].strip()
        answer = f"North leads. Shares by region: {shares}. Mean monthly amount: {mean}."
        return {"role": "assistant", "content": [{"type": "text", "text": answer}]}


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    model: ScriptedModel
    answer: str
    notebook: dict[str, Any]


async def run_conversation(url: str, api_key: str, user: str) -> Conversation:
    """The whole chatbot loop: upload, model turns with tool calls, notebook download."""
    async with kss_client.Client(url, api_key) as kss:
        session = kss.session(user)
        await session.upload("sales.csv", CSV.encode())
        model = ScriptedModel()
        question = "Which region sells most, what share does each have, and the mean amount?"
        messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
        while True:
            reply = model.reply(messages)
            messages.append(reply)
            calls = [b for b in reply["content"] if b["type"] == "tool_use"]
            if not calls:
                break
            messages += await kss_client.handle_tool_calls(session, calls, "anthropic")
        await session.note(f"**Answer:** {reply['content'][0]['text']}")
        notebook = await session.notebook()
    return Conversation(messages, model, reply["content"][0]["text"], notebook)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("KSS_URL", "http://127.0.0.1:8765"))
    parser.add_argument("--api-key", default=os.environ.get("KSS_API_KEY", ""))
    parser.add_argument("--user", default=os.environ.get("KSS_USER", "scripted"))
    parser.add_argument("--out", type=Path, default=Path("."), help="where the notebook goes")
    args = parser.parse_args()
    conversation = asyncio.run(run_conversation(args.url, args.api_key, args.user))
    for n, text in enumerate(conversation.model.seen, 1):
        images = conversation.model.images[n - 1]
        print(f"--- tool result {n} ({images} image blocks)\n{text}")
    print(f"--- answer\n{conversation.answer}")
    path = args.out / f"{args.user}.ipynb"
    path.write_text(json.dumps(conversation.notebook, indent=1))
    print(f"--- notebook: {path}")


if __name__ == "__main__":
    main()
