"""Render deploy/grafana/whisper-serve.json from a live Prometheus as an HTML page of charts.

Grafana is not packaged in Debian, so the README's dashboard picture is made this way: every
panel's queries run through Prometheus' HTTP API (`query_range`) and become inline SVG line
charts in one page, laid out like the Grafana grid, which headless Chromium then screenshots
(`browser.screenshot`). Same queries, same data; only the drawing is ours.

    python scripts/grafana_render.py --prometheus http://127.0.0.1:9090 --out page.html
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "whisper-serve.json"
COLORS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]
WIDTH, HEIGHT, PAD = 760, 230, 44


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, expr, legend format) for every target of every panel."""
    return [
        (panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def _legend(fmt: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)
    return " ".join(text.split()) or json.dumps(labels)


def query_range(prometheus: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    step = max(1.0, (end - start) / 200)
    params = {"query": expr, "start": start, "end": end, "step": step}
    body = httpx.get(f"{prometheus}/api/v1/query_range", params=params, timeout=30).json()
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body.get('error')}")
    return list(body["data"]["result"])


def _chart(series: list[tuple[str, list[tuple[float, float]]]], start: float, end: float) -> str:
    values = [v for _, points in series for _, v in points]
    top = max(values, default=1.0) or 1.0
    top *= 1.1

    def x(t: float) -> float:
        return PAD + (t - start) / max(end - start, 1e-9) * (WIDTH - PAD - 10)

    def y(v: float) -> float:
        return HEIGHT - 24 - v / top * (HEIGHT - 40)

    parts = [f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">']
    for i in range(5):
        level = top * i / 4
        parts.append(
            f'<line x1="{PAD}" x2="{WIDTH - 10}" y1="{y(level):.1f}" y2="{y(level):.1f}" '
            f'stroke="#2c3235"/><text x="{PAD - 6}" y="{y(level) + 4:.1f}" fill="#9fa7b3" '
            f'font-size="11" text-anchor="end">{level:.3g}</text>'
        )
    clock = (
        time.strftime("%H:%M:%S", time.gmtime(start)),
        time.strftime("%H:%M:%S", time.gmtime(end)),
    )
    parts.append(
        f'<text x="{PAD}" y="{HEIGHT - 6}" fill="#9fa7b3" font-size="11">{clock[0]}</text>'
    )
    parts.append(
        f'<text x="{WIDTH - 10}" y="{HEIGHT - 6}" fill="#9fa7b3" font-size="11" '
        f'text-anchor="end">{clock[1]} UTC</text>'
    )
    for i, (_, points) in enumerate(series):
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        color = COLORS[i % len(COLORS)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
    parts.append("</svg>")
    legend = "".join(
        f'<span style="color:{COLORS[i % len(COLORS)]}">&#9632;</span> {html.escape(name)} &nbsp; '
        for i, (name, _) in enumerate(series)
    )
    return "".join(parts) + f'<div class="legend">{legend}</div>'


def render(prometheus: str, start: float, end: float) -> tuple[str, dict[str, int]]:
    """The page, and how many series each panel drew."""
    dashboard = json.loads(DASHBOARD.read_text())
    cells, counts = [], {}
    for panel in dashboard["panels"]:
        series: list[tuple[str, list[tuple[float, float]]]] = []
        for target in panel.get("targets", []):
            for result in query_range(prometheus, target["expr"], start, end):
                points = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN",)]
                if points:
                    series.append(
                        (_legend(target.get("legendFormat", ""), result["metric"]), points)
                    )
        counts[panel["title"]] = len(series)
        cells.append(
            f'<div class="panel"><h3>{html.escape(panel["title"])}</h3>'
            f"{_chart(series[:8], start, end)}</div>"
        )
    title = html.escape(dashboard["title"])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{background:#111217;color:#d8d9da;font-family:sans-serif;margin:12px}}
h1{{font-size:18px;margin:4px 0 10px}} h3{{font-size:13px;margin:0 0 4px;color:#ccccdc}}
.grid{{display:grid;grid-template-columns:repeat(2,{WIDTH + 16}px);gap:10px}}
.panel{{background:#181b1f;border:1px solid #2c3235;padding:8px}}
.legend{{font-size:11px;color:#9fa7b3;height:30px;overflow:hidden}}</style></head>
<body><h1>{title} &mdash; deploy/grafana/whisper-serve.json, data from Prometheus</h1>
<div class="grid">{"".join(cells)}</div></body></html>"""
    return page, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    end = time.time()
    page, counts = render(args.prometheus, end - args.minutes * 60, end)
    args.out.write_text(page)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
