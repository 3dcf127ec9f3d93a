"""Speech clips for the benchmark: an espeak-ng set made at run time plus the test fixtures.

Generated clips are cached by content (voice, speed, text) in a directory, so a second run
reuses them. Every clip carries the text it was spoken from, for a WER sanity check.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper.audio import decode_audio

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "data"
DEFAULT_CACHE = Path("~/.cache/whisper-serve/bench-clips").expanduser()
ENGLISH_FIXTURES = ["hello.wav", "weather.wav", "numbers.wav", "kitchen.wav", "train.wav"]

VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb+f2", "en-us+f4"]
SENTENCES = [
    "The meeting has been moved to Thursday afternoon because the manager is traveling.",
    "Please remember to water the plants in the office before you leave tonight.",
    "Our flight was delayed by two hours, so we missed the connection in Chicago.",
    "The library will be closed on Monday for the national holiday.",
    "He ordered a large coffee with milk and a chocolate muffin for breakfast.",
    "The new software update fixes several bugs and improves battery life.",
    "We need three volunteers to help set up the chairs for the concert.",
    "The river flooded after a week of heavy rain in the northern valleys.",
    "Could you send me the slides from yesterday's presentation, please?",
    "The museum opens at nine and the guided tour starts half an hour later.",
    "She learned to play the piano when she was only seven years old.",
    "Traffic on the main bridge is slow because of road works near the exit.",
    "The doctor said I should drink more water and walk every single day.",
    "Our team finished the project two days ahead of the original deadline.",
    "The bakery on the corner sells the best apple pie in the whole town.",
    "Remember to bring your passport and a printed copy of the hotel booking.",
    "The children built a small wooden boat and sailed it on the pond.",
    "A strong wind knocked down several trees along the coastal highway.",
    "The price of fresh vegetables went up again at the market this week.",
    "Students must submit their essays online before midnight on Friday.",
    "The old castle on the hill attracts thousands of tourists every summer.",
    "I left my umbrella on the train, so I got completely wet on the way home.",
    "The committee will announce the winners of the competition next month.",
    "Turn left at the second traffic light and the station is on your right.",
]
FIVE_SECOND_TEXT = "Please send the quarterly report to the finance team by Friday."
JOB_TEXT = "Thank you for calling, goodbye."


@dataclass(frozen=True)
class Clip:
    """One speech file as the service receives it, plus what the baselines need."""

    name: str
    path: Path
    data: bytes
    duration: float
    reference: str


def _say(out: Path, voice: str, speed: int, text: str, exact_s: float | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        effects = ["pad", "0", str(exact_s), "trim", "0", str(exact_s)] if exact_s else []
        part = out.with_suffix(".part.wav")
        subprocess.run(
            ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(part), *effects],
            check=True,
            capture_output=True,
        )
        part.replace(out)


def _cached(cache: Path, voice: str, speed: int, text: str, exact_s: float | None = None) -> Path:
    key = hashlib.sha1(json.dumps([voice, speed, text, exact_s]).encode()).hexdigest()[:12]
    path = cache / f"{voice.replace('+', '_')}-{speed}-{key}.wav"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        _say(path, voice, speed, text, exact_s)
    return path


def _load(name: str, path: Path, reference: str) -> Clip:
    data = path.read_bytes()
    duration = float(decode_audio(path).shape[0]) / 16000
    return Clip(name=name, path=path, data=data, duration=round(duration, 3), reference=reference)


def generated_clips(count: int, cache: Path = DEFAULT_CACHE) -> list[Clip]:
    """`count` espeak-ng clips of 4-7 s, cycling through voices and speaking rates."""
    out = []
    for i in range(count):
        text = SENTENCES[i % len(SENTENCES)]
        voice = VOICES[i % len(VOICES)]
        speed = 140 + 5 * (i % 6)
        path = _cached(cache, voice, speed, text)
        out.append(_load(f"gen{i:02d}.wav", path, text))
    return out


def fixture_clips(names: list[str]) -> list[Clip]:
    refs = json.loads((FIXTURES / "transcripts.json").read_text())
    story = " ".join(_STORY)
    return [_load(n, FIXTURES / n, refs.get(n, story if n == "story.flac" else "")) for n in names]


def five_second_clip(cache: Path = DEFAULT_CACHE) -> Clip:
    """A clip of exactly 5.0 s for the single-client latency comparison."""
    path = _cached(cache, "en-us", 160, FIVE_SECOND_TEXT, 5.0)
    return _load("five_s.wav", path, FIVE_SECOND_TEXT)


def job_clip(cache: Path = DEFAULT_CACHE) -> Clip:
    """A short clip for the job benchmarks (they measure the job system, not the model)."""
    return _load("job.wav", _cached(cache, "en-us", 160, JOB_TEXT), JOB_TEXT)


LONG_SPEEDS = [130, 140, 150, 160, 170]
LONG_PAUSE_S = (0.3, 1.5)


def _read_pcm(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def _write_pcm(path: Path, pcm: np.ndarray) -> None:
    part = path.with_suffix(".part.wav")
    with wave.open(str(part), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(pcm.astype("<i2").tobytes())
    part.replace(path)


def long_recording(cache: Path = DEFAULT_CACHE, seconds: float = 600.0, seed: int = 0) -> Clip:
    """One `seconds`-long recording: espeak-ng sentences with pauses, 16 kHz mono WAV.

    Sentences (the clip set's and the story's) are drawn at random with a random voice and
    speaking rate and joined by 0.3-1.5 s of silence until the next one would not fit; the
    rest is silence, so the file is exactly `seconds` long. Cached by the hash of everything
    it is made from, with its reference text beside it (`.json`).
    """
    texts = SENTENCES + _STORY
    recipe = [seconds, seed, VOICES, LONG_SPEEDS, texts, LONG_PAUSE_S]
    key = hashlib.sha1(json.dumps(recipe).encode()).hexdigest()[:12]
    path = cache / f"long-{seconds:g}s-{key}.wav"
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        rng = random.Random(seed)
        total = round(seconds * 16000)
        parts: list[np.ndarray] = []
        spoken: list[dict[str, object]] = []
        used = 0
        with tempfile.TemporaryDirectory() as tmp:
            while True:
                pause = np.zeros(round(rng.uniform(*LONG_PAUSE_S) * 16000), dtype="<i2")
                voice, speed, text = rng.choice(VOICES), rng.choice(LONG_SPEEDS), rng.choice(texts)
                sentence = Path(tmp) / f"s{len(spoken)}.wav"
                _say(sentence, voice, speed, text)
                pcm = _read_pcm(sentence)
                if used + pause.size + pcm.size > total:
                    break
                parts += [pause, pcm]
                spoken.append({"at_s": round((used + pause.size) / 16000, 3), "text": text})
                used += pause.size + pcm.size
        parts.append(np.zeros(total - used, dtype="<i2"))
        _write_pcm(path, np.concatenate(parts))
        reference = " ".join(str(s["text"]) for s in spoken)
        meta.write_text(json.dumps({"reference": reference, "sentences": spoken}, indent=1))
    reference = json.loads(meta.read_text())["reference"]
    return _load(f"long_{seconds:g}s.wav", path, reference)


def unique_wav(data: bytes, index: int) -> bytes:
    """The same 16-bit WAV with its last 8 samples nudged by ≤3 LSB to encode `index`.

    The service dedupes jobs by audio hash; distinct bytes make every job real work.
    """
    pcm = np.frombuffer(data[-16:], dtype="<i2").copy()
    digits = [(index >> (2 * k)) & 3 for k in range(8)]
    pcm = np.clip(pcm.astype(np.int32) + np.array(digits), -32768, 32767).astype("<i2")
    return data[:-16] + pcm.tobytes()


def build_clip_set(generated: int, fixtures: list[str], cache: Path = DEFAULT_CACHE) -> list[Clip]:
    return generated_clips(generated, cache) + fixture_clips(fixtures)


def total_audio(clips: list[Clip]) -> float:
    return sum(c.duration for c in clips)


_STORY = [
    "Once upon a time there was a small village at the edge of a great forest.",
    "Every morning the baker opened his shop and sold fresh bread to the villagers.",
    "One day a traveler arrived with a map that showed a hidden lake beyond the hills.",
    "The children wanted to see the lake, so they packed some food and followed the traveler.",
    "They walked for many hours until they reached a valley full of tall green trees.",
    "At sunset they finally saw the lake, and the water was as clear as glass.",
    "Everyone agreed that it was the most beautiful place they had ever seen.",
]
