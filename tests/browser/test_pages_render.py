"""The HTML pages through TestClient: status codes, escaping, htmx fragments, CSRF, labelling and figures."""

from __future__ import annotations

import json
import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db.models import Dictionary, Label, Vocabulary
from app.services.inspector import InspectorUnavailable
from app.web.csrf import CSRF_COOKIE
from app.web.pages import LABELLER_COOKIE
from tests.app.builders import SMALL_DEAD, SMALL_SIZE, add_dictionary, add_labels
from tests.browser.conftest import PageApp

HX = {"HX-Request": "true"}
EVIL = "<script>alert(1)</script>"


def csrf_of(client: TestClient, url: str = "/") -> str:
    """Load a page so the browser gets its CSRF cookie; the token the page embeds."""
    html = client.get(url).text
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', html).group(1)
    assert client.cookies.get(CSRF_COOKIE) == token
    return token


def pick_name(client: TestClient, dictionary_id: int, name: str = "ann") -> str:
    token = csrf_of(client, f"/dictionaries/{dictionary_id}/label")
    response = client.post(
        f"/dictionaries/{dictionary_id}/label/labeller",
        data={"labeller": name, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    return token


def shown_feature(html: str) -> int:
    return int(re.search(r'id="labelling"[^>]*data-feature="(\d+)"', html).group(1))


def stored(page_app: PageApp) -> list[tuple[str, int, str, str, str]]:
    with page_app.app.state.sessionmaker() as session:
        rows = session.scalars(select(Label).order_by(Label.id)).all()
        return [(r.dictionary_hash, r.feature_index, r.labeller, r.verdict, r.description) for r in rows]


def test_every_page_renders(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    pages = {
        "/": "relu_n16_l10.1",
        f"/dictionaries/{small}": "#15",
        f"/dictionaries/{small}/features/9": "Feature #9",
        f"/dictionaries/{small}/label": "Who is labelling?",
        "/estimates": "How many features are labellable?",
        "/inspect": "Live inspector",
    }
    for url, text in pages.items():
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.headers["content-type"].startswith("text/html")
        assert text in response.text, url
        assert "default-src 'self'" in response.headers["content-security-policy"]


def test_missing_dictionary_and_feature_are_html_404s(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    for url in ("/dictionaries/999", f"/dictionaries/{small}/features/{SMALL_SIZE}", "/dictionaries/999/label"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.headers["content-type"].startswith("text/html")
    assert f"indices run from 0 to {SMALL_SIZE - 1}" in client.get(f"/dictionaries/{small}/features/99").text


def test_pages_carry_no_inline_script_style_or_handlers(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    add_labels_via_db(page_app, [(1, "ann", "monosemantic")])
    for url in ("/", f"/dictionaries/{small}", f"/dictionaries/{small}/features/1", "/estimates", "/inspect"):
        html = client.get(url).text
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], url
        assert not re.search(r"\sstyle\s*=", html), url
        assert not re.search(r"\son[a-z]+\s*=", html), url
        assert "<style" not in html, url


def add_labels_via_db(page_app: PageApp, rows: list[tuple[int, str, str]], dictionary_hash: str | None = None) -> None:
    with page_app.app.state.sessionmaker() as session:
        add_labels(session, dictionary_hash or page_app.built.small_hash, rows)


def test_untrusted_text_is_escaped(client: TestClient, page_app: PageApp) -> None:
    with page_app.app.state.sessionmaker() as session:
        vocabulary = session.scalars(select(Vocabulary)).one()
        tokens = list(vocabulary.tokens)
        tokens[2] = EVIL  # " cat": a top token of feature 1 and in every context window
        vocabulary.tokens = tokens
        session.add(
            Label(
                dictionary_hash=page_app.built.small_hash,
                feature_index=1,
                labeller=EVIL,
                verdict="polysemantic",
                description=f"fires on {EVIL}",
            )
        )
        session.commit()
    small = page_app.built.small_id
    for url in (f"/dictionaries/{small}/features/1", f"/dictionaries/{small}", "/estimates"):
        html = client.get(url).text
        assert EVIL not in html, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, url
    feature_html = client.get(f"/dictionaries/{small}/features/1").text
    assert "fires on &lt;script&gt;" in feature_html


def test_browser_fragment_is_only_the_table(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    fragment = client.get(f"/dictionaries/{small}", params={"q": "cat", "sort": "density"}, headers=HX)
    assert fragment.status_code == 200
    body = fragment.text.strip()
    assert body.startswith('<div id="feature-table">') and "<html" not in body and "<nav" not in body
    # Features 1 and 9 fire most on " cat"; 0 and 8 have it second. Density sort is descending by default.
    assert re.findall(r"features/(\d+)\">#", body) == ["9", "8", "1", "0"]
    assert fragment.headers["HX-Push-Url"] == f"/dictionaries/{small}?sort=density&q=cat"
    assert fragment.headers["Vary"] == "HX-Request"
    restore = client.get(f"/dictionaries/{small}", headers={**HX, "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text


def test_browser_pages_through_features(client: TestClient, page_app: PageApp) -> None:
    large = page_app.built.large_id
    with page_app.app.state.sessionmaker() as session:
        vocabulary = session.scalars(select(Vocabulary)).one()
        big = add_dictionary(session, vocabulary, "relu_n120", "d" * 64, 120, frozenset())
        session.commit()
        big_id = big.id
    first = client.get(f"/dictionaries/{big_id}", headers=HX).text
    assert "1–50 of 120" in first and f"/dictionaries/{big_id}?offset=50" in first and "Previous" not in first
    last = client.get(f"/dictionaries/{big_id}", params={"offset": 100}, headers=HX).text
    assert "101–120 of 120" in last and "Next" not in last
    assert re.findall(r"features/(\d+)\">#", last)[:2] == ["100", "101"]
    assert client.get(f"/dictionaries/{large}", params={"sort": "bogus"}).status_code == 422


def test_label_page_fragment_and_name_choice(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    token = csrf_of(client, f"/dictionaries/{small}/label")
    bad = client.post(f"/dictionaries/{small}/label/labeller", data={"labeller": "   ", "csrf_token": token})
    assert bad.status_code == 422 and "1 to 64 printable characters" in bad.text
    pick_name(client, small, "Ann Lee")
    assert client.cookies.get(LABELLER_COOKIE) == "Ann%20Lee"
    fragment = client.get(f"/dictionaries/{small}/label", headers=HX).text.strip()
    assert fragment.startswith('<div id="labelling"') and "<html" not in fragment
    assert "labelling as <strong>Ann Lee</strong>" in fragment
    assert shown_feature(fragment) in page_app.built.small_alive
    assert (
        f'<strong data-count="labelled">0</strong> of <span data-count="alive">{SMALL_SIZE - len(SMALL_DEAD)}'
        in fragment
    )
    change = client.get(f"/dictionaries/{small}/label", params={"change": 1}).text
    assert "Who is labelling?" in change and 'value="Ann Lee"' in change


def test_label_posts_need_the_csrf_token(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    token = pick_name(client, small)
    url = f"/dictionaries/{small}/label"
    form = {"feature_index": "1", "verdict": "monosemantic"}
    assert client.post(url, data=form, headers=HX).status_code == 403
    assert client.post(url, data={**form, "csrf_token": "x" * 43}, headers=HX).status_code == 403
    assert client.post(f"{url}/undo", data={}, headers=HX).status_code == 403
    assert client.post("/inspect", data={"dictionary_id": str(small), "text": "a"}).status_code == 403
    stranger = TestClient(page_app.app)  # a cross-site form: the browser sends no matching cookie
    stranger.cookies.set(LABELLER_COOKIE, "ann")
    assert stranger.post(url, data={**form, "csrf_token": token}).status_code == 403
    assert stored(page_app) == []
    ok = client.post(url, data=form, headers={**HX, "X-CSRF-Token": token})
    assert ok.status_code == 200
    assert stored(page_app) == [(page_app.built.small_hash, 1, "ann", "monosemantic", "")]


def undo_fields(html: str) -> dict[str, str]:
    """The action a card's Undo button names, as its form sends it."""
    kind = re.search(r'name="undo_kind" value="(\w+)"', html)
    target = re.search(r'name="undo_target" value="(\d+)"', html)
    return {"undo_kind": kind.group(1), "undo_target": target.group(1)} if kind and target else {}


def test_labelling_stores_counts_and_undoes(client: TestClient, page_app: PageApp) -> None:
    small, small_hash = page_app.built.small_id, page_app.built.small_hash
    token = pick_name(client, small)
    url = f"/dictionaries/{small}/label"
    headers = {**HX, "X-CSRF-Token": token}
    shown = shown_feature(client.get(url, headers=HX).text)
    after_first = client.post(url, data={"feature_index": str(shown), "verdict": "monosemantic"}, headers=headers).text
    assert f"Saved feature #{shown} as monosemantic." in after_first
    assert '<strong data-count="labelled">1</strong>' in after_first
    second = shown_feature(after_first)
    assert second != shown
    after_second = client.post(
        url, data={"feature_index": str(second), "verdict": "polysemantic", "description": "  cats  "}, headers=headers
    ).text
    assert '<strong data-count="labelled">2</strong>' in after_second
    assert stored(page_app) == [
        (small_hash, shown, "ann", "monosemantic", ""),
        (small_hash, second, "ann", "polysemantic", "cats"),
    ]
    # Undo names the label the card just saved and deletes exactly that one, giving its description back.
    named = undo_fields(after_second)
    assert f"Undo label of #{second}" in after_second
    undone = client.post(f"{url}/undo", data=named, headers=headers).text
    assert f"Undid your label of feature #{second} (polysemantic)." in undone
    assert shown_feature(undone) == second and '<strong data-count="labelled">1</strong>' in undone
    assert ">cats</textarea>" in undone
    assert stored(page_app) == [(small_hash, shown, "ann", "monosemantic", "")]
    again = client.post(f"{url}/undo", data=named, headers=headers).text
    assert "Nothing undone: that label is no longer stored" in again
    nothing = client.post(f"{url}/undo", data={}, headers=headers).text
    assert "Nothing to undo in this tab." in nothing
    assert stored(page_app) == [(small_hash, shown, "ann", "monosemantic", "")]
    # Without htmx the same posts redirect back to the page (a plain form still works).
    plain = client.post(
        url, data={"feature_index": "2", "verdict": "uninterpretable", "csrf_token": token}, follow_redirects=False
    )
    assert plain.status_code == 303 and plain.headers["location"] == url


def test_bad_label_posts_name_the_field(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    url = f"/dictionaries/{small}/label"
    token = csrf_of(client, url)
    headers = {**HX, "X-CSRF-Token": token}
    no_name = client.post(url, data={"feature_index": "1", "verdict": "monosemantic"}, headers=headers)
    assert no_name.status_code == 400 and "labeller" in no_name.json()["detail"]
    pick_name(client, small)
    cases = [
        ({"feature_index": "1", "verdict": "great"}, 422, "verdict"),
        ({"feature_index": "one", "verdict": "monosemantic"}, 422, "feature_index"),
        ({"feature_index": str(SMALL_SIZE), "verdict": "monosemantic"}, 404, "feature_index"),
        ({"feature_index": "1", "verdict": "monosemantic", "description": "x" * 2001}, 422, "description"),
    ]
    for form, status, field in cases:
        response = client.post(url, data=form, headers=headers)
        assert response.status_code == status, form
        assert response.json()["detail"].startswith(field), form
    assert stored(page_app) == []


def test_a_verdict_measured_before_the_card_was_ready_is_refused_and_one_after_is_stored(
    client: TestClient, page_app: PageApp
) -> None:
    small = page_app.built.small_id
    token = pick_name(client, small)
    url = f"/dictionaries/{small}/label"
    headers = {**HX, "X-CSRF-Token": token}
    form = {"feature_index": "2", "verdict": "monosemantic"}
    early = client.post(url, data={**form, "seconds_on_screen": "0.08"}, headers=headers)
    assert early.status_code == 409 and "less than the 0.25 s" in early.json()["detail"] and stored(page_app) == []
    assert client.post(url, data={**form, "seconds_on_screen": "-1"}, headers=headers).status_code == 422
    assert client.post(url, data={**form, "seconds_on_screen": "3.25"}, headers=headers).status_code == 200
    with page_app.app.state.sessionmaker() as session:
        assert session.scalars(select(Label.seconds_on_screen)).all() == [3.25]


def test_estimates_show_the_labelled_numbers(client: TestClient, page_app: PageApp) -> None:
    add_labels_via_db(
        page_app,
        [
            (1, "ann", "monosemantic"),
            (2, "ann", "polysemantic"),
            (4, "ann", "monosemantic"),
            (1, "bob", "monosemantic"),
        ],
    )
    html = client.get("/estimates").text
    row = re.search(rf"<tr data-dictionary=\"{page_app.built.small_id}\">(.*?)</tr>", html, re.S).group(1)
    cells = dict(re.findall(r'data-field="(\w+)">([^<]*)<', row))
    assert cells.pop("population").startswith("of 14 features that fired")
    assert cells == {"labelled": "3", "monosemantic": "2", "fraction": "66.7%", "estimate": "9"}
    assert "<circle" in html  # the plot across sizes has a point
    assert re.search(r"<td>ann</td><td class=\"num\">3</td><td class=\"num\">2</td><td class=\"num\">1</td>", html)
    assert "Cohen’s kappa" in html


def test_figures_are_served_only_from_the_figures_folder(client: TestClient, page_app: PageApp) -> None:
    figures = page_app.workdir / "figures"
    figures.mkdir()
    (figures / "mmcs_with_larger.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (page_app.workdir / "secret.png").write_bytes(b"secret")
    (figures / "link.png").symlink_to(page_app.workdir / "secret.png")
    response = client.get("/figures/mmcs_with_larger.png")
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
    assert 'src="/figures/mmcs_with_larger.png"' in client.get("/").text
    for name in ("..%2Fsecret.png", "link.png", "%2E%2E%2Fsecret.png", "missing.png", "metrics.json", ".hidden.png"):
        assert client.get(f"/figures/{name}").status_code == 404, name
    assert client.get("/figures/../secret.png").status_code == 404
    assert client.get("/figures/toy/mmcs_with_larger.png").status_code == 404


def test_overview_gives_one_signal_of_training_long_enough_the_doubling_test(
    client: TestClient, page_app: PageApp
) -> None:
    assert 'id="convergence"' not in client.get("/").text  # nothing tested, no record: no panel
    with page_app.app.state.sessionmaker() as session:
        moving = session.get(Dictionary, page_app.built.small_id)
        moving.holds = False
        moving.moved = [{"metric": "fvu", "half": 0.2, "end": 0.1, "change": 1.0, "tolerance": 0.03}]
        session.get(Dictionary, page_app.built.large_id).holds = True
        session.commit()
    # The held-out objective's own convergence says the opposite for both: it is no second verdict.
    runs = {
        "relu_n16_l10.1": {"objective_fall": 0.004, "converged": True, "objective": 0.12, "fvu": 0.03, "l0": 9.5},
        "topk_n32_k4": {"objective_fall": 0.081, "converged": False, "objective": 0.011, "fvu": 0.015, "l0": 4.0},
    }
    metrics = {"preset": "default", "runs": [], "convergence": {"window": [0.5, 0.7], "tolerance": 0.02, "runs": runs}}
    (page_app.workdir / "metrics.json").write_text(json.dumps(metrics))
    (page_app.workdir / "figures").mkdir()
    (page_app.workdir / "figures" / "heldout_objective_vs_samples.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    html = client.get("/").text
    panel = html[html.index('id="convergence"') :]
    assert "<strong>1 of 2 hold</strong> when their training rows double" in panel
    assert "FVU 3% and L0 5% (relative), dead and rare 2% of the size each, MMCS with larger 0.01" in panel
    assert re.findall(r'<span class="still-moving">([^<]*)</span>', panel) == ["relu_n16_l10.1 (fvu)"]
    assert "stopped improving" not in html and "still-improving" not in html
    assert 'src="/figures/heldout_objective_vs_samples.png"' in panel
    assert "monosemantic train --workdir COPY --preset default --samples N" in panel


def test_inspector_fragment(client: TestClient, page_app: PageApp) -> None:
    small = page_app.built.small_id
    token = csrf_of(client, "/inspect")
    headers = {**HX, "X-CSRF-Token": token}
    result = client.post("/inspect", data={"dictionary_id": str(small), "text": f"a cat {EVIL}"}, headers=headers)
    assert result.status_code == 200
    body = result.text.strip()
    assert body.startswith('<section class="panel" id="inspect-result">') and "<form" not in body
    assert EVIL not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert f'href="/dictionaries/{small}/features/3">#3</a>' in body  # "cat": feature len("cat")
    assert page_app.app.state.inspector.calls == [(small, f"a cat {EVIL}", None)]
    followed = client.post(
        "/inspect", data={"dictionary_id": str(small), "text": "a cat", "feature": "3"}, headers=headers
    ).text
    assert "Feature <a" in followed and 'title="1.5"' in followed
    cases = [
        ({"dictionary_id": "999", "text": "a"}, "dictionary_id"),
        ({"dictionary_id": str(small), "text": "  "}, "text"),
        ({"dictionary_id": str(small), "text": "a", "feature": str(SMALL_SIZE)}, "feature"),
        ({"dictionary_id": str(small), "text": "x" * 2001}, "text"),
    ]
    for form, field in cases:
        response = client.post("/inspect", data=form, headers=headers)
        assert response.status_code == 422, form
        assert f"{field}:" in response.text, form


def test_inspector_reports_a_run_without_models(client: TestClient, page_app: PageApp) -> None:
    class Unavailable:
        def inspect(self, dictionary, text, feature=None):
            raise InspectorUnavailable("the models of run /nowhere cannot be loaded")

    page_app.app.state.inspector = Unavailable()
    token = csrf_of(client, "/inspect")
    response = client.post(
        "/inspect",
        data={"dictionary_id": str(page_app.built.small_id), "text": "a"},
        headers={**HX, "X-CSRF-Token": token},
    )
    assert response.status_code == 409 and "cannot be loaded" in response.text


def test_undoing_a_superseding_label_shows_the_earlier_one_and_a_new_verdict_still_saves(
    client: TestClient, page_app: PageApp
) -> None:
    small, small_hash = page_app.built.small_id, page_app.built.small_hash
    token = pick_name(client, small)
    url = f"/dictionaries/{small}/label"
    headers = {**HX, "X-CSRF-Token": token}
    with page_app.app.state.sessionmaker() as session:
        add_labels(session, small_hash, [(4, "ann", "monosemantic")])
    card = client.get(url, params={"feature": 4}, headers=HX).text
    assert 'name="relabel" value="1"' in card and 'data-verdict="monosemantic"' in card
    replaced = client.post(
        url, data={"feature_index": "4", "verdict": "polysemantic", "relabel": "1"}, headers=headers
    ).text
    assert "Saved feature #4 as polysemantic, replacing monosemantic." in replaced
    undone = client.post(f"{url}/undo", data=undo_fields(replaced), headers=headers).text
    assert "Undid your label of feature #4 (polysemantic)." in undone
    # The earlier label counts again, and the card says so: a verdict on it supersedes, not a "second submit".
    assert 'data-verdict="monosemantic"' in undone and 'name="relabel" value="1"' in undone
    again = client.post(url, data={"feature_index": "4", "verdict": "uninterpretable", "relabel": "1"}, headers=headers)
    assert "Saved feature #4 as uninterpretable, replacing monosemantic." in again.text
    assert [row[1:4] for row in stored(page_app)] == [(4, "ann", "monosemantic"), (4, "ann", "uninterpretable")]
