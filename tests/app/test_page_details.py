"""Small things a labeller ran into: special tokens, the way back from /docs, the health text, layer numbering."""

from __future__ import annotations

import re

from app.web.token_display import token_pieces


def test_small_page_details_a_labeller_ran_into(client):
    assert token_pieces("<|endoftext|>") == [(True, "⟂ end of text ⟂ ")]
    assert 'href="/"' in client.get("/docs").text or client.get("/docs").status_code == 503
    health = client.get("/openapi.json").json()["paths"]["/api/health"]["get"]["description"]
    assert "bench" not in health and "database" in health
    assert "layer 2 is the study's third layer" in client.get("/").text.replace("&#39;", "'")


def test_top_token_chips_show_firings_and_mean_and_say_how_they_are_ranked(client, built):
    page = client.get(f"/dictionaries/{built.small_id}/features/{built.small_alive[0]}").text
    assert "Ranked by activation mass" in page
    assert re.search(r'<span class="n">[\d,]+ · [\d.]+</span>', page)
