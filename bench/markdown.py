"""A results JSON as a Markdown table, for docs/performance.md.

.bench-venv/bin/python -m bench.markdown [bench/results/latest.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.config import REPO
from bench.report import fmt

GIB = 1024**3


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def header(doc: dict[str, Any]) -> list[str]:
    start = doc["machine"]["at_start"]
    end = doc["machine"]["at_end"]
    return [
        f"- date: {doc['date'][:19].replace('T', ' ')} UTC to {doc['finished'][11:19]}",
        f"- machine: {start['cores']} cores, {start['memory_bytes'] / GIB:.0f} GiB, "
        f"{start['platform']}, Python {start['python']}",
        f"- load average (1, 5, 15 min): {start['loadavg']} at start, {end['loadavg']} at end",
        f"- command: `{doc['command']}`"
        + (f" with {', '.join(f'{k}={v}' for k, v in doc['env'].items())}" if doc["env"] else ""),
    ]


def rows(doc: dict[str, Any]) -> list[str]:
    out = [
        "| scenario | system | median | p95 | min | unit | n | vs KG | vs floor | note |",
        "|---|---|--:|--:|--:|---|--:|--:|--:|---|",
    ]
    for r in doc["results"]:
        name = f"{r['scenario']} {r['title']}"
        if not r["available"]:
            who = "all" if r["label"] == "-" else r["label"]
            out.append(f"| {cell(name)} | {who} | n/a | | | | | | | {cell(r['note'])} |")
            continue
        note = r["note"] + (f" errors={r['errors']}" if r["errors"] else "")
        values = [fmt(r["median"]), fmt(r["p95"]), fmt(r["min"])]
        unit = r["unit"] if r["unit"] == "-" else f"{r['unit']} ({r['better']} better)"
        ratios = [r.get("ratio_vs_kg", "-"), r.get("ratio_vs_floor", "-")]
        line = [cell(name), r["label"], *values, unit, str(r["n"]), *ratios, cell(note.strip())]
        out.append("| " + " | ".join(line) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else REPO / "bench" / "results" / "latest.json"
    doc = json.loads(path.read_text())
    print("\n".join([*header(doc), "", *rows(doc)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
