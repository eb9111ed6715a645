"""Distinct features in labelling: the queue draws groups of near-duplicates, a group's verdict counts once,
and /estimate reports per latent and per distinct feature, per labeller and pooled by its stated rule."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db.models import Feature
from app.services.estimates import majority_monosemantic
from tests.app.builders import BuiltDatabase, add_labels
from tests.app.test_estimates import wilson_by_quadratic

M, P, U = "monosemantic", "polysemantic", "uninterpretable"
# Alive latents of the small dictionary: 0-2, 4-6, 8-15 (14). Groups {0, 1, 2} and {4, 5, 6} lead by 0 and 4.
GROUPS = {0: 0, 1: 0, 2: 0, 4: 4, 5: 4, 6: 4}


@pytest.fixture
def grouped(built: BuiltDatabase, session: Session) -> BuiltDatabase:
    for index in built.small_alive:
        session.execute(
            update(Feature)
            .where(Feature.dictionary_id == built.small_id, Feature.index == index)
            .values(group_index=GROUPS.get(index, index))
        )
    session.commit()
    return built


def distinct_count(built: BuiltDatabase) -> int:
    return len({GROUPS.get(i, i) for i in built.small_alive})


def test_queue_draws_groups_uniformly_and_a_member_label_takes_its_group_out(
    client: TestClient, grouped: BuiltDatabase, session: Session
) -> None:
    add_labels(session, grouped.small_hash, [(5, "ann", P)])  # a member, not the representative
    url = f"/api/dictionaries/{grouped.small_id}/next-feature"
    draws = Counter(client.get(url, params={"labeller": "ann"}).json()["index"] for _ in range(200))
    groups = {GROUPS.get(i, i) for i in grouped.small_alive}
    assert set(draws) == groups - {4}  # only representatives; group 4 was labelled through its member 5
    # Uniform over 10 groups: expected 20 draws each; a latent-uniform queue would give group 0 three times as many.
    assert min(draws.values()) >= 5 and max(draws.values()) <= 40
    bob = {client.get(url, params={"labeller": "bob"}).json()["index"] for _ in range(60)}
    assert 4 in bob  # another labeller still gets it


def test_a_groups_verdict_counts_once_and_its_latest_member_label_is_the_verdict(
    client: TestClient, grouped: BuiltDatabase, session: Session
) -> None:
    add_labels(
        session,
        grouped.small_hash,
        [
            (0, "ann", M),
            (1, "ann", P),  # ann's latest on group 0 is polysemantic
            (2, "ann", M),
            (2, "ann", M),
            (4, "ann", M),
            (6, "ann", M),  # group 4: two labels, one verdict
            (8, "ann", P),
        ],
    )
    body = client.get(f"/api/dictionaries/{grouped.small_id}/estimate").json()
    distinct = body["distinct"]
    groups = distinct_count(grouped)
    assert (distinct["groups"], distinct["size"], distinct["largest_group"]) == (groups, groups, 3)
    assert distinct["duplicated_latents"] == 6
    # Group 0: ann's latest (the second label on 2) is monosemantic; group 4 monosemantic; 8 polysemantic.
    assert (distinct["labelled"], distinct["monosemantic"]) == (3, 2)
    low, high = wilson_by_quadratic(2, 3)
    assert (distinct["fraction_low"], distinct["fraction_high"]) == pytest.approx((low, high))
    assert distinct["estimate"] == pytest.approx(groups * 2 / 3)
    assert "cosine >= 0.9" in distinct["population"] and "counts once" in distinct["population"]
    # Per alive latent each latent takes its group's verdict: 3 + 3 + 1 labelled, 6 monosemantic.
    alive = len(grouped.small_alive)
    assert (body["alive"], body["labelled"], body["monosemantic"]) == (alive, 7, 6)
    assert body["estimate"] == pytest.approx(alive * 6 / 7)
    assert "near-duplicates" in body["per_latent_population"]


def test_pooling_rule_per_labeller_and_pairwise_agreement_on_fixed_labels(
    client: TestClient, grouped: BuiltDatabase, session: Session
) -> None:
    add_labels(
        session,
        grouped.small_hash,
        [
            (0, "ann", M),
            (1, "bob", M),  # group 0: both say monosemantic -> counts
            (4, "ann", M),
            (5, "bob", P),  # group 4: a tie -> not monosemantic
            (8, "ann", M),
            (8, "bob", M),
            (8, "cy", P),  # majority -> monosemantic
            (9, "ann", P),
            (9, "bob", U),
            (10, "bob", M),
        ],
    )
    body = client.get(f"/api/dictionaries/{grouped.small_id}/estimate").json()
    assert "more than half" in body["rule"] and "tie counts as not monosemantic" in body["rule"]
    assert (body["distinct"]["labelled"], body["distinct"]["monosemantic"]) == (5, 3)  # groups 0, 8, 10
    per = {row["labeller"]: row for row in body["per_labeller"]}
    assert set(per) == {"ann", "bob", "cy"}
    assert (per["ann"]["distinct"]["labelled"], per["ann"]["distinct"]["monosemantic"]) == (4, 3)
    assert (per["bob"]["distinct"]["labelled"], per["bob"]["distinct"]["monosemantic"]) == (5, 3)
    assert per["bob"]["distinct"]["fraction"] == pytest.approx(3 / 5)
    assert per["bob"]["distinct"]["estimate"] == pytest.approx(distinct_count(grouped) * 3 / 5)
    # Per latent, bob's monosemantic groups 0 (3 latents), 8 and 10 of 3 + 3 + 1 + 1 + 1 labelled latents.
    assert (per["bob"]["per_latent"]["labelled"], per["bob"]["per_latent"]["monosemantic"]) == (9, 5)
    pairs = {tuple(p["labellers"]): p for p in body["pairwise_agreement"]}
    assert set(pairs) == {("ann", "bob"), ("ann", "cy"), ("bob", "cy")}
    # ann and bob both judged groups 0, 4, 8 and 9 and agree on 0 and 8.
    assert (pairs[("ann", "bob")]["features"], pairs[("ann", "bob")]["observed"]) == (4, pytest.approx(0.5))
    assert pairs[("ann", "cy")]["features"] == 1


def test_the_feature_and_its_card_show_the_group_and_progress_counts_groups(
    client: TestClient, grouped: BuiltDatabase, session: Session
) -> None:
    detail = client.get(f"/api/dictionaries/{grouped.small_id}/features/5").json()
    assert detail["duplicate_group"] == {"representative": 4, "size": 3, "members": [4, 5, 6], "threshold": 0.9}
    assert client.get(f"/api/dictionaries/{grouped.small_id}/features/8").json()["duplicate_group"]["size"] == 1
    assert client.get(f"/api/dictionaries/{grouped.small_id}/features/3").json()["duplicate_group"] is None  # dead
    add_labels(session, grouped.small_hash, [(5, "ann", P), (6, "ann", M), (8, "ann", M)])
    client.cookies.set("monosemantic_labeller", "ann")
    card = client.get(f"/dictionaries/{grouped.small_id}/label", params={"feature": 0}).text
    assert 'id="duplicate-group" data-size="3"' in card
    assert all(f'data-member="{i}"' in card for i in (0, 1, 2))
    # Two groups labelled (4 through two members, and 8) of ten distinct features.
    assert '<strong data-count="labelled">2</strong>' in card and '<span data-count="alive">10</span>' in card


def test_the_export_carries_what_recomputes_the_distinct_estimate(
    client: TestClient, grouped: BuiltDatabase, session: Session
) -> None:
    add_labels(
        session,
        grouped.small_hash,
        [(1, "ann", M), (2, "bob", M), (5, "ann", P), (6, "ann", M), (8, "ann", M), (8, "bob", P), (3, "ann", M)],
    )
    rows = [json.loads(line) for line in client.get("/api/labels/export?format=jsonl").text.splitlines()]
    assert {(row["index"], row["evidence"], row["group"]) for row in rows} >= {(5, "alive", 4), (3, "dead", None)}
    # The pooled rule recomputed from the file alone: each labeller's latest verdict per group, then a majority.
    latest: dict[int, dict[str, str]] = {}
    for row in sorted(rows, key=lambda row: row["created_at"]):
        if row["evidence"] == "alive":
            latest.setdefault(row["group"], {})[row["labeller"]] = row["verdict"]
    monosemantic = sum(majority_monosemantic(list(by.values())) for by in latest.values())
    distinct = client.get(f"/api/dictionaries/{grouped.small_id}/estimate").json()["distinct"]
    assert (distinct["labelled"], distinct["monosemantic"]) == (len(latest), monosemantic) == (3, 2)
    assert {(row["alive"], row["distinct"]) for row in rows} == {(len(grouped.small_alive), distinct["groups"])}
    header = client.get("/api/labels/export?format=csv").text.splitlines()[0]
    assert header.endswith(",evidence,group,alive,distinct")


def test_estimates_page_puts_the_labellable_count_beside_the_feature_count_and_says_why_it_is_higher(
    app, client: TestClient, grouped: BuiltDatabase, session: Session
) -> None:
    workdir = app.state.settings.workdir
    estimate = {"value": 5, "low": 4, "high": 7, "method": "stable atoms: across sizes"}
    (workdir / "metrics.json").write_text(json.dumps({"mmcs_with_larger": [], "feature_count_estimate": estimate}))
    add_labels(session, grouped.small_hash, [(0, "ann", M), (4, "ann", M), (8, "ann", P)])
    page = client.get("/estimates").text
    assert "The run's feature-count estimate: <strong>5</strong>" in page
    assert "Pooled over labellers: a feature counts as monosemantic when more than half" in page
    row = re.search(rf'<tr data-dictionary="{grouped.small_id}">(.*?)</tr>', page, re.S).group(1)
    assert re.search(r'data-distinct="estimate"><strong>7</strong>', row)  # 10 groups x 2/3
    note = re.search(rf'<tr class="note" data-exceeds="{grouped.small_id}">(.*?)</tr>', page, re.S).group(1)
    assert "above the feature-count estimate 5" in note and "reappear" in note
    # The dictionary without labels is listed apart, collapsed, not as a row of dashes.
    assert re.search(rf'<details class="unlabelled">.*data-dictionary="{grouped.large_id}"', page, re.S)
    assert f'data-exceeds="{grouped.large_id}"' not in page
