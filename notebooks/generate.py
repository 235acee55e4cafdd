"""Regenerate the example notebooks: a scripted analysis session, exported by the server.

`make notebooks` runs this: it starts a real server (sandboxed when the machine can), uploads a
CSV, runs an analysis the way a chatbot would (narrative notes, pandas, a matplotlib chart),
and saves what `GET /api/sessions/{user}/notebook` returns.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kernels.sandbox import check_sandbox_available  # noqa: E402
from tests.client import Api  # noqa: E402
from tests.conftest import make_settings, running_server  # noqa: E402

OUT = Path(__file__).resolve().parent

STEPS: list[tuple[str, str]] = [
    (
        "note",
        "# Monthly sales by region\n\n*Question:* which region grew fastest in 2025, and "
        "is the growth steady?",
    ),
    ("code", "import pandas as pd\n\nsales = load_file('sales.csv')\nsales.head()"),
    ("code", "sales.describe()"),
    ("note", "Revenue per region and month, then the growth from January to December."),
    (
        "code",
        "by_region = sales.pivot_table(index='month', columns='region', values='revenue', "
        "aggfunc='sum')\ngrowth = (by_region.iloc[-1] / by_region.iloc[0] - 1) * 100\n"
        "growth.round(1).sort_values(ascending=False)",
    ),
    (
        "code",
        "import matplotlib.pyplot as plt\n\nax = by_region.plot(figsize=(8, 4), marker='o')\n"
        "ax.set_title('Revenue by region, 2025')\nax.set_ylabel('revenue (k$)')\n"
        "plt.tight_layout()\nplt.savefig('revenue.png')\nplt.show()",
    ),
    (
        "code",
        "best = growth.idxmax()\nprint(f'{best} grew fastest: {growth[best]:.1f}% from "
        "January to December')",
    ),
    ("code", "by_region.round(1).to_csv('revenue_by_region.csv')\nFILES"),
    (
        "note",
        "*Reading:* the fastest-growing region grew steadily month over month; the chart "
        "and the cleaned table were saved as `revenue.png` and `revenue_by_region.csv`.",
    ),
]


def sales_csv() -> bytes:
    rng = random.Random(2025)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["month", "region", "revenue", "orders"])
    trend = {"North": 1.5, "South": 4.0, "East": 2.5, "West": -0.5}
    for month in range(1, 13):
        for region, slope in trend.items():
            revenue = 100 + slope * month * 5 + rng.uniform(-6, 6)
            writer.writerow([f"2025-{month:02d}", region, round(revenue, 1), rng.randint(40, 90)])
    return out.getvalue().encode()


async def generate() -> Path:
    sandbox = "on" if check_sandbox_available() is None else "off"
    with tempfile.TemporaryDirectory() as tmp:
        settings = make_settings(Path(tmp), sandbox=sandbox, pool_size=1)
        async with running_server(settings) as srv:
            api: Api = srv.api
            user = "analyst"
            assert (await api.call("PUT", f"/api/sessions/{user}")).status == 201
            resp = await api.call("PUT", f"/api/sessions/{user}/files/sales.csv", raw=sales_csv())
            assert resp.status == 201, resp.body
            for kind, text in STEPS:
                if kind == "note":
                    resp = await api.call("POST", f"/api/sessions/{user}/notes", {"markdown": text})
                    assert resp.status == 201, resp.body
                else:
                    result = await api.execute(user, text)
                    assert result["status"] == "ok", result
            resp = await api.call("GET", f"/api/sessions/{user}/notebook")
            assert resp.status == 200, resp.body
    path = OUT / "sales-analysis.ipynb"
    path.write_bytes(resp.body)
    return path


if __name__ == "__main__":
    print(f"wrote {asyncio.run(generate())}")
