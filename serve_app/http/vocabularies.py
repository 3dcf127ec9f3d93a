"""`/v1/vocabularies`: a tenant's named terms and custom spellings (parsing and rendering)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from serve_app.errors import BadRequest
from serve_app.http.access import AccessDep
from serve_app.http.errors import validation_summary
from serve_app.http.schemas import (
    ERROR_RESPONSES,
    CustomSpelling,
    VocabularyCreate,
    VocabularyList,
    VocabularyView,
    inline_schema,
)
from serve_app.jobs.frontend import JobsFrontend
from serve_app.stores.records import Vocabulary

_MAX_BODY = 256 * 1024


def vocabulary_router(jobs: JobsFrontend) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["vocabularies"])

    @router.post(
        "/vocabularies",
        status_code=201,
        response_model=VocabularyView,
        responses=ERROR_RESPONSES,
        openapi_extra={
            "requestBody": {
                "content": {"application/json": {"schema": inline_schema(VocabularyCreate)}},
                "required": True,
            }
        },
        summary="Create a vocabulary: terms (hotwords) and spellings that rewrite the text",
    )
    async def create(request: Request, access: AccessDep) -> VocabularyView:
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise BadRequest(f"a vocabulary body may be at most {_MAX_BODY} bytes")
        try:
            parsed = VocabularyCreate.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise BadRequest(f"invalid vocabulary: {validation_summary(exc)}") from exc
        if "\x00" in body.decode("utf-8", "replace"):
            raise BadRequest("NUL characters are not allowed in a vocabulary")
        spellings = [s.model_dump(by_alias=True) for s in parsed.spellings]
        created = await jobs.create_vocabulary(
            access.tenant, parsed.name, list(parsed.terms), spellings
        )
        return _view(created)

    @router.get("/vocabularies", response_model=VocabularyList, responses=ERROR_RESPONSES)
    async def list_all(access: AccessDep) -> VocabularyList:
        return VocabularyList(data=[_view(v) for v in await jobs.list_vocabularies(access.tenant)])

    @router.get(
        "/vocabularies/{vocabulary_id}", response_model=VocabularyView, responses=ERROR_RESPONSES
    )
    async def get_one(vocabulary_id: str, access: AccessDep) -> VocabularyView:
        return _view(await jobs.get_vocabulary(access.tenant, vocabulary_id))

    @router.delete("/vocabularies/{vocabulary_id}", status_code=204, responses=ERROR_RESPONSES)
    async def delete(vocabulary_id: str, access: AccessDep) -> Response:
        await jobs.delete_vocabulary(access.tenant, vocabulary_id)
        return Response(status_code=204)

    return router


def _view(vocabulary: Vocabulary) -> VocabularyView:
    return VocabularyView(
        id=vocabulary.id,
        name=vocabulary.name,
        terms=vocabulary.terms,
        spellings=[CustomSpelling.model_validate(s) for s in vocabulary.spellings],
        created_at=vocabulary.created_at,
    )
