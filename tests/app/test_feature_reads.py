"""The per-view reads of a feature: its dictionary and labels in one statement, neighbours' ids by hash."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from fastapi import FastAPI

from app.db.models import Dictionary
from app.services import feature_reads, queries
from app.services.schemas import Neighbour
from app.web.deps import short_read
from tests.app.builders import BuiltDatabase, add_labels


def test_head_and_labels_give_the_dictionary_and_this_features_labels_newest_first(
    app: FastAPI, built: BuiltDatabase
) -> None:
    with app.state.sessionmaker() as session:
        rows = [(4, "ann", "monosemantic"), (5, "bob", "uninterpretable"), (4, "cid", "polysemantic")]
        add_labels(session, built.large_hash, rows)
        dictionary = session.get(Dictionary, built.large_id)
        through_orm = queries.feature_labels(session, dictionary, 4)
    with app.state.engine.connect() as connection:
        head, labels = feature_reads.head_and_labels(connection, built.large_id, 4)
        assert (head.id, head.content_hash, head.dict_size) == (built.large_id, built.large_hash, dictionary.dict_size)
        assert head.indexed_at == dictionary.indexed_at  # the cache key matches the ORM's
        assert [label.labeller for label in labels] == ["cid", "ann"] and labels == through_orm
        assert labels[0].created_at.tzinfo is not None
        unlabelled_head, none = feature_reads.head_and_labels(connection, built.large_id, 6)
        assert unlabelled_head == head and none == []
        assert feature_reads.head_and_labels(connection, 10_000, 4) == (None, [])


def test_neighbours_get_the_ids_their_dictionaries_have_now(app: FastAPI, built: BuiltDatabase) -> None:
    def neighbour(dictionary_hash: str) -> Neighbour:
        fields = {"dictionary_size": 8, "direction": "smaller", "index": 1, "cosine": 0.9}
        return Neighbour(dictionary_hash=dictionary_hash, dictionary_id=None, **fields)

    hashes = [built.large_hash, built.small_hash, "f" * 64]
    expected = [built.large_id, built.small_id, None]
    with app.state.engine.connect() as connection:
        for count in (1, 2, 3):  # one and two hashes take the fixed statement, more the expanding one
            resolved = feature_reads.resolve_neighbours(connection, [neighbour(h) for h in hashes[:count]])
            assert [n.dictionary_id for n in resolved] == expected[:count]
        assert feature_reads.resolve_neighbours(connection, []) == []


def test_short_reads_run_inline_on_sqlite_and_in_the_thread_pool_on_a_server(app: FastAPI) -> None:
    assert app.state.inline_reads  # the tests' app is on SQLite

    def reading_thread(inline: bool) -> threading.Thread:
        request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(inline_reads=inline)))
        return asyncio.run(short_read(request, threading.current_thread))

    assert reading_thread(True) is threading.current_thread()  # asyncio.run's loop runs in this thread
    assert reading_thread(False) is not threading.current_thread()
