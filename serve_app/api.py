"""HTTP surface: FastAPI routes that parse requests and call the TranscriptionService.

Errors are turned into `{"error": {"code", "message"}}` responses here, and only here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app import __version__
from serve_app.auth import Access, AccessDep, Authenticator, get_access
from serve_app.errors import BackendUnavailable, BadRequest, PayloadTooLarge, ServiceError
from serve_app.formats import MEDIA_TYPES, ResponseFormat, render
from serve_app.jobs.frontend import JobsFrontend
from serve_app.jobs.routes import build_jobs_router
from serve_app.observability import install_observability
from serve_app.ratelimit import RateLimiter
from serve_app.results import Task, TranscribeRequest
from serve_app.schemas import ERROR_RESPONSES, Health, ModelCard, ModelList
from serve_app.service import TranscriptionService
from serve_app.stores import open_job_store

logger = logging.getLogger("ray.serve")

Granularity = Literal["word", "segment"]
# Form parameters (module level: FastAPI resolves these annotations by name).
FormFile = Annotated[UploadFile, File(description="Audio file (wav, mp3, flac, ogg, m4a…)")]
FormModel = Annotated[str | None, Form(description="Model id, e.g. tiny.en or base")]
FormPrompt = Annotated[str | None, Form(max_length=2000)]
FormFormat = Annotated[ResponseFormat, Form()]
FormTemperature = Annotated[float, Form(ge=0.0, le=1.0)]
FormGranularities = Annotated[list[Granularity] | None, Form(alias="timestamp_granularities[]")]
FormPack = Annotated[
    bool,
    Form(description="Let short chunks share a 30 s window with this tenant's other chunks."),
]

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
}


def build_http_app(service: TranscriptionService, jobs: JobsFrontend | None = None) -> FastAPI:
    """The ASGI app served by the ingress deployment."""
    config = service.config
    app = FastAPI(
        title="whisper-serve",
        version=__version__,
        description="OpenAI-compatible speech-to-text on Ray Serve with cross-request batching.",
    )
    app.add_middleware(UploadLimitMiddleware, max_bytes=config.limits.max_upload_bytes)
    # Added last = outermost: keys and rate limits are checked before any body is read.
    app.add_middleware(AccessMiddleware, **access_control(service, jobs))
    install_error_handlers(app)
    install_observability(app, config)  # after add_middleware: outermost, counts refusals
    if jobs is not None:
        app.include_router(build_jobs_router(jobs))

    async def run(
        access: Access,
        task: Task,
        file: UploadFile,
        model: str | None,
        language: str | None,
        prompt: str | None,
        response_format: str,
        temperature: float,
        granularities: list[str] | None,
        pack: bool,
    ) -> Response:
        grains = frozenset(granularities or [])
        if grains and response_format != "verbose_json":
            raise BadRequest("timestamp_granularities requires response_format=verbose_json")
        request = TranscribeRequest(
            model=model or None,
            task=task,
            language=(language or "").strip().lower() or None,
            prompt=prompt or None,
            temperature=temperature,
            word_timestamps="word" in grains,
            segment_timestamps=response_format in ("srt", "vtt", "verbose_json"),
            tenant=access.tenant,
            pack=pack,
        )
        service.resolve_model(request.model)  # fail fast before reading a large body
        async with access.slot():
            data = await file.read()
            result = await service.transcribe(data, request)
        body = render(result, response_format, grains)
        if isinstance(body, dict):
            return JSONResponse(body)
        return PlainTextResponse(body, media_type=MEDIA_TYPES[response_format])

    @app.post(
        "/v1/audio/transcriptions",
        responses=ERROR_RESPONSES,
        summary="Transcribe audio (OpenAI compatible)",
    )
    async def transcriptions(
        access: AccessDep,
        file: FormFile,
        model: FormModel = None,
        language: Annotated[str | None, Form(max_length=16)] = None,
        prompt: FormPrompt = None,
        response_format: FormFormat = "json",
        temperature: FormTemperature = 0.0,
        timestamp_granularities: FormGranularities = None,
        pack: FormPack = True,
    ) -> Response:
        return await run(
            access,
            "transcribe",
            file,
            model,
            language,
            prompt,
            response_format,
            temperature,
            timestamp_granularities,
            pack,
        )

    @app.post(
        "/v1/audio/translations",
        responses=ERROR_RESPONSES,
        summary="Translate audio into English text (OpenAI compatible)",
    )
    async def translations(
        access: AccessDep,
        file: FormFile,
        model: FormModel = None,
        prompt: FormPrompt = None,
        response_format: FormFormat = "json",
        temperature: FormTemperature = 0.0,
        pack: FormPack = True,
    ) -> Response:
        return await run(
            access,
            "translate",
            file,
            model,
            None,
            prompt,
            response_format,
            temperature,
            None,
            pack,
        )

    @app.get(
        "/v1/models",
        response_model=ModelList,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(get_access)],
    )
    async def list_models() -> ModelList:
        cards = []
        for ident, root in config.model_ids().items():
            info = await _cached_info(service, root)
            cards.append(ModelCard(id=ident, root=root, multilingual=info.get("multilingual")))
        return ModelList(data=cards)

    @app.get(
        "/v1/models/{model_id}",
        response_model=ModelCard,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(get_access)],
    )
    async def get_model(model_id: str) -> ModelCard:
        model = service.resolve_model(model_id)
        info = await _cached_info(service, model.name)
        return ModelCard(id=model_id, root=model.name, multilingual=info.get("multilingual"))

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readyz() -> Response:
        states: dict[str, str] = {}
        for model in config.models:
            try:
                await asyncio.wait_for(service.model_info(model.name), timeout=5)
                states[model.name] = "ready"
            except (TimeoutError, ServiceError):
                states[model.name] = "unavailable"
        ok = all(s == "ready" for s in states.values())
        health = Health(status="ok" if ok else "degraded", models=states)
        return JSONResponse(health.model_dump(), status_code=200 if ok else 503)

    return app


async def _cached_info(service: TranscriptionService, name: str) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(service.model_info(name), timeout=2)
    except (TimeoutError, ServiceError):
        return {}


def access_control(service: TranscriptionService, jobs: JobsFrontend | None) -> dict[str, Any]:
    """AccessMiddleware arguments: keys are looked up in the job store, limits in Redis."""
    config = service.config
    store = jobs.store if jobs is not None else None
    if config.auth.enabled and store is None:
        store = open_job_store(config.storage.database_url, migrate=True)
    return {
        "authenticator": Authenticator(config.auth, config.rate_limit, store),
        "limiter": RateLimiter(config.rate_limit, config.storage.redis_url),
    }


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=exc.headers or None)


def _service_error(exc: BaseException) -> ServiceError | None:
    """Find a ServiceError behind Ray wrappers and FastAPI's body-parsing wrapper."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, ServiceError) and hasattr(current, "message"):
            return current
        cause = getattr(current, "cause", None)  # ray.exceptions.RayTaskError
        if isinstance(cause, ServiceError):
            return cause
        current = current.__cause__
        seen += 1
    return None


