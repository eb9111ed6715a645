"""32 labellers posting 50 labels each at once to a real server: every label is stored exactly once."""

from __future__ import annotations

import http.client
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select

from app.db.models import Label
from app.db.session import make_engine
from tests.app.builders import BuiltDatabase
from tests.reliability.conftest import build_app_database, start_server, stop_server

LABELLERS = 32
LABELS_EACH = 50
VERDICTS = ("monosemantic", "polysemantic", "uninterpretable")


def labeller_session(base_url: str, built: BuiltDatabase, n: int) -> list[tuple[int, str, str]]:
    """Labeller n posts its labels one after another on one keep-alive connection; (status, labeller, description).

    A plain ``http.client`` connection per thread: the server, not the client, should use the CPU.
    """
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    results = []
    try:
        for i in range(LABELS_EACH):
            name, description = f"labeller-{n}", f"label {n}-{i}"
            body = {"labeller": name, "verdict": VERDICTS[(n + i) % 3], "description": description}
            index = built.small_alive[(n * LABELS_EACH + i) % len(built.small_alive)]
            path = f"/api/dictionaries/{built.small_id}/features/{index}/labels"
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            results.append((response.status, name, description))
    finally:
        connection.close()
    return results


def test_concurrent_labellers_store_every_label_exactly_once(backend_url: str, tmp_path: Path) -> None:
    built = build_app_database(backend_url)
    server = start_server(backend_url, tmp_path / "work")
    try:
        with ThreadPoolExecutor(LABELLERS) as pool:
            per_labeller = list(pool.map(lambda n: labeller_session(server.base_url, built, n), range(LABELLERS)))
    finally:
        stop_server(server)

    results = [result for results in per_labeller for result in results]
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {201: LABELLERS * LABELS_EACH}, server.log()
    engine = make_engine(backend_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(Label.labeller, Label.description, Label.dictionary_hash)).all()
    finally:
        engine.dispose()
    assert len(stored) == LABELLERS * LABELS_EACH
    assert {(labeller, description) for labeller, description, _ in stored} == {
        (labeller, description) for _, labeller, description in results
    }
    assert {dictionary_hash for _, _, dictionary_hash in stored} == {built.small_hash}
