"""`/docs` (Swagger UI) and `/redoc` served with their assets from the service itself.

FastAPI's default pages load Swagger UI and ReDoc from a public CDN, so on a machine without
internet (an air-gapped cluster) they render blank. The assets here come from the
`fastapi-offline` package (Swagger UI bundle + CSS, ReDoc standalone, favicon), read from
its installed files; the pages name them by relative URL, so they also work behind a
route prefix. No Google fonts either.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, Response

ASSET_PREFIX = "/docs/assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
ASSET_PATHS = frozenset(f"{ASSET_PREFIX}/{name}" for name in ASSETS)


def _asset_dir() -> Any:
    return resources.files("fastapi_offline").joinpath("static")


def docs_router(app: FastAPI) -> APIRouter:
    """The two documentation pages, the OAuth2 redirect helper and their assets."""
    router = APIRouter(include_in_schema=False)
    title = app.title
    # Read once: the files are a few MB and never change while the process runs.
    folder = _asset_dir()
    bodies = {name: folder.joinpath(name).read_bytes() for name in ASSETS}
    # ReDoc's bundle draws its "powered by" logo from its CDN: point it at our favicon, so
    # the page asks nothing of the internet.
    bodies["redoc.standalone.js"] = bodies["redoc.standalone.js"].replace(
        REDOC_CDN_LOGO, b"docs/assets/favicon.png"
    )

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="openapi.json",
            title=f"{title} - Swagger UI",
            oauth2_redirect_url="docs/oauth2-redirect",
            swagger_js_url="docs/assets/swagger-ui-bundle.js",
            swagger_css_url="docs/assets/swagger-ui.css",
            swagger_favicon_url="docs/assets/favicon.png",
        )

    @router.get("/docs/oauth2-redirect")
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url="docs/assets/redoc.standalone.js",
            redoc_favicon_url="docs/assets/favicon.png",
            with_google_fonts=False,
        )

    @router.get(ASSET_PREFIX + "/{name}")
    async def asset(name: str) -> Response:
        if name not in bodies:
            return Response(status_code=404)
        headers = {"cache-control": "public, max-age=86400"}
        return Response(bodies[name], media_type=ASSETS[name], headers=headers)

    return router
