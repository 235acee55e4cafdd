"""S10's measurements, run with the server's Python (it imports `kss_client` from .venv).

Round trips of `x + 1` through `kss_client`'s `Session.run` and through the raw REST call
a developer would write with the same HTTP library (httpx: POST, then `.json()`),
alternated sample by sample in one process so both see the same machine. Then the size in
characters of what a model would be given for three cells, as the raw REST answer and as
`for_model` (Anthropic blocks: text plus base64 images). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import httpx
import kss_client

CASES = {
    "1 MB stdout": "for _i in range(10_000):\n    print('x' * 99)\n",
    "200-row DataFrame": (
        "import pandas as pd, numpy as np\n"
        "pd.DataFrame({'x': np.arange(200), 'y': np.arange(200) ** 2,"
        " 'name': [f'row {i}' for i in range(200)]})\n"
    ),
    "3-figure cell": (
        "import matplotlib.pyplot as plt\n"
        "for i in range(3):\n"
        "    fig, ax = plt.subplots(figsize=(6, 4))\n"
        "    ax.plot(range(100), [v * i for v in range(100)])\n"
        "    plt.show()\n"
    ),
}


def model_chars(blocks: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(text characters, base64 image characters, images) of Anthropic content blocks."""
    text = sum(len(b["text"]) for b in blocks if b["type"] == "text")
    images = [b["source"]["data"] for b in blocks if b["type"] == "image"]
    return text, sum(map(len, images)), len(images)


async def round_trips(url: str, key: str, n: int, warmup: int) -> dict[str, list[float]]:
    user = f"bench-s10-{uuid.uuid4().hex[:8]}"
    raw_ms: list[float] = []
    client_ms: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        kss_client.Client(url, key) as kss,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as raw,
    ):
        session = kss.session(user)
        await session.run("x = 1")
        path = f"/api/sessions/{user}/execute"
        for i in range(warmup + n):
            start = time.perf_counter()
            answer = (await raw.post(path, json={"code": "x + 1"})).json()
            raw_s = time.perf_counter() - start
            start = time.perf_counter()
            result = await session.run("x + 1")
            client_s = time.perf_counter() - start
            if answer["result"] != {"text/plain": "2"} or result.result != answer["result"]:
                raise RuntimeError(f"wrong answer: {answer['result']} / {result.result}")
            if i >= warmup:
                raw_ms.append(raw_s * 1000)
                client_ms.append(client_s * 1000)
        await session.close(purge=True)
    return {"raw_ms": raw_ms, "client_ms": client_ms}


async def sizes(url: str, key: str) -> dict[str, dict[str, int]]:
    user = f"bench-s10-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {key}"}
    out = {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as raw:
        for name, code in CASES.items():
            response = await raw.post(f"/api/sessions/{user}/execute", json={"code": code})
            response.raise_for_status()
            result = kss_client.ExecutionResult.from_json(response.json(), url)
            text, image_chars, images = model_chars(kss_client.for_model(result, "anthropic"))
            out[name] = {
                "raw": len(response.text),
                "model_text": text,
                "model_images": images,
                "model_image_chars": image_chars,
            }
        await raw.delete(f"/api/sessions/{user}", params={"purge": "true"})
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    trips = await round_trips(args.url, args.key, args.n, args.warmup)
    return {**trips, "sizes": await sizes(args.url, args.key)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    json.dump(asyncio.run(main_async(args)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
