"""The one exception hierarchy of the service.

Every error a client can cause or observe is a `ServiceError` with an HTTP status and a
stable machine-readable code; `serve_app.http.errors` maps them to responses in one handler.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: `status` is the HTTP status, `code` the stable error code."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def to_body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def __reduce__(self):  # keep subclasses picklable across Ray process boundaries
        return (_rebuild, (type(self), self.message, self.headers))


def _rebuild(cls: type[ServiceError], message: str, headers: dict[str, str]) -> ServiceError:
    return cls(message, headers=headers)


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


class EmptyFile(BadRequest):
    code = "empty_file"


class TooManyChannels(BadRequest):
    code = "too_many_channels"


class UnknownModel(BadRequest):
    code = "model_not_found"


class InvalidEvent(BadRequest):
    """A realtime client message that is not JSON or not a valid event."""

    code = "invalid_event"


class UnknownEvent(InvalidEvent):
    code = "unknown_event"


class UnsupportedAudioFormat(BadRequest):
    code = "unsupported_audio_format"


class EmptyAudioBuffer(BadRequest):
    """A realtime commit with (next to) nothing in the input audio buffer."""

    code = "input_audio_buffer_commit_empty"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class ModelNotFound(NotFound):
    """`GET /v1/models/{id}` of a model that is not served (404, as OpenAI answers)."""

    code = "model_not_found"


class VocabularyNotFound(NotFound):
    """The named vocabulary does not exist or is another tenant's (a job cannot recover)."""

    code = "vocabulary_not_found"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class PayloadTooLarge(ServiceError):
    status, code = 413, "payload_too_large"


class AudioTooLong(PayloadTooLarge):
    code = "audio_too_long"


class UnsupportedMedia(ServiceError):
    status, code = 415, "unsupported_media_type"


class UndecodableAudio(ServiceError):
    status, code = 422, "undecodable_audio"


class DecoderFailed(UndecodableAudio):
    """The sandboxed decoder crashed or ran out of time: bad input, or an overloaded host."""

    code = "decoder_failed"


class SessionTimeout(ServiceError):
    """A realtime session went idle too long or reached its maximum length."""

    status, code = 408, "session_timeout"


class RequestTimeout(ServiceError):
    """The request body stopped arriving (`limits.body_idle_timeout_s`)."""

    status, code = 408, "request_timeout"


class RateLimited(ServiceError):
    status, code = 429, "rate_limited"


class Overloaded(ServiceError):
    status, code = 503, "overloaded"


class BackendUnavailable(ServiceError):
    status, code = 503, "backend_unavailable"


class InferenceFailed(ServiceError):
    """The model crashed on valid input; the only error that is the service's fault."""

    status, code = 500, "inference_failed"
