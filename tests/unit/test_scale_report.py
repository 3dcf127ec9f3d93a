"""`benchmarks.scale_report` renders a quick run's JSON (a real `--quick` run's output)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import scale_report

RUN = Path(__file__).resolve().parents[1] / "data" / "scale_quick.json"


def test_submit_latency_table_sets_the_service_against_the_serve_floor() -> None:
    results = json.loads(RUN.read_text())
    text = scale_report.markdown(results)
    table = text.split("## Submit latency")[1].split("## Targets")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    labels = [row.split(" | ")[0].lstrip("| ") for row in rows[1:]]
    assert labels == [
        "idle service, 50 req/s",
        "seeds' scenario (jobs running)",
        "tracker paused: durable submits, no job running",
        "Serve floor, idle: no-op `POST /v1/jobs`",
        "Serve floor, during the seeds' drain: no-op `POST /v1/jobs`",
    ]
    assert all(row.endswith("202: 100 |") or row.endswith("202: 30 |") for row in rows[1:])


def test_a_run_without_the_floor_still_renders() -> None:
    results = json.loads(RUN.read_text())
    del results["submit"]["floor"], results["submit"]["tracker_paused"]
    table = scale_report.markdown(results).split("## Submit latency")[1].split("## Targets")[0]
    assert "Serve floor" not in table and "tracker paused" not in table
