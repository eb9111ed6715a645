"""The doubling test's badges: the API and every page that shows a dictionary's numbers say whether they hold."""

from __future__ import annotations

from app.db.models import Dictionary


def test_the_api_and_pages_mark_what_holds_and_what_moved(client, session, built):
    moving = session.get(Dictionary, built.small_id)
    moving.holds = False
    moving.moved = [{"metric": "fvu", "half": 0.2, "end": 0.1, "change": 1.0, "tolerance": 0.03}]
    session.get(Dictionary, built.large_id).holds = True
    session.commit()
    by_id = {d["id"]: d for d in client.get("/api/dictionaries").json()}
    assert by_id[built.small_id]["holds"] is False and by_id[built.small_id]["moved"][0]["metric"] == "fvu"
    assert by_id[built.large_id]["holds"] is True and by_id[built.large_id]["moved"] == []
    for url in ("/", "/estimates", f"/dictionaries/{built.small_id}"):
        page = client.get(url).text
        assert "still moving: fvu" in page, url
    assert 'class="badge holds"' in client.get("/").text
