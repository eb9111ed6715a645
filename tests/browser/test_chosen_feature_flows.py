"""Labelling a chosen feature, sharing an inspector view, and the browser table's edge cases, as pages render them."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db.models import Feature
from tests.browser.conftest import PageApp
from tests.browser.test_pages_render import pick_name


def test_a_feature_page_links_to_labelling_it_and_to_the_inspector(client: TestClient, page_app: PageApp) -> None:
    small, alive = page_app.built.small_id, page_app.built.small_alive[0]
    html = client.get(f"/dictionaries/{small}/features/{alive}").text
    assert f'href="/dictionaries/{small}/label?feature={alive}"' in html
    inspect = re.search(r'href="(/inspect\?[^"]+)">Open in inspector', html).group(1)
    params = parse_qs(urlparse(inspect.replace("&amp;", "&")).query)
    assert params["dictionary"] == [str(small)] and params["feature"] == [str(alive)] and params["text"][0]


def test_labelling_a_chosen_feature_opens_its_card_then_the_queue(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    pick_name(client, small)
    card = client.get(f"/dictionaries/{small}/label", params={"feature": 5}).text
    assert re.search(r'name="feature_index" value="5"|data-feature="5"|Feature #5', card)
    missing = client.get(f"/dictionaries/{small}/label", params={"feature": 999})
    assert missing.status_code == 404 and "has no feature 999" in missing.text


def test_a_bad_sort_is_an_html_page_and_an_offset_past_the_end_says_so(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    bad = client.get(f"/dictionaries/{small}", params={"sort": "bogus"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    assert "cannot be sorted by sort=bogus" in bad.text
    assert client.get(f"/api/dictionaries/{small}/features", params={"sort": "bogus"}).status_code == 422
    past = client.get(f"/dictionaries/{small}", params={"offset": 5000}).text
    assert "starts past the last" in past and "5,001" not in past


def test_the_inspector_reads_its_state_from_the_url(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    page = client.get("/inspect", params={"dictionary": small, "text": "hello there", "feature": "2"})
    assert "hello there" in page.text and 'value="2"' in page.text
    assert page.status_code in (200, 409)  # 409 where the run behind the test database has no model to run


def test_sortable_headers_show_their_direction(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    html = client.get(f"/dictionaries/{small}", params={"sort": "density", "order": "desc"}).text
    assert re.search(r'class="sorted"[^>]*title="sort by density">Density <span class="sort-mark">↓</span>', html)
    assert re.search(r'title="sort by max act.">Max act. <span class="sort-mark">↕</span>', html)


def test_a_malformed_page_address_is_an_html_error_page_naming_the_field(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    for url, field in (
        (f"/dictionaries/{small}/label?feature=abc", "feature=abc"),
        (f"/dictionaries/{small}/label?feature=-1", "feature=-1"),
        (f"/dictionaries/{small}?offset=x", "offset=x"),
        (f"/dictionaries/{small}/features/abc", "index=abc"),
    ):
        response = client.get(url)
        assert response.status_code == 422 and response.headers["content-type"].startswith("text/html"), url
        assert "<title>Bad address" in response.text and field in response.text, url
    api = client.get(f"/api/dictionaries/{small}/features/abc")
    assert api.status_code == 422 and api.json()["detail"][0]["loc"] == ["path", "index"]


def test_similar_features_of_the_same_dictionary_are_listed_with_a_duplicate_mark(
    client: TestClient, page_app: PageApp
) -> None:
    built = page_app.built
    feature = built.small_alive[0]
    similar = [(9, 0.95), (4, 0.5)]
    with page_app.app.state.sessionmaker() as session:
        row = session.scalars(
            select(Feature).where(Feature.dictionary_id == built.small_id, Feature.index == feature)
        ).one()
        same = [
            {"dictionary_hash": built.small_hash, "dictionary_size": 16, "direction": "same", "index": i, "cosine": c}
            for i, c in similar
        ]
        row.neighbours = [*row.neighbours, *same]
        session.commit()
    detail = client.get(f"/api/dictionaries/{built.small_id}/features/{feature}").json()
    listed = [(n["index"], n["likely_duplicate"]) for n in detail["neighbours"] if n["direction"] == "same"]
    assert listed == [(9, True), (4, False)]
    assert all(n["likely_duplicate"] is False for n in detail["neighbours"] if n["direction"] != "same")
    html = client.get(f"/dictionaries/{built.small_id}/features/{feature}").text
    panel = html[html.index('id="similar-features"') : html.index("Neighbours in other sizes")]
    link = f'href="/dictionaries/{built.small_id}/features/'
    assert f'{link}9">#9</a> <span class="badge moving" data-field="likely-duplicate"' in panel
    assert f'{link}4">#4</a></td>' in panel
    assert "0.950" in panel and "0.500" in panel
