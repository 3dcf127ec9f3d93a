"""Markdown of the shapes of work (goals table, bursts, long recording, mixed load, time budget)
and of the job sections."""

from __future__ import annotations

from typing import Any

from benchmarks.cpu import cpu_markdown
from benchmarks.report_format import fmt, level, ms, ratio, verdict
from benchmarks.targets import TARGET_MODEL

# Rows of the time-budget table: (label, where the shape's summary lives).
BUDGET_SHAPES = (
    "burst packed",
    "burst unpacked",
    "steady 16",
    "1-client 5 s",
    "long sync",
    "mixed interactive",
)


def _budget_rows(results: dict[str, Any]) -> list[tuple[str, int, float | None, dict]]:
    """(shape, timed requests, client p50 ms, phase p50s ms) for each shape that ran."""
    shapes = results.get("shapes") or {}
    model = shapes.get("model") or TARGET_MODEL
    rows: list[tuple[str, int, float | None, dict]] = []

    def row(label: str, entry: dict[str, Any] | None, p50_s: float | None) -> None:
        if entry is not None:
            phases = entry.get("phases_p50_ms") or {}
            rows.append((label, entry.get("timed", 0), ms(p50_s), phases))

    modes = (shapes.get("burst") or {}).get("modes") or {}
    for mode in ("packed", "unpacked"):
        entry = modes.get(mode)
        row(f"burst {mode}", entry, ((entry or {}).get("latency_s") or {}).get("p50"))
    level16 = level(results, model, 16)
    row("steady 16", level16, ((level16 or {}).get("latency_s") or {}).get("p50"))
    lat = (results.get("models", {}).get(model) or {}).get("latency_5s")
    row("1-client 5 s", lat, (lat or {}).get("service_p50"))
    long = shapes.get("long")
    if long is not None:
        phases = long.get("phases_ms") or {}
        entry = {"phases_p50_ms": phases, "timed": 1 if phases else 0}
        row("long sync", entry, long.get("wall_s"))
    inter = (shapes.get("mixed") or {}).get("interactive")
    row("mixed interactive", inter, ((inter or {}).get("latency_s") or {}).get("p50"))
    return rows


