"""Retry policy of jobs: which failures are final, and how long to wait before the next try."""

from __future__ import annotations

from datetime import timedelta

from serve_app.config import JobsConfig
from serve_app.errors import ServiceError

# Errors that retrying cannot fix: the input itself is bad.
PERMANENT_CODES = frozenset(
    {
        "bad_request",
        "empty_file",
        "model_not_found",
        "vocabulary_not_found",
        "payload_too_large",
        "audio_too_long",
        "unsupported_media_type",
        "undecodable_audio",
    }
)


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, ServiceError) and exc.code in PERMANENT_CODES


def retry_delay(attempts: int, config: JobsConfig) -> timedelta:
    """Capped exponential backoff after the `attempts`-th failed attempt."""
    seconds = min(config.retry_base_s * 2 ** (attempts - 1), config.retry_max_s)
    return timedelta(seconds=seconds)
