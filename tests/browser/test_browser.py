"""The pages in real headless Chromium: keyboard labelling with htmx, undo, estimates, the API reference,
and screenshots.

Chromium is Debian's (``make test`` installs it); a missing browser fails the test rather than skipping it.
Screenshots land in ``tests/artifacts/`` for a person to look at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from sqlalchemy import select

from app.db.models import Label
from app.web.vendor import fetch_htmx, fetch_swagger_ui
from tests.app.builders import SMALL_DEAD, SMALL_SIZE, add_labels
from tests.app.test_frequency_persistence import shape_small_dictionary
from tests.browser.conftest import PageApp
from training.figures.sweep import plot_mmcs_with_larger

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SMALL_ALIVE = SMALL_SIZE - len(SMALL_DEAD)
STEP_TIMEOUT_MS = 10_000

pytestmark = pytest.mark.timeout(90)
expect.set_options(timeout=STEP_TIMEOUT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright (never a browser Playwright downloads)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (make test does)"
    fetch_htmx()
    fetch_swagger_ui()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Console errors, uncaught exceptions and failed requests of the test's page (CSP violations land here)."""
    return []


@pytest.fixture
def page(browser: Browser, console_errors: list[str]) -> Iterator[Page]:
    """A fresh browser context at 1280 x 800 whose errors go to ``console_errors``."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            console_errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    page.on("response", lambda r: console_errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        yield page
    finally:
        context.close()


def stored_labels(page_app: PageApp) -> list[tuple[int, str, str, str]]:
    with page_app.app.state.sessionmaker() as session:
        rows = session.scalars(select(Label).order_by(Label.id)).all()
        return [(r.feature_index, r.labeller, r.verdict, r.description) for r in rows]


def current_feature(page: Page) -> int:
    return int(page.locator("#labelling").get_attribute("data-feature"))


def wait_ready(page: Page) -> int:
    """Wait for the card on screen to show its ready state (it takes keys only then); its feature."""
    expect(page.locator("#labelling.ready #card-ready")).to_have_text("ready: 1-4 save")
    return current_feature(page)


def press_and_wait(page: Page, key: str, labelled: int) -> int:
    """Press a labelling key on a ready card and wait until htmx swapped in a progress count of ``labelled``."""
    wait_ready(page)
    page.keyboard.press(key)
    expect(page.locator("[data-count=labelled]")).to_have_text(str(labelled))
    return current_feature(page)


def estimate_row(page: Page, dictionary_id: int) -> dict[str, str]:
    row = page.locator(f"tr[data-dictionary='{dictionary_id}']")
    return {f: row.locator(f"[data-field={f}]").inner_text() for f in ("labelled", "monosemantic", "fraction")}


def test_keyboard_labelling_undo_and_estimates(
    page: Page, live_server: str, page_app: PageApp, artifacts: Path, console_errors: list[str]
) -> None:
    small = page_app.built.small_id
    page.goto(f"{live_server}/estimates")
    # Without labels the dictionary is listed apart, collapsed, rather than as a row of dashes.
    expect(page.locator(f"details.unlabelled tr[data-dictionary='{small}']")).to_have_count(1)
    expect(page.locator("table.estimates")).to_have_count(0)

    page.goto(f"{live_server}/dictionaries/{small}/label")
    page.fill("input[name=labeller]", "Ada <b>")
    page.click("button[type=submit]")
    expect(page.locator("[data-count=labelled]")).to_have_text("0")
    expect(page.locator("[data-count=alive]")).to_have_text(str(SMALL_ALIVE))
    expect(page.locator(".page-head")).to_contain_text("labelling as Ada <b>")
    page.wait_for_function("window.htmx !== undefined")
    first = current_feature(page)
    assert first in page_app.built.small_alive

    # n skips without labelling: another feature, nothing stored, same count.
    wait_ready(page)
    page.keyboard.press("n")
    expect(page.locator("#labelling")).not_to_have_attribute("data-feature", str(first))
    first = current_feature(page)
    assert stored_labels(page_app) == []

    second = press_and_wait(page, "1", 1)
    third = press_and_wait(page, "2", 2)
    # Keys typed into the description are text, not commands; Escape leaves the box and keys work again.
    wait_ready(page)
    page.keyboard.press("d")
    expect(page.locator("textarea[name=description]")).to_be_focused()
    page.keyboard.type("fires on 1 cat <script>")
    page.keyboard.press("Escape")
    expect(page.locator("[data-count=labelled]")).to_have_text("2")
    fourth = press_and_wait(page, "1", 3)
    expect(page.locator("#flash")).to_contain_text(f"Saved feature #{third} as monosemantic")

    labels = stored_labels(page_app)
    assert labels == [
        (first, "Ada <b>", "monosemantic", ""),
        (second, "Ada <b>", "polysemantic", ""),
        (third, "Ada <b>", "monosemantic", "fires on 1 cat <script>"),
    ]
    assert len({first, second, third, fourth}) == 4
    page.screenshot(path=str(artifacts / "label_page.png"), full_page=True, caret="initial")

    # u deletes the label it names and shows that feature again to relabel.
    wait_ready(page)
    expect(page.locator("#undo")).to_contain_text(f"Undo label of #{third}")
    page.keyboard.press("u")
    expect(page.locator("[data-count=labelled]")).to_have_text("2")
    expect(page.locator("#flash")).to_contain_text(f"Undid your label of feature #{third} (monosemantic)")
    assert current_feature(page) == third
    assert stored_labels(page_app) == labels[:2]

    page.goto(f"{live_server}/estimates")
    assert estimate_row(page, small) == {"labelled": "2", "monosemantic": "1", "fraction": "50.0%"}
    expect(page.locator("table.labellers")).to_contain_text("Ada <b>")
    page.screenshot(path=str(artifacts / "estimates.png"), full_page=True, caret="initial")
    assert console_errors == []


def test_feature_browser_filters_and_pages_in_place(
    page: Page, live_server: str, page_app: PageApp, console_errors: list[str]
) -> None:
    small = page_app.built.small_id
    page.goto(f"{live_server}/dictionaries/{small}")
    rows = page.locator("table.features tbody tr")
    expect(rows).to_have_count(SMALL_ALIVE)  # dead (and rare) features are hidden by default
    page.evaluate("window.notReloaded = true")
    page.locator("input[name=q]").press_sequentially("cat", delay=30)
    # Features 1 and 9 fire most on " cat"; 0 and 8 list it second (their top-token text is "the cat").
    expect(rows).to_have_count(4)
    expect(page).to_have_url(f"{live_server}/dictionaries/{small}?q=cat")
    page.click("th a:has-text('Density')")
    expect(rows.first).to_contain_text("#9")
    assert page.evaluate("window.notReloaded") is True
    rows.first.locator("a").first.click()
    expect(page.locator("h1")).to_contain_text("Feature #9")
    assert console_errors == []


def write_run_figures(workdir: Path) -> None:
    """The feature-count figure of an LM run and of a toy experiment beside it, and the run's estimate."""
    estimate = {"value": 24, "low": 16, "high": 32, "method": "mmcs_drop"}
    curve = [
        {"arch": "relu", "dict_size": size, "l1": 0.1, "mmcs_with_larger": mmcs}
        for size, mmcs in ((8, 0.95), (16, 0.9), (32, 0.6))
    ]
    plot_mmcs_with_larger(curve, workdir / "figures" / "mmcs_with_larger.png", None, estimate)
    plot_mmcs_with_larger(curve, workdir / "toy" / "figures" / "mmcs_with_larger.png", 20, estimate)
    (workdir / "metrics.json").write_text(json.dumps({"mmcs_with_larger": curve, "feature_count_estimate": estimate}))


