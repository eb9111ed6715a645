"""Labelling a committed record's dictionaries in real headless Chromium: `serve --record` on a bundle that
`monosemantic record` wrote from a trained run, with no training or activations behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from app.cli.commands import load_record, main
from app.db.models import Dictionary, Label
from app.settings import Settings
from app.web.factory import create_app
from tests.browser import test_browser as shared
from tests.browser.conftest import PageApp
from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
from training.experiments.pipeline import run_pipeline
from training.features.bundle import BUNDLE_DIR, MANIFEST

browser, page, console_errors, wait_ready = (
    shared.browser,
    shared.page,
    shared.console_errors,
    shared.wait_ready,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> Path:
    """A record folder written from a freshly trained (tiny) run; the run itself is deleted."""
    corpus = brown_jsonl(tmp_path_factory.mktemp("corpus"))
    workdir = tmp_path_factory.mktemp("run")
    run_pipeline(SMALLEST_PIPELINE, workdir, corpus, progress=False)
    out = tmp_path_factory.mktemp("record")
    assert main(["record", "--workdir", str(workdir), "--out", str(out)]) == 0
    return out


@pytest.fixture
def page_app(record: Path, tmp_path: Path) -> PageApp:
    settings = Settings(workdir=tmp_path / "served", database_url=f"sqlite:///{tmp_path / 'served.db'}")
    load_record(record, settings)
    return PageApp(app=create_app(settings), built=None, workdir=settings.workdir)


def label_one_served_feature(page: Page, live_server: str, app: PageApp, entry: dict, key: str, verdict: str) -> None:
    """Label the first card of the served bundle dictionary ``entry`` with ``key``; check the stored row,
    keyed by the trained weights' hash (a rebuild that trains the same weights finds it), and /estimates."""
    with app.app.state.sessionmaker() as session:
        dictionary_id = session.scalar(select(Dictionary.id).where(Dictionary.content_hash == entry["weights_hash"]))
    assert dictionary_id is not None
    page.goto(f"{live_server}/dictionaries/{dictionary_id}/label")
    page.fill("input[name=labeller]", "Ada")
    page.click("button[type=submit]")
    feature = wait_ready(page)
    page.keyboard.press(key)
    expect(page.locator("[data-count=labelled]")).to_have_text("1")
    with app.app.state.sessionmaker() as session:
        labels = session.execute(select(Label.dictionary_hash, Label.feature_index, Label.verdict)).all()
    assert labels == [(entry["weights_hash"], feature, verdict)]
    page.goto(f"{live_server}/estimates")
    expect(page.locator(f"tr[data-dictionary='{dictionary_id}'] [data-distinct=labelled]")).to_have_text("1")


def test_a_served_record_is_labelled_in_the_browser(
    page: Page, live_server: str, page_app: PageApp, record: Path, console_errors: list[str]
) -> None:
    manifest = json.loads((record / BUNDLE_DIR / MANIFEST).read_text())
    label_one_served_feature(page, live_server, page_app, manifest["dictionaries"][0], "1", "monosemantic")
    assert console_errors == []


STUDY_RECORD = Path(__file__).resolve().parents[2] / "docs" / "results" / "study"
STUDY_DICTIONARY = "relu_n1024_l10.3"  # the dictionary the study's labellers label


@pytest.fixture
def study_app(tmp_path: Path) -> PageApp:
    """The committed study record's bundle served as `make label` serves it, into a fresh database."""
    settings = Settings(workdir=tmp_path / "served", database_url=f"sqlite:///{tmp_path / 'served.db'}")
    load_record(STUDY_RECORD, settings)
    return PageApp(app=create_app(settings), built=None, workdir=settings.workdir)


def test_the_committed_study_record_is_labelled_in_the_browser(
    page: Page, live_server: str, study_app: PageApp, console_errors: list[str]
) -> None:
    manifest = json.loads((STUDY_RECORD / BUNDLE_DIR / MANIFEST).read_text())
    entry = next(d for d in manifest["dictionaries"] if d["name"] == STUDY_DICTIONARY)
    label_one_served_feature(page, live_server, study_app, entry, "2", "polysemantic")
    assert console_errors == []
