"""multichannel=true: each channel transcribed on its own, the transcripts merged in time.

The service prepares one `PreparedAudio` per channel (same options, one language) and
runs all their chunks at once, so they meet in the replicas' batchers together; here the
per-channel transcripts are labelled with their channel and merged in time order.
"""

from __future__ import annotations

from dataclasses import replace

from serve_app.results import TranscriptionResult


def merge_channels(results: list[TranscriptionResult]) -> TranscriptionResult:
    """One transcript: every segment and word labelled with its 0-based channel, segments
    ordered by start time (then channel), numbered from 1; text joined in that order."""
    segments = []
    for channel, result in enumerate(results):
        for segment in result.segments:
            segment.channel = channel
            for word in segment.words or []:
                word.channel = channel
            segments.append(segment)
    segments.sort(key=lambda s: (s.start, s.channel or 0))
    for i, segment in enumerate(segments, start=1):
        segment.id = i
    first = results[0]
    timings = dict(first.timings)
    return replace(
        first,
        text=" ".join(s.text.strip() for s in segments if s.text.strip()),
        duration=max(r.duration for r in results),
        duration_after_vad=round(sum(r.duration_after_vad for r in results), 3),
        segments=segments,
        chunks=sum(r.chunks for r in results),
        batch_sizes=[b for r in results for b in r.batch_sizes],
        window_clips=[w for r in results for w in r.window_clips],
        timings=timings,
    )
