"""The estimates page's density and persistence breakdown, its plain-language reading and chart, the toy
figures folder setting, and /docs without and with Swagger UI, through TestClient."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.services.estimates import compare_proportions, labellable_estimate
from app.services.schemas import GroupFraction, PersistenceOut
from app.settings import Settings
from app.web.api_docs import SWAGGER_DIR, SWAGGER_FILES
from app.web.page_data import persistence_reading, toy_workdir
from app.web.svg_charts import CategoryPoint, category_chart
from tests.app.builders import add_labels
from tests.app.test_estimates import wilson_by_quadratic
from tests.app.test_frequency_persistence import QUARTILE_COUNTS, shape_small_dictionary
from tests.browser.conftest import PageApp

HX = {"HX-Request": "true"}


def breakdown_of(html: str) -> str:
    return re.search(r'<div id="breakdown".*?</section>', html, re.S).group(0)


def cells(block: str, attribute: str, value: str) -> dict[str, str]:
    row = re.search(rf'<tr {attribute}="{value}">(.*?)</tr>', block, re.S).group(1)
    return dict(re.findall(r'data-field="(\w+)">([^<]*)<', row))


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def interval_text(k: int, n: int) -> str:
    low, high = wilson_by_quadratic(k, n)
    return f"{percent(max(0.0, low))} – {percent(min(1.0, high))}"


def test_estimates_page_shows_quartiles_chart_and_persistence(client: TestClient, page_app: PageApp) -> None:
    with page_app.app.state.sessionmaker() as session:
        shape_small_dictionary(session, page_app.built)
    html = client.get("/estimates").text
    assert f'<option value="{page_app.built.small_id}" selected>relu_n16_l10.1 (13 labelled)</option>' in html
    block = breakdown_of(html)
    assert f'data-dictionary="{page_app.built.small_id}"' in block
    densities = ["0.001 – 0.002", "0.005 – 0.03", "0.04 – 0.06", "0.07 – 0.3"]
    for quartile, ((labelled, mono), density) in enumerate(zip(QUARTILE_COUNTS, densities, strict=True), start=1):
        row = cells(block, "data-quartile", str(quartile))
        assert row["density"] == density
        assert (row["labelled"], row["monosemantic"]) == (str(labelled), str(mono))
        assert row["fraction"] == percent(mono / labelled)
        assert row["interval"] == interval_text(mono, labelled)
    assert [cells(block, "data-quartile", str(q))["alive"] for q in range(1, 5)] == ["3", "4", "3", "4"]

    # One point and one interval bar per labelled quartile, Q1 at 1 of 3 lowest on the plot.
    svg = re.search(r'<svg class="chart".*?</svg>', block, re.S).group(0)
    circles = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg)]
    assert len(circles) == 4 and len(re.findall(r'class="whisker"', svg)) == 4
    assert circles[0] == max(circles) and circles[2] == min(circles)  # 1/3 lowest, 2/2 highest
    assert "Q3: 2 of 2 labelled monosemantic (100%, 95% interval 34% to 100%)" in svg

    persistent, others = cells(block, "data-group", "persistent"), cells(block, "data-group", "not_persistent")
    assert (persistent["alive"], persistent["labelled"], persistent["monosemantic"]) == ("8", "7", "6")
    assert persistent["interval"] == interval_text(6, 7)
    assert (others["labelled"], others["monosemantic"], others["fraction"]) == ("5", "1", "20.0%")
    reading = re.search(r'id="persistence-reading">([^<]*)<', block).group(1)
    assert reading.startswith("Persistent features may be labelled monosemantic more often, but not clearly:")
    assert "86% vs 20%" in reading
    assert "difference 66 points (95% CI 9 to 86; Fisher&#39;s exact p = 0.072)" in reading
    assert "1 alive feature (0 labelled) has no larger dictionary" in block
    assert not re.search(r"\sstyle\s*=|<style|<script(?![^>]*\bsrc=)", html)


def test_choosing_a_dictionary_swaps_only_the_breakdown(client: TestClient, page_app: PageApp) -> None:
    large = page_app.built.large_id
    with page_app.app.state.sessionmaker() as session:
        add_labels(session, page_app.built.large_hash, [(0, "ann", "monosemantic")])
    fragment = client.get("/estimates", params={"dictionary": large}, headers=HX).text.strip()
    assert fragment.startswith(f'<div id="breakdown" data-dictionary="{large}">')
    assert "<html" not in fragment and "<select" not in fragment and 'table class="estimates"' not in fragment
    assert "By feature density: topk_n32_k4" in fragment
    # Every alive feature of the builder's dictionaries sits at 0.9, so nothing is "other": no comparison yet.
    assert "Not enough labels to compare: 1 persistent and 0 other features are labelled" in fragment
    page = client.get("/estimates", params={"dictionary": large}).text
    assert f'<option value="{large}" selected>' in page and 'table class="estimates"' in page
    missing = client.get("/estimates", params={"dictionary": 999})
    assert missing.status_code == 404 and "There is no dictionary 999" in missing.text
    assert client.get("/estimates", params={"dictionary": "x"}).status_code == 422


def test_estimates_page_without_labels_says_so(client: TestClient, page_app: PageApp) -> None:
    block = breakdown_of(client.get("/estimates").text)
    assert f'data-dictionary="{page_app.built.small_id}"' in block  # no labels anywhere: the first dictionary
    assert "Nothing labelled yet." in block and "<svg" not in block


def persistence(high: tuple[int, int, int], low: tuple[int, int, int], no_larger: int = 0) -> PersistenceOut:
    """A PersistenceOut for (alive, labelled, monosemantic) of each group, with its comparison computed."""

    def group(alive: int, labelled: int, mono: int) -> GroupFraction:
        e = labellable_estimate(alive, labelled, mono)
        return GroupFraction(
            alive=alive,
            labelled=labelled,
            monosemantic=mono,
            fraction=e.fraction,
            fraction_low=e.fraction_low,
            fraction_high=e.fraction_high,
        )

    c = compare_proportions(high[2], high[1], low[2], low[1])
    return PersistenceOut(
        threshold=0.9,
        persistent=group(*high),
        not_persistent=group(*low),
        no_larger=no_larger,
        no_larger_labelled=0,
        difference=c.difference,
        difference_low=c.low,
        difference_high=c.high,
        p_value=c.p_value,
        interval_excludes_zero=c.interval_excludes_zero,
        significant=c.significant,
    )


@pytest.mark.parametrize(
    ("high", "low", "expected"),
    [
        ((50, 40, 30), (50, 40, 15), "Persistent features were labelled monosemantic more often: 75% vs 38%, "
         "difference 38 points (95% CI 16 to 55; Fisher's exact p = 0.0014)."),
        ((50, 40, 15), (50, 40, 30), "Persistent features were labelled monosemantic less often: 38% vs 75%, "
         "difference −38 points (95% CI −55 to −16; Fisher's exact p = 0.0014)."),
        ((10, 10, 5), (10, 10, 4), "No clear difference between persistent features and the rest: 50% vs 40%, "
         "difference 10 points (95% CI −29 to 45; Fisher's exact p = 1)."),
        ((9, 7, 6), (5, 5, 1), "Persistent features may be labelled monosemantic more often, but not clearly: "
         "86% vs 20%, difference 66 points (95% CI 9 to 86; Fisher's exact p = 0.072); Fisher's test is not "
         "below 0.05, so more labels are needed."),
        ((5, 3, 3), (5, 0, 0), "Not enough labels to compare: 3 persistent and 0 other features are labelled, "
         "and both groups need at least one."),
        ((0, 0, 0), (0, 0, 0), "No feature here has a larger dictionary in its sweep to persist into, so "
         "persistence cannot be compared: pick a smaller dictionary of the sweep."),
    ],
)  # fmt: skip
def test_persistence_reading(high: tuple[int, int, int], low: tuple[int, int, int], expected: str) -> None:
    assert persistence_reading(persistence(high, low)) == expected


def test_category_chart_spaces_categories_evenly_and_skips_empty_ones() -> None:
    points = [
        CategoryPoint("Q1", 0.5, 0.25, 0.75, "a"),
        CategoryPoint("Q2", None, 0.0, 1.0, "b"),
        CategoryPoint("Q3", 1.0, 0.5, 1.0, "c"),
        CategoryPoint("Q4", 0.0, 0.0, 0.5, "d"),
    ]
    chart = category_chart(points, "fraction", "quartile", width=416, height=200)
    step = (chart.right - chart.left) / 4
    assert [t.position for t in chart.x_ticks] == pytest.approx([chart.left + (i + 0.5) * step for i in range(4)])
    assert [t.label for t in chart.x_ticks] == ["Q1", "Q2", "Q3", "Q4"]
    drawn = chart.series[0].points
    assert [p.title for p in drawn] == ["a", "c", "d"]
    assert drawn[1].y == pytest.approx(chart.top) and drawn[2].y == pytest.approx(chart.bottom)
    assert drawn[0].y == pytest.approx((chart.top + chart.bottom) / 2)
    assert drawn[0].y_low > drawn[0].y > drawn[0].y_high
    assert chart.x_label == "quartile"
    assert category_chart([CategoryPoint("Q1", None, 0.0, 1.0, "")], "f", "q") is None


def test_toy_workdir_setting_moves_the_toy_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page_app: PageApp
) -> None:
    assert toy_workdir(Settings(workdir=tmp_path / "run")) == tmp_path / "run" / "toy"
    monkeypatch.setenv("MONOSEMANTIC_TOY_WORKDIR", str(tmp_path / "elsewhere"))
    assert toy_workdir(Settings(workdir=tmp_path / "run")) == tmp_path / "elsewhere"

    toy = tmp_path / "toy_run"
    (toy / "figures").mkdir(parents=True)
    (toy / "figures" / "mmcs_with_larger.png").write_bytes(b"\x89PNG\r\n\x1a\ntoy")
    page_app.app.state.settings = Settings(workdir=page_app.workdir, toy_workdir=toy)
    with TestClient(page_app.app) as client:
        overview = client.get("/").text
        assert 'src="/figures/toy/mmcs_with_larger.png"' in overview
        assert "monosemantic toy --dict-sizes" not in overview
        served = client.get("/figures/toy/mmcs_with_larger.png")
        assert served.status_code == 200 and served.content.endswith(b"toy")
    (page_app.workdir / "figures").mkdir(parents=True, exist_ok=True)
    (page_app.workdir / "figures" / "mmcs_with_larger.png").write_bytes(b"\x89PNG\r\n\x1a\nlm")
    page_app.app.state.settings = Settings(workdir=page_app.workdir, toy_workdir=tmp_path / "missing")
    with TestClient(page_app.app) as client:
        overview = client.get("/").text
        assert "/figures/toy/" not in overview
        assert 'src="/figures/mmcs_with_larger.png"' in overview
        assert f"monosemantic toy --dict-sizes 256,512,1024,2048 --l1 0.03 --out {page_app.workdir}/toy" in overview
        assert client.get("/figures/toy/mmcs_with_larger.png").status_code == 404


def test_docs_page_uses_vendored_swagger_ui_or_says_how_to_get_it(
    tmp_path: Path, client: TestClient, page_app: PageApp
) -> None:
    page_app.app.state.static_dir = tmp_path
    bare = client.get("/docs")
    assert bare.status_code == 200 and "python -m app.web.vendor" in bare.text and 'href="/openapi.json"' in bare.text
    assert "<script" not in bare.text
    for name in SWAGGER_FILES:
        (tmp_path / SWAGGER_DIR).mkdir(parents=True, exist_ok=True)
        (tmp_path / SWAGGER_DIR / name).write_text("/* vendored */")
    html = client.get("/docs").text
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js">',
        '<script src="/docs/init.js">',
    ]
    assert '<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">' in html
    assert "<noscript>" in html and 'href="/openapi.json"' in html
    init = client.get("/docs/init.js")
    assert init.headers["content-type"].startswith("text/javascript") and "validatorUrl: null" in init.text
