"""Untrusted text (corpus tokens, dictionary names, labeller names, descriptions, typed text) is escaped everywhere.

The database holds tokens, a dictionary name, labeller names and descriptions made of script tags, attribute
break-outs and template syntax. Every page and htmx fragment must show them as text: the raw markup never
appears, no element gains an event handler or an inline script, and ``{{ 7*7 }}`` is printed, not evaluated.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.db.models import Dictionary, Label, Vocabulary
from app.services.schemas import ActivationsOut, FeatureActivation, TokenActivations
from app.settings import Settings
from app.web.csrf import CSRF_COOKIE
from app.web.factory import create_app
from app.web.pages import LABELLER_COOKIE
from tests.app.builders import BuiltDatabase, build_database

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
TEMPLATE = "{{ 7*7 }}"
PAYLOADS = (SCRIPT, ATTRIBUTE, TEMPLATE)
# How each looks once escaped for HTML (markupsafe writes a double quote as &#34;).
ESCAPED = {
    SCRIPT: "&lt;script&gt;alert(1)&lt;/script&gt;",
    ATTRIBUTE: "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;",
    TEMPLATE: "{{ 7*7 }}",
}
HX = {"HX-Request": "true"}
FEATURE = 1  # fires on token 2 (ATTRIBUTE); its windows hold tokens 1 (SCRIPT), 2 and 4 (TEMPLATE)


class EchoInspector:
    """Stands in for the LM + SAE: one token per ``|``-separated piece of the text, feature 1 firing on each."""

    def inspect(self, dictionary: Dictionary, text: str, feature: int | None = None) -> ActivationsOut:
        tokens, start = [], 0
        for word in text.split("|"):
            tokens.append(
                TokenActivations(
                    token=word,
                    start=start,
                    end=start + len(word),
                    top_features=[FeatureActivation(index=1, activation=1.0)],
                    feature_activation=1.0 if feature is not None else None,
                )
            )
            start += len(word) + 1
        return ActivationsOut(dictionary_id=dictionary.id, feature=feature, tokens=tokens)


class MarkupAudit(HTMLParser):
    """Collects what would run in a browser: inline scripts, event-handler attributes and injected images."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "script" and "src" not in names:
            self.problems.append("inline <script>")
        if tag == "img":
            self.problems.append(f"<img {attrs}>")
        self.problems += [f"<{tag} {name}=...>" for name in names if name.startswith("on")]


def assert_safe(html: str, shown: tuple[str, ...], where: str) -> None:
    """No payload raw, no active markup, and each payload in ``shown`` present in its escaped form."""
    for payload in (SCRIPT, ATTRIBUTE):
        assert payload not in html, f"{where}: {payload!r} unescaped"
    assert "<img" not in html, where
    audit = MarkupAudit()
    audit.feed(html)
    assert audit.problems == [], f"{where}: {audit.problems}"
    # Chips show each space of a token as a faint dot.
    text = re.sub(r'<span class="ws">(·+)</span>', lambda m: " " * len(m.group(1)), html)
    for payload in shown:
        assert ESCAPED[payload] in text, f"{where}: {payload!r} not shown as text"


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[FastAPI, BuiltDatabase]:
    """An app whose corpus tokens, dictionary name, labellers and descriptions are hostile."""
    app = create_app(Settings(workdir=tmp_path, database_url=f"sqlite:///{tmp_path / 'hostile.db'}"))
    app.state.inspector = EchoInspector()
    with app.state.sessionmaker() as session:
        built = build_database(session)
        vocabulary = session.scalars(select(Vocabulary)).one()
        tokens = list(vocabulary.tokens)
        tokens[1], tokens[2], tokens[4] = SCRIPT, ATTRIBUTE, TEMPLATE
        vocabulary.tokens = tokens
        dictionary = session.get(Dictionary, built.small_id)
        dictionary.name = f"relu {ATTRIBUTE} {TEMPLATE}"
        session.add_all(
            [
                Label(
                    dictionary_hash=built.small_hash,
                    feature_index=FEATURE,
                    labeller=SCRIPT,
                    verdict="monosemantic",
                    description=f"{ATTRIBUTE} and {TEMPLATE}",
                ),
                Label(
                    dictionary_hash=built.small_hash,
                    feature_index=FEATURE,
                    labeller=ATTRIBUTE,
                    verdict="polysemantic",
                    description=SCRIPT,
                ),
            ]
        )
        session.commit()
    return app, built


