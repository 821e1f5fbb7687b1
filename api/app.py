"""The FastAPI application: routes, error handlers, and the upkeep loop (outbox relay, lease reaper)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import shrinkray
from api.body_limit import BodySizeLimit
from api.concurrency_limit import ConcurrencyLimit
from api.errors import install_error_handlers
from api.key_cache import KeyCache
from api.rate_limit import rate_limiter
from api.routes import artifacts, catalogs, health, jobs
from shrinkray.services import artifact_store, session_factory
from shrinkray.settings import Settings
from workers.celery_app import create_celery
from workers.maintenance import MaintenanceLoop

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings | None = None, *, run_maintenance: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Requests in flight are capped at api_threads (ConcurrencyLimit); so are the threads they run on.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        loop = MaintenanceLoop(app.state.sessions, app.state.celery, settings) if run_maintenance else None
        if loop:
            loop.start()
        try:
            yield
        finally:
            if loop:
                loop.stop()

    app = FastAPI(title="Shrinkray", version=shrinkray.__version__, lifespan=lifespan,
                  description="Compress large language models: submit a model and a recipe, get back a "
                              "compressed-tensors checkpoint and a report.")
    app.state.settings = settings
    app.state.sessions = session_factory(settings)
    app.state.store = artifact_store(settings)
    app.state.celery = create_celery(settings)
    app.state.rate_limiter = rate_limiter(settings)
    app.state.key_cache = KeyCache(settings.auth_cache_s)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ConcurrencyLimit, limit=settings.api_threads)
    install_error_handlers(app)
    for module in (jobs, catalogs, artifacts, health):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        """The dashboard: static HTML and JavaScript that read this API (no build step)."""
        return FileResponse(STATIC / "index.html")

    return app
