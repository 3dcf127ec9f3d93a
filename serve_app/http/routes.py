"""Transcription, model and health routes: parse HTTP, call the TranscriptionService, render."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile as StarletteUpload

from serve_app.config import AppConfig, DiarizationConfig
from serve_app.errors import (
    BadRequest,
    ModelNotFound,
    PayloadTooLarge,
    ServiceError,
    UnknownModel,
)
from serve_app.http.access import Access, AccessDep, get_access
from serve_app.http.formats import MEDIA_TYPES, render
from serve_app.http.schemas import (
    ERROR_RESPONSES,
    STREAM_FORMATS,
    Health,
    ModelCard,
    ModelList,
    TranscriptionForm,
    TranscriptionJSON,
    VerboseTranscription,
)
from serve_app.http.streaming import SSEResponse, transcript_events
from serve_app.inference.protocol import ReplicaInfo
from serve_app.observability import PhaseObserver
from serve_app.options import Caller, Task, TranscribeOptions
from serve_app.pipeline.references import to_data_url
from serve_app.pipeline.service import PreparedAudio, TranscriptionService
from serve_app.security.usage import UsageMeter

FormFile = Annotated[UploadFile, File(description="Audio file (wav, mp3, flac, ogg, m4a…)")]
FormOptions = Annotated[TranscriptionForm, Form()]
# `/docs` shows both JSON bodies; the text formats are plain text, srt or vtt.
TRANSCRIPT_RESPONSES: dict[int | str, dict] = {
    **ERROR_RESPONSES,
    200: {
        "model": TranscriptionJSON | VerboseTranscription,
        "description": "The transcript in the requested response_format",
        "content": {
            "text/plain": {"schema": {"type": "string"}},
            "text/event-stream": {
                "schema": {"type": "string"},
                "description": "stream=true: transcript.text.delta / .segment / .done events",
            },
        },
    },
}


def transcription_router(
    service: TranscriptionService,
    observer: PhaseObserver | None = None,
    meter: UsageMeter | None = None,
) -> APIRouter:
    router = APIRouter()
    config = service.config
    background: set[asyncio.Task[None]] = set()  # usage of finished streams, being written

    async def admit(access: Access, prepared: PreparedAudio) -> None:
        if meter is not None:
            limits = access.principal.limits
            try:
                await meter.admit(
                    access.principal.key_id, limits.audio_minutes_per_day, prepared.plan.duration
                )
            except BaseException:
                prepared.feed.abandon()  # refused: VAD over the rest is of no use
                raise

    async def record(access: Access, prepared: PreparedAudio) -> None:
        if meter is not None:
            await meter.record(
                access.tenant,
                access.principal.key_id,
                prepared.model,
                "sync",
                prepared.plan.duration,
            )

    async def run(
        access: AccessDep, task: Task, file: UploadFile, form: TranscriptionForm, request: Request
    ):
        options = form.options(task, await uploaded_references(request, config.diarization))
        service.resolve_model(options.model)  # fail fast before reading a large body
        if form.stream:
            return await stream(access, file, form, options)
        started = time.monotonic()
        async with access.slot():
            data = await file.read()
            read_s = time.monotonic() - started
            prepared = await service.prepare(data, options, Caller(tenant=access.tenant))
            await admit(access, prepared)
            result = await service.transcribe_prepared(prepared)
        await record(access, prepared)
        rendering = time.monotonic()
        body = render(result, form.response_format, form.granularities, logprobs=form.logprobs)
        response: Response
        if isinstance(body, str):
            response = PlainTextResponse(body, media_type=MEDIA_TYPES[form.response_format])
        else:
            response = JSONResponse(body.model_dump(mode="json", exclude_none=True))
        done = time.monotonic()
        phases = {"read": read_s, **result.timings, "render": done - rendering}
        phases["total"] = done - started
        if observer is not None:
            observer.request_phases(result.model, phases)
        response.headers["server-timing"] = server_timing(phases)
        return response

    async def stream(
        access: Access, file: UploadFile, form: TranscriptionForm, options: TranscribeOptions
    ) -> Response:
        """stream=true: everything that can fail on the input fails here, as JSON; then SSE."""
        if form.response_format not in STREAM_FORMATS:
            raise BadRequest("stream=true needs response_format json, text or verbose_json")
        if options.diarize or options.multichannel:
            raise BadRequest("diarize and multichannel need the whole audio: use stream=false")
        started = time.monotonic()
        held = AsyncExitStack()
        await held.enter_async_context(access.slot())  # held until the stream ends
        try:
            data = await file.read()
            read_s = time.monotonic() - started
            prepared = await service.prepare(data, options, Caller(tenant=access.tenant))
            await admit(access, prepared)
        except BaseException:
            await held.aclose()
            raise
        phases = {"read": read_s, **prepared.timings}

        def finished() -> None:
            if meter is not None:
                recording = asyncio.get_running_loop().create_task(record(access, prepared))
                background.add(recording)
                recording.add_done_callback(background.discard)
            if observer is not None:
                total = time.monotonic() - started
                # VAD may still have been cutting when the header went out: its time is
                # known only now.
                vad = {"vad": prepared.feed.vad_s}
                observer.request_phases(prepared.model, {**phases, **vad, "total": total})

        events = transcript_events(
            service,
            prepared,
            segments=form.response_format == "verbose_json",
            words=options.word_timestamps,
            finished=finished,
        )
        headers = {"server-timing": server_timing(phases)}
        return SSEResponse(events, on_close=held.aclose, headers=headers)

    @router.post(
        "/v1/audio/transcriptions",
        responses=TRANSCRIPT_RESPONSES,
        summary="Transcribe audio (OpenAI compatible)",
        response_class=Response,
    )
    async def transcriptions(
        access: AccessDep, file: FormFile, form: FormOptions, request: Request
    ) -> Response:
        return await run(access, "transcribe", file, form, request)

    @router.post(
        "/v1/audio/translations",
        responses=TRANSCRIPT_RESPONSES,
        summary="Translate audio into English text (OpenAI compatible)",
        response_class=Response,
    )
    async def translations(
        access: AccessDep, file: FormFile, form: FormOptions, request: Request
    ) -> Response:
        return await run(access, "translate", file, form, request)

    @router.get(
        "/v1/models",
        response_model=ModelList,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(get_access)],
    )
    async def list_models() -> ModelList:
        cards = []
        for ident, root in config.model_ids().items():
            info = await _cached_info(service, root)
            cards.append(_card(ident, root, info))
        return ModelList(data=cards)

    @router.get(
        "/v1/models/{model_id}",
        response_model=ModelCard,
        responses=ERROR_RESPONSES,
        dependencies=[Depends(get_access)],
    )
    async def get_model(model_id: str) -> ModelCard:
        try:
            model = service.resolve_model(model_id)
        except UnknownModel as exc:  # a missing resource here, not a bad field of a request
            raise ModelNotFound(exc.message) from exc
        return _card(model_id, model.name, await _cached_info(service, model.name))

    return router


def health_router(service: TranscriptionService, config: AppConfig) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
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

    return router


async def uploaded_references(request: Request, limits: DiarizationConfig) -> list[str] | None:
    """known_speaker_references[] sent as files (or data URLs) → data URLs; None: not sent.

    Uploads are read up to the size limit (413 above), so a job can store them as options.
    """
    form = await request.form()  # parsed once per request: FastAPI cached it
    items = form.getlist("known_speaker_references[]") + form.getlist("known_speaker_references")
    if not any(isinstance(item, StarletteUpload) for item in items):
        return None
    urls = []
    for item in items:
        if isinstance(item, StarletteUpload):
            data = await item.read(limits.max_reference_bytes + 1)
            if len(data) > limits.max_reference_bytes:
                raise PayloadTooLarge(
                    "a known speaker reference is larger than the limit of "
                    f"{limits.max_reference_bytes} bytes"
                )
            urls.append(to_data_url(data, item.content_type or "application/octet-stream"))
        else:
            urls.append(str(item))
    return urls


def server_timing(phases: dict[str, float]) -> str:
    """The `Server-Timing` header: each phase's duration in milliseconds."""
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in phases.items())


def _card(ident: str, root: str, info: ReplicaInfo | None) -> ModelCard:
    return ModelCard(id=ident, root=root, multilingual=info.multilingual if info else None)


async def _cached_info(service: TranscriptionService, name: str) -> ReplicaInfo | None:
    try:
        return await asyncio.wait_for(service.model_info(name), timeout=2)
    except (TimeoutError, ServiceError):
        return None
