"""Details of the feature page and the browser a labeller ran into: tag names and their meanings, the
histogram's count axis, document boundaries, the filtered count, and the inspector opening on your dictionary."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db.models import Feature
from app.services.schemas import Context
from app.web.token_display import context_strip_html
from tests.browser.conftest import PageApp


def test_part_of_speech_chips_name_their_tag_and_say_what_it_means(client: TestClient, page_app: PageApp) -> None:
    index = page_app.built.small_alive[1]
    with page_app.app.state.sessionmaker() as session:
        feature = session.scalars(
            select(Feature).where(Feature.dictionary_id == page_app.built.small_id, Feature.index == index)
        ).one()
        feature.pos_tags = [{"tag": "NN", "count": 4}, {"tag": 0, "count": 2}]  # tag 0 of the vocabulary is ""
        session.commit()
    html = client.get(f"/dictionaries/{page_app.built.small_id}/features/{index}").text
    chips = dict(re.findall(r'<span class="chip" title="([^"]*)" data-tag="[^"]*">([^<]+)<span class="n">', html))
    assert chips["no tag recorded"] == "no tag"  # the empty tag has a name
    assert chips["singular noun"] == "NN"
    assert "Brown corpus tags" in html and "in a headline" in html


def test_the_histogram_has_a_count_axis(client: TestClient, page_app: PageApp) -> None:
    html = client.get(f"/dictionaries/{page_app.built.small_id}/features/{page_app.built.small_alive[1]}").text
    assert re.search(r'<text class="y-tick"[^>]*>1</text>', html)
    assert "firings per bin (y) on a log scale" in html


def test_a_document_boundary_does_not_run_into_the_next_word() -> None:
    strip = context_strip_html(
        Context(tokens=["<|endoftext|>", "To"], activations=[0.0, 1.0], center=1, position=5), 1.0, show_value=False
    )
    assert "⟂ end of text ⟂ </span></span><span" in str(strip)


def test_a_filtered_browser_counts_what_it_shows(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    alive = len(page_app.built.small_alive)
    html = client.get(f"/dictionaries/{small}", params={"q": "cat"}).text
    assert f"Showing the 4 of {alive} alive features that match “cat”" in html
    assert f"Showing the {alive} alive features" in client.get(f"/dictionaries/{small}").text


def test_the_inspector_opens_on_the_dictionary_you_came_from(client: TestClient, page_app: PageApp) -> None:
    large = page_app.built.large_id
    for url in (f"/dictionaries/{large}", f"/dictionaries/{large}/features/0"):
        assert f'href="/inspect?dictionary={large}"' in client.get(url).text, url
    assert 'href="/inspect"' in client.get("/").text
