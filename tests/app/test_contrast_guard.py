"""What guards the contrast search before it runs: the write token, and patterns that repeat a repeat.

The search itself running in a worker under time limits is tested on a served app in
``tests/reliability/test_contrast_worker.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.services.regex_guard import check_pattern
from tests.app.conftest import make_app

TOKEN = "s3cret-token"


@pytest.fixture
def guarded(tmp_path: Path) -> TestClient:
    with TestClient(make_app(tmp_path, write_token=TOKEN)) as client:
        yield client


def test_with_a_write_token_the_contrast_api_needs_it(guarded: TestClient) -> None:
    body = {"a": "[[cat]]", "b": "[[dog]]"}
    refused = guarded.post("/api/contrast", json=body)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    wrong = guarded.post("/api/contrast", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    # With the token the search is attempted: this app's run has no LM, which the answer says.
    allowed = guarded.post("/api/contrast", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 409 and "TinyLM" in allowed.json()["detail"]


def test_with_a_write_token_the_contrast_page_searches_only_for_a_browser_that_entered_it(guarded: TestClient) -> None:
    assert guarded.get("/contrast").status_code == 200  # the form itself is open
    page = guarded.get("/contrast", params={"a": "[[cat]]", "b": "[[dog]]"})
    assert page.status_code == 403 and "write token" in page.text


@pytest.mark.parametrize(
    "pattern", [r"(a+)+b", r"(?:\w+\s?)*$", r"(x?){30}x{30}", r"(?P<target>(?:ab*)+)", r"(?:(?:a|b)+c)*"]
)
def test_a_repeat_inside_a_repeat_is_refused_with_a_way_out(pattern: str) -> None:
    problem = check_pattern(pattern)
    assert problem is not None and "exponential" in problem and "instead" in problem


@pytest.mark.parametrize(
    "pattern",
    [r"(Mr|Dr)(?P<target>\.)", r"(?P<target>\w+)ing\b", r"(?:ab)+c", r"(\d{3})+", r".{0,40}(?P<target>x)", r"a+b*c?"],
)
def test_ordinary_patterns_pass(pattern: str) -> None:
    assert check_pattern(pattern) is None
