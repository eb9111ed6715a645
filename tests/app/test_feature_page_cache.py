"""The feature page's speed-ups: context strips drawn in Python (escaped), rendered evidence cached per feature
until its dictionary is indexed again (labels and neighbour links always fresh), and the health check's version."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from markupsafe import Markup
from sqlalchemy import select

from app.db.models import Dictionary, Vocabulary
from app.services.schemas import Context
from app.web import api
from app.web.evidence_cache import EvidenceCache, EvidenceKey, FeatureEvidence
from app.web.token_display import TOKEN_HTML_CACHE_MAX_CHARS, context_strip_html, token_html
from tests.app.builders import BuiltDatabase, add_dictionary, add_labels


def test_token_html_escapes_and_marks_whitespace() -> None:
    assert token_html('<b a="1">&') == "&lt;b a=&#34;1&#34;&gt;&amp;"
    assert token_html(" the") == " the"
    assert token_html(" the", True) == '<span class="ws">·</span>the'
    assert token_html("a\n\tb") == 'a<span class="ws">↵⇥</span>b'
    assert token_html("{{ 7*7 }}") == "{{ 7*7 }}"
    assert isinstance(token_html("x"), Markup)


def test_context_strip_html_shades_marks_the_centre_and_escapes() -> None:
    context = Context(tokens=["<i>", " cat", "  ", "x"], activations=[0.0, 2.0, 0.6, -0.0], center=1, position=7)
    assert context_strip_html(context, 2.0) == (
        '<div class="tokens context"><span class="value">2</span>'
        "<span>&lt;i&gt;</span>"
        '<span class="tok t10 center" title="2"> cat</span>'
        '<span class="tok t3" title="0.6"><span class="ws">··</span></span>'
        '<span class="tok t0" title="-0">x</span></div>'
    )
    # A centre outside the window shows the window's largest activation; show_value=False shows none.
    outside = Context(tokens=["a", "b"], activations=[0.25, 0.75], center=5, position=0)
    assert '<span class="value">0.75</span>' in context_strip_html(outside, 1.0)
    assert '<span class="value">' not in context_strip_html(outside, 1.0, show_value=False)
    assert 'class="tok t8"' in context_strip_html(outside, 1.0)  # 10 * 0.75 rounds to 8


def evidence(index: int, chars: int) -> FeatureEvidence:
    return FeatureEvidence(index=index, alive=True, main_html=Markup("m" * chars), side_html=Markup(""), neighbours=[])


def key(index: int) -> EvidenceKey:
    return EvidenceKey("a" * 64, datetime(2026, 1, 1), index, compact=False)


def test_evidence_cache_is_a_bounded_lru() -> None:
    one = evidence(0, 1000).size_bytes()
    cache = EvidenceCache(max_bytes=3 * one)
    for i in range(3):
        cache.put(key(i), evidence(i, 1000))
    assert len(cache) == 3 and cache.bytes == 3 * one
    assert cache.get(key(0)) is not None  # 0 is now the most recent: 1 goes first
    cache.put(key(3), evidence(3, 1000))
    assert cache.get(key(1)) is None and cache.get(key(0)) is not None and cache.get(key(3)) is not None
    assert cache.bytes <= cache.max_bytes and len(cache) == 3
    cache.put(key(9), evidence(9, 10_000))  # larger than the whole cache: never stored, nothing dropped
    assert cache.get(key(9)) is None and len(cache) == 3
    cache.put(key(3), evidence(3, 1000))  # storing a key again replaces it
    assert len(cache) == 3 and cache.bytes == 3 * one


def page(client: TestClient, dictionary_id: int, index: int) -> str:
    response = client.get(f"/dictionaries/{dictionary_id}/features/{index}")
    assert response.status_code == 200
    return response.text


def set_token(app: FastAPI, position: int, text: str) -> None:
    with app.state.sessionmaker() as session:
        vocabulary = session.scalars(select(Vocabulary)).one()
        tokens = list(vocabulary.tokens)
        tokens[position] = text
        vocabulary.tokens = tokens
        session.commit()


def test_evidence_is_cached_until_the_dictionary_is_indexed_again(
    app: FastAPI, client: TestClient, built: BuiltDatabase
) -> None:
    first = page(client, built.small_id, 1)
    assert first.count(" cat</span>") >= 5  # feature 1 fires on " cat": in every top context and sample
    assert page(client, built.small_id, 1) == first  # the same bytes, from the cache
    assert len(app.state.evidence_cache) == 1
    # The vocabulary changes only through a re-index, which moves indexed_at: until then the cached page stands.
    set_token(app, 2, " kitten")
    assert " kitten" not in page(client, built.small_id, 1)
    with app.state.sessionmaker() as session:
        dictionary = session.get(Dictionary, built.small_id)
        dictionary.indexed_at += timedelta(seconds=1)
        session.commit()
    again = page(client, built.small_id, 1)
    assert " kitten</span>" in again and " cat</span>" not in again
    assert len(app.state.evidence_cache) == 2


def test_labels_and_neighbour_links_are_fresh_on_a_cached_page(
    app: FastAPI, client: TestClient, built: BuiltDatabase
) -> None:
    assert "Not labelled yet." in page(client, built.large_id, 4)
    assert '#2 <span class="muted small">(not indexed)</span>' in page(client, built.large_id, 4)
    with app.state.sessionmaker() as session:
        add_labels(session, built.large_hash, [(4, "ann", "polysemantic")])
        vocabulary = session.scalars(select(Vocabulary)).one()
        neighbour = add_dictionary(session, vocabulary, "relu_n64", "c" * 64, 64, frozenset())
        session.commit()
        neighbour_id = neighbour.id
    html = page(client, built.large_id, 4)
    assert len(app.state.evidence_cache) == 1  # both views used one rendering
    assert "Not labelled yet." not in html and '<span class="badge polysemantic">polysemantic</span>' in html
    assert f'<a href="/dictionaries/{neighbour_id}/features/2">#2</a>' in html and "(not indexed)" not in html


def test_the_labelling_page_shows_the_same_evidence_as_the_feature_page(
    app: FastAPI, client: TestClient, built: BuiltDatabase
) -> None:
    client.cookies.set("monosemantic_labeller", "ann")
    html = client.get(f"/dictionaries/{built.small_id}/label", headers={"HX-Request": "true"}).text
    shown = int(re.search(r'data-feature="(\d+)"', html).group(1))
    full = page(client, built.small_id, shown)
    strips = re.findall(r'<div class="tokens context">.*?</div>', html)
    assert len(strips) == 5 and strips == re.findall(r'<div class="tokens context">.*?</div>', full)
    for text in ("Top activations", "Samples across the activation range", "Activation histogram", "Top tokens"):
        assert text in html and text in full
    assert "Neighbours in other sizes" not in html and "Neighbours in other sizes" in full
    keys = list(app.state.evidence_cache._entries)
    assert sorted(type(k).__name__ for k in keys) == ["EvidenceKey", "FeaturePageKey"]  # the page, the compact part
    assert all(k.compact for k in keys if isinstance(k, EvidenceKey))


def test_a_cached_page_carries_each_browsers_own_csrf_token(app: FastAPI, built: BuiltDatabase) -> None:
    tokens = []
    for _ in range(2):
        with TestClient(app) as browser:
            html = page(browser, built.small_id, 1)
            tokens.append(browser.cookies["monosemantic_csrf"])
            assert f'<meta name="csrf-token" content="{tokens[-1]}">' in html
    assert tokens[0] != tokens[1] and len(app.state.evidence_cache) == 1


def test_a_missing_feature_is_still_a_404_and_not_cached(
    app: FastAPI, client: TestClient, built: BuiltDatabase
) -> None:
    assert client.get(f"/dictionaries/{built.small_id}/features/16").status_code == 404
    assert len(getattr(app.state, "evidence_cache", [])) == 0


def test_health_reads_the_package_version_once(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(api, "version", lambda name: calls.append(name) or "9.9.9")
    api.package_version.cache_clear()
    try:
        for _ in range(3):
            response = client.get("/api/health")
            assert response.status_code == 200 and response.json()["version"] == "9.9.9"
        assert calls == ["monosemantic"]
    finally:
        api.package_version.cache_clear()


def test_token_html_caches_only_short_tokens() -> None:
    long_text = "<" * (TOKEN_HTML_CACHE_MAX_CHARS + 1)
    assert token_html(long_text) == "&lt;" * len(long_text)
    assert token_html(long_text) is not token_html(long_text)
    short = "<short>"
    assert token_html(short) is token_html(short)
