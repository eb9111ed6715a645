"""Fixtures of the page tests: an app over a builder-filled SQLite database, and that app served for real."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.db.models import Dictionary
from app.services.schemas import ActivationsOut, FeatureActivation, TokenActivations
from app.settings import Settings
from app.web.factory import create_app
from tests.app.builders import BuiltDatabase, build_database

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
SERVER_START_TIMEOUT_S = 20


@dataclass
class PageApp:
    """An app and what its database holds."""

    app: FastAPI
    built: BuiltDatabase
    workdir: Path


def make_page_app(workdir: Path) -> PageApp:
    """A fresh app over a new SQLite file in workdir, filled by ``build_database``, with a seeded generator."""
    app = create_app(Settings(workdir=workdir, database_url=f"sqlite:///{workdir / 'pages.db'}"))
    app.state.rng = random.Random(0)
    app.state.inspector = WordInspector()
    with app.state.sessionmaker() as session:
        built = build_database(session)
    return PageApp(app=app, built=built, workdir=workdir)


class WordInspector:
    """Stands in for the LM + SAE inspector: one token per word, feature ``len(word)`` fires ``len(word) / 2``."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int | None]] = []

    def inspect(self, dictionary: Dictionary, text: str, feature: int | None = None) -> ActivationsOut:
        self.calls.append((dictionary.id, text, feature))
        tokens, start = [], 0
        for word in text.split(" "):
            token = word if start == 0 else " " + word
            end = start + len(token)
            index = len(word) % dictionary.dict_size
            tokens.append(
                TokenActivations(
                    token=token,
                    start=start,
                    end=end,
                    top_features=[FeatureActivation(index=index, activation=len(word) / 2)] if word else [],
                    feature_activation=(len(word) / 2 if feature == index else 0.0) if feature is not None else None,
                )
            )
            start = end
        return ActivationsOut(dictionary_id=dictionary.id, feature=feature, tokens=tokens)


@pytest.fixture
def page_app(tmp_path: Path) -> PageApp:
    return make_page_app(tmp_path)


@pytest.fixture
def client(page_app: PageApp) -> Iterator[TestClient]:
    with TestClient(page_app.app) as test_client:
        yield test_client


@pytest.fixture
def artifacts() -> Path:
    """Where tests leave screenshots for people to look at (ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def live_server(page_app: PageApp) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port in a thread; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(page_app.app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port} within {SERVER_START_TIMEOUT_S} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
