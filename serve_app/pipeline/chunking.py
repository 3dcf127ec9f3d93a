"""Cut decoded audio into ≤30 s VAD chunks, and map chunk times back to the original.

Both mirror `BatchedInferencePipeline`: the same Silero VAD options and timestamps
(`pipeline.vad`) and the same chunk collection, so a chunk here is the chunk a direct
pipeline run would decode. Chunks come out as VAD settles them (`cut_chunks`), so a long
file's first chunks can be decoding while VAD still runs over the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from faster_whisper.vad import SpeechTimestampsMap, VadOptions

from serve_app.options import VadSettings
from serve_app.pipeline.decode import SAMPLE_RATE
from serve_app.pipeline.vad import speech_stream
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

    def speech_samples(self) -> int:
        """Speech cut so far, in samples of the speech-only timeline."""
        return sum(ts["end"] - ts["start"] for ts in list(self.speech_timestamps))

    @property
    def duration_after_vad(self) -> float:
        return self.speech_samples() / SAMPLE_RATE


def plan_chunks(samples: np.ndarray, vad: VadSettings | None = DEFAULT_VAD) -> ChunkPlan:
    """Cut audio into ≤30 s speech chunks exactly as `BatchedInferencePipeline` does.

    `vad=None` (`vad_filter=false`) cuts fixed 30 s windows; faster-whisper takes the
    whole clip when it is shorter than 30 s and refuses longer ones.
    """
    plan = ChunkPlan(chunks=[], metadata=[], duration=samples.shape[0] / SAMPLE_RATE)

    def emit(chunk: np.ndarray, metadata: dict, last: bool) -> None:
        plan.chunks.append(chunk)
        plan.metadata.append(metadata)

    cut_chunks(samples, vad, emit, plan.speech_timestamps)
    return plan


def cut_chunks(
    samples: np.ndarray,
    vad: VadSettings | None,
    emit: Callable[[np.ndarray, dict, bool], None],
    speech_out: list[dict],
) -> None:
    """`plan_chunks`, handing each chunk to `emit` as soon as it is final (while VAD still
    runs over the audio after it), with `last=True` for the last one. The speech timestamps
    go into `speech_out` as they are final, ahead of the chunk that holds them."""
    if vad is None:
        step = CHUNK_LENGTH_S * SAMPLE_RATE
        speech: Iterator[dict] = (
            {"start": start, "end": min(start + step, samples.shape[0])}
            for start in range(0, samples.shape[0], step)
        )
    else:
        options = VadOptions(
            threshold=vad.threshold,
            max_speech_duration_s=CHUNK_LENGTH_S,
            min_silence_duration_ms=vad.min_silence_duration_ms,
            speech_pad_ms=vad.speech_pad_ms,
        )
        speech = speech_stream(samples, options)  # faster-whisper's, in bounded memory
    chunks = collect_chunks(samples, _recorded(speech, speech_out), CHUNK_LENGTH_S)
    for chunk, metadata, last in chunks:
        if chunk.size > 0:
            emit(chunk, metadata, last)


def _recorded(speech: Iterable[dict], seen: list[dict]) -> Iterator[dict]:
    for segment in speech:
        seen.append(segment)
        yield segment


def collect_chunks(
    audio: np.ndarray, chunks: Iterable[dict], max_duration: float, sampling_rate: int = 16000
) -> Iterator[tuple[np.ndarray, dict, bool]]:
    """`faster_whisper.vad.collect_chunks` as a generator, line for line: a chunk is out as
    soon as the next segment would not fit in it (the flag: it is the last one). No
    segments, no chunk (faster-whisper returns one empty chunk then)."""
    current_segments: list[dict] = []
    current_duration = 0
    total_duration = 0
    current_audio = np.array([], dtype=np.float32)
    started = False
    for chunk in chunks:
        started = True
        if current_duration + chunk["end"] - chunk["start"] > max_duration * sampling_rate:
            yield (
                current_audio,
                {
                    "offset": total_duration / sampling_rate,
                    "duration": current_duration / sampling_rate,
                    "segments": current_segments,
                },
                False,
            )
            total_duration += current_duration
            # faster-whisper leaves this segment out of the new chunk's list; kept as is.
            current_segments = []
            current_audio = audio[chunk["start"] : chunk["end"]]
            current_duration = chunk["end"] - chunk["start"]
        else:
            current_segments.append(chunk)
            current_audio = np.concatenate((current_audio, audio[chunk["start"] : chunk["end"]]))
            current_duration += chunk["end"] - chunk["start"]
    if started:
        yield (
            current_audio,
            {
                "offset": total_duration / sampling_rate,
                "duration": current_duration / sampling_rate,
                "segments": current_segments,
            },
            True,
        )


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
