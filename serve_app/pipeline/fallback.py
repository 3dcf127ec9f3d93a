"""Temperature fallback and silence checks per chunk, as `WhisperModel.transcribe` does them.

`BatchedInferencePipeline` decodes once at the first temperature and applies none of the
quality thresholds, which is this service's default too. When a caller sets thresholds,
the check runs here, in the ingress, after the chunk comes back: the thresholds are not
part of the batch key (they do not change a decode), and a retry is a new chunk request
whose `DecodeOptions` carry the next temperature.
"""

from __future__ import annotations

from dataclasses import replace
from enum import Enum

from faster_whisper.transcribe import get_compression_ratio

from serve_app.inference.protocol import ChunkRequest, ChunkResult, ModelClient
from serve_app.options import FallbackPolicy


class Verdict(Enum):
    OK = "ok"
    SILENT = "silent"
    RETRY = "retry"


def judge(result: ChunkResult, policy: FallbackPolicy) -> Verdict:
    """faster-whisper's `generate_with_fallback` checks on one decoded chunk."""
    if not result.segments:
        return Verdict.OK
    text = "".join(s.text for s in result.segments)
    # A batched chunk has one avg_logprob and no_speech_prob for all its segments.
    avg_logprob = result.segments[0].avg_logprob
    no_speech = result.segments[0].no_speech_prob
    low_logprob = policy.log_prob_threshold is not None and avg_logprob < policy.log_prob_threshold
    silent = policy.no_speech_threshold is not None and no_speech > policy.no_speech_threshold
    if silent and (policy.log_prob_threshold is None or low_logprob):
        return Verdict.SILENT
    too_repetitive = (
        policy.compression_ratio_threshold is not None
        and get_compression_ratio(text) > policy.compression_ratio_threshold
    )
    return Verdict.RETRY if too_repetitive or low_logprob else Verdict.OK


async def decode_with_fallback(
    client: ModelClient, chunk: ChunkRequest, policy: FallbackPolicy
) -> ChunkResult:
    """Decode `chunk`; while it fails the policy, again at the next fallback temperature.

    When every temperature fails, the attempt with the best average log probability is
    kept (as faster-whisper does); a chunk judged silent keeps no segments.
    """
    result = await client.transcribe_chunk(chunk)
    if not policy.active:
        return result
    attempts = [result]
    temperatures = list(policy.temperatures)
    while True:
        verdict = judge(result, policy)
        if verdict is Verdict.SILENT:
            return replace(result, segments=[])
        if verdict is Verdict.OK or not temperatures:
            break
        options = replace(chunk.options, temperature=temperatures.pop(0))
        result = await client.transcribe_chunk(replace(chunk, options=options))
        attempts.append(result)
    if judge(result, policy) is Verdict.OK:
        return result
    return max(attempts, key=lambda r: r.segments[0].avg_logprob if r.segments else -1e9)
