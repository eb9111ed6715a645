"""What the labelling card stores and takes back, in real headless Chromium: undo acts on exactly the action it
names (after a verdict, a skip or a deep link), skips go to the back of the queue, a deep link to a labelled
feature shows its verdict and a new one supersedes it, a rare feature takes only "too little evidence".
"""

from __future__ import annotations

from datetime import datetime

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from app.db.models import Label
from tests.browser import test_browser as shared
from tests.browser.conftest import PageApp
from tests.browser.test_labelling_card import RARE, rare_app, start_labelling

browser, page, console_errors, current_feature, wait_ready = (
    shared.browser,
    shared.page,
    shared.console_errors,
    shared.current_feature,
    shared.wait_ready,
)
__all__ = ["rare_app"]  # the fixture, imported for these tests

pytestmark = pytest.mark.timeout(120)


def stored(page_app: PageApp) -> list[tuple]:
    with page_app.app.state.sessionmaker() as session:
        rows = session.scalars(select(Label).order_by(Label.id)).all()
        return [(r.feature_index, r.verdict, r.top_contexts_monosemantic, r.confidence, r.description) for r in rows]


def label_as_ada(page_app: PageApp, rows: list[tuple[int, str, datetime]]) -> None:
    with page_app.app.state.sessionmaker() as session:
        for index, verdict, created in rows:
            session.add(
                Label(
                    dictionary_hash=page_app.built.small_hash,
                    feature_index=index,
                    labeller="Ada",
                    verdict=verdict,
                    description="earlier",
                    created_at=created,
                )
            )
        session.commit()


def test_undo_after_a_verdict_takes_back_that_label_and_keeps_the_card_as_it_was(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    start_labelling(page, live_server, rare_app.built.small_id)
    first = current_feature(page)
    expect(page.locator("#undo")).to_be_disabled()  # nothing done in this tab yet
    page.keyboard.press("t")
    page.keyboard.press("c")
    page.keyboard.press("c")
    page.keyboard.press("d")
    page.keyboard.type("cats and dogs")
    page.keyboard.press("Escape")
    page.keyboard.press("2")
    expect(page.locator("[data-count=labelled]")).to_have_text("1")
    wait_ready(page)
    expect(page.locator("#undo")).to_contain_text(f"Undo label of #{first}")
    page.keyboard.press("u")
    expect(page.locator("#flash")).to_contain_text(f"Undid your label of feature #{first} (polysemantic)")
    assert wait_ready(page) == first and stored(rare_app) == []
    expect(page.locator("input[name=top_contexts]")).to_be_checked()
    expect(page.locator("select[name=confidence]")).to_have_value("0.75")
    expect(page.locator("textarea[name=description]")).to_have_value("cats and dogs")
    expect(page.locator("#undo")).to_be_disabled()
    assert console_errors == []


def test_undo_after_a_skip_brings_the_skipped_feature_back_and_deletes_nothing(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    start_labelling(page, live_server, rare_app.built.small_id)
    labelled = current_feature(page)
    page.keyboard.press("1")
    expect(page.locator("[data-count=labelled]")).to_have_text("1")
    skipped = wait_ready(page)
    page.keyboard.press("n")
    expect(page.locator("#labelling")).not_to_have_attribute("data-feature", str(skipped))
    wait_ready(page)
    expect(page.locator("#undo")).to_contain_text(f"Undo skip of #{skipped}")
    page.keyboard.press("u")
    expect(page.locator("#flash")).to_contain_text(f"Undid the skip of feature #{skipped}")
    assert wait_ready(page) == skipped
    assert [row[:2] for row in stored(rare_app)] == [(labelled, "monosemantic")]  # the label two cards back stays
    assert console_errors == []


def test_skip_never_shows_the_same_feature_twice_in_a_row_and_skips_wait_at_the_back(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    start_labelling(page, live_server, rare_app.built.small_id)
    alive = len(rare_app.built.small_alive) - 1  # less the rare one
    shown = [current_feature(page)]
    for _ in range(alive + 2):
        page.keyboard.press("n")
        expect(page.locator("#labelling")).not_to_have_attribute("data-feature", str(shown[-1]))
        shown.append(wait_ready(page))
    # Every alive feature once before any comes back, then the oldest skips first.
    assert len(set(shown[:alive])) == alive
    assert shown[alive : alive + 3] == shown[:3]
    assert stored(rare_app) == []
    assert console_errors == []


def test_a_deep_link_to_a_labelled_feature_shows_its_verdict_and_undo_names_that_label(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    small = rare_app.built.small_id
    target, newer = rare_app.built.small_alive[2], rare_app.built.small_alive[3]
    start_labelling(page, live_server, small)
    label_as_ada(
        rare_app, [(target, "monosemantic", datetime(2026, 1, 1)), (newer, "polysemantic", datetime(2026, 1, 2))]
    )
    page.goto(f"{live_server}/dictionaries/{small}/label?feature={target}")
    assert wait_ready(page) == target
    expect(page.locator("#existing-label")).to_contain_text(f"You labelled #{target}")
    expect(page.locator("#existing-label")).to_have_attribute("data-verdict", "monosemantic")
    expect(page.locator("button.current")).to_have_attribute("value", "monosemantic")
    expect(page.locator("#undo")).to_contain_text(f"Undo label of #{target}")
    page.keyboard.press("u")
    expect(page.locator("#flash")).to_contain_text(f"Undid your label of feature #{target} (monosemantic)")
    assert [row[:2] for row in stored(rare_app)] == [(newer, "polysemantic")]  # not the newest label

    # Labelled again by a deep link: a new verdict supersedes the earlier one (both rows kept, the newest counts).
    label_as_ada(rare_app, [(target, "monosemantic", datetime(2026, 1, 3))])
    page.goto(f"{live_server}/dictionaries/{small}/label?feature={target}")
    wait_ready(page)
    page.keyboard.press("3")
    expect(page.locator("#flash")).to_contain_text(
        f"Saved feature #{target} as uninterpretable, replacing monosemantic"
    )
    assert [row[:2] for row in stored(rare_app)][-2:] == [(target, "monosemantic"), (target, "uninterpretable")]
    assert console_errors == []


def test_a_deep_link_to_a_rare_feature_says_so_and_offers_only_too_little_evidence(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    small = rare_app.built.small_id
    start_labelling(page, live_server, small)
    page.goto(f"{live_server}/dictionaries/{small}/label?feature={RARE}")
    assert wait_ready(page) == RARE
    expect(page.locator("#evidence-notice")).to_contain_text(f"Feature #{RARE} is rare")
    for key in ("1", "2", "3"):
        expect(page.locator(f"[data-key='{key}']")).to_be_disabled()
        page.keyboard.press(key)
    expect(page.locator("[data-key='4']")).to_be_enabled()
    assert stored(rare_app) == []
    page.keyboard.press("4")
    expect(page.locator("#flash")).to_contain_text(f"Saved feature #{RARE} as too little evidence")
    assert stored(rare_app) == [(RARE, "too_little_evidence", None, None, "")]
    assert console_errors == []
