"""A malformed page address (``?feature=abc``, ``?offset=-1``) answers with the HTML error page naming the
field; the REST API, its reference and every POST keep FastAPI's JSON 422, which their callers parse
(made safe to send by ``app.web.api_errors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from app.web.api_errors import api_validation_error, safe_text
from app.web.pages import render

JSON_PATH_PREFIXES = ("/api/", "/openapi.json", "/docs")
WHERE = {"path": " (a part of the path)"}


def describe_errors(errors: Sequence[Any]) -> str:
    """One sentence per wrong field: its name, the value given and what it must be."""
    sentences = []
    for error in errors:
        where, *names = (str(part) for part in error.get("loc", ()))
        field = ".".join(names) or where
        given = error.get("input")
        shown = f"{field}={safe_text(given, 100)}" if isinstance(given, str) else field
        sentences.append(f"{shown}{WHERE.get(where, '')}: {error.get('msg', 'invalid value')}.")
    return " ".join(sentences)


def install_page_errors(app: FastAPI) -> None:
    """Register the handler that turns a page GET's validation error into the error page."""

    @app.exception_handler(RequestValidationError)
    async def page_validation_error(request: Request, exc: RequestValidationError) -> Response:
        if request.method != "GET" or request.url.path.startswith(JSON_PATH_PREFIXES):
            return await api_validation_error(request, exc)
        message = f"This address cannot be shown: {describe_errors(exc.errors())}"
        return render(request, "error.html", {"title": "Bad address", "message": message}, status_code=422)
