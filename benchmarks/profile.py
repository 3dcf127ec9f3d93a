"""Optional py-spy profiles of the replica processes during one load level (`--profile`).

py-spy records each Serve replica of the app while the level runs (raw collapsed stacks);
idle samples are kept (`--idle`) because CTranslate2 threads wait in native code while
they compute; the summary attributes samples to the stages that matter: encoder, decoder, features,
audio decode, VAD, Ray (de)serialization and HTTP handling.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.service import replica_processes

# First match wins: a stack is attributed to the deepest listed stage it passes through.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("encoder (WhisperModel.encode)", ("encode (faster_whisper/transcribe.py",)),
    ("decoder (generate, beam search)", ("generate_segment_batched", "generate (ctranslate2")),
    ("log-mel features", ("feature_extractor", "__call__ (faster_whisper/feature_extractor")),
    ("language detection", ("detect_language",)),
    ("audio decode (PyAV)", ("decode_audio (serve_app/pipeline/decode.py", "_decode_stream")),
    ("VAD (silero)", ("speech_timestamps", "plan_chunks")),
    ("Ray serialization", ("serialization.py", "pickle", "cloudpickle")),
    ("HTTP / multipart parsing", ("multipart", "starlette", "uvicorn", "fastapi")),
    ("job store / tracker", ("serve_app/stores", "serve_app/jobs")),
]


@dataclass
class Profiler:
    """Starts `py-spy record` on every replica of `app_name`; stop() collects summaries."""

    app_name: str
    out_dir: Path
    label: str
    rate: int = 50
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)

    def start(self) -> None:
        exe = shutil.which("py-spy")
        if exe is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, proc in replica_processes(self.app_name).items():
            out = self.out_dir / f"{self.label}-{name}.txt"
            cmd = [exe, "record", "--pid", str(proc.pid), "--format", "raw", "--rate",
                   str(self.rate), "--output", str(out), "--nonblocking", "--idle"]  # fmt: skip
            popen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs[name] = (popen, out)

    def stop(self) -> dict[str, Any]:
        summaries: dict[str, Any] = {}
        for name, (popen, out) in self.procs.items():
            popen.send_signal(signal.SIGINT)
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
            if out.is_file():
                summaries[name] = {"file": str(out), **summarize(out.read_text())}
        return summaries


def summarize(raw: str, top: int = 12) -> dict[str, Any]:
    """Stage shares and the hottest frames (inclusive) of a py-spy raw profile."""
    stages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaves[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        stages[_stage(frames)] += count
    share = {k: round(v / total, 3) for k, v in stages.most_common()} if total else {}
    work = {k: v for k, v in stages.items() if not k.startswith("other")}
    work_total = sum(work.values())
    return {
        "samples": total,
        "stages": share,
        # Among samples in a known stage: where the busy threads' wall time goes.
        "work_stages": {k: round(v / work_total, 3) for k, v in Counter(work).most_common()},
        "top_inclusive": [(f, round(n / total, 3)) for f, n in inclusive.most_common(top)],
        "top_self": [(f, round(n / total, 3)) for f, n in leaves.most_common(top)],
    }


def _stage(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage
    return "other (event loop, Ray core, threads)"
