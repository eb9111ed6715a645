"""The feature JSON detail's cache: the label-independent part is serialized once per ``indexed_at``, labels
and neighbour ids are read per request, and the body stays byte for byte what FastAPI made of the model."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db.models import Dictionary, Vocabulary
from app.services import queries
from app.services.schemas import FeatureDetail
from app.web.api import DictionaryDep
from app.web.deps import FeatureIndexParam, SessionDep
from app.web.evidence_cache import EvidenceCache
from tests.app.builders import BuiltDatabase, add_dictionary, add_labels

REFERENCE = "/reference/dictionaries/{}/features/{}"


@pytest.fixture
def reference(app: FastAPI) -> FastAPI:
    """The app with the uncached route as it was before the cache: the model returned through response_model."""

    def uncached(dictionary: DictionaryDep, index: FeatureIndexParam, session: SessionDep) -> FeatureDetail:
        detail = queries.feature_detail(session, dictionary, index)
        assert detail is not None
        return detail

    app.add_api_route(
        "/reference/dictionaries/{dictionary_id}/features/{index}", uncached, response_model=FeatureDetail
    )
    return app


def detail(client: TestClient, dictionary_id: int, index: int) -> bytes:
    response = client.get(f"/api/dictionaries/{dictionary_id}/features/{index}")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.content


def uncached(client: TestClient, dictionary_id: int, index: int) -> bytes:
    response = client.get(REFERENCE.format(dictionary_id, index))
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.content


def set_token(app: FastAPI, position: int, text: str) -> None:
    with app.state.sessionmaker() as session:
        vocabulary = session.scalars(select(Vocabulary)).one()
        tokens = list(vocabulary.tokens)
        tokens[position] = text
        vocabulary.tokens = tokens
        session.commit()


def reindex(app: FastAPI, dictionary_id: int) -> None:
    """What a re-index does to the key: a new ``indexed_at``."""
    with app.state.sessionmaker() as session:
        session.get(Dictionary, dictionary_id).indexed_at += timedelta(seconds=1)
        session.commit()


def test_cached_and_uncached_bodies_are_identical_byte_for_byte(
    reference: FastAPI, client: TestClient, built: BuiltDatabase
) -> None:
    set_token(reference, 2, ' "naïve"\tcat ✓')  # escapes and non-ASCII text go through both serializers alike
    with reference.state.sessionmaker() as session:
        add_labels(session, built.small_hash, [(1, "ann", "monosemantic"), (1, "bob", "polysemantic")])
    cases = [(built.small_id, i) for i in (0, 1, 3, 15)] + [(built.large_id, i) for i in (0, 31)]  # 3 is dead
    misses = {case: detail(client, *case) for case in cases}
    assert len(reference.state.detail_json_cache) == len(cases)
    for case in cases:
        hit = detail(client, *case)
        assert hit == misses[case] == uncached(client, *case)
    small_1 = FeatureDetail.model_validate_json(misses[(built.small_id, 1)])
    assert [label.labeller for label in small_1.labels] == ["bob", "ann"]  # newest first
    assert small_1.neighbours[0].dictionary_id == built.large_id
    assert any(' "naïve"\tcat ✓' in context.tokens for context in small_1.top_contexts)
    assert FeatureDetail.model_validate_json(misses[(built.large_id, 0)]).neighbours[0].dictionary_id is None


def test_a_new_label_and_a_newly_indexed_neighbour_show_up_on_a_cached_detail(
    reference: FastAPI, client: TestClient, built: BuiltDatabase
) -> None:
    assert detail(client, built.large_id, 4) == uncached(client, built.large_id, 4)
    posted = client.post(
        f"/api/dictionaries/{built.large_id}/features/4/labels",
        json={"labeller": "ann", "verdict": "polysemantic", "description": "cats and mats", "confidence": 0.5},
    )
    assert posted.status_code == 201
    body = FeatureDetail.model_validate_json(detail(client, built.large_id, 4))
    assert [label.model_dump(mode="json") for label in body.labels] == [posted.json()]
    with reference.state.sessionmaker() as session:
        vocabulary = session.scalars(select(Vocabulary)).one()
        neighbour = add_dictionary(session, vocabulary, "relu_n64", "c" * 64, 64, frozenset())
        session.commit()
        neighbour_id = neighbour.id
    body = FeatureDetail.model_validate_json(detail(client, built.large_id, 4))
    assert body.neighbours[0].dictionary_id == neighbour_id and body.neighbours[0].index == 2
    assert len(reference.state.detail_json_cache) == 1  # all three requests used one serialization
    assert detail(client, built.large_id, 4) == uncached(client, built.large_id, 4)


def test_a_reindex_invalidates_the_cached_detail(app: FastAPI, client: TestClient, built: BuiltDatabase) -> None:
    first = detail(client, built.small_id, 1)
    assert b'" cat"' in first
    # The vocabulary changes only through a re-index, which moves indexed_at: until then the cached part stands.
    set_token(app, 2, " kitten")
    assert detail(client, built.small_id, 1) == first
    reindex(app, built.small_id)
    again = detail(client, built.small_id, 1)
    assert b'" kitten"' in again and b'" cat"' not in again
    assert len(app.state.detail_json_cache) == 2  # the old entry ages out of the LRU


def test_a_missing_feature_is_a_404_and_not_cached(app: FastAPI, client: TestClient, built: BuiltDatabase) -> None:
    response = client.get(f"/api/dictionaries/{built.small_id}/features/16")
    assert response.status_code == 404 and "indices run from 0 to 15" in response.json()["detail"]
    assert len(getattr(app.state, "detail_json_cache", [])) == 0


def test_the_detail_cache_stays_within_its_byte_budget(app: FastAPI, client: TestClient, built: BuiltDatabase) -> None:
    detail(client, built.small_id, 0)
    one = app.state.detail_json_cache.bytes
    assert one > 500  # the head holds contexts and samples, not just a few numbers
    app.state.detail_json_cache = EvidenceCache(max_bytes=2 * one + one // 2)
    for index in (0, 1, 2):  # alive features of equal shape: about equal sizes
        detail(client, built.small_id, index)
    cache = app.state.detail_json_cache
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes
    assert detail(client, built.small_id, 0) == detail(client, built.small_id, 0)  # evicted, served again
