"""`GET /v1/usage`: the caller's tenant's audio seconds by day, key, model and source."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from serve_app.errors import BadRequest
from serve_app.http.access import AccessDep
from serve_app.http.schemas import ERROR_RESPONSES
from serve_app.security.usage import UsageMeter, utc_day

_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MAX_DAYS = 400


class UsageEntry(BaseModel):
    day: str = Field(description="UTC day, YYYY-MM-DD")
    key_id: str
    model: str
    source: Literal["sync", "job", "live", "handle"] | str
    seconds: float = Field(description="Seconds of audio")
    requests: int


class UsageReport(BaseModel):
    object: Literal["usage"] = "usage"
    tenant: str
    from_day: str = Field(serialization_alias="from")
    to_day: str = Field(serialization_alias="to")
    total_seconds: float
    data: list[UsageEntry]


def _day(value: str | None, name: str) -> str:
    if value is None:
        return utc_day()
    try:
        if not _DAY_RE.match(value):
            raise ValueError(value)
        return date.fromisoformat(value).isoformat()
    except ValueError as exc:
        raise BadRequest(f"{name}: expected a date YYYY-MM-DD, got {value!r}") from exc


def usage_router(meter: UsageMeter) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["usage"])

    @router.get(
        "/usage",
        response_model=UsageReport,
        response_model_by_alias=True,
        responses=ERROR_RESPONSES,
        summary="Audio seconds of the caller's tenant per UTC day, key, model and source",
    )
    async def usage(
        access: AccessDep,
        from_: Annotated[str | None, Query(alias="from", max_length=10)] = None,
        to: Annotated[str | None, Query(max_length=10)] = None,
    ) -> UsageReport:
        first, last = _day(from_, "from"), _day(to, "to")
        if first > last:
            raise BadRequest("from: must not be after to")
        if (date.fromisoformat(last) - date.fromisoformat(first)).days > _MAX_DAYS:
            raise BadRequest(f"to: at most {_MAX_DAYS} days per report")
        records = await meter.between(access.tenant, first, last)
        entries = [
            UsageEntry(
                day=r.day,
                key_id=r.key_id,
                model=r.model,
                source=r.source,
                seconds=round(r.seconds, 3),
                requests=r.requests,
            )
            for r in records
        ]
        total = round(sum(r.seconds for r in records), 3)
        return UsageReport(
            tenant=access.tenant, from_day=first, to_day=last, total_seconds=total, data=entries
        )

    return router
