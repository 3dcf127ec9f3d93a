"""HTTP routes of the job API; parsing only — the work is in JobsFrontend."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from serve_app.auth import AccessDep
from serve_app.errors import BadRequest
from serve_app.formats import MEDIA_TYPES, ResponseFormat
from serve_app.jobs.frontend import JobsFrontend, JobSubmission
from serve_app.results import TranscribeRequest
from serve_app.schemas import ERROR_RESPONSES


class JobOptions(BaseModel):
    """Options shared by every way of submitting a job."""

    model: str | None = None
    task: str = Field("transcribe", pattern="^(transcribe|translate)$")
    language: str | None = Field(None, max_length=16)
    prompt: str | None = Field(None, max_length=2000)
    temperature: float = Field(0.0, ge=0.0, le=1.0)
    word_timestamps: bool = False
    pack: bool = Field(True, description="Let short chunks share windows with this tenant's.")
    priority: int | None = Field(None, ge=0, le=9)
    webhook_url: str | None = Field(None, max_length=2048)
    metadata: dict[str, Any] = Field(default_factory=dict)


class JobJSON(JobOptions):
    url: str | None = Field(None, max_length=4096)
    upload_id: str | None = Field(None, max_length=64)


_MULTIPART_SCHEMA = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **{
                            name: {"type": "string"}
                            for name in (
                                "model",
                                "task",
                                "language",
                                "prompt",
                                "temperature",
                                "word_timestamps",
                                "pack",
                                "priority",
                                "webhook_url",
                                "metadata",
                            )
                        },
                    },
                }
            },
            "application/json": {"schema": JobJSON.model_json_schema()},
        },
        "required": True,
    }
}


def build_jobs_router(jobs: JobsFrontend) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["jobs"])
    default_priority = jobs.config.jobs.default_priority

    @router.post(
        "/jobs",
        status_code=202,
        responses={**ERROR_RESPONSES, 200: {"description": "The same job again (dedupe)"}},
        openapi_extra=_MULTIPART_SCHEMA,
        summary="Submit a durable transcription job (multipart file, or JSON url/upload_id)",
    )
    async def submit(
        request: Request,
        access: AccessDep,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        audio: bytes | None = None
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_files=1, max_fields=20) as form:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise BadRequest("multipart job needs a 'file' part")
                audio = await upload.read()
                raw = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
            if "metadata" in raw:
                raw["metadata"] = _json_field(raw["metadata"], "metadata")
            options: JobOptions = _validate(JobOptions, raw)
            url = upload_id = None
        elif content_type.startswith("application/json"):
            parsed = _validate(JobJSON, _json_field(await request.body(), "body"))
            options, url, upload_id = parsed, parsed.url, parsed.upload_id
        else:
            raise BadRequest("send multipart/form-data with a file, or JSON with url/upload_id")
        submission = JobSubmission(
            tenant=access.tenant,
            request=TranscribeRequest(
                model=options.model,
                task=options.task,  # type: ignore[arg-type]
                language=(options.language or "").lower() or None,
                prompt=options.prompt,
                temperature=options.temperature,
                word_timestamps=options.word_timestamps,
                segment_timestamps=True,
                pack=options.pack,
                priority=options.priority if options.priority is not None else default_priority,
                tenant=access.tenant,
            ),
            audio=audio,
            url=url,
            upload_id=upload_id,
            priority=options.priority if options.priority is not None else default_priority,
            webhook_url=options.webhook_url,
            metadata=options.metadata,
            idempotency_key=idempotency_key,
            max_active_jobs=access.max_active_jobs,
        )
        async with access.slot():
            view, created = await jobs.submit(submission)
        return JSONResponse(view, status_code=202 if created else 200)

    @router.get("/jobs", responses=ERROR_RESPONSES, summary="List jobs, newest first")
    async def list_jobs(
        access: AccessDep,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        after: Annotated[str | None, Query(max_length=64)] = None,
    ) -> dict[str, Any]:
        return await jobs.list(access.tenant, status, limit, after)

    @router.get("/jobs/{job_id}", responses=ERROR_RESPONSES, summary="Job status and progress")
    async def get_job(job_id: str, access: AccessDep) -> dict[str, Any]:
        return await jobs.view(access.tenant, job_id)

    @router.get("/jobs/{job_id}/result", responses=ERROR_RESPONSES, summary="Job transcript")
    async def get_result(
        job_id: str, access: AccessDep, format: ResponseFormat = "json"
    ) -> Response:
        body = await jobs.result(access.tenant, job_id, format)
        if isinstance(body, dict):
            return JSONResponse(body)
        return PlainTextResponse(body, media_type=MEDIA_TYPES[format])

    @router.delete("/jobs/{job_id}", responses=ERROR_RESPONSES, summary="Cancel a job")
    async def cancel_job(job_id: str, access: AccessDep) -> dict[str, Any]:
        return await jobs.cancel(access.tenant, job_id)

    @router.get(
        "/jobs/{job_id}/events",
        responses=ERROR_RESPONSES,
        summary="Server-sent events: status, progress (with partial text), done",
    )
    async def job_events(job_id: str, access: AccessDep) -> StreamingResponse:
        stream = jobs.events(access.tenant, job_id)
        first = await anext(stream)  # raises 404 before the stream starts
        return StreamingResponse(
            _prepend(first, stream),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @router.post("/uploads", responses=ERROR_RESPONSES, summary="Presigned S3 upload for a job")
    async def create_upload(access: AccessDep) -> dict[str, Any]:
        return await jobs.create_upload(access.tenant)

    return router


async def _prepend(first: str, rest: Any) -> Any:
    yield first
    async for item in rest:
        yield item


def _json_field(text: str | bytes, name: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # bytes may not be UTF-8
        raise BadRequest(f"{name} is not valid JSON") from exc


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _validate(model: type[BaseModel], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise BadRequest("expected a JSON object")
    if _has_nul(raw):  # no store keeps NUL in text or JSON columns
        raise BadRequest("NUL characters are not allowed in job options")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise BadRequest(f"invalid job options: {problems}") from exc
