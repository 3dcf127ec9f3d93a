"""Turn raw measurements into the results JSON, a markdown report, targets and a PNG plot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.clips import Clip
from benchmarks.cpu import cpu_markdown

TARGET_MODEL = "tiny.en"


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: the form WER is computed on."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower())).strip()


def wer(texts: dict[str, str], clips: list[Clip]) -> float | None:
    """Word error rate of `texts` against the words each clip was spoken from."""
    import jiwer

    pairs = [(normalise(c.reference), normalise(texts[c.name])) for c in clips if c.name in texts]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref]
    if not pairs:
        return None
    refs, hyps = zip(*pairs, strict=True)
    return round(float(jiwer.wer(list(refs), list(hyps))), 4)


def words_wrong(reference: str, text: str) -> int | None:
    """Word errors (substitutions + deletions + insertions) of `text`; None without a reference."""
    import jiwer

    ref, hyp = normalise(reference), normalise(text)
    if not ref:
        return None
    out = jiwer.process_words(ref, hyp or "")
    return int(out.substitutions + out.deletions + out.insertions)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _level(results: dict[str, Any], model: str, concurrency: int) -> dict[str, Any] | None:
    levels = results.get("models", {}).get(model, {}).get("levels", [])
    return next((lv for lv in levels if lv["concurrency"] == concurrency), None)


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num is not None and den else None


def _check(value: float | None, op: str, threshold: float) -> bool | None:
    if value is None:
        return None
    return {
        ">=": value >= threshold,
        "<=": value <= threshold,
        "<": value < threshold,
        "==": value == threshold,
    }[op]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issues' targets, evaluated on what was measured (None = not measured).

    Each has a name, goal (text), value and met; the ratios of the shapes of work also carry
    the work, the baseline and both walls (`baseline_s`, `service_s`) for the shapes table,
    and `unit == "x"` marks a ratio for the plot.
    """
    model = TARGET_MODEL if TARGET_MODEL in results.get("models", {}) else None
    data = results.get("models", {}).get(model or "", {})
    out: list[dict[str, Any]] = []

    def add(
        name: str,
        op: str,
        threshold: float,
        value: float | None,
        unit: str = "x",
        **extra: Any,
    ) -> None:
        goal = f"{op} {threshold:g}{unit}"
        met = _check(value, op, threshold)
        out.append({"name": name, "goal": goal, "value": value, "met": met, "unit": unit, **extra})

    level16 = _level(results, model, 16) if model else None
    vs_ceiling = (level16 or {}).get("vs_ceiling")
    ceiling_rtfx = (data.get("baselines") or {}).get("ceiling", {}).get("rtfx")
    add(
        f"16 clients: service throughput / ceiling ({TARGET_MODEL})",
        ">=",
        2.0,
        vs_ceiling,
        id="3",
        work="steady stream: 16 clients, closed loop (the level-16 run)",
        baseline="ceiling, same audio",
        baseline_s=_ratio(level16["audio_s"], ceiling_rtfx) if level16 else None,
        service_s=level16["wall_s"] if level16 else None,
    )
    vs_naive = (level16 or {}).get("vs_naive")
    add(f"16 clients: service throughput / naive ({TARGET_MODEL})", ">=", 1.5, vs_naive)
    lat = data.get("latency_5s") or {}
    direct = min(
        (x for x in (lat.get("naive_p50"), lat.get("pipeline_p50")) if x is not None),
        default=None,
    )
    add(
        "1 client, 5 s clip: p50 latency / direct faster-whisper",
        "<=",
        1.1,
        lat.get("ratio"),
        id="5",
        work="1 client, 5 s clip (p50 latency)",
        baseline="direct faster-whisper p50 (faster of the two)",
        baseline_s=direct,
        service_s=lat.get("service_p50"),
    )
    jobs = results.get("jobs", {})
    submit = jobs.get("submit", {})
    p99 = (submit.get("latency_s") or {}).get("p99")
    rate = submit.get("target_rate")
    add(
        f"job submit p99 at {_fmt(rate, 0)} req/s",
        "<",
        50,
        None if p99 is None else round(p99 * 1000, 1),
        unit=" ms",
    )
    drain = jobs.get("drain", {})
    add("job drain: lost + failed + unfinished jobs", "==", 0, drain.get("lost_or_failed"), "")
    _shape_targets(results, data, add)
    _packing_targets(results.get("packing") or {}, add)
    return out