def test_screenshots_of_overview_feature_page_and_inspector(
    page: Page, live_server: str, page_app: PageApp, artifacts: Path, console_errors: list[str]
) -> None:
    write_run_figures(page_app.workdir)
    page.goto(f"{live_server}/")
    expect(page.locator("table.dictionaries tbody tr")).to_have_count(2)
    expect(page.locator("figure img")).to_have_count(2)
    widths = page.eval_on_selector_all("figure img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert all(w > 100 for w in widths), widths
    expect(page.locator("main")).to_contain_text("Estimated number of features: 24")
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True, caret="initial")

    page.goto(f"{live_server}/dictionaries/{page_app.built.small_id}/features/9")
    expect(page.locator(".context").first).to_be_visible()
    shaded = page.locator(".context .tok.t10").first
    assert shaded.get_attribute("title") == "5.5"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.screenshot(path=str(artifacts / "feature_page.png"), full_page=True, caret="initial")

    page.goto(f"{live_server}/inspect")
    page.fill("textarea[name=text]", "The cat sat on the mat\nand <script>purred</script>")
    page.fill("input[name=feature]", "3")
    page.click("button[type=submit]")
    expect(page.locator(".inspect-token")).to_have_count(7)
    expect(page.locator("#inspect-result h2").first).to_contain_text("Feature #3")
    shown = page.locator(".inspect-token .text")
    assert (shown.nth(5).inner_text(), shown.nth(6).inner_text()) == ("·mat↵and", "·<script>purred</script>")
    page.screenshot(path=str(artifacts / "inspector.png"), full_page=True, caret="initial")
    assert console_errors == []


