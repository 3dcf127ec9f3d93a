"""Known-speaker reference clips: data URLs → checked bytes → decoded 16 kHz samples.

OpenAI's diarizing model takes `known_speaker_references[]` as data URLs; multipart forms
may upload files instead (the route turns them into data URLs, so a job stores them with
its options). Each clip is size-checked (413) before it is decoded, and decoded in the
same sandboxed child processes as any upload (not audio: 415).
"""

from __future__ import annotations

import base64
import binascii
import re

from serve_app.config import DiarizationConfig
from serve_app.errors import BadRequest, PayloadTooLarge, UnsupportedMedia
from serve_app.options import TranscribeOptions
from serve_app.pipeline.clustering import SpeakerCount
from serve_app.pipeline.diarize import DiarizeRequest
from serve_app.pipeline.sandbox import DecoderPool

_DATA_URL = re.compile(
    r"^data:(?P<type>[\w.+/-]*)(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,"
)


def to_data_url(data: bytes, media_type: str = "application/octet-stream") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def reference_bytes(url: str, max_bytes: int) -> bytes:
    """The clip's bytes; 400 for what is not a data URL, 413 above `max_bytes`, 415 for
    a declared media type that is not audio."""
    match = _DATA_URL.match(url)
    if match is None or match.group("b64") is None:
        raise BadRequest("known_speaker_references must be base64 data URLs (data:audio/…)")
    media_type = match.group("type").lower()
    if media_type and not media_type.startswith(("audio/", "video/", "application/octet")):
        raise UnsupportedMedia(f"a known speaker reference is {media_type}, not audio")
    payload = url[match.end() :]
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise PayloadTooLarge(
            f"a known speaker reference is larger than the limit of {max_bytes} bytes"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("a known speaker reference is not valid base64") from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"a known speaker reference is larger than the limit of {max_bytes} bytes"
        )
    return data


async def diarize_request(
    options: TranscribeOptions, limits: DiarizationConfig, decoder: DecoderPool
) -> DiarizeRequest:
    """The speaker count and the decoded known-speaker clips of a request."""
    if len(options.known_speaker_references) > limits.max_references:
        raise BadRequest(f"at most {limits.max_references} known speaker references")
    clips = []
    for url in options.known_speaker_references:
        data = reference_bytes(url, limits.max_reference_bytes)
        decoded = await decoder.decode(data, max_duration_s=limits.max_reference_s, timeout_s=30.0)
        clips.append(decoded.samples)
    count = SpeakerCount(options.num_speakers, options.min_speakers, options.max_speakers)
    return DiarizeRequest(count, options.known_speaker_names, tuple(clips))
