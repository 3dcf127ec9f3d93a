"""The ASGI app the ingress serves: routers, middlewares and the one error mapping."""

from __future__ import annotations

from fastapi import FastAPI

from serve_app import __version__
from serve_app.http.docs import docs_router
from serve_app.http.errors import install_error_handlers
from serve_app.http.jobs import jobs_router
from serve_app.http.metrics import install_observability
from serve_app.http.middleware import AccessMiddleware, UploadLimitMiddleware
from serve_app.http.realtime import realtime_router
from serve_app.http.routes import health_router, transcription_router
from serve_app.http.usage import usage_router
from serve_app.http.vocabularies import vocabulary_router
from serve_app.jobs.frontend import JobsFrontend
from serve_app.observability import LiveObserver, PhaseObserver
from serve_app.pipeline.service import TranscriptionService
from serve_app.security.keys import Authenticator
from serve_app.security.ratelimit import RateLimiter
from serve_app.security.usage import UsageMeter, UsageObserver
from serve_app.stores import JobStore, StoreTuning, open_job_store


def build_http_app(
    service: TranscriptionService,
    jobs: JobsFrontend | None = None,
    phases: PhaseObserver | None = None,
    live: LiveObserver | None = None,
    usage: UsageObserver | None = None,
) -> FastAPI:
    """The ASGI app served by the ingress deployment (and in-process by `serve_app.testing`).

    `phases` and `live` receive request phases and realtime-session metrics (the ingress
    passes Ray metrics; in-process apps pass nothing).
    """
    config = service.config
    app = FastAPI(
        title="whisper-serve",
        version=__version__,
        description="OpenAI-compatible speech-to-text on Ray Serve with cross-request batching.",
        docs_url=None,  # served by http.docs with local assets instead of a CDN
        redoc_url=None,
    )
    store: JobStore | None = jobs.store if jobs is not None else None
    tuning = StoreTuning(**config.storage.resilience.model_dump())
    if config.auth.enabled and store is None:
        store = open_job_store(config.storage.database_url, migrate=True, tuning=tuning)
    limits = config.limits
    app.add_middleware(
        UploadLimitMiddleware,
        max_bytes=limits.max_upload_bytes,
        idle_timeout_s=limits.body_idle_timeout_s,
        max_uploads=limits.max_concurrent_uploads,
    )
    # Added last = outermost: keys and rate limits are checked before any body is read.
    app.add_middleware(
        AccessMiddleware,
        authenticator=Authenticator(config.auth, config.rate_limit, store),
        limiter=RateLimiter(config.rate_limit, config.storage.redis_url),
    )
    if store is None and config.usage.enabled:
        store = open_job_store(config.storage.database_url, migrate=True, tuning=tuning)
    meter = UsageMeter(store, config.usage, usage)
    install_error_handlers(app)
    install_observability(app, config)  # after add_middleware: outermost, counts refusals
    app.include_router(transcription_router(service, phases, meter))
    app.include_router(usage_router(meter))
    app.include_router(health_router(service, config))
    app.include_router(docs_router(app))
    if config.realtime.enabled:
        app.include_router(realtime_router(service, config.realtime, live, meter))
    if jobs is not None:
        app.include_router(jobs_router(jobs))
        app.include_router(vocabulary_router(jobs))
    return app