def _shape_targets(results: dict[str, Any], data: dict[str, Any], add: Any) -> None:
    shapes = results.get("shapes") or {}
    base = shapes.get("baselines") or {}
    burst = shapes.get("burst") or {}
    modes = burst.get("modes") or {}
    ceiling = (base.get("burst_ceiling") or {}).get("wall_s")
    n = len(burst.get("clips") or []) or (base.get("burst_ceiling") or {}).get("clips")
    reps = burst.get("repeats")
    for mode, label, goal in (("packed", "packed", 1.5), ("unpacked", "pack=false", 0.95)):
        entry = modes.get(mode) or {}
        median = entry.get("wall_median_s")
        add(
            f"burst of {n} clips, {label}: ceiling / burst wall (median of {reps})",
            ">=",
            goal,
            _ratio(ceiling, median),
            id="1",
            work=f"burst: {n} short clips from {n} clients at once, {label}",
            baseline="ceiling, same clips",
            baseline_s=ceiling,
            service_s=median,
        )
    for mode, label in (("packed", "packed"), ("unpacked", "pack=false")):
        entry = modes.get(mode) or {}
        add(
            f"burst {label}: slowest / fastest of {reps} bursts",
            "<=",
            1.25,
            entry.get("spread"),
            id="1",
            work=f"burst stability, {label}: slowest vs fastest burst",
            baseline="fastest burst",
            baseline_s=entry.get("wall_min_s"),
            service_s=entry.get("wall_max_s"),
        )
    minutes = _fmt(((base.get("long_pipeline") or {}).get("audio_s") or 0) / 60, 0)
    for key, label, goal, reference in (
        ("long", "sync", 1.0, "long_pipeline"),
        ("job", "job", 0.95, "long_pipeline"),
        ("job_timestamps", "job with segment timestamps", 0.95, "long_pipeline_timestamps"),
    ):
        wall = (shapes.get(key) or {}).get("wall_s")
        pipeline = (base.get(reference) or {}).get("wall_s")
        if key == "job_timestamps" and wall is None:
            continue
        add(
            f"{minutes}-min recording, {label}: direct pipeline wall / service wall",
            ">=",
            goal,
            _ratio(pipeline, wall),
            id="2",
            work=f"one {minutes}-min recording, {label}",
            baseline="direct BatchedInferencePipeline.transcribe"
            + (" (without_timestamps=False)" if reference.endswith("timestamps") else ""),
            baseline_s=pipeline,
            service_s=wall,
        )
    mixed = shapes.get("mixed") or {}
    idle = (data.get("latency_5s") or {}).get("service_p50")
    busy = ((mixed.get("interactive") or {}).get("latency_s") or {}).get("p50")
    clients = mixed.get("clients", 4)
    add(
        f"mixed: {clients} clients' 5 s p50 during a long job / idle p50",
        "<=",
        2.0,
        _ratio(busy, idle),
        id="4",
        work=f"mixed: {clients} clients of 5 s clips while a long job runs (p50)",
        baseline="idle 1-client p50",
        baseline_s=idle,
        service_s=busy,
    )
    floor = ((mixed.get("interactive_alone") or {}).get("latency_s") or {}).get("p50")
    add(
        f"mixed floor: the same {clients} clients with no job / idle p50",
        "<=",
        2.0,
        _ratio(floor, idle),
        id="4",
        work=f"mixed floor: the same {clients} clients with no job running (p50)",
        baseline="idle 1-client p50",
        baseline_s=idle,
        service_s=floor,
    )
    alone = (shapes.get("job") or {}).get("wall_s")
    loaded = (mixed.get("job") or {}).get("wall_s")
    add(
        "mixed: long job wall with interactive load / alone",
        "<=",
        1.5,
        _ratio(loaded, alone),
        id="4",
        work="mixed: the long job under interactive load",
        baseline="the same job alone",
        baseline_s=alone,
        service_s=loaded,
    )
    unpacked = modes.get("unpacked") or {}
    identical = unpacked.get("identical_to_ceiling")
    add(
        "pack=false: burst clips identical to the ceiling (faster-whisper)",
        "==",
        n or 0,
        identical,
        "",
        id="7",
    )