# Collects Content-Security-Policy violations as the page reports them (injected by the browser driver, so
# the policy itself does not apply to this script).
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.cspViolations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


def test_api_reference_renders_swagger_ui_under_the_policy(
    page: Page, live_server: str, console_errors: list[str]
) -> None:
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(f"{live_server}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("monosemantic")
    operation = page.locator(".opblock-get").filter(has_text="/api/dictionaries/{dictionary_id}/estimate")
    expect(operation).to_have_count(1)
    # Try a call through the reference: Swagger UI fetches from our own origin, which the policy allows.
    listing = page.locator(".opblock-get").filter(has=page.locator("[data-path='/api/dictionaries']"))
    listing.locator(".opblock-summary-control").click()
    listing.locator("button.try-out__btn").click()
    listing.locator("button.execute").click()
    expect(listing.locator(".live-responses-table")).to_contain_text("relu_n16_l10.1")
    assert page.evaluate("window.cspViolations") == []
    assert console_errors == []


def test_estimates_breakdown_switches_dictionary_in_place(
    page: Page, live_server: str, page_app: PageApp, artifacts: Path, console_errors: list[str]
) -> None:
    with page_app.app.state.sessionmaker() as session:
        shape_small_dictionary(session, page_app.built)
        add_labels(session, page_app.built.large_hash, [(0, "ann", "monosemantic"), (20, "ann", "polysemantic")])
    small, large = page_app.built.small_id, page_app.built.large_id
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    page.goto(f"{live_server}/estimates")
    breakdown = page.locator("#breakdown")
    expect(breakdown).to_have_attribute("data-dictionary", str(small))
    expect(breakdown.locator("svg.chart circle")).to_have_count(4)
    expect(page.locator("#persistence-reading")).to_contain_text("86% vs 20%")
    page.locator("#by-density").screenshot(path=str(artifacts / "estimates_breakdown.png"))
    page.wait_for_function("window.htmx !== undefined")
    page.evaluate("window.notReloaded = true")
    page.select_option("#breakdown-dictionary", str(large))
    expect(page.locator("#breakdown")).to_have_attribute("data-dictionary", str(large))
    # Densities rise with the index: feature 0 is in the first quartile of 32, feature 20 in the third.
    labelled = page.locator("#breakdown tr[data-quartile] [data-field=labelled]")
    expect(labelled).to_have_text(["1", "0", "1", "0"])
    expect(page).to_have_url(f"{live_server}/estimates?dictionary={large}")
    assert page.evaluate("window.notReloaded") is True
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert page.evaluate("window.cspViolations") == []
    assert console_errors == []
