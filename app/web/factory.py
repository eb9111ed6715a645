"""The FastAPI application factory: settings, database, routers, static files and security headers.

``create_app(settings)`` migrates the database to head, keeps a sessionmaker on ``app.state`` (one session
per request through ``app.web.api.get_session``), mounts ``static/`` and includes the REST API, the API
reference and the HTML pages (whose malformed addresses get the HTML error page).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.db.migrate import upgrade_to_head
from app.db.session import make_engine, make_sessionmaker
from app.services.contrast_worker import ContrastWorker, SearchLimits
from app.services.inspector import ActivationInspector
from app.settings import Settings
from app.web import api, api_docs, pages
from app.web.api_errors import install_api_errors
from app.web.page_errors import install_page_errors
from app.web.security import SecurityHeadersMiddleware
from training.runtime.device import resolve_device

REPO_ROOT = Path(__file__).resolve().parents[2]
STATIC_DIR = REPO_ROOT / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The web app for ``settings`` (default: from the environment), its database migrated to head."""
    settings = settings or Settings()
    url = settings.resolved_database_url()
    if settings.database_url is None:
        Path(settings.workdir).mkdir(parents=True, exist_ok=True)
    upgrade_to_head(url)
    engine = make_engine(url)
    contrast_worker = ContrastWorker(SearchLimits(settings.contrast_match_timeout_s, settings.contrast_timeout_s))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        contrast_worker.close()
        engine.dispose()

    app = FastAPI(
        title="monosemantic",
        summary="Browse sparse-autoencoder features, label them and estimate how many are monosemantic.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.inline_reads = engine.dialect.name == "sqlite"  # see app.web.api.short_read
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.inspector = ActivationInspector(resolve_device(settings.device))
    app.state.rng = random.Random()
    app.state.contrast_worker = contrast_worker
    app.state.static_dir = STATIC_DIR

    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(api.router)
    app.include_router(api_docs.router)
    app.include_router(pages.router)
    install_page_errors(app)
    install_api_errors(app)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