def _packing_targets(packing: dict[str, Any], add: Any) -> None:
    rows = packing.get("layouts") or []
    if rows:
        deltas = [round(r["mean_wer"][1] - r["mean_wer"][0], 4) for r in rows]
        worse = [r.get("max_words_worse") for r in rows]
        where = f"{len(rows)} layouts"
    elif packing.get("packed"):
        deltas = [packing.get("wer_delta")]
        worse = [packing.get("max_words_worse")]
        where = "one layout"
    else:
        deltas, worse, where = [], [], "the layouts"
    known_d = [d for d in deltas if d is not None]
    known_w = [w for w in worse if w is not None]
    add(
        f"packing: mean WER packed - unpacked, worst of {where}",
        "<=",
        0,
        max(known_d) if known_d else None,
        "",
        id="7",
    )
    add(
        f"packing: most words one clip loses to packing, worst of {where}",
        "<=",
        2,
        max(known_w) if known_w else None,
        "",
        id="7",
    )


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# Benchmark results ({meta['mode']} mode)",
        "",
        f"- command: `{meta['command']}`",
        f"- when: {meta['started']}, took {_fmt(meta.get('wall_s'), 0)} s; "
        f"host: {meta['host']['cpus']} CPUs, load average at start "
        f"{' / '.join(_fmt(x) for x in meta['host']['loadavg_start'])} (1/5/15 min)",
        f"- service: {meta['service']}; clips: {meta['clip_count']} "
        f"({_fmt(meta['clip_audio_s'], 1)} s audio), beam 5, {_compute(meta)}, cpu_threads "
        f"{meta['cpu_threads']}, max_batch_size {meta['batch_size']}",
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
                f"| {_fmt(lv['rtfx'])} | {_fmt(lv['vs_naive'])} | {_fmt(lv['vs_ceiling'])} "
                f"| {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} "
                f"| {_fmt(batches.get('mean'))} | {hist or '-'} | {rss or '-'} |"
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
                f"| {model} | {name} | {_fmt(base['wall_s'])} | {_fmt(base['audio_s'], 1)} "
                f"| {_fmt(base['rtfx'])} | {_fmt(lat['p50'])} | {_fmt(lat['p95'])} "
                f"| {_fmt(data['wer'].get(name), 3)} |"
            )
        lines.append(
            f"| {model} | service (all levels) | | | | | | {_fmt(data['wer'].get('service'), 3)} |"
        )
    lines += [
        "",
        "## 1 client, 5 s clip",
        "",
        "| model | service p50 s | WhisperModel.transcribe p50 s "
        "| BatchedInferencePipeline p50 s | ratio (vs faster of the two) |",
        "|---|---|---|---|---|",
    ]
    for model, data in results["models"].items():
        lat = data.get("latency_5s") or {}
        lines.append(
            f"| {model} | {_fmt(lat.get('service_p50'), 3)} | {_fmt(lat.get('naive_p50'), 3)} "
            f"| {_fmt(lat.get('pipeline_p50'), 3)} | {_fmt(lat.get('ratio'))} |"
        )
    lines += ["", "## Jobs", "", *_jobs_lines(results.get("jobs", {}))]
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
            f"| {t.get('id', '')} | {t['name']} | {t['goal']} | {_fmt(t['value'])} "
            f"| {_verdict(t['met'])} |"
        )
    return "\n".join(lines) + "\n"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not measured"}[met]


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
            rows.append((label, entry.get("timed", 0), _ms(p50_s), phases))

    modes = (shapes.get("burst") or {}).get("modes") or {}
    for mode in ("packed", "unpacked"):
        entry = modes.get(mode)
        row(f"burst {mode}", entry, ((entry or {}).get("latency_s") or {}).get("p50"))
    level16 = _level(results, model, 16)
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
        cells = " | ".join(_fmt(phases.get(n), 1) for n in names)
        out.append(f"| {label} | {timed} | {_fmt(client, 1)} | {cells} |")
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
                f"| {t['id']} | {t['work']} | {t['baseline']} | {_fmt(t['baseline_s'], 3)} "
                f"| {_fmt(t['service_s'], 3)} | {_fmt(t['value'])} | {t['goal']} "
                f"| {_verdict(t['met'])} |"
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
        f"### Bursts ({len(burst['clips'])} clips, {_fmt(burst['audio_s'], 1)} s of audio, "
        f"{burst['repeats']} bursts per mode, modes alternating)",
        "",
        f"Ceiling over the same clips: {_fmt(ceiling.get('wall_s'), 3)} s (best of "
        f"{len(ceiling.get('walls_s') or [])}), WER {_fmt(ceiling.get('wer'), 3)}.",
        "",
        "| mode | wall min s | median s | max s | max/min | p50 s | p95 s | errors | WER "
        "| identical to ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, m in burst["modes"].items():
        lat = m["latency_s"]
        out.append(
            f"| {mode} | {_fmt(m['wall_min_s'], 3)} | {_fmt(m['wall_median_s'], 3)} "
            f"| {_fmt(m['wall_max_s'], 3)} | {_fmt(m['spread'])} | {_fmt(lat['p50'])} "
            f"| {_fmt(lat['p95'])} | {m['errors']} | {_fmt(m.get('wer'), 3)} "
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
        f"### One long recording ({recording.get('name')}, {_fmt(recording.get('audio_s'), 0)} "
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
            f"| {label} | {_fmt(wall, 2)} | {_fmt(_ratio(audio, wall), 1)} "
            f"| {_fmt(entry.get('wer'), 3)} | {note} |"
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
        f"{_fmt(mixed['interactive_load_s'], 1)} s while the job ran: {inter['requests']} "
        f"requests, {inter['errors']} errors, p50 {_fmt(lat['p50'], 3)} s, p95 "
        f"{_fmt(lat['p95'], 3)} s",
        f"- the job ({job.get('clip')}): {job.get('status')}, wall {_fmt(job.get('wall_s'), 2)} s, "
        f"running {_fmt(job.get('running_after_s'), 2)} s after submit",
        *_alone_line(mixed),
    ]


