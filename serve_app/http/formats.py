"""Render a TranscriptionResult in the OpenAI response formats (wire models or text)."""

from __future__ import annotations

from serve_app.http.schemas import (
    TranscriptionJSON,
    VerboseTranscription,
    WireSegment,
    WireWord,
)
from serve_app.results import Segment, TranscriptionResult

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def render(
    result: TranscriptionResult, fmt: str, granularities: frozenset[str] = frozenset()
) -> str | TranscriptionJSON | VerboseTranscription:
    """JSON formats return their wire model, text formats a string."""
    if fmt == "json":
        return TranscriptionJSON(text=result.text)
    if fmt == "verbose_json":
        return verbose_json(result, granularities)
    if fmt == "text":
        return result.text + "\n" if result.text else ""
    if fmt == "srt":
        return srt(result.segments)
    if fmt == "vtt":
        return vtt(result.segments)
    raise ValueError(f"unknown response format {fmt!r}")


def verbose_json(
    result: TranscriptionResult, granularities: frozenset[str]
) -> VerboseTranscription:
    body = VerboseTranscription(
        task=result.options.task,
        language=result.language,
        duration=result.duration,
        text=result.text,
        model=result.model,
    )
    if not granularities or "segment" in granularities:
        body.segments = [
            WireSegment(
                id=s.id,
                seek=s.seek,
                start=s.start,
                end=s.end,
                text=s.text,
                tokens=s.tokens,
                temperature=s.temperature,
                avg_logprob=s.avg_logprob,
                compression_ratio=s.compression_ratio,
                no_speech_prob=s.no_speech_prob,
            )
            for s in result.segments
        ]
    if "word" in granularities:
        body.words = [
            WireWord(word=w.word.strip(), start=w.start, end=w.end, probability=w.probability)
            for w in result.words
        ]
    return body


def format_timestamp(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def srt(segments: list[Segment]) -> str:
    blocks = []
    for i, seg in enumerate(_cues(segments), start=1):
        start = format_timestamp(seg.start, ",")
        end = format_timestamp(seg.end, ",")
        blocks.append(f"{i}\n{start} --> {end}\n{seg.text.strip()}\n")
    return "\n".join(blocks)


def vtt(segments: list[Segment]) -> str:
    lines = ["WEBVTT", ""]
    for seg in _cues(segments):
        start = format_timestamp(seg.start, ".")
        end = format_timestamp(seg.end, ".")
        lines += [f"{start} --> {end}", seg.text.strip(), ""]
    return "\n".join(lines)


def _cues(segments: list[Segment]) -> list[Segment]:
    # Cues must have text and must not run backwards, or players reject the file.
    return [s for s in segments if s.text.strip() and s.end >= s.start]
