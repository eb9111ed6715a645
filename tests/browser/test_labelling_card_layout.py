"""The labelling card at 1280 x 900 in real headless Chromium: the verdict row, 8 top contexts and samples from
three activation bands are all above the fold, each passage once; at 420 px it still works without sideways
scrolling.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import select

from app.db.models import Example, Feature
from app.services.examples import encode_windows
from tests.app.builders import N_QUANTILES
from tests.browser import test_browser as shared
from tests.browser.conftest import PageApp

browser = shared.browser
pytestmark = pytest.mark.timeout(120)
WINDOW, CENTER = 33, 16
TOP_PASSAGES = 12


def examples(max_activation: float) -> list[Example]:
    """12 distinct top passages, each also as a second overlapping window, and 3 samples in every interval."""
    rng = np.random.default_rng(0)
    rows: list[tuple[str, int, int | None, int, float]] = []
    for rank in range(TOP_PASSAGES):
        position = 1000 * (rank + 1)
        value = max_activation * (1 - rank / 50)
        rows.append(("top", 2 * rank, None, position, value))
        rows.append(("top", 2 * rank + 1, None, position + 3, value * 0.99))  # the same passage again
    for interval in range(N_QUANTILES):
        for rank in range(3):
            value = max_activation * (interval + 0.5) / N_QUANTILES
            rows.append(("quantile", rank, interval, 100_000 + 1000 * (interval * 3 + rank), value))
    ids = rng.integers(1, 11, size=(len(rows), WINDOW))
    acts = np.zeros((len(rows), WINDOW))
    for row, (*_, value) in enumerate(rows):
        acts[row, CENTER] = value
    token_bytes, act_bytes = encode_windows(ids, acts)
    return [
        Example(kind=kind, rank=rank, quantile=q, position=position, center=CENTER, token_ids=t, activations=a)
        for (kind, rank, q, position, _), t, a in zip(rows, token_bytes, act_bytes, strict=True)
    ]


@pytest.fixture
def rich_feature(page_app: PageApp) -> Iterator[int]:
    """A feature of the small dictionary with a full-sized index's evidence; its index."""
    index = page_app.built.small_alive[0]
    with page_app.app.state.sessionmaker() as session:
        feature = session.scalars(
            select(Feature).where(Feature.dictionary_id == page_app.built.small_id, Feature.index == index)
        ).one()
        feature.examples = examples(feature.max_activation)
        session.commit()
    yield index


# Where each part of the card ends, in CSS pixels from the top of the page.
BOTTOMS = """() => {
  const bottom = e => e.getBoundingClientRect().bottom + window.scrollY;
  const q = s => [...document.querySelectorAll(s)];
  return {
    verdicts: bottom(document.querySelector('.label-form')),
    top: q('[data-part=top-contexts] > .context').map(bottom),
    bands: Object.fromEntries(
      q('[data-band]').map(b => [b.dataset.band, [...b.querySelectorAll('.context')].map(bottom)])),
  };
}"""


@pytest.mark.parametrize("width", [1280, 420])
def test_the_card_shows_8_top_contexts_and_three_bands_above_the_fold(
    browser: Browser, live_server: str, page_app: PageApp, rich_feature: int, width: int, artifacts: Path
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        small = page_app.built.small_id
        page.goto(f"{live_server}/dictionaries/{small}/label?feature={rich_feature}")
        page.fill("input[name=labeller]", "Ada")
        page.click("button[type=submit]")
        assert shared.wait_ready(page) == rich_feature
        page.screenshot(path=str(artifacts / f"label_card_{width}.png"), caret="initial")
        parts = page.evaluate(BOTTOMS)
        # Each passage once: 12 distinct top passages, of which 8 on the card and 4 one click away.
        assert len(parts["top"]) == 8
        expect(page.locator("details.more summary").first).to_have_text("4 more top contexts")
        assert list(parts["bands"]) == ["high", "middle", "low"]
        assert all(len(contexts) == 2 for contexts in parts["bands"].values())
        assert page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth") <= 0
        if width == 1280:
            fold = 900
            assert parts["verdicts"] <= fold
            assert max(parts["top"]) <= fold, parts["top"]
            assert max(max(b) for b in parts["bands"].values()) <= fold, parts["bands"]
            # One line each: no strip wraps.
            heights = page.eval_on_selector_all(
                "[data-part=top-contexts] > .context", "cs => cs.map(c => Math.round(c.getBoundingClientRect().height))"
            )
            assert max(heights) < 30, heights
    finally:
        context.close()