def _alone_line(mixed: dict[str, Any]) -> list[str]:
    alone = mixed.get("interactive_alone") or {}
    if not alone.get("requests"):
        return []
    lat = alone["latency_s"]
    return [
        f"- before the job, the same clients alone: {alone['requests']} requests, "
        f"{alone['errors']} errors, p50 {_fmt(lat['p50'], 3)} s, p95 {_fmt(lat['p95'], 3)} s "
        "(closed loop, no think time: each client waits for the others' batches)"
    ]


def _jobs_lines(jobs: dict[str, Any]) -> list[str]:
    out: list[str] = []
    submit = jobs.get("submit", {})
    if "skipped" in submit or not submit:
        out.append(f"- submit latency: skipped ({submit.get('skipped', 'not run')})")
    else:
        lat = submit["latency_s"]
        out.append(
            f"- submit latency at {_fmt(submit['target_rate'], 0)} req/s for "
            f"{_fmt(submit['duration_s'], 0)} s ({submit['submitted']} jobs, achieved "
            f"{_fmt(submit['achieved_rate'], 1)} req/s): p50 {_fmt(_ms(lat['p50']), 1)} ms, "
            f"p95 {_fmt(_ms(lat['p95']), 1)} ms, p99 {_fmt(_ms(lat['p99']), 1)} ms; "
            f"status codes {submit['status_codes']}"
        )
    drain = jobs.get("drain", {})
    if "skipped" in drain or not drain:
        out.append(f"- drain: skipped ({drain.get('skipped', 'not run')})")
    else:
        out.append(
            f"- drain: {drain['clients']} clients x {drain['jobs_per_client']} jobs, "
            f"outcomes {drain['outcomes']}, not accepted {drain['not_accepted']}, "
            f"drained in {_fmt(drain['drain_s'], 1)} s ({_fmt(drain['jobs_per_s'])} jobs/s); "
            f"submit p99 {_fmt(_ms(drain['submit']['latency_s']['p99']), 1)} ms"
        )
    return out


