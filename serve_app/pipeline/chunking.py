"""Cut decoded audio into ≤30 s VAD chunks, and map chunk times back to the original.

Both mirror `BatchedInferencePipeline`: the same Silero VAD options and timestamps
(`pipeline.vad`) and the same chunk collection, so a chunk here is the chunk a direct
pipeline run would decode.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
from faster_whisper.vad import SpeechTimestampsMap, VadOptions, collect_chunks

from serve_app.options import VadSettings
from serve_app.pipeline.decode import SAMPLE_RATE
from serve_app.pipeline.vad import speech_timestamps
from serve_app.results import Segment, Word

CHUNK_LENGTH_S = 30
DEFAULT_VAD = VadSettings()  # BatchedInferencePipeline's: min_silence_duration_ms=160


@dataclass
class ChunkPlan:
    """VAD chunks of one audio and what is needed to map times back to the original."""

    chunks: list[np.ndarray]
    metadata: list[dict]
    speech_timestamps: list[dict] = field(default_factory=list)
    duration: float = 0.0

    @property
    def duration_after_vad(self) -> float:
        return sum(ts["end"] - ts["start"] for ts in self.speech_timestamps) / SAMPLE_RATE


def plan_chunks(samples: np.ndarray, vad: VadSettings | None = DEFAULT_VAD) -> ChunkPlan:
    """Cut audio into ≤30 s speech chunks exactly as `BatchedInferencePipeline` does.

    `vad=None` (`vad_filter=false`) cuts fixed 30 s windows; faster-whisper takes the
    whole clip when it is shorter than 30 s and refuses longer ones.
    """
    duration = samples.shape[0] / SAMPLE_RATE
    if vad is None:
        step = CHUNK_LENGTH_S * SAMPLE_RATE
        speech = [
            {"start": start, "end": min(start + step, samples.shape[0])}
            for start in range(0, samples.shape[0], step)
        ]
    else:
        options = VadOptions(
            threshold=vad.threshold,
            max_speech_duration_s=CHUNK_LENGTH_S,
            min_silence_duration_ms=vad.min_silence_duration_ms,
            speech_pad_ms=vad.speech_pad_ms,
        )
        speech = speech_timestamps(samples, options)  # faster-whisper's, in bounded memory
    if not speech:
        return ChunkPlan(chunks=[], metadata=[], speech_timestamps=[], duration=duration)
    chunks, metadata = collect_chunks(samples, speech, max_duration=CHUNK_LENGTH_S)
    keep = [i for i, c in enumerate(chunks) if c.size > 0]
    return ChunkPlan(
        chunks=[chunks[i] for i in keep],
        metadata=[metadata[i] for i in keep],
        speech_timestamps=speech,
        duration=duration,
    )


class ChunkPlanner:
    """`plan_chunks` off the event loop, at most `workers` at once: each VAD run is one
    thread at full speed, so more at once only adds their working memory."""

    def __init__(self, workers: int) -> None:
        self._slots = asyncio.Semaphore(workers)

    async def plan(self, samples: np.ndarray, vad: VadSettings | None) -> ChunkPlan:
        async with self._slots:
            return await asyncio.to_thread(plan_chunks, samples, vad)


def restore_timestamps(segments: list[Segment], plan: ChunkPlan) -> list[Segment]:
    """Map segment/word times from the speech-only timeline back to the original audio.

    Mirrors `faster_whisper.transcribe.restore_speech_timestamps`.
    """
    if not plan.speech_timestamps:
        return segments
    ts_map = SpeechTimestampsMap(plan.speech_timestamps, SAMPLE_RATE)
    for segment in segments:
        if segment.words:
            words: list[Word] = []
            for word in segment.words:
                chunk_index = ts_map.get_chunk_index((word.start + word.end) / 2)
                word.start = ts_map.get_original_time(word.start, chunk_index)
                word.end = ts_map.get_original_time(word.end, chunk_index)
                words.append(word)
            segment.start = words[0].start
            segment.end = words[-1].end
            segment.words = words
        else:
            segment.start = ts_map.get_original_time(segment.start)
            segment.end = ts_map.get_original_time(segment.end, is_end=True)
    return segments
