"""A complete chatbot with a code interpreter: OpenAI Chat Completions and kss_client.

    pip install ./client openai
    OPENAI_API_KEY=... KSS_API_KEY=... python examples/openai_chat.py [--upload sales.csv]

Each user question goes to the model with the `run_python` and `list_files` tools; the
model's tool calls run in the user's own kernel (state persists across turns) and their
results, figures included, go back to it until it answers in text.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import kss_client

SYSTEM = (
    "You are a careful data analyst. Use the run_python tool to load data, compute and "
    "plot; never invent numbers you did not compute. Answer briefly."
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("KSS_URL", "http://127.0.0.1:8765"))
    parser.add_argument("--api-key", default=os.environ.get("KSS_API_KEY", ""))
    parser.add_argument("--user", default=os.environ.get("KSS_USER", "alice"))
    parser.add_argument("--model", default=os.environ.get("OPENAI_MODEL", "gpt-4.1"))
    parser.add_argument("--upload", action="append", default=[], help="a local file to upload")
    return parser.parse_args()


async def answer(model: Any, name: str, session: kss_client.Session, messages: list[Any]) -> str:
    """Let the model call tools until it answers in text."""
    tools = kss_client.tool_schemas("openai_chat", files=[f.name for f in await session.files()])
    while True:
        response = await model.chat.completions.create(model=name, messages=messages, tools=tools)
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return message.content or ""
        messages += await kss_client.handle_tool_calls(session, message.tool_calls, "openai_chat")


async def main() -> None:
    args = parse_args()
    try:
        from openai import AsyncOpenAI
    except ImportError:
        sys.exit("This example needs the OpenAI SDK: pip install openai")
    if not os.environ.get("OPENAI_API_KEY"):
        sys.exit("Set OPENAI_API_KEY to run this example (and KSS_API_KEY for the server).")
    model = AsyncOpenAI()
    async with kss_client.Client(args.url, args.api_key) as kss:
        session = kss.session(args.user)
        for path in args.upload:
            await session.upload(os.path.basename(path), path)
        messages: list[Any] = [{"role": "system", "content": SYSTEM}]
        while question := (await asyncio.to_thread(input, "you> ")).strip():
            messages.append({"role": "user", "content": question})
            print("assistant>", await answer(model, args.model, session, messages))


if __name__ == "__main__":
    asyncio.run(main())
