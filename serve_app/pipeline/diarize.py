"""Who spoke when: speech windows → embeddings → clusters → a speaker per word and segment.

Runs in the ingress (sync requests, handles) and in the tracker (the diarization stage of
a job). The embeddings come from the SpeakerEmbedder deployment through `SpeakerClient`;
clustering (`clustering.py`) and labelling are cheap and run here. Windows of `window_s`
(1.6 s: one GE2E partial) step by `hop_s` (1.6 s) over the Silero VAD speech regions the
transcription already found, so embedding can run while the chunks decode.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field, replace

import numpy as np

from serve_app.config import DiarizationConfig
from serve_app.inference.speaker import SpeakerClient
from serve_app.pipeline.clustering import (
    SpeakerCount,
    agglomerate,
    centre,
    centroids,
    match_known,
    merge_same_voice,
)
from serve_app.pipeline.decode import SAMPLE_RATE
from serve_app.results import Segment, Word

_EMBED_CALL_CLIPS = 32  # clips per SpeakerEmbedder call: requests share its batches
_LONE_WORD_S = 0.6


@dataclass
class SpeakerWindows:
    """Embedded windows of one audio: times in seconds of the original audio."""

    starts: np.ndarray
    ends: np.ndarray
    embeddings: np.ndarray  # (n, 256)

    def to_lists(self) -> dict[str, list]:
        """JSON-able form (a job's diarization checkpoint)."""
        return {
            "starts": self.starts.round(3).tolist(),
            "ends": self.ends.round(3).tolist(),
            "embeddings": self.embeddings.round(6).tolist(),
        }

    @classmethod
    def from_lists(cls, data: dict[str, list]) -> SpeakerWindows:
        return cls(
            np.array(data["starts"], np.float64),
            np.array(data["ends"], np.float64),
            np.array(data["embeddings"], np.float32).reshape(-1, 256),
        )


@dataclass(frozen=True)
class DiarizeRequest:
    """A caller's diarization settings: the speaker count and named reference voices."""

    count: SpeakerCount = field(default_factory=SpeakerCount)
    names: tuple[str, ...] = ()
    references: tuple[np.ndarray, ...] = ()  # 16 kHz mono, one per name


def speech_windows(
    speech: list[dict], n_samples: int, window_s: float, hop_s: float, min_s: float
) -> list[tuple[int, int]]:
    """Sample ranges of the windows over the speech regions (all audio when there are none)."""
    regions = [(int(ts["start"]), int(ts["end"])) for ts in speech] or [(0, n_samples)]
    win, hop, shortest = (int(v * SAMPLE_RATE) for v in (window_s, hop_s, min_s))
    out: list[tuple[int, int]] = []
    for start, end in regions:
        end = min(end, n_samples)
        if end - start < shortest:
            continue
        if end - start <= win:
            out.append((start, end))
            continue
        starts = list(range(start, end - win + 1, hop))
        if starts[-1] + win < end:
            starts.append(end - win)
        out += [(s, s + win) for s in starts]
    return out


class Diarizer:
    """Embeds windows through a `SpeakerClient`, then labels a transcript's words."""

    def __init__(self, config: DiarizationConfig, client: SpeakerClient) -> None:
        self.config = config
        self.client = client

    async def embed_windows(self, samples: np.ndarray, speech: list[dict]) -> SpeakerWindows:
        c = self.config
        ranges = speech_windows(speech, samples.shape[0], c.window_s, c.hop_s, c.min_window_s)
        clips = [samples[s:e] for s, e in ranges]
        # All calls at once: the SpeakerEmbedder batches them (with other requests' calls).
        parts = await asyncio.gather(
            *(
                self.client.embed(clips[i : i + _EMBED_CALL_CLIPS])
                for i in range(0, len(clips), _EMBED_CALL_CLIPS)
            )
        )
        embeddings = np.concatenate(parts) if parts else np.zeros((0, 256), np.float32)
        bounds = np.array(ranges, np.float64).reshape(-1, 2) / SAMPLE_RATE
        return SpeakerWindows(bounds[:, 0], bounds[:, 1], embeddings)

    async def embed_references(self, request: DiarizeRequest) -> np.ndarray:
        if not request.references:
            return np.zeros((0, 256), np.float32)
        return await self.client.embed(list(request.references))

    def assign(
        self, windows: SpeakerWindows, request: DiarizeRequest, references: np.ndarray
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Per window: cluster index, the clusters' names, and each window's weight."""
        n = windows.embeddings.shape[0]
        if n == 0:
            return np.zeros(0, np.int64), [], np.zeros(0)
        mean = windows.embeddings.mean(axis=0)
        x = centre(windows.embeddings, mean)
        count = request.count
        if count.exact is None and references.shape[0] and count.minimum is None:
            count = replace(count, minimum=min(references.shape[0], n))
        labels = agglomerate(
            x, count, self.config.threshold, self.config.max_speakers, self.config.min_cluster
        )
        if count.exact is None:
            low, _ = count.bounds(n, self.config.max_speakers)
            labels = merge_same_voice(windows.embeddings, labels, self.config.same_voice_gap, low)
        cents = centroids(x, labels)
        names = [_letter(i) for i in range(cents.shape[0])]
        if references.shape[0]:
            known = match_known(cents, centre(references, mean), self.config.reference_similarity)
            for cluster, ref in known.items():
                names[cluster] = request.names[ref]
            unnamed = [i for i in range(len(names)) if i not in known]
            for k, i in enumerate(unnamed):
                names[i] = _letter(k)
        sims = x @ cents.T
        ordered = np.sort(sims, axis=1)
        margin = ordered[:, -1] - (ordered[:, -2] if sims.shape[1] > 1 else 0.0)
        return labels, names, np.clip(margin, 0.05, None)

    def label(
        self,
        segments: list[Segment],
        windows: SpeakerWindows,
        request: DiarizeRequest,
        references: np.ndarray,
    ) -> list[Segment]:
        """Segments with `speaker` on every word and segment, split where it changes."""
        labels, names, weights = self.assign(windows, request, references)
        if not names:
            return segments
        out: list[Segment] = []
        for segment in segments:
            words = segment.words or []
            if not words:
                segment.speaker = names[_vote(segment.start, segment.end, windows, labels, weights)]
                out.append(segment)
                continue
            for word in words:
                word.speaker = names[_vote(word.start, word.end, windows, labels, weights)]
            _smooth(words)
            out += _split(segment, words)
        for i, segment in enumerate(out, start=1):
            segment.id = i
        return out


def _letter(i: int) -> str:
    """OpenAI's labels for unnamed speakers: A, B, …, Z, AA, AB, …"""
    return _letter(i // 26 - 1) + chr(65 + i % 26) if i >= 26 else chr(65 + i)


def _vote(
    start: float, end: float, windows: SpeakerWindows, labels: np.ndarray, weights: np.ndarray
) -> int:
    overlap = np.minimum(windows.ends, end) - np.maximum(windows.starts, start)
    hit = overlap > 0
    if not hit.any():
        middle = (start + end) / 2
        nearest = np.abs((windows.starts + windows.ends) / 2 - middle)
        return int(labels[int(np.argmin(nearest))])
    scores = np.bincount(labels[hit], weights=(overlap * weights)[hit], minlength=labels.max() + 1)
    return int(np.argmax(scores))


def _smooth(words: list[Word]) -> None:
    """A lone short word whose neighbours in the segment share another speaker takes theirs.

    Windows straddling a turn change (< 0.3 s of silence) lean towards the speaker with
    more audio in them, which can pull the turn's last or first word over; Whisper's
    segments rarely cut a turn there, so such a word at a segment's edge follows its
    neighbour.
    """
    n = len(words)
    for i, word in enumerate(words):
        if word.end - word.start >= _LONE_WORD_S or n < 3:
            continue
        if 0 < i < n - 1:
            before, after = words[i - 1].speaker, words[i + 1].speaker
        elif i == 0:  # an edge word follows a neighbouring run of at least two words
            before = after = words[1].speaker if words[1].speaker == words[2].speaker else None
        else:
            before = after = words[-2].speaker if words[-2].speaker == words[-3].speaker else None
        if before is not None and before == after != word.speaker:
            word.speaker = before


def _split(segment: Segment, words: list[Word]) -> list[Segment]:
    runs: list[list[Word]] = []
    for word in words:
        if runs and runs[-1][-1].speaker == word.speaker:
            runs[-1].append(word)
        else:
            runs.append([word])
    if len(runs) == 1:
        segment.speaker = words[0].speaker
        return [segment]
    pieces = []
    for n, run in enumerate(runs):
        piece = copy.copy(segment)
        piece.words = run
        piece.start, piece.end = run[0].start, run[-1].end
        text = "".join(w.word for w in run)
        piece.text = text if n == 0 else " " + text.lstrip()
        piece.tokens = segment.tokens if n == 0 else []
        piece.speaker = run[0].speaker
        pieces.append(piece)
    return pieces
