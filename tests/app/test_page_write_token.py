"""Page writes (label, undo) with and without a write token: with one, the name form asks for it once and the
browser keeps an HMAC of it in a cookie; without one, the CSRF token is all a page write needs, as before."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.db.models import Label
from app.web.csrf import CSRF_COOKIE
from app.web.pages import LABELLER_COOKIE
from app.web.security import WRITE_COOKIE, write_cookie_value
from tests.app.builders import BuiltDatabase, build_database
from tests.app.conftest import make_app

TOKEN = "page-token-for-tests-0123456789"
HX = {"HX-Request": "true"}


@pytest.fixture
def guarded(tmp_path: Path) -> tuple[FastAPI, BuiltDatabase]:
    app = make_app(tmp_path, write_token=TOKEN)
    with app.state.sessionmaker() as session:
        return app, build_database(session)


def label_rows(app: FastAPI) -> int:
    with app.state.sessionmaker() as session:
        return session.scalar(select(func.count()).select_from(Label))


def open_label_page(client: TestClient, dictionary_id: int) -> tuple[str, str]:
    """The labelling page's HTML and the CSRF token it embeds."""
    html = client.get(f"/dictionaries/{dictionary_id}/label").text
    return html, client.cookies.get(CSRF_COOKIE)


def choose(client: TestClient, dictionary_id: int, csrf: str, **fields: str):
    return client.post(
        f"/dictionaries/{dictionary_id}/label/labeller",
        data={"labeller": "ann", "csrf_token": csrf, **fields},
        follow_redirects=False,
    )


def post_label(client: TestClient, dictionary_id: int, csrf: str, index: int = 1):
    return client.post(
        f"/dictionaries/{dictionary_id}/label",
        data={"csrf_token": csrf, "feature_index": str(index), "verdict": "monosemantic"},
        headers=HX,
    )


def test_with_a_write_token_the_name_form_asks_for_it_and_stores_only_an_hmac(
    guarded: tuple[FastAPI, BuiltDatabase],
) -> None:
    app, built = guarded
    with TestClient(app) as client:
        html, csrf = open_label_page(client, built.small_id)
        assert 'name="write_token"' in html and 'type="password"' in html
        for sent in ({}, {"write_token": "wrong"}, {"write_token": TOKEN[:-1]}):
            refused = choose(client, built.small_id, csrf, **sent)
            assert refused.status_code == 403 and "Wrong write token" in refused.text
            assert WRITE_COOKIE not in refused.cookies and LABELLER_COOKIE not in refused.cookies
        accepted = choose(client, built.small_id, csrf, write_token=TOKEN)
        assert accepted.status_code == 303
        cookie = accepted.cookies.get(WRITE_COOKIE)
        assert cookie == write_cookie_value(TOKEN) and TOKEN not in cookie and re.fullmatch(r"[0-9a-f]{64}", cookie)
        set_cookie = next(v for v in accepted.headers.get_list("set-cookie") if v.startswith(WRITE_COOKIE))
        assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/" in set_cookie
        assert TOKEN not in " ".join(accepted.headers.get_list("set-cookie"))
        # Unlocked: the labelling page shows a feature and the form no longer asks for the token.
        html, _ = open_label_page(client, built.small_id)
        assert 'name="write_token"' not in html and "data-feature=" in html
        saved = post_label(client, built.small_id, csrf)
        assert saved.status_code == 200 and "Saved feature #1 as monosemantic." in saved.text
        named = {"undo_kind": "label", "undo_target": re.search(r'name="undo_target" value="(\d+)"', saved.text)[1]}
        undone = client.post(
            f"/dictionaries/{built.small_id}/label/undo", data={"csrf_token": csrf, **named}, headers=HX
        )
        assert undone.status_code == 200 and "Undid your label of feature #1" in undone.text
    assert label_rows(app) == 0


def test_with_a_write_token_page_writes_without_the_cookie_are_403(guarded: tuple[FastAPI, BuiltDatabase]) -> None:
    app, built = guarded
    with TestClient(app) as client:
        _, csrf = open_label_page(client, built.small_id)
        client.cookies.set(LABELLER_COOKIE, "ann")  # a name alone (as before the token was set) is not enough
        html, _ = open_label_page(client, built.small_id)
        assert 'name="write_token"' in html and 'value="ann"' in html and "data-feature=" not in html
        for cookie in (None, "0" * 64, TOKEN, write_cookie_value("another token")):
            if cookie is not None:
                client.cookies.set(WRITE_COOKIE, cookie)
            refused = post_label(client, built.small_id, csrf)
            assert refused.status_code == 403 and "write token" in refused.json()["detail"], cookie
            undo = client.post(f"/dictionaries/{built.small_id}/label/undo", data={"csrf_token": csrf}, headers=HX)
            assert undo.status_code == 403
        # The API is unchanged: the bearer token, not the page cookie.
        client.cookies.set(WRITE_COOKIE, write_cookie_value(TOKEN))
        api = client.post(
            f"/api/dictionaries/{built.small_id}/features/1/labels", json={"labeller": "x", "verdict": "polysemantic"}
        )
        assert api.status_code == 401
        assert label_rows(app) == 0
        assert post_label(client, built.small_id, csrf).status_code == 200
    assert label_rows(app) == 1


def test_without_a_write_token_pages_need_only_the_csrf_token(client: TestClient, built: BuiltDatabase) -> None:
    html, csrf = open_label_page(client, built.small_id)
    assert 'name="write_token"' not in html
    chosen = choose(client, built.small_id, csrf)
    assert chosen.status_code == 303 and WRITE_COOKIE not in chosen.cookies
    assert post_label(client, built.small_id, csrf).status_code == 200
    assert post_label(client, built.small_id, "not-the-token").status_code == 403  # CSRF still guards
    with client.app.state.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(Label)) == 1
