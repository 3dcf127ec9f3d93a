"""What diarize=true costs: extra wall time on 10 minutes of audio vs transcription alone.

    python -m benchmarks.diarize                 # 600 s conversation, 3 voices, 2 rounds
    python -m benchmarks.diarize --seconds 120 --rounds 1

A generated conversation (espeak-ng voices en-us, en-us+f5, en+Michael taking turns of one
sentence, 0.1-1.0 s apart, some back to back) goes to a local Serve app (tiny.en, one
replica with two threads, as `serve_config.yaml` runs it: 2 batches at once of 1 thread
each; `--concurrent-batches 1` for one batch of 2 threads; the SpeakerEmbedder) over HTTP,
three ways, alternating per round: `verbose_json` (transcription alone), `verbose_json`
with word timestamps (what diarize decodes with), and `diarized_json` (diarize=true).
Reported: the best (least disturbed: other load only adds time) and the median wall time
of each, the extra of diarize=true as a fraction of transcription alone (goal <= 15 %) and
of the word-timestamp run (the embedding + clustering share alone), both from the best
times, the ingress's embed/diarize phases (Server-Timing), and the DER (0.25 s collar) of
the diarized run.
Results: `benchmarks/results/diarize.json` and `diarize.md`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conversation import SENTENCES, conversation, wav_bytes  # noqa: E402
from tests.der import der  # noqa: E402

VOICES = ("en-us", "en-us+f5", "en+Michael")
GOAL = 0.15


def make_talk(seconds: float, seed: int = 14) -> tuple[np.ndarray, list[Any]]:
    rng = random.Random(seed)
    script, gaps, length, last = [], [], 0.0, -1
    while length < seconds - 6:
        voice = rng.choice([v for v in range(len(VOICES)) if v != last])
        script.append((voice, rng.randrange(len(SENTENCES))))
        gaps.append(rng.choice([0.1, 0.2, 0.25, 0.4, 0.7, 1.0]))
        length += 3.4 + gaps[-1]  # a sentence is 3.3-4.2 s; the audio is cut to length
        last = voice
    audio, turns = conversation(script, gaps[:-1], VOICES)
    return audio[: int(seconds * 16000)], [t for t in turns if t.end <= seconds]


def timed(client: httpx.Client, wav: bytes, data: dict[str, str]) -> tuple[float, dict, str]:
    started = time.perf_counter()
    reply = client.post("/v1/audio/transcriptions", files={"file": ("talk.wav", wav)}, data=data)
    elapsed = time.perf_counter() - started
    reply.raise_for_status()
    return elapsed, reply.json(), reply.headers.get("server-timing", "")


def phases(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur) / 1000
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrent-batches", type=int, default=2, choices=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.config import AppConfig

    audio, turns = make_talk(args.seconds)
    wav = wav_bytes(audio)
    tmp = Path(tempfile.mkdtemp(prefix="bench-diarize-"))
    config = AppConfig.model_validate(
        {
            "ingress": {"num_cpus": 0.2},
            "storage": {"database_url": f"sqlite:///{tmp}/j.db", "blob_url": f"file://{tmp}/b"},
            "jobs": {"enabled": False},
            "models": [
                {
                    "name": "tiny.en",
                    "num_cpus": 0.5,
                    "cpu_threads": 2 // args.concurrent_batches,
                    "concurrent_batches": args.concurrent_batches,
                }
            ],
            "limits": {"max_upload_bytes": 64 * 1024 * 1024},
        }
    )
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8765})
    serve.run(build_app(config), name="bench-diarize", route_prefix="/")
    variants = {
        "transcribe": {"response_format": "verbose_json"},
        "transcribe_words": {
            "response_format": "verbose_json",
            "timestamp_granularities[]": "word",
        },
        "diarize": {"response_format": "diarized_json"},
    }
    walls: dict[str, list[float]] = {name: [] for name in variants}
    timing: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    bodies: dict[str, dict] = {}
    try:
        with httpx.Client(base_url="http://127.0.0.1:8765", timeout=1800) as client:
            short = wav_bytes(audio[: 20 * 16000])
            for data in variants.values():  # warm-up: models loaded, decoders started
                timed(client, short, data)
            for _ in range(args.rounds):
                for name, data in variants.items():
                    elapsed, body, header = timed(client, wav, data)
                    walls[name].append(elapsed)
                    timing[name].append(phases(header))
                    bodies[name] = body
    finally:
        serve.shutdown()
        ray.shutdown()

    median = {name: statistics.median(values) for name, values in walls.items()}
    best = {name: min(values) for name, values in walls.items()}
    extra = best["diarize"] / best["transcribe"] - 1
    extra_words = best["diarize"] / best["transcribe_words"] - 1
    segments = bodies["diarize"]["segments"]
    hypothesis = [(s["speaker"], s["start"], s["end"]) for s in segments]
    reference = [(t.speaker, t.start, t.end) for t in turns]
    result = {
        "audio_s": round(audio.size / 16000, 1),
        "turns": len(turns),
        "rounds": args.rounds,
        "concurrent_batches": args.concurrent_batches,
        "wall_s": walls,
        "median_s": median,
        "best_s": best,
        "extra_vs_transcribe": round(extra, 4),
        "extra_vs_transcribe_words": round(extra_words, 4),
        "goal": GOAL,
        "met": extra <= GOAL,
        "diarize_phases_s": timing["diarize"][-1],
        "speakers_found": len({s["speaker"] for s in segments}),
        "der_collar_0_25": round(der(reference, hypothesis, collar=0.25), 4),
        "der_no_collar": round(der(reference, hypothesis), 4),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "diarize.json").write_text(json.dumps(result, indent=2) + "\n")
    p = result["diarize_phases_s"]
    md = "\n".join(
        [
            f"# diarize=true on {result['audio_s']:.0f} s of audio ({len(turns)} turns, "
            f"3 voices), tiny.en, 2 cores, {args.rounds} rounds, "
            f"{args.concurrent_batches} batch(es) at once on {2 // args.concurrent_batches} "
            "thread(s) each",
            "",
            "| run | best wall (s) | median wall (s) |",
            "|---|---|---|",
            *(
                f"| {label} | {best[name]:.2f} | {median[name]:.2f} |"
                for name, label in (
                    ("transcribe", "verbose_json (transcription alone)"),
                    ("transcribe_words", "verbose_json + word timestamps"),
                    ("diarize", "diarized_json (diarize=true)"),
                )
            ),
            "",
            f"- extra wall time of diarize=true (best times): **{extra:+.1%}** of "
            "transcription alone "
            f"(goal <= {GOAL:.0%}: {'met' if result['met'] else 'missed'}); "
            f"{extra_words:+.1%} of the word-timestamp run",
            f"- ingress phases of the diarized run: embed {p.get('embed', 0):.2f} s (in "
            f"parallel with the chunks), diarize (clustering, labels) "
            f"{p.get('diarize', 0):.3f} s, chunks {p.get('chunks', 0):.2f} s",
            f"- speakers found: {result['speakers_found']} of 3; DER "
            f"{result['der_collar_0_25']:.1%} (0.25 s collar), "
            f"{result['der_no_collar']:.1%} (no collar)",
            "",
        ]
    )
    (args.out / "diarize.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
