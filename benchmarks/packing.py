"""Window packing vs one window per clip: throughput and WER side by side, no serving layer.

Both runs decode the same VAD chunks with the same engine, options and batch size; the only
difference is whether short clips of one tenant share a 30 s window
(`WindowPacker.plan`). Run alone: `python -m benchmarks.packing [--clips 16]`.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks.accuracy import wer, words_wrong
from benchmarks.clips import Clip, generated_clips
from serve_app.config import PackingSettings
from serve_app.inference.engine import WhisperEngine
from serve_app.inference.packing import Window, WindowPacker
from serve_app.inference.protocol import ChunkRequest
from serve_app.inference.weights import resolve_weights
from serve_app.options import DecodeOptions
from serve_app.pipeline.chunking import plan_chunks
from serve_app.pipeline.decode import decode_audio

MAX_WORDS_WORSE = 2  # no clip may lose more than this many words to packing


def _requests(clips: list[Clip], beam_size: int) -> tuple[list[ChunkRequest], list[str]]:
    options = DecodeOptions(language="en", beam_size=beam_size)
    items, owners = [], []
    for clip in clips:
        samples = decode_audio(clip.data, max_duration_s=600).samples
        plan = plan_chunks(samples)
        for chunk, meta in zip(plan.chunks, plan.metadata, strict=True):
            items.append(ChunkRequest(chunk, meta["offset"], meta["duration"], options))
            owners.append(clip.name)
    return items, owners


def _texts(outputs: list, owners: list[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for segments, owner in zip(outputs, owners, strict=True):
        texts[owner] = (texts.get(owner, "") + "".join(s.text for s in segments)).strip()
    return texts


def compare(
    engine: WhisperEngine,
    clips: list[Clip],
    *,
    batch_size: int = 8,
    beam_size: int = 5,
    settings: PackingSettings | None = None,
    repeats: int = 2,
) -> dict[str, Any]:
    """Best-of-`repeats` wall time of both layouts over the same chunks."""
    settings = settings or PackingSettings()
    packer = WindowPacker(settings, enabled=True)
    items, owners = _requests(clips, beam_size)
    layouts = {
        "one_window_per_clip": [Window([i], [0.0]) for i in range(len(items))],
        "packed": packer.plan(items),
    }
    engine.transcribe_windows(items[:1], layouts["one_window_per_clip"][:1], 1)  # warm
    audio_s = sum(c.duration for c in clips)
    out: dict[str, Any] = {"clips": len(clips), "chunks": len(items), "audio_s": audio_s}
    for name, windows in layouts.items():
        best = float("inf")
        outputs: list = []
        for _ in range(repeats):
            started = time.perf_counter()
            outputs = engine.transcribe_windows(items, windows, batch_size, packer)
            best = min(best, time.perf_counter() - started)
        texts = _texts(outputs, owners)
        per_clip = {c.name: wer({c.name: texts.get(c.name, "")}, [c]) for c in clips}
        wrong = {c.name: words_wrong(c.reference, texts.get(c.name, "")) for c in clips}
        out[name] = {
            "windows": len(windows),
            "wall_s": round(best, 3),
            "rtfx": round(audio_s / best, 2),
            "mean_wer": round(wer(texts, clips) or 0.0, 4),
            "per_clip_wer": per_clip,
            "per_clip_words_wrong": wrong,
        }
    base, packed = out["one_window_per_clip"], out["packed"]
    out["speedup"] = round(base["wall_s"] / packed["wall_s"], 2)
    out["wer_delta"] = round(packed["mean_wer"] - base["mean_wer"], 4)
    deltas = {
        c: packed["per_clip_wer"][c] - base["per_clip_wer"][c]
        for c in base["per_clip_wer"]
        if packed["per_clip_wer"][c] is not None and base["per_clip_wer"][c] is not None
    }
    out["per_clip_wer_delta"] = {c: round(d, 4) for c, d in deltas.items()}
    out["max_per_clip_wer_delta"] = round(max(map(abs, deltas.values())), 4) if deltas else None
    out["clips_within_0.02"] = sum(abs(d) <= 0.02 for d in deltas.values())
    out["clips_better"] = sum(d < -0.02 for d in deltas.values())
    out["clips_worse"] = sum(d > 0.02 for d in deltas.values())
    # Words wrong packed minus words wrong unpacked, per clip (goal: none above 2).
    worse = {
        c: packed["per_clip_words_wrong"][c] - n
        for c, n in base["per_clip_words_wrong"].items()
        if n is not None and packed["per_clip_words_wrong"][c] is not None
    }
    out["per_clip_words_worse"] = worse
    out["max_words_worse"] = max(worse.values()) if worse else None
    out["words_worse_ok"] = None if not worse else max(worse.values()) <= MAX_WORDS_WORSE
    out["mean_wer_ok"] = packed["mean_wer"] <= base["mean_wer"]
    return out


def markdown(result: dict[str, Any]) -> str:
    base, packed = result["one_window_per_clip"], result["packed"]
    return "\n".join(
        [
            f"Window packing ({result['clips']} clips, {result['audio_s']:.1f} s of audio)",
            "",
            "| layout | windows | wall s | RTFx | mean WER |",
            "|---|---:|---:|---:|---:|",
            f"| one window per clip | {base['windows']} | {base['wall_s']} | {base['rtfx']} "
            f"| {base['mean_wer']} |",
            f"| packed | {packed['windows']} | {packed['wall_s']} | {packed['rtfx']} "
            f"| {packed['mean_wer']} |",
            "",
            f"speedup {result['speedup']}x, mean WER delta {result['wer_delta']:+}; per clip "
            f"vs unpacked: {result['clips_within_0.02']} within 0.02, "
            f"{result['clips_better']} better, {result['clips_worse']} worse "
            f"(largest difference {result['max_per_clip_wer_delta']}); most words lost by "
            f"one clip: {result.get('max_words_worse')} (goal <= {MAX_WORDS_WORSE})",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/whisper-serve/models"))
    parser.add_argument(
        "--layouts",
        type=int,
        default=0,
        help="also repeat on this many shuffled draws of --clips out of 24 clips, to see how "
        "per-clip differences vary with which clips share a window",
    )
    parser.add_argument("--out", type=Path, default=None, help="write JSON here")
    args = parser.parse_args(argv)
    path = resolve_weights(f"bundled:{args.model}", args.cache.expanduser())
    engine = WhisperEngine(path, cpu_threads=args.cpu_threads)
    result = compare(engine, generated_clips(args.clips), batch_size=args.batch_size)
    result["model"] = args.model
    print(markdown(result))
    if args.layouts:
        result["layouts"] = layouts(engine, args.clips, args.layouts, args.batch_size)
        print(layouts_markdown(result["layouts"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


def layouts(
    engine: WhisperEngine,
    count: int,
    draws: int,
    batch_size: int,
    cache: Path | None = None,
) -> list[dict]:
    """`draws` random draws of `count` out of 24 clips (seeds 0..draws-1), compared alone."""
    pool = generated_clips(max(24, count), *([cache] if cache else []))
    out = []
    for seed in range(draws):
        clips = random.Random(seed).sample(pool, count)
        r = compare(engine, clips, batch_size=batch_size, repeats=1)
        out.append(
            {
                "seed": seed,
                "speedup": r["speedup"],
                "mean_wer": [r["one_window_per_clip"]["mean_wer"], r["packed"]["mean_wer"]],
                "within": r["clips_within_0.02"],
                "better": r["clips_better"],
                "worse": r["clips_worse"],
                "max_delta": r["max_per_clip_wer_delta"],
                "max_words_worse": r["max_words_worse"],
                "words_worse_ok": r["words_worse_ok"],
                "mean_wer_ok": r["mean_wer_ok"],
            }
        )
    return out


def layouts_markdown(rows: list[dict]) -> str:
    lines = [
        "",
        "| draw | speedup | mean WER unpacked → packed | clips within 0.02 / better / worse "
        f"| most words worse (one clip) | <= {MAX_WORDS_WORSE} |",
        "|---:|---:|---|---|---:|---|",
    ]
    for r in rows:
        ok = {True: "yes", False: "no", None: "-"}[r.get("words_worse_ok")]
        lines.append(
            f"| {r['seed']} | {r['speedup']}x | {r['mean_wer'][0]} → {r['mean_wer'][1]} "
            f"| {r['within']} / {r['better']} / {r['worse']} | {r.get('max_words_worse')} "
            f"| {ok} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
