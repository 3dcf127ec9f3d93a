"""Turn raw measurements into the results JSON, a markdown report, targets and a PNG plot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.clips import Clip

TARGET_MODEL = "tiny.en"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]", " ", text.lower())).strip()


def wer(texts: dict[str, str], clips: list[Clip]) -> float | None:
    """Word error rate of `texts` against the words each clip was spoken from."""
    import jiwer

    pairs = [(_norm(c.reference), _norm(texts[c.name])) for c in clips if c.name in texts]
    pairs = [(ref, hyp) for ref, hyp in pairs if ref]
    if not pairs:
        return None
    refs, hyps = zip(*pairs, strict=True)
    return round(float(jiwer.wer(list(refs), list(hyps))), 4)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _level(results: dict[str, Any], model: str, concurrency: int) -> dict[str, Any] | None:
    levels = results.get("models", {}).get(model, {}).get("levels", [])
    return next((lv for lv in levels if lv["concurrency"] == concurrency), None)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on what was measured (None = not measured)."""
    model = TARGET_MODEL if TARGET_MODEL in results.get("models", {}) else None
    out: list[dict[str, Any]] = []
    level16 = _level(results, model, 16) if model else None

    def add(name: str, goal: str, value: float | None, met: bool | None) -> None:
        out.append({"name": name, "goal": goal, "value": value, "met": met})

    for key, goal in (("vs_ceiling", 0.9), ("vs_naive", 1.5)):
        value = level16.get(key) if level16 else None
        add(
            f"16 clients: service throughput / {key.removeprefix('vs_')} ({TARGET_MODEL})",
            f">= {goal}x",
            value,
            None if value is None else value >= goal,
        )
    lat = results.get("models", {}).get(model or "", {}).get("latency_5s") or {}
    ratio = lat.get("ratio")
    add(
        "1 client, 5 s clip: p50 latency / direct faster-whisper",
        "<= 1.3x",
        ratio,
        None if ratio is None else ratio <= 1.3,
    )
    jobs = results.get("jobs", {})
    submit = jobs.get("submit", {})
    p99 = (submit.get("latency_s") or {}).get("p99")
    rate = submit.get("target_rate")
    add(
        f"job submit p99 at {_fmt(rate, 0)} req/s",
        "< 50 ms",
        None if p99 is None else round(p99 * 1000, 1),
        None if p99 is None else p99 < 0.050,
    )
    drain = jobs.get("drain", {})
    lost = drain.get("lost_or_failed")
    met = None if lost is None else lost == 0
    add("job drain: lost + failed + unfinished jobs", "== 0", lost, met)
    return out


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
    lines += ["", "## Targets", "", "| target | goal | measured | |", "|---|---|---|---|"]
    for t in results["targets"]:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(f"| {t['name']} | {t['goal']} | {_fmt(t['value'])} | {verdict} |")
    return "\n".join(lines) + "\n"


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
