"""The labelling card in real headless Chromium: rubric, four verdicts, the top-contexts reading, confidence,
Ctrl+Enter, and that a reload or a second submit never silently skips a feature; the browser's evidence toggle.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select, update

from app.db.models import Dictionary, Feature, Label
from tests.app.builders import SMALL_DEAD, SMALL_SIZE
from tests.browser import test_browser as shared
from tests.browser.conftest import PageApp

# The browser, page and console-error fixtures of the keyboard labelling tests.
browser, page, console_errors, current_feature = (
    shared.browser,
    shared.page,
    shared.console_errors,
    shared.current_feature,
)

pytestmark = pytest.mark.timeout(120)
RARE = 5  # made rare in the small dictionary by the fixture below


@pytest.fixture
def rare_app(page_app: PageApp) -> Iterator[PageApp]:
    """The page app with feature 5 of the small dictionary rare: it fired, but with too little evidence."""
    with page_app.app.state.sessionmaker() as session:
        small = page_app.built.small_id
        session.execute(
            update(Feature)
            .where(Feature.dictionary_id == small, Feature.index == RARE)
            .values(evidence="rare", alive=False, fire_count=3)
        )
        session.execute(
            update(Dictionary)
            .where(Dictionary.id == small)
            .values(rare=1, alive=Dictionary.alive - 1, min_firings=20, min_contribution=0.05)
        )
        session.commit()
    yield page_app


def stored(page_app: PageApp) -> list[tuple]:
    with page_app.app.state.sessionmaker() as session:
        rows = session.scalars(select(Label).order_by(Label.id)).all()
        return [(r.feature_index, r.verdict, r.top_contexts_monosemantic, r.confidence, r.description) for r in rows]


def start_labelling(page: Page, live_server: str, dictionary_id: int) -> None:
    page.goto(f"{live_server}/dictionaries/{dictionary_id}/label")
    page.fill("input[name=labeller]", "Ada")
    page.click("button[type=submit]")
    expect(page.locator("[data-count=labelled]")).to_have_text("0")
    page.wait_for_function("window.htmx !== undefined")
    shared.wait_ready(page)


def wait_for_count(page: Page, labelled: int) -> int:
    """Wait for the progress count, then for the new card's ready state; the card's feature."""
    expect(page.locator("[data-count=labelled]")).to_have_text(str(labelled))
    return shared.wait_ready(page)


def test_the_card_states_its_rubric_and_takes_every_field_by_keyboard(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    start_labelling(page, live_server, rare_app.built.small_id)
    expect(page.locator("#rubric")).to_contain_text("one concept you could describe covers the top contexts")
    expect(page.locator("#population")).to_contain_text("fired at least 20 times; 1 rare and 2 dead")
    first = current_feature(page)

    # t marks the top-contexts reading, c steps the confidence (not given -> 0.5 -> 0.75), 2 saves.
    page.keyboard.press("t")
    expect(page.locator("input[name=top_contexts]")).to_be_checked()
    page.keyboard.press("c")
    page.keyboard.press("c")
    expect(page.locator("select[name=confidence]")).to_have_value("0.75")
    second = page.keyboard.press("2") or wait_for_count(page, 1)

    # 4: too little evidence, stored with no top-contexts reading.
    page.keyboard.press("t")  # ignored for this verdict
    third = page.keyboard.press("4") or wait_for_count(page, 2)

    # Shift+1 chooses a verdict without saving; Ctrl+Enter in the description saves with it.
    page.keyboard.press("Shift+Digit1")
    expect(page.locator("button.chosen")).to_have_count(1)
    expect(page.locator("#card-hint")).to_contain_text("Ctrl+Enter")
    assert stored(rare_app)[-1][0] == second  # nothing stored yet
    page.keyboard.press("d")
    page.keyboard.type("the word cat")
    page.keyboard.press("Control+Enter")
    fourth = wait_for_count(page, 3)

    # Ctrl+Enter with no chosen verdict leaves the box and asks for one; the next key saves with the text.
    page.keyboard.press("d")
    page.keyboard.type("dogs and mats")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#card-hint")).to_contain_text("press 1-4")
    assert len(stored(rare_app)) == 3
    page.keyboard.press("3")
    wait_for_count(page, 4)

    assert stored(rare_app) == [
        (first, "polysemantic", True, 0.75, ""),
        (second, "too_little_evidence", None, None, ""),
        (third, "monosemantic", True, None, "the word cat"),
        (fourth, "uninterpretable", False, None, "dogs and mats"),
    ]
    expect(page.locator("#flash")).to_contain_text(f"Saved feature #{fourth} as uninterpretable")
    assert console_errors == []


def test_a_reload_or_a_second_submit_never_skips_a_feature(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    small = rare_app.built.small_id
    start_labelling(page, live_server, small)
    shown = current_feature(page)
    page.reload()
    assert shared.wait_ready(page) == shown  # the same feature, not a fresh draw

    # Keep the card's form as it is now, save it with 1, then send the same form again (a double submit).
    page.evaluate(
        "window.sameCard = new URLSearchParams(new FormData(document.querySelector('#labelling form'))).toString()"
    )
    page.keyboard.press("1")
    following = wait_for_count(page, 1)
    page.evaluate(
        """() => {
          const values = Object.fromEntries(new URLSearchParams(window.sameCard));
          values.verdict = 'polysemantic';
          return htmx.ajax('POST', '/dictionaries/SMALL/label', {target: '#labelling', swap: 'outerHTML', values});
        }""".replace("SMALL", str(small))
    )
    expect(page.locator("#flash")).to_contain_text(f"Feature #{shown} was already labelled by you (monosemantic)")
    expect(page.locator("#flash")).to_contain_text(f"Undo (u) takes that label of #{shown} back")
    assert shared.wait_ready(page) == following  # the feature the first submit moved on to, not another one
    assert [row[:2] for row in stored(rare_app)] == [(shown, "monosemantic")]

    # The offered undo names that label and takes exactly it back, showing that feature again.
    expect(page.locator("#undo")).to_contain_text(f"Undo label of #{shown}")
    page.keyboard.press("u")
    expect(page.locator("#flash")).to_contain_text(f"Undid your label of feature #{shown}")
    assert current_feature(page) == shown and stored(rare_app) == []
    page.reload()
    assert shared.wait_ready(page) == shown
    assert console_errors == []


def test_keys_pressed_while_the_card_changes_store_nothing(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    """A key pressed during the swap, or on the new card before its ready state, is dropped, not queued."""
    start_labelling(page, live_server, rare_app.built.small_id)
    first = current_feature(page)
    # Widen htmx's settle window (20 ms) so the next keys surely land while the card is changing.
    page.evaluate("htmx.config.defaultSettleDelay = 1500; window.sameLoad = true")
    page.keyboard.press("1")
    expect(page.locator("[data-count=labelled]")).to_have_text("1")
    second = current_feature(page)
    expect(page.locator("#labelling.htmx-settling")).to_have_count(1)
    expect(page.locator("#card-ready")).to_have_text("getting ready…")
    page.keyboard.press("4")
    page.keyboard.press("4")
    expect(page.locator("#card-hint")).to_contain_text("ignored")
    assert shared.wait_ready(page) == second
    page.wait_for_timeout(300)  # a queued key would have been sent by now
    assert [row[:2] for row in stored(rare_app)] == [(first, "monosemantic")]
    expect(page.locator("[data-count=labelled]")).to_have_text("1")

    # Right after a swap settles the card is visible but not ready yet: a key then is dropped too.
    page.evaluate("htmx.config.defaultSettleDelay = 20")
    page.evaluate(
        """document.addEventListener('htmx:afterSettle', () => {
             window.stateAtSwap = document.querySelector('#card-ready').textContent;
             document.dispatchEvent(new KeyboardEvent('keydown', {key: '4', code: 'Digit4', bubbles: true}));
           }, {once: true})"""
    )
    page.keyboard.press("2")
    third = wait_for_count(page, 2)
    assert page.evaluate("window.stateAtSwap") == "getting ready…"
    assert [row[:2] for row in stored(rare_app)] == [(first, "monosemantic"), (second, "polysemantic")]
    page.keyboard.press("3")
    wait_for_count(page, 3)
    assert [row[:2] for row in stored(rare_app)][-1] == (third, "uninterpretable")
    assert page.evaluate("window.sameLoad === true")  # no plain form post reloaded the page
    with rare_app.app.state.sessionmaker() as session:
        seconds = session.scalars(select(Label.seconds_on_screen).order_by(Label.id)).all()
    assert all(s is not None and s >= 0.25 for s in seconds), seconds
    assert console_errors == []


def test_the_card_never_serves_a_rare_or_dead_feature(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    start_labelling(page, live_server, rare_app.built.small_id)
    alive = [i for i in range(SMALL_SIZE) if i not in SMALL_DEAD and i != RARE]
    served = [current_feature(page)]
    for count in range(1, len(alive)):
        page.keyboard.press("3")
        served.append(wait_for_count(page, count))
    page.keyboard.press("3")
    expect(page.locator("#labelling")).to_contain_text("You have labelled every alive feature")
    assert sorted(served) == alive
    assert console_errors == []


def test_the_browser_hides_dead_and_rare_features_behind_a_toggle(
    page: Page, live_server: str, rare_app: PageApp, console_errors: list[str]
) -> None:
    small = rare_app.built.small_id
    page.goto(f"{live_server}/dictionaries/{small}")
    rows = page.locator("table.features tbody tr")
    toggle = page.locator("#evidence-toggle")
    expect(rows).to_have_count(SMALL_SIZE - len(SMALL_DEAD) - 1)
    expect(toggle).to_contain_text("1 rare and 2 dead hidden")
    expect(page.locator("table.features")).not_to_contain_text("#5\n")
    toggle.locator("a").click()
    expect(rows).to_have_count(SMALL_SIZE)
    expect(page).to_have_url(f"{live_server}/dictionaries/{small}?evidence=all")
    expect(page.locator("table.features .badge.dead")).to_have_count(3)
    expect(page.locator("table.features tbody tr", has_text="#5").locator(".badge")).to_have_text("rare")
    page.locator("#evidence-toggle a").click()
    expect(rows).to_have_count(SMALL_SIZE - len(SMALL_DEAD) - 1)
    assert console_errors == []
