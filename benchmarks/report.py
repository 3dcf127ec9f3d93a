"""Turn raw measurements into the markdown report (the entry point of the results' rendering).

Accuracy lives in `benchmarks.accuracy`, the targets in `benchmarks.targets`, the shapes of work
section in `benchmarks.report_shapes` and the PNG plots in `benchmarks.plots`.
"""

from __future__ import annotations

from typing import Any

from benchmarks.report_format import fmt, verdict
from benchmarks.report_shapes import jobs_lines, shapes_markdown


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# Benchmark results ({meta['mode']} mode)",
        "",
        f"- command: `{meta['command']}`",
        f"- when: {meta['started']}, took {fmt(meta.get('wall_s'), 0)} s; "
        f"host: {meta['host']['cpus']} CPUs, load average at start "
        f"{' / '.join(fmt(x) for x in meta['host']['loadavg_start'])} (1/5/15 min)",
        f"- service: {meta['service']}; clips: {meta['clip_count']} "
        f"({fmt(meta['clip_audio_s'], 1)} s audio), beam 5, {_compute(meta)}, cpu_threads "
        f"{meta['cpu_threads']} (the service: {meta.get('concurrent_batches', 1)} batch(es) at "
        f"once sharing them), max_batch_size {meta['batch_size']}",
        "",
        "## Throughput and latency",
        "",
        "RTFx = seconds of audio transcribed per wall-clock second (all clients together).",
        "",
        "| model | clients | requests | errors | RTFx | vs naive | vs ceiling | p50 s | p95 s "
        "| p99 s | mean batch | batch sizes | replica RSS MiB (peak) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, data in results["models"].items():
        for lv in data["levels"]:
            lat = lv["latency_s"]
            batches = lv["batches"]
            hist = ", ".join(f"{s}:{n}" for s, n in batches.get("histogram", {}).items())
            rss = ", ".join(f"{k} {v:.0f}" for k, v in lv["rss"]["peak_mb"].items())
            lines.append(
                f"| {model} | {lv['concurrency']} | {lv['requests']} | {lv['errors']} "
                f"| {fmt(lv['rtfx'])} | {fmt(lv['vs_naive'])} | {fmt(lv['vs_ceiling'])} "
                f"| {fmt(lat['p50'])} | {fmt(lat['p95'])} | {fmt(lat['p99'])} "
                f"| {fmt(batches.get('mean'))} | {hist or '-'} | {rss or '-'} |"
            )
    lines += [
        "",
        "## Baselines (same clips, same process, service idle)",
        "",
        "| model | baseline | wall s | audio s | RTFx | per-clip p50 s | per-clip p95 s | WER |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, data in results["models"].items():
        for name, base in data["baselines"].items():
            lat = base["latency_s"]
            lines.append(
                f"| {model} | {name} | {fmt(base['wall_s'])} | {fmt(base['audio_s'], 1)} "
                f"| {fmt(base['rtfx'])} | {fmt(lat['p50'])} | {fmt(lat['p95'])} "
                f"| {fmt(data['wer'].get(name), 3)} |"
            )
        lines.append(
            f"| {model} | service (all levels) | | | | | | {fmt(data['wer'].get('service'), 3)} |"
        )
    lines += [
        "",
        "## 1 client, 5 s clip",
        "",
        "| model | service p50 s | WhisperModel.transcribe p50 s "
        "| BatchedInferencePipeline p50 s | the same two on 1 thread | ratio (vs the fastest) |",
        "|---|---|---|---|---|---|",
    ]
    for model, data in results["models"].items():
        lat = data.get("latency_5s") or {}
        lines.append(
            f"| {model} | {fmt(lat.get('service_p50'), 3)} | {fmt(lat.get('naive_p50'), 3)} "
            f"| {fmt(lat.get('pipeline_p50'), 3)} | {fmt(lat.get('naive_1t_p50'), 3)} / "
            f"{fmt(lat.get('pipeline_1t_p50'), 3)} | {fmt(lat.get('ratio'))} |"
        )
    lines += ["", "## Jobs", "", *jobs_lines(results.get("jobs", {}))]
    if results.get("shapes"):
        lines += ["", *shapes_markdown(results)]
    lines += [
        "",
        "## Targets",
        "",
        "| # | target | goal | measured | |",
        "|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append(
            f"| {t.get('id', '')} | {t['name']} | {t['goal']} | {fmt(t['value'])} "
            f"| {verdict(t['met'])} |"
        )
    return "\n".join(lines) + "\n"


def _compute(meta: dict[str, Any]) -> str:
    device = meta.get("device", "cpu")
    return f"{device}/{'float16' if device == 'cuda' else 'int8'}"
