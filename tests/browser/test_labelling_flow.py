"""The labeller's whole flow in real Chromium: pick a feature in the browser, open it, label it from its page with a
confidence, reload without losing or skipping anything, and find it again by its description; and the layout at
three widths.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from app.db.models import Label
from tests.browser import test_browser as shared
from tests.browser.conftest import PageApp

browser, page, console_errors = shared.browser, shared.page, shared.console_errors

pytestmark = pytest.mark.timeout(120)


def test_pick_open_label_reload_and_find_a_feature_by_its_description(
    page: Page, live_server: str, page_app: PageApp, console_errors: list[str]
) -> None:
    small = page_app.built.small_id
    page.goto(f"{live_server}/dictionaries/{small}")
    page.wait_for_function("window.htmx !== undefined")
    # 1. Pick a feature from the browser: the third row of the table.
    row = page.locator("table.features tbody tr").nth(2)
    chosen = int(row.locator("td").first.inner_text().lstrip("#"))
    row.locator("td a").first.click()
    # 2. Its page.
    expect(page.locator("h1")).to_contain_text(f"Feature #{chosen}")
    # 3. Label it from its page, with a confidence and a description.
    page.click("text=Label this feature")
    page.fill("input[name=labeller]", "Ada")
    page.click("button[type=submit]")
    expect(page.locator("#labelling")).to_have_attribute("data-feature", str(chosen))
    page.wait_for_function("window.htmx !== undefined")
    shared.wait_ready(page)
    page.keyboard.press("c")
    page.keyboard.press("c")
    page.keyboard.press("Shift+Digit1")
    page.keyboard.press("d")
    page.keyboard.type("honorific titles")
    page.keyboard.press("Control+Enter")
    expect(page.locator("[data-count=labelled]")).to_have_text("1")
    following = page.locator("#labelling").get_attribute("data-feature")
    assert following != str(chosen)
    # 4. A reload shows the same next feature and stores nothing twice.
    page.reload()
    expect(page.locator("#labelling")).to_have_attribute("data-feature", following)
    with page_app.app.state.sessionmaker() as session:
        rows = session.scalars(select(Label)).all()
    assert [(r.feature_index, r.verdict, r.confidence, r.description) for r in rows] == [
        (chosen, "monosemantic", 0.75, "honorific titles")
    ]
    # 5. Find it again by its description in the browser.
    page.goto(f"{live_server}/dictionaries/{small}")
    page.wait_for_function("window.htmx !== undefined")
    page.locator("#q").press_sequentially("honorific")
    expect(page.locator("table.features tbody tr")).to_have_count(1)
    expect(page.locator("table.features tbody tr")).to_contain_text(f"#{chosen}")
    expect(page.locator("table.features tbody tr")).to_contain_text("honorific titles")
    # The arrow keys turn pages only when there is another page; the go-to box opens a feature.
    page.fill("#goto", str(chosen))
    page.click("text=Open")
    expect(page.locator("h1")).to_contain_text(f"Feature #{chosen}")
    assert console_errors == []


def test_arrow_keys_turn_the_browser_pages_but_not_while_typing(
    page: Page, live_server: str, page_app: PageApp, console_errors: list[str]
) -> None:
    large = page_app.built.large_id
    page.goto(f"{live_server}/dictionaries/{large}?offset=10")
    page.wait_for_function("window.htmx !== undefined")
    expect(page.locator("[data-field=range]")).to_have_text("11–32 of 32")
    page.locator("#q").focus()
    page.keyboard.press("ArrowLeft")  # moves the caret in the box, not the page
    expect(page.locator("[data-field=range]")).to_have_text("11–32 of 32")
    page.locator("#q").blur()
    page.keyboard.press("ArrowRight")  # no next page: nothing happens
    expect(page.locator("[data-field=range]")).to_have_text("11–32 of 32")
    page.keyboard.press("ArrowLeft")
    expect(page.locator("[data-field=range]")).to_have_text("1–32 of 32")
    expect(page).to_have_url(f"{live_server}/dictionaries/{large}")
    assert console_errors == []


# Every visible control (link, button, field) that sticks out of the viewport or out of a box that clips it
# (a scrolling table wrapper, say): the user cannot reach it without scrolling a part of the page sideways.
CUT_OFF_CONTROLS = """() => [...document.querySelectorAll('a, button, input, select, textarea')]
    .filter(e => e.offsetParent !== null)
    .filter(e => {
        const r = e.getBoundingClientRect();
        if (r.left < -1 || r.right > innerWidth + 1) return true;
        for (let box = e.parentElement; box; box = box.parentElement) {
            if (getComputedStyle(box).overflowX === 'visible') continue;
            const b = box.getBoundingClientRect();
            if (r.left < b.left - 1 || r.right > b.right + 1) return true;
        }
        return false; })
    .map(e => (e.textContent || e.name || e.tagName).trim().slice(0, 40))"""

# Tables and lists wider than the panel that holds them (outside a scrolling wrapper): the labels of a
# feature in its 340 px sidebar, say.
SPILLED_CONTENT = """() => [...document.querySelectorAll('.panel')].flatMap(panel => {
    const p = panel.getBoundingClientRect();
    return [...panel.querySelectorAll('table, ul, ol, .chips, .tokens')]
        .filter(e => !e.closest('.table-wrap') && e.getBoundingClientRect().right > p.right + 1)
        .map(e => e.tagName + '.' + e.className + ' in ' + panel.textContent.trim().slice(0, 30));
})"""


@pytest.mark.parametrize("width", [420, 768, 1280])
def test_no_page_scrolls_sideways_or_cuts_off_a_control(
    browser: Browser, live_server: str, page_app: PageApp, width: int
) -> None:
    small = page_app.built.small_id
    alive = page_app.built.small_alive[0]
    long_description = "honorific titles before a surname (Mr, Mrs, Dr) and similar abbreviations in running text"
    with page_app.app.state.sessionmaker() as session:
        for labeller, verdict in (("Ada Lovelace", "monosemantic"), ("Grace Hopper", "polysemantic")):
            session.add(
                Label(
                    dictionary_hash=page_app.built.small_hash,
                    feature_index=alive,
                    labeller=labeller,
                    verdict=verdict,
                    description=long_description,
                    confidence=0.75,
                    top_contexts_monosemantic=True,
                )
            )
        session.commit()
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{live_server}/dictionaries/{small}/label?feature={alive}")
        page.fill("input[name=labeller]", "Ada Lovelace")
        page.click("button[type=submit]")
        expect(page.locator("#labelling")).to_have_attribute("data-feature", str(alive))
        for url in (
            "/",
            f"/dictionaries/{small}",
            f"/dictionaries/{small}?evidence=all",
            f"/dictionaries/{small}/features/{alive}",
            f"/dictionaries/{small}/label?feature={alive}",
            "/estimates",
            f"/inspect?dictionary={small}&feature={alive}&text=the+cat+sat",
            "/contrast",
            f"/dictionaries/{small}?sort=bogus",
        ):
            page.goto(f"{live_server}{url}")
            overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{url} scrolls sideways by {overflow}px at {width}px"
            cut = page.evaluate(CUT_OFF_CONTROLS)
            assert cut == [], f"{url} cuts off {cut} at {width}px"
            spilled = page.evaluate(SPILLED_CONTENT)
            assert spilled == [], f"{url} spills {spilled} out of their panels at {width}px"
        page.goto(f"{live_server}/dictionaries/{small}/features/{alive}")
        expect(page.locator(".label-list li")).to_have_count(2)
        expect(page.locator(".label-list")).to_contain_text(long_description)
    finally:
        context.close()
