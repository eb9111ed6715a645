"""Security of the app: headers on every response, the write token, the serve warning, /docs without inline script."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.cli.commands import main
from app.settings import Settings
from app.web.security import CONTENT_SECURITY_POLICY, is_loopback, open_server_warning
from tests.app.builders import BuiltDatabase, build_database
from tests.app.conftest import make_app

TOKEN = "s3cret-token-for-tests"


def assert_security_headers(response) -> None:
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/api/health", 200),
        ("get", "/api/dictionaries/1/features?limit=0", 422),
        ("get", "/api/dictionaries/77", 404),
        ("post", "/api/dictionaries/1/features/0/labels", 422),
        ("get", "/docs", 200),
        ("get", "/openapi.json", 200),
        ("get", "/static/style.css", 200),
    ],
)
def test_every_response_carries_the_security_headers(client: TestClient, method: str, path: str, status: int) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert_security_headers(response)


def test_docs_page_has_no_inline_script(client: TestClient) -> None:
    html = client.get("/docs").text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert all("src=" in attributes and body.strip() == "" for attributes, body in scripts)
    assert "/openapi.json" in html
    init = client.get("/docs/init.js")
    assert init.status_code == 200 and "SwaggerUIBundle" in init.text


@pytest.fixture
def guarded(tmp_path: Path) -> tuple[TestClient, BuiltDatabase]:
    app = make_app(tmp_path, write_token=TOKEN)
    with app.state.sessionmaker() as session:
        built = build_database(session)
    return TestClient(app), built


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer"])
def test_writes_without_the_right_token_are_401(guarded, authorization: str | None) -> None:
    client, built = guarded
    headers = {"Authorization": authorization} if authorization else {}
    label = {"labeller": "ann", "verdict": "monosemantic"}
    response = client.post(f"/api/dictionaries/{built.small_id}/features/0/labels", json=label, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in response.json()["detail"]
    assert_security_headers(response)
    imported = client.post("/api/labels/import?format=jsonl", content="", headers=headers)
    assert imported.status_code == 401
    labels = client.get(f"/api/dictionaries/{built.small_id}/features/0").json()["labels"]
    assert labels == []


def test_writes_with_the_token_succeed_and_reads_need_none(guarded) -> None:
    client, built = guarded
    auth = {"Authorization": f"Bearer {TOKEN}"}
    label = {"labeller": "ann", "verdict": "monosemantic"}
    response = client.post(f"/api/dictionaries/{built.small_id}/features/0/labels", json=label, headers=auth)
    assert response.status_code == 201
    assert client.get(f"/api/dictionaries/{built.small_id}/estimate").json()["labelled"] == 1
    assert client.get("/api/labels/export").status_code == 200
    # The inspector writes nothing, so no token is asked; this fake run has no models to load (409).
    inspected = client.post("/api/activations", json={"dictionary_id": built.small_id, "text": "the cat"})
    assert inspected.status_code == 409 and "cannot be loaded" in inspected.json()["detail"]


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7") and not is_loopback("example")


def test_open_server_warning_only_without_token_off_loopback() -> None:
    assert open_server_warning(Settings(host="127.0.0.1")) is None
    assert open_server_warning(Settings(host="0.0.0.0", write_token="t")) is None
    warning = open_server_warning(Settings(host="0.0.0.0", port=9000))
    assert warning is not None and "WARNING" in warning and "0.0.0.0:9000" in warning
    assert "MONOSEMANTIC_WRITE_TOKEN" in warning


def test_serve_builds_the_app_and_warns_when_open(tmp_path: Path, monkeypatch, capsys) -> None:
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.delenv("MONOSEMANTIC_WRITE_TOKEN", raising=False)
    assert main(["serve", "--workdir", str(tmp_path), "--host", "0.0.0.0", "--port", "8123"]) == 0
    app, kwargs = calls[0]
    assert (kwargs["host"], kwargs["port"]) == ("0.0.0.0", 8123)
    assert app.state.settings.workdir == tmp_path and (tmp_path / "monosemantic.db").is_file()
    assert "WARNING" in capsys.readouterr().err
    monkeypatch.setenv("MONOSEMANTIC_WRITE_TOKEN", TOKEN)
    assert main(["serve", "--workdir", str(tmp_path), "--host", "0.0.0.0"]) == 0
    assert calls[1][0].state.settings.write_token == TOKEN and calls[1][1]["port"] == 8000
    assert "WARNING" not in capsys.readouterr().err


def test_serve_refuses_a_missing_workdir_and_a_bad_port(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--workdir", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--workdir", str(tmp_path), "--port", "0"])
    assert exit_info.value.code == 2
