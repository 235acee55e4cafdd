"""The table printed at the end of a run, and the JSON written beside it."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.stats import Metric

PEER = "gateway"
FLOOR = "floor"
COLUMNS = ("scenario", "system", "median", "p95", "min", "unit", "n", "vs KG", "vs floor", "note")


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"


def ratio(metric: Metric, base: Metric | None) -> str:
    """`metric` over `base` on the medians, as '0.52x'; '-' where it means nothing."""
    if base is None or base is metric or metric.median is None or not base.median:
        return "-"
    return f"{metric.median / base.median:.2f}x"


def ratios(metrics: list[Metric]) -> dict[int, tuple[str, str]]:
    by_key: dict[tuple[tuple[str, str], str], Metric] = {(m.key, m.system): m for m in metrics}
    out = {}
    for metric in metrics:
        if metric.system == FLOOR or metric.unit == "count":
            out[id(metric)] = ("-", "-")
            continue
        peer = by_key.get((metric.key, PEER))
        floor = by_key.get((metric.key, FLOOR))
        vs_peer = "-" if metric.system == PEER else ratio(metric, peer)
        out[id(metric)] = (vs_peer, ratio(metric, floor))
    return out


def table(metrics: list[Metric], settings: dict[str, dict[str, Any]]) -> str:
    """The printed table; ratios are ours (or KG) divided by the peer's / floor's median."""
    rel = ratios(metrics)
    rows: list[tuple[str, ...]] = []
    for m in metrics:
        name = f"{m.scenario} {m.title}"
        if not m.available:
            who = "all" if m.label == "-" else m.label
            rows.append((name, who, "n/a", "", "", "", "", "", "", m.note))
            continue
        unit = m.unit if m.unit == "-" else f"{m.unit} ({m.better} better)"
        note = m.note + (f" errors={m.errors}" if m.errors else "")
        vs_peer, vs_floor = rel[id(m)]
        rows.append(
            (
                name,
                m.label,
                fmt(m.median),
                fmt(m.p95),
                fmt(m.min),
                unit,
                str(len(m.samples)),
                vs_peer,
                vs_floor,
                note.strip(),
            )
        )
    widths = [max(len(col), *(len(row[i]) for row in rows)) for i, col in enumerate(COLUMNS)]
    widths[-1] = len(COLUMNS[-1])  # the note column runs free
    lines = ["  ".join(col.ljust(w) for col, w in zip(COLUMNS, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    lines.append("ratios: median of the row / median of Kernel Gateway or of the ZMQ floor.")
    for name, values in settings.items():
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(line.rstrip() for line in lines)


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "loadavg": [round(value, 2) for value in load],
    }


def write_json(
    path: Path,
    metrics: list[Metric],
    settings: dict[str, dict[str, Any]],
    config: dict[str, Any],
    started: datetime,
    load_before: dict[str, Any],
) -> None:
    rel = ratios(metrics)
    results = []
    for m in metrics:
        row = m.as_dict()
        row["ratio_vs_kg"], row["ratio_vs_floor"] = rel.get(id(m), ("-", "-"))
        results.append(row)
    doc = {
        "date": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "command": " ".join([sys.executable, "-m", "bench", *sys.argv[1:]]),
        "env": {k: v for k, v in os.environ.items() if k.startswith("BENCH_")},
        "machine": {"at_start": load_before, "at_end": machine()},
        "config": config,
        "systems": settings,
        "results": results,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
