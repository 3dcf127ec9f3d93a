"""The issues' targets, evaluated on what a benchmark run measured."""

from __future__ import annotations

from typing import Any

from benchmarks.report_format import fmt, level, ratio

TARGET_MODEL = "tiny.en"


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

    level16 = level(results, model, 16) if model else None
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
        baseline_s=ratio(level16["audio_s"], ceiling_rtfx) if level16 else None,
        service_s=level16["wall_s"] if level16 else None,
    )
    vs_naive = (level16 or {}).get("vs_naive")
    add(f"16 clients: service throughput / naive ({TARGET_MODEL})", ">=", 1.5, vs_naive)
    lat = data.get("latency_5s") or {}
    paths = ("naive_p50", "pipeline_p50", "naive_1t_p50", "pipeline_1t_p50")
    direct = min((x for x in map(lat.get, paths) if x is not None), default=None)
    add(
        "1 client, 5 s clip: p50 latency / direct faster-whisper",
        "<=",
        1.1,
        lat.get("ratio"),
        id="5",
        work="1 client, 5 s clip (p50 latency)",
        baseline="direct faster-whisper p50 (fastest of the two, on 1 or all threads)",
        baseline_s=direct,
        service_s=lat.get("service_p50"),
    )
    jobs = results.get("jobs", {})
    submit = jobs.get("submit", {})
    p99 = (submit.get("latency_s") or {}).get("p99")
    rate = submit.get("target_rate")
    add(
        f"job submit p99 at {fmt(rate, 0)} req/s",
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
            ratio(ceiling, median),
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
    minutes = fmt(((base.get("long_pipeline") or {}).get("audio_s") or 0) / 60, 0)
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
            ratio(pipeline, wall),
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
        ratio(busy, idle),
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
        ratio(floor, idle),
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
        ratio(loaded, alone),
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
