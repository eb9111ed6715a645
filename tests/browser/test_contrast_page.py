"""The contrastive search page in headless Chromium, over a real (smallest) run: the form, htmx's swap of the
result, the shareable URL, and a bad pattern shown in place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from app.services.ingest import ingest_run
from app.settings import Settings
from app.web.factory import create_app
from tests.browser.conftest import PageApp
from tests.browser.test_browser import browser, console_errors, page  # noqa: F401 (fixtures)
from tests.text_builders import SMALLEST_PIPELINE, brown_jsonl
from training.experiments.pipeline import run_pipeline
from training.features.index import index_run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def contrast_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("run")
    run_pipeline(SMALLEST_PIPELINE, workdir, brown_jsonl(tmp_path_factory.mktemp("corpus")), progress=False)
    index_run(workdir, progress=False)
    return workdir


@pytest.fixture
def page_app(contrast_run: Path, tmp_path: Path) -> PageApp:
    """The app over the real run (live_server serves it), its labels database in tmp_path."""
    app = create_app(Settings(workdir=contrast_run, database_url=f"sqlite:///{tmp_path / 'contrast.db'}"))
    ingest_run(app.state.engine, contrast_run)
    return PageApp(app=app, built=None, workdir=contrast_run)  # type: ignore[arg-type] (no builder data)


def test_the_contrast_form_swaps_in_the_result_and_a_bad_pattern(
    page: Page,  # noqa: F811
    live_server: str,
    console_errors: list[str],  # noqa: F811
) -> None:
    page.goto(f"{live_server}/")
    page.click("nav a[href='/contrast']")
    expect(page.locator("h1")).to_have_text("Contrastive feature search")
    page.wait_for_function("window.htmx !== undefined")
    page.fill("#a", r"[[\.]]")
    page.fill("#b", "[[,]]")
    page.fill("#max_positions", "100")
    page.click("button[type=submit]")
    result = page.locator("#contrast-result")
    expect(result).to_contain_text("Probe AUC per layer")
    expect(result.locator("table").first.locator("tbody tr")).to_have_count(6)  # six layers
    features = result.locator("table.contrast-features tbody")
    expect(features).to_have_count(2)  # two dictionaries, sizes in numeric order
    expect(features.first).to_have_attribute("data-dictionary", "relu_n16_l10.03")
    expect(features.nth(1)).to_have_attribute("data-dictionary", "relu_n32_l10.03")
    expect(page.locator("#contrast-takeaway")).to_contain_text("Best feature AUC")
    expect(page.locator("#contrast-takeaway")).to_contain_text("layer-2 MLP probe")
    expect(features.first.locator("a").first).to_have_attribute("href", re.compile(r"^/dictionaries/\d+/features/\d+$"))
    expect(result.locator(".contrast-context mark").first).to_be_visible()
    assert "[[" not in result.locator("table.contrast-features").inner_text()
    # The table fits its panel at 1280 px: nothing to scroll sideways.
    fits = """() => { const t = document.querySelector('table.contrast-features');
        return t.closest('.table-wrap').scrollWidth <= t.closest('.panel').clientWidth; }"""
    assert page.evaluate(fits)
    assert "a=%5B%5B%5C.%5D%5D" in page.url and "max_positions=100" in page.url
    assert console_errors == []

    page.fill("#b", "[[,]](")
    page.click("button[type=submit]")
    expect(result).to_contain_text("Set b: not a valid regular expression")
    expect(page.locator("h1")).to_have_count(1)  # the fragment replaced the result, not the page
