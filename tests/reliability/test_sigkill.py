"""A server killed by SIGKILL amid label writes leaves an intact database with every acknowledged label."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import httpx

from tests.reliability.conftest import ServedApp, build_app_database, start_server, stop_server

WRITERS = 8
ACKNOWLEDGED_BEFORE_KILL = 150


async def write_until_killed(server: ServedApp, dictionary_id: int, alive: list[int]) -> tuple[set[str], set[str]]:
    """Writers post labels until the server dies; it is killed once enough were acknowledged.

    Returns the descriptions of labels answered 201 and of every label sent (answered or not).
    """
    acknowledged: set[str] = set()
    sent: set[str] = set()
    killed = asyncio.Event()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:

        async def writer(n: int) -> None:
            i = 0
            while True:
                description = f"write {n}-{i}"
                body = {"labeller": f"writer-{n}", "verdict": "monosemantic", "description": description}
                url = f"/api/dictionaries/{dictionary_id}/features/{alive[i % len(alive)]}/labels"
                sent.add(description)
                try:
                    response = await client.post(url, json=body)
                except httpx.HTTPError:
                    if killed.is_set():
                        return
                    raise
                assert response.status_code == 201, response.text
                acknowledged.add(description)
                if len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL and not killed.is_set():
                    # Others' requests are in flight right now: the kill lands mid-write.
                    server.process.send_signal(signal.SIGKILL)
                    killed.set()
                i += 1

        await asyncio.wait_for(asyncio.gather(*(writer(n) for n in range(WRITERS))), timeout=60)
    return acknowledged, sent


def test_sigkill_mid_writes_keeps_the_database_intact_and_every_acknowledged_label(tmp_path: Path) -> None:
    path = tmp_path / "monosemantic.db"
    url = f"sqlite:///{path}"
    built = build_app_database(url)
    server = start_server(url, tmp_path / "work")
    try:
        acknowledged, sent = asyncio.run(write_until_killed(server, built.small_id, built.small_alive))
        assert server.process.wait(timeout=10) == -signal.SIGKILL
    finally:
        stop_server(server)

    # The WAL of the killed server is still beside the database: opening it recovers the committed writes.
    assert Path(f"{path}-wal").exists()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = connection.execute("SELECT description, feature_index FROM labels").fetchall()
    finally:
        connection.close()
    stored = [description for description, _ in rows]
    assert len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL
    assert acknowledged <= set(stored)
    assert set(stored) <= sent  # nothing invented
    assert len(stored) == len(set(stored))  # nothing stored twice

    # A new server over the same file serves them.
    index = built.small_alive[0]
    restarted = start_server(url, tmp_path / "work")
    try:
        feature = httpx.get(f"{restarted.base_url}/api/dictionaries/{built.small_id}/features/{index}")
        assert feature.status_code == 200
        shown = [label["description"] for label in feature.json()["labels"]]
        assert sorted(shown) == sorted(description for description, i in rows if i == index)
        assert {d for d in acknowledged if d.endswith("-0")} <= set(shown)  # every writer's first label is on it
    finally:
        stop_server(restarted)
