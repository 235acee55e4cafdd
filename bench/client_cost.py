"""S10: what the chatbot client (client/, `kss_client`) costs and what it saves.

Its round trip against the raw REST call in the same run (target: at most 1.1x), and the
size of what a model is given for a 1 MB stdout, a 200-row DataFrame and a 3-figure cell,
as `for_model` shapes it and as the raw REST answer would have it. Measured by
bench/client_load.py, run with the server's Python (`.venv`, where `make` installs
`kss_client`), against our server as the runner started it.
"""

from __future__ import annotations

import logging
from typing import Any

from bench.clients.base import System
from bench.config import REPO, BenchConfig
from bench.procs import run_json
from bench.scenarios import row, scenario
from bench.stats import Metric

log = logging.getLogger(__name__)

TARGET = 1.1


async def measure(base: str, key: str, cfg: BenchConfig) -> dict[str, Any]:
    argv = [
        cfg.server_python,
        str(REPO / "bench" / "client_load.py"),
        "--url",
        base,
        "--key",
        key,
        "--n",
        str(cfg.s2_n),
        "--warmup",
        str(cfg.s2_warmup),
    ]
    result: dict[str, Any] = await run_json(argv, str(REPO), cfg.scenario_budget_s)
    return result


def size_rows(system: System, sizes: dict[str, dict[str, int]]) -> list[Metric]:
    rows = []
    lines = ["model-ready sizes (characters): case, raw REST answer, for_model text, images"]
    for case, s in sizes.items():
        metric = row("S10", f"model-ready size: {case}", system, "chars")
        metric.samples = [float(s["model_text"])]
        share = s["model_text"] / s["raw"] if s["raw"] else 0.0
        images = f" + {s['model_images']} image blocks ({s['model_image_chars']:,} b64 chars)"
        metric.note = f"text; raw REST answer {s['raw']:,} chars ({share:.1%} of it)" + (
            images if s["model_images"] else ""
        )
        rows.append(metric)
        lines.append(
            f"  {case}: {s['raw']:,} -> {s['model_text']:,}"
            + (f" + {s['model_images']} images" if s["model_images"] else "")
        )
    log.info("\n".join(lines))
    return rows


@scenario("S10", "chatbot client")
async def client_cost(system: System, cfg: BenchConfig, deadline: float) -> list[Metric]:
    """kss_client vs raw REST round trip, and model-ready result sizes."""
    base, key = getattr(system, "base", None), getattr(system, "secret", None)
    if base is None or key is None:
        return []  # our server only
    data = await measure(base, key, cfg)
    client = row("S10", "round trip: kss_client Session.run", system, "ms")
    raw = row("S10", "round trip: raw REST (httpx POST + json)", system, "ms")
    client.samples, raw.samples = data["client_ms"], data["raw_ms"]
    if client.median is not None and raw.median:
        ratio = client.median / raw.median
        verdict = "meets" if ratio <= TARGET else "misses"
        client.note = f"{ratio:.2f}x raw REST ({verdict} the {TARGET}x target); alternated"
    return [client, raw, *size_rows(system, data["sizes"])]
