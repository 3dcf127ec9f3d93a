"""HTTP routes of the job API: parsing and rendering only; the work is in JobsFrontend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError

from serve_app.errors import BadRequest
from serve_app.http.access import AccessDep
from serve_app.http.errors import validation_summary
from serve_app.http.formats import MEDIA_TYPES, render
from serve_app.http.schemas import (
    ERROR_RESPONSES,
    JobRequest,
    ResponseFormat,
    UploadTicket,
    inline_schema,
)
from serve_app.jobs.frontend import KEEPALIVE, JobsFrontend, JobSubmission
from serve_app.jobs.views import JobList, JobView

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
                            name: {"type": "string", "description": field.description or ""}
                            for name, field in JobRequest.model_fields.items()
                            if name not in ("url", "upload_id")
                        },
                    },
                }
            },
            "application/json": {"schema": inline_schema(JobRequest)},
        },
        "required": True,
    }
}


def jobs_router(jobs: JobsFrontend) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["jobs"])
    default_priority = jobs.config.jobs.default_priority

    @router.post(
        "/jobs",
        status_code=202,
        response_model=JobView,
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
            async with request.form(max_files=1, max_fields=64) as form:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise BadRequest("multipart job needs a 'file' part")
                audio = await upload.read()
                raw = _form_fields(form.multi_items())
            if "metadata" in raw:
                raw["metadata"] = _json_field(raw["metadata"], "metadata")
            parsed = _validate(raw)
        elif content_type.startswith("application/json"):
            parsed = _validate(_json_field(await request.body(), "body"))
        else:
            raise BadRequest("send multipart/form-data with a file, or JSON with url/upload_id")
        submission = JobSubmission(
            tenant=access.tenant,
            options=parsed.options(),
            audio=audio,
            url=parsed.url,
            upload_id=parsed.upload_id,
            priority=parsed.priority if parsed.priority is not None else default_priority,
            webhook_url=parsed.webhook_url,
            metadata=parsed.metadata,
            idempotency_key=idempotency_key,
            max_active_jobs=access.max_active_jobs,
            weight=access.principal.limits.weight,
            key_id=access.principal.key_id,
            audio_minutes_per_day=access.principal.limits.audio_minutes_per_day,
        )
        async with access.slot():
            view, created = await jobs.submit(submission)
        return JSONResponse(view.as_event(), status_code=202 if created else 200)

    @router.get(
        "/jobs",
        response_model=JobList,
        responses=ERROR_RESPONSES,
        summary="List jobs, newest first, with the tenant's queue (queued, running, oldest age)",
    )
    async def list_jobs(
        access: AccessDep,
        status: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        after: Annotated[str | None, Query(max_length=64)] = None,
    ) -> JobList:
        return await jobs.list(access.tenant, status, limit, after)

    @router.get(
        "/jobs/{job_id}",
        response_model=JobView,
        responses=ERROR_RESPONSES,
        summary="Job status and progress",
    )
    async def get_job(job_id: str, access: AccessDep) -> JobView:
        return await jobs.view(access.tenant, job_id)

    @router.get("/jobs/{job_id}/result", responses=ERROR_RESPONSES, summary="Job transcript")
    async def get_result(
        job_id: str, access: AccessDep, format: ResponseFormat = "json"
    ) -> Response:
        job, transcript = await jobs.result(access.tenant, job_id)
        grains = {"segment"} | ({"word"} if job.options.get("word_timestamps") else set())
        body = render(transcript, format, frozenset(grains))
        if isinstance(body, str):
            return PlainTextResponse(body, media_type=MEDIA_TYPES[format])
        return JSONResponse(body.model_dump(mode="json", exclude_none=True))

    @router.delete(
        "/jobs/{job_id}",
        response_model=JobView,
        responses={**ERROR_RESPONSES, 204: {"description": "Ended job purged: audio, result, row"}},
        summary="Cancel a queued or running job; delete an ended one with its audio and result",
    )
    async def delete_job(job_id: str, access: AccessDep) -> Response:
        view = await jobs.delete(access.tenant, job_id)
        if view is None:
            return Response(status_code=204)
        return JSONResponse(view.as_event())

    @router.get(
        "/jobs/{job_id}/events",
        responses=ERROR_RESPONSES,
        summary="Server-sent events: status, progress (with partial text), done",
    )
    async def job_events(job_id: str, access: AccessDep) -> StreamingResponse:
        stream = _sse(jobs.events(access.tenant, job_id))
        first = await anext(stream)  # raises 404 before the stream starts
        return StreamingResponse(
            _prepend(first, stream),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @router.post(
        "/uploads",
        response_model=UploadTicket,
        responses=ERROR_RESPONSES,
        summary="Presigned S3 upload for a job",
    )
    async def create_upload(access: AccessDep) -> UploadTicket:
        upload_id, post = await jobs.create_upload(access.tenant)
        return UploadTicket(
            upload_id=upload_id,
            url=post["url"],
            fields=post["fields"],
            expires_at=post["expires_at"],
            max_bytes=jobs.config.limits.max_upload_bytes,
        )

    return router


def sse(event: str, data: dict[str, Any]) -> str:
    seq = data.get("seq")
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


async def _sse(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> AsyncIterator[str]:
    async for event, data in events:
        yield ": keep-alive\n\n" if event == KEEPALIVE else sse(event, data)


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
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


def _form_fields(items: list[tuple[str, Any]]) -> dict[str, Any]:
    """Text fields of a multipart job; a repeated key (`known_speaker_names[]`) is a list."""
    raw: dict[str, Any] = {}
    for key, value in items:
        if key == "file" or not isinstance(value, str):
            continue
        if key in raw:
            before = raw[key]
            raw[key] = [*before, value] if isinstance(before, list) else [before, value]
        else:
            raw[key] = value
    return raw


def _validate(raw: Any) -> JobRequest:
    if not isinstance(raw, dict):
        raise BadRequest("expected a JSON object")
    if _has_nul(raw):  # no store keeps NUL in text or JSON columns
        raise BadRequest("NUL characters are not allowed in job options")
    try:
        return JobRequest.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(f"invalid job options: {validation_summary(exc)}") from exc