def test_every_page_and_fragment_shows_hostile_text_escaped(hostile: tuple[FastAPI, BuiltDatabase]) -> None:
    app, built = hostile
    small = built.small_id
    with TestClient(app) as client:
        pages = {
            "/": (ATTRIBUTE, TEMPLATE),  # the dictionary's name
            f"/dictionaries/{small}": PAYLOADS,
            f"/dictionaries/{small}/features/{FEATURE}": PAYLOADS,
            "/estimates": (SCRIPT, ATTRIBUTE),
            "/inspect": (ATTRIBUTE, TEMPLATE),
            f"/dictionaries/{small}/label": (ATTRIBUTE, TEMPLATE),
        }
        for url, shown in pages.items():
            response = client.get(url)
            assert response.status_code == 200, url
            assert_safe(response.text, shown, url)

        query = {"q": SCRIPT}
        for headers in ({}, HX):
            response = client.get(f"/dictionaries/{small}", params=query, headers=headers)
            assert response.status_code == 200
            assert_safe(response.text, (SCRIPT,), f"browser q= {headers}")
            table = client.get(f"/dictionaries/{small}", params={"sort": "density"}, headers=headers).text
            assert_safe(table, (SCRIPT, ATTRIBUTE), f"browser table {headers}")

        token = client.cookies.get(CSRF_COOKIE)
        chosen = client.post(
            f"/dictionaries/{small}/label/labeller",
            data={"labeller": ATTRIBUTE, "csrf_token": token},
            follow_redirects=False,
        )
        assert chosen.status_code == 303
        assert client.cookies.get(LABELLER_COOKIE) == quote(ATTRIBUTE, safe="")
        for headers in ({}, HX):
            page = client.get(f"/dictionaries/{small}/label", params={"skip": 0}, headers=headers)
            assert page.status_code == 200
            assert_safe(page.text, (ATTRIBUTE,), f"label page as hostile labeller {headers}")
        saved = client.post(
            f"/dictionaries/{small}/label",
            data={"csrf_token": token, "feature_index": str(FEATURE), "verdict": "monosemantic", "description": SCRIPT},
            headers=HX,
        )
        assert saved.status_code == 200
        assert_safe(saved.text, (ATTRIBUTE,), "label post fragment")

        typed = "|".join(PAYLOADS)
        for headers in ({}, HX):
            result = client.post(
                "/inspect",
                data={"csrf_token": token, "dictionary_id": str(small), "text": typed, "feature": "1"},
                headers=headers,
            )
            assert result.status_code == 200
            assert_safe(result.text, PAYLOADS, f"inspector result {headers}")

        missing = client.get(f"/dictionaries/{small}/features/{10**6}")
        assert missing.status_code == 404
        assert_safe(missing.text, (ATTRIBUTE,), "404 page")


def test_the_feature_page_prints_template_syntax_instead_of_evaluating_it(
    hostile: tuple[FastAPI, BuiltDatabase],
) -> None:
    app, built = hostile
    with TestClient(app) as client:
        html = client.get(f"/dictionaries/{built.small_id}/features/{FEATURE}").text
    # Token 4 is in every context window (3 strips per top context and quantile sample) and in the name.
    assert html.count(TEMPLATE) >= 5
    assert "relu &#34;&gt;&lt;img src=x onerror=alert(1)&gt; {{ 7*7 }}" in html
    assert " 49 " not in html and ">49<" not in html


def test_the_api_returns_hostile_text_as_json_data_with_the_security_headers(
    hostile: tuple[FastAPI, BuiltDatabase],
) -> None:
    app, built = hostile
    with TestClient(app) as client:
        response = client.get(f"/api/dictionaries/{built.small_id}/features/{FEATURE}")
        html = client.get(f"/dictionaries/{built.small_id}/features/{FEATURE}")
    assert response.headers["content-type"] == "application/json"
    detail = response.json()
    assert {label["labeller"] for label in detail["labels"]} == {SCRIPT, ATTRIBUTE}
    assert detail["top_tokens"][0]["token"] == ATTRIBUTE
    assert SCRIPT in detail["top_contexts"][0]["tokens"]
    for headers in (response.headers, html.headers):
        policy = headers["content-security-policy"]
        script_src = re.search(r"script-src ([^;]*)", policy).group(1)
        assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
        assert "frame-ancestors 'none'" in policy
        assert headers["x-content-type-options"] == "nosniff"