def install_error_handlers(app: FastAPI) -> None:
    """The single place where exceptions become HTTP responses."""

    @app.exception_handler(ServiceError)
    async def on_service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(_service_error(exc) or exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            problems.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return error_response(BadRequest("invalid request: " + "; ".join(problems)))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        inner = _service_error(exc)
        if inner is not None:
            return error_response(inner)
        error = ServiceError(str(exc.detail))
        error.status = exc.status_code
        error.code = _STATUS_CODES.get(exc.status_code, "http_error")
        return error_response(error)

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        inner = _service_error(exc)
        if inner is not None:
            return error_response(inner)
        logger.exception("unhandled error", exc_info=exc)
        return error_response(ServiceError("internal error; the failure was logged"))


# Routes anyone may call (probes and docs); every other path needs a key when auth is on.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


class AccessMiddleware:
    """Authenticates and rate-limits every non-public request from its headers alone.

    Runs before the body is read, so a caller without a valid key cannot make the service
    buffer an upload; the resulting `Access` is left in the scope for `get_access`.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator, limiter: RateLimiter) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _route_path(scope) in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticator.authenticate(_header(scope, b"authorization"))
            await self.limiter.hit(principal)
        except ServiceError as exc:
            await _send_json(send, exc)
            return
        except Exception as exc:  # never a bare 500 from the gate: log and say "retry"
            logger.exception("access check failed", exc_info=exc)
            await _send_json(send, BackendUnavailable("access check unavailable; retry"))
            return
        scope.setdefault("state", {})["access"] = Access(principal, self.limiter)
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == wanted:
            return value.decode("latin-1")
    return None


class UploadLimitMiddleware:
    """Refuses bodies over `max_bytes` while they stream in, before they are buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"request body exceeds the limit of {self.max_bytes} bytes")
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_json(send, too_large)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            if started:
                raise
            await _send_json(send, too_large)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, exc: ServiceError) -> None:
    body = json.dumps(exc.to_body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