def _compute(meta: dict[str, Any]) -> str:
    device = meta.get("device", "cpu")
    return f"{device}/{'float16' if device == 'cuda' else 'int8'}"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput and p95 latency vs clients; baselines as horizontal reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for color, (model, data) in zip(colors, results["models"].items(), strict=False):
        xs = [lv["concurrency"] for lv in data["levels"]]
        ax_t.plot(
            xs, [lv["rtfx"] for lv in data["levels"]], "o-", color=color, label=f"{model} service"
        )
        ax_l.plot(
            xs,
            [lv["latency_s"]["p95"] for lv in data["levels"]],
            "o-",
            color=color,
            label=f"{model} service p95",
        )
        for name, style in (("naive", ":"), ("ceiling", "--")):
            base = data["baselines"].get(name)
            if base:
                ax_t.axhline(
                    base["rtfx"],
                    linestyle=style,
                    color=color,
                    label=f"{model} {name} ({base['rtfx']:.1f})",
                )
        naive = data["baselines"].get("naive")
        if naive and naive["latency_s"]["p95"] is not None:
            ax_l.axhline(
                naive["latency_s"]["p95"],
                linestyle=":",
                color=color,
                label=f"{model} naive per-clip p95",
            )
    for ax in (ax_t, ax_l):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_t.set_ylim(bottom=0)
    ax_l.set_ylim(bottom=0)
    ax_t.set_ylabel("throughput (audio s / wall s)")
    ax_t.set_title("Throughput vs concurrency")
    ax_l.set_ylabel("p95 latency (s)")
    ax_l.set_title("p95 request latency vs concurrency")
    fig.suptitle(f"whisper-serve benchmark ({results['meta']['mode']} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shapes(results: dict[str, Any], path: Path) -> None:
    """One bar per ratio target (measured value) with its goal marked; green met, red missed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [t for t in results.get("targets", []) if t.get("unit") == "x"]
    fig, ax = plt.subplots(figsize=(11, 0.45 * max(len(rows), 4) + 1.5))
    for y, t in enumerate(rows):
        value, threshold = t["value"], float(t["goal"].split()[1].rstrip("x"))
        color = {True: "tab:green", False: "tab:red", None: "lightgray"}[t["met"]]
        ax.barh(y, value or 0.0, color=color, height=0.6)
        ax.plot([threshold, threshold], [y - 0.4, y + 0.4], color="black", linewidth=2)
        label = "not measured" if value is None else f"{value:.2f} (goal {t['goal']})"
        ax.text(max(value or 0.0, threshold) + 0.05, y, label, va="center", fontsize=7)
    ax.set_yticks(range(len(rows)))
    names = [f"goal {t['id']}: {t['name']}" if t.get("id") else t["name"] for t in rows]
    ax.set_yticklabels(names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max([2.8] + [(t["value"] or 0) * 1.3 for t in rows]))
    ax.set_xlabel("measured ratio (black mark: goal; >= higher is better, <= lower is better)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(f"whisper-serve shapes of work: ratio per goal ({results['meta']['mode']} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
