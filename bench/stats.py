"""Measured values and their summaries: median, p95 (nearest rank), min."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `pct`% at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Metric:
    """One row of the table: a scenario's measure on one system."""

    scenario: str
    title: str
    system: str
    label: str
    unit: str
    samples: list[float] = field(default_factory=list)
    better: str = "lower"
    note: str = ""
    available: bool = True
    errors: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.scenario, self.title)

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def p95(self) -> float | None:
        return percentile(self.samples, 95) if self.samples else None

    @property
    def min(self) -> float | None:
        return min(self.samples) if self.samples else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "system": self.system,
            "label": self.label,
            "unit": self.unit,
            "better": self.better,
            "available": self.available,
            "n": len(self.samples),
            "median": self.median,
            "p95": self.p95,
            "min": self.min,
            "errors": self.errors,
            "note": self.note,
            "samples": [round(value, 4) for value in self.samples],
        }


def unavailable(scenario: str, title: str, reason: str) -> Metric:
    """A row for a scenario that cannot run yet."""
    return Metric(scenario, title, "-", "-", "-", available=False, note=reason)


def failed(scenario: str, title: str, system: str, label: str, reason: str) -> Metric:
    return Metric(scenario, title, system, label, "-", note=f"failed: {reason}"[:200])
