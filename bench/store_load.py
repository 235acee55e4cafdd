"""Transcript write throughput of our stores, driven in-process.

Run with the server's interpreter and the server's checkout on `PYTHONPATH` (it imports
`transcript.store` and nothing of the benchmark): `append_events` is called as the
transcript writer calls it, with events encoded as the server encodes them, in batches of
a given size, on a fresh SQLite file or, with `--mongodb-uri`, a fresh MongoDB database
(dropped at the end). Prints one JSON object: rates per batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

LINE = "x" * 99 + "\n"


def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def small_event(seq: int, exec_id: str) -> str:
    """A stream event as S6's burst makes them: one printed line, ~150 bytes encoded."""
    event = {"type": "stream", "name": "stdout", "text": LINE, "id": exec_id, "seq": seq}
    return encode(event)


def big_event(seq: int, exec_id: str, size: int) -> str:
    """A coalesced stream event as S3 makes them: `size` bytes of lines."""
    text = LINE * (size // len(LINE))
    return encode({"type": "stream", "name": "stdout", "text": text, "id": exec_id, "seq": seq})


async def measure(store: Any, events: list[str], batch: int, first_seq: int) -> float:
    """Seconds to append `events` in batches of `batch`, as the transcript writer does."""
    start = time.perf_counter()
    for lo in range(0, len(events), batch):
        rows = [(first_seq + lo + i, body) for i, body in enumerate(events[lo : lo + batch])]
        await store.append_events("bench", "load", rows)
    return time.perf_counter() - start


def open_store(args: argparse.Namespace, tmp: str) -> Any:
    # the server's checkout, via PYTHONPATH
    if args.mongodb_uri:
        from transcript.store.mongo import MongoStore

        return MongoStore(args.mongodb_uri, f"kss_store_load_{uuid.uuid4().hex[:8]}")
    from transcript.store.sqlite import SqliteStore

    return SqliteStore(Path(tmp) / "store.sqlite")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    exec_id = uuid.uuid4().hex
    out: dict[str, Any] = {"small": {}, "big": {}}
    with tempfile.TemporaryDirectory(prefix="kss-store-load-") as tmp:
        store = open_store(args, tmp)
        await store.open()
        try:
            seq = 1
            small = [small_event(0, exec_id) for _ in range(args.events)]
            out["small_event_bytes"] = len(small[0])
            for batch in args.batches:
                count = min(len(small), batch * 10_000)  # batch 1 is slow: 10,000 events do
                rates = []
                for _ in range(args.rounds):
                    elapsed = await measure(store, small[:count], batch, seq)
                    seq += count
                    rates.append(count / elapsed)
                out["small"][str(batch)] = rates
            big = [big_event(0, exec_id, args.big_bytes) for _ in range(args.big_events)]
            rates = []
            for _ in range(args.rounds):
                elapsed = await measure(store, big, 1, seq)
                seq += len(big)
                rates.append(sum(map(len, big)) / 1e6 / elapsed)
            out["big"] = {"event_bytes": len(big[0]), "mb_per_s": rates}
        finally:
            if args.mongodb_uri:
                await store.db.client.drop_database(store.database)
            await store.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-events", type=int, default=20)
    parser.add_argument("--big-bytes", type=int, default=1_000_000)
    parser.add_argument("--mongodb-uri", default="", help="measure the MongoDB store there")
    args = parser.parse_args()
    args.batches = args.batches or [1, 50, 2000]
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