def _time_budget_lines(results: dict[str, Any]) -> list[str]:
    from benchmarks.loadgen import PHASES

    rows = _budget_rows(results)
    seen = {name for *_, phases in rows for name in phases}
    names = [p for p in PHASES if p in seen] + sorted(seen - set(PHASES))
    out = [
        "### Time budget per request",
        "",
        "p50 per phase in ms, from the service's `Server-Timing` header (`-`: phase not sent); "
        "client p50 is the latency the benchmark saw, so client - total is HTTP and proxy.",
        "",
    ]
    if not names:
        return [*out, "- no `Server-Timing` header on any response (older service)"]
    out += [
        "| shape | timed requests | client p50 | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for label, timed, client, phases in rows:
        cells = " | ".join(fmt(phases.get(n), 1) for n in names)
        out.append(f"| {label} | {timed} | {fmt(client, 1)} | {cells} |")
    return out


def shapes_markdown(results: dict[str, Any]) -> list[str]:
    """The "Shapes of work" section: the goals table, details per shape, the time budget."""
    shapes = results["shapes"]
    out = [
        "## Shapes of work",
        "",
        f"Model {shapes.get('model')}; every baseline ran in the benchmark process before the "
        "service, on the same audio. Ratio: baseline / service for walls (higher is better), "
        "service / baseline for latencies and the job under load (lower is better).",
        "",
        "| # | work | baseline | baseline wall s | service wall s | ratio | goal | |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for t in results.get("targets", []):
        if "work" in t:
            out.append(
                f"| {t['id']} | {t['work']} | {t['baseline']} | {fmt(t['baseline_s'], 3)} "
                f"| {fmt(t['service_s'], 3)} | {fmt(t['value'])} | {t['goal']} "
                f"| {verdict(t['met'])} |"
            )
    for key in ("burst", "long", "job", "mixed"):
        entry = shapes.get(key) or {}
        if entry.get("error") or entry.get("skipped"):
            out += ["", f"- {key}: {entry.get('skipped') or entry.get('error')}"]
    blocks = [_burst_lines(shapes), _long_lines(shapes), _mixed_lines(shapes)]
    for block in [*blocks, _time_budget_lines(results), cpu_markdown(results)]:
        if block:
            out += ["", *block]
    return out


def _burst_lines(shapes: dict[str, Any]) -> list[str]:
    burst = shapes.get("burst")
    if not burst or "modes" not in burst:
        return []
    ceiling = (shapes.get("baselines") or {}).get("burst_ceiling") or {}
    out = [
        f"### Bursts ({len(burst['clips'])} clips, {fmt(burst['audio_s'], 1)} s of audio, "
        f"{burst['repeats']} bursts per mode, modes alternating)",
        "",
        f"Ceiling over the same clips: {fmt(ceiling.get('wall_s'), 3)} s (best of "
        f"{len(ceiling.get('walls_s') or [])}), WER {fmt(ceiling.get('wer'), 3)}.",
        "",
        "| mode | wall min s | median s | max s | max/min | p50 s | p95 s | errors | WER "
        "| identical to ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, m in burst["modes"].items():
        lat = m["latency_s"]
        out.append(
            f"| {mode} | {fmt(m['wall_min_s'], 3)} | {fmt(m['wall_median_s'], 3)} "
            f"| {fmt(m['wall_max_s'], 3)} | {fmt(m['spread'])} | {fmt(lat['p50'])} "
            f"| {fmt(lat['p95'])} | {m['errors']} | {fmt(m.get('wer'), 3)} "
            f"| {m.get('identical_to_ceiling', '-')} / {len(burst['clips'])} |"
        )
    return out


def _long_lines(shapes: dict[str, Any]) -> list[str]:
    base = shapes.get("baselines") or {}
    rows = [
        ("direct BatchedInferencePipeline.transcribe (batch 8)", base.get("long_pipeline")),
        ("naive WhisperModel.transcribe (vad_filter=True)", base.get("long_naive_vad")),
        ("service, sync", shapes.get("long")),
        ("service, job", shapes.get("job")),
        (
            "direct BatchedInferencePipeline.transcribe (without_timestamps=False)",
            base.get("long_pipeline_timestamps"),
        ),
        ("service, job with segment timestamps (the job default)", shapes.get("job_timestamps")),
        ("service, job under mixed load", (shapes.get("mixed") or {}).get("job")),
    ]
    rows = [(label, entry) for label, entry in rows if entry]
    if not rows:
        return []
    recording = shapes.get("recording") or {}
    out = [
        f"### One long recording ({recording.get('name')}, {fmt(recording.get('audio_s'), 0)} "
        f"s, {recording.get('words')} words)",
        "",
        "| path | wall s | RTFx | WER | note |",
        "|---|---:|---:|---:|---|",
    ]
    audio = recording.get("audio_s")
    for label, entry in rows:
        wall = entry.get("wall_s")
        note = entry.get("error") or ""
        if entry.get("running_after_s") is not None:
            note = f"running {entry['running_after_s']:.2f} s after submit {note}".strip()
        out.append(
            f"| {label} | {fmt(wall, 2)} | {fmt(ratio(audio, wall), 1)} "
            f"| {fmt(entry.get('wer'), 3)} | {note} |"
        )
    return out


def _mixed_lines(shapes: dict[str, Any]) -> list[str]:
    mixed = shapes.get("mixed")
    if not mixed or "interactive" not in mixed:
        return []
    inter, job = mixed["interactive"], mixed["job"]
    lat = inter["latency_s"]
    return [
        "### Mixed load",
        "",
        f"- {mixed['clients']} closed-loop clients of {mixed['short_clip']} for "
        f"{fmt(mixed['interactive_load_s'], 1)} s while the job ran: {inter['requests']} "
        f"requests, {inter['errors']} errors, p50 {fmt(lat['p50'], 3)} s, p95 "
        f"{fmt(lat['p95'], 3)} s",
        f"- the job ({job.get('clip')}): {job.get('status')}, wall {fmt(job.get('wall_s'), 2)} s, "
        f"running {fmt(job.get('running_after_s'), 2)} s after submit",
        *_alone_line(mixed),
    ]


def _alone_line(mixed: dict[str, Any]) -> list[str]:
    alone = mixed.get("interactive_alone") or {}
    if not alone.get("requests"):
        return []
    lat = alone["latency_s"]
    return [
        f"- before the job, the same clients alone: {alone['requests']} requests, "
        f"{alone['errors']} errors, p50 {fmt(lat['p50'], 3)} s, p95 {fmt(lat['p95'], 3)} s "
        "(closed loop, no think time: each client waits for the others' batches)"
    ]


def jobs_lines(jobs: dict[str, Any]) -> list[str]:
    out: list[str] = []
    submit = jobs.get("submit", {})
    if "skipped" in submit or not submit:
        out.append(f"- submit latency: skipped ({submit.get('skipped', 'not run')})")
    else:
        lat = submit["latency_s"]
        out.append(
            f"- submit latency at {fmt(submit['target_rate'], 0)} req/s for "
            f"{fmt(submit['duration_s'], 0)} s ({submit['submitted']} jobs, achieved "
            f"{fmt(submit['achieved_rate'], 1)} req/s): p50 {fmt(ms(lat['p50']), 1)} ms, "
            f"p95 {fmt(ms(lat['p95']), 1)} ms, p99 {fmt(ms(lat['p99']), 1)} ms; "
            f"status codes {submit['status_codes']}"
        )
    drain = jobs.get("drain", {})
    if "skipped" in drain or not drain:
        out.append(f"- drain: skipped ({drain.get('skipped', 'not run')})")
    else:
        out.append(
            f"- drain: {drain['clients']} clients x {drain['jobs_per_client']} jobs, "
            f"outcomes {drain['outcomes']}, not accepted {drain['not_accepted']}, "
            f"drained in {fmt(drain['drain_s'], 1)} s ({fmt(drain['jobs_per_s'])} jobs/s); "
            f"submit p99 {fmt(ms(drain['submit']['latency_s']['p99']), 1)} ms"
        )
    return out
