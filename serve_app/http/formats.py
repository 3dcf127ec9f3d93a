"""Render a TranscriptionResult in the OpenAI response formats (wire models or text)."""

from __future__ import annotations

import math

from serve_app.http.schemas import (
    DiarizedSegment,
    DiarizedTranscription,
    DurationUsage,
    TokenLogprob,
    TranscriptionJSON,
    VerboseTranscription,
    WireSegment,
    WireWord,
)
from serve_app.results import Segment, TranscriptionResult

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "diarized_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def render(
    result: TranscriptionResult,
    fmt: str,
    granularities: frozenset[str] = frozenset(),
    *,
    logprobs: bool = False,
) -> str | TranscriptionJSON | VerboseTranscription | DiarizedTranscription:
    """JSON formats return their wire model (with `usage`), text formats a string."""
    if fmt == "json":
        return TranscriptionJSON(
            text=result.text,
            logprobs=word_logprobs(result) if logprobs else None,
            usage=usage(result),
        )
    if fmt == "verbose_json":
        body = verbose_json(result, granularities)
        body.logprobs = word_logprobs(result) if logprobs else None
        return body
    if fmt == "diarized_json":
        return diarized_json(result)
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
        language_probability=round(result.language_probability, 4),
        duration=result.duration,
        text=result.text,
        model=result.model,
        usage=usage(result),
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
                speaker=s.speaker,
                channel=s.channel,
            )
            for s in result.segments
        ]
    if "word" in granularities:
        body.words = [
            WireWord(
                word=w.word.strip(),
                start=w.start,
                end=w.end,
                probability=w.probability,
                speaker=w.speaker,
                channel=w.channel,
            )
            for w in result.words
        ]
    return body


def diarized_json(result: TranscriptionResult) -> DiarizedTranscription:
    """OpenAI's diarized shape: one entry per speaker turn (segments are split at changes)."""
    return DiarizedTranscription(
        duration=result.duration,
        text=result.text,
        segments=[
            DiarizedSegment(
                id=f"seg_{s.id}",
                start=s.start,
                end=s.end,
                text=s.text.strip(),
                speaker=speaker_label(s) or "A",
                channel=s.channel,
            )
            for s in result.segments
            if s.text.strip()
        ],
        usage=usage(result),
    )


def speaker_label(segment: Segment) -> str | None:
    """The speaker, or the channel (1-based) when channels are all there is."""
    if segment.speaker is not None:
        return segment.speaker
    if segment.channel is not None:
        return f"Channel {segment.channel + 1}"
    return None


def _cue_name(segment: Segment) -> str | None:
    label = speaker_label(segment)
    if label is None:
        return None
    # Unnamed speakers are letters (OpenAI's A, B, …): say "Speaker A" in a cue.
    return f"Speaker {label}" if label.isalpha() and label.isupper() and len(label) <= 2 else label


def usage(result: TranscriptionResult) -> DurationUsage:
    """OpenAI's duration usage: the seconds of audio sent (not the speech VAD kept)."""
    return DurationUsage(seconds=round(result.duration, 3))


def word_logprobs(result: TranscriptionResult) -> list[TokenLogprob]:
    """OpenAI's `logprobs` shape, one entry per word: faster-whisper gives a probability
    per aligned word, not per token, so a word stands in for a token."""
    out = []
    for word in result.words:
        text = word.word
        logprob = math.log(word.probability) if word.probability > 0 else -100.0
        out.append(TokenLogprob(token=text, logprob=round(logprob, 5), bytes=list(text.encode())))
    return out


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
        name = _cue_name(seg)
        text = f"{name}: {seg.text.strip()}" if name else seg.text.strip()
        blocks.append(f"{i}\n{start} --> {end}\n{text}\n")
    return "\n".join(blocks)


def vtt(segments: list[Segment]) -> str:
    lines = ["WEBVTT", ""]
    for seg in _cues(segments):
        start = format_timestamp(seg.start, ".")
        end = format_timestamp(seg.end, ".")
        name = _cue_name(seg)
        text = f"<v {name}>{seg.text.strip()}" if name else seg.text.strip()
        lines += [f"{start} --> {end}", text, ""]
    return "\n".join(lines)


def _cues(segments: list[Segment]) -> list[Segment]:
    # Cues must have text and must not run backwards, or players reject the file.
    return [s for s in segments if s.text.strip() and s.end >= s.start]
