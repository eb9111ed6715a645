"""JSON request bodies held to the standard before FastAPI validates them: a size limit, and JSON only.

Python's JSON parser takes ``NaN`` and ``Infinity`` (not JSON) and lone surrogates such as ``"\\ud800"``
(not Unicode text, and a 500 where the database encodes them), and FastAPI reads a body of any size.
``StrictJSONRoute`` reads the body of every route with a JSON body up to the server's
``json_body_max_bytes`` (413 past it) and refuses those values with a 422 naming where they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute


class _NonFinite:
    """Where the parser met ``NaN`` or ``Infinity``: kept so the error can say where."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


async def read_limited_body(request: Request, limit: int, setting: str) -> bytes:
    """The request's body, or a 413 naming the limit as soon as the body (declared or received) passes it.

    Read in chunks, so an oversized upload is refused without being held in memory.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdecimal() and int(declared) > limit:
        raise body_too_large(limit, setting)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit, setting)
        chunks.append(chunk)
    return b"".join(chunks)


def body_too_large(limit: int, setting: str) -> HTTPException:
    """The 413 of a body past ``limit`` bytes, naming the setting that raises it."""
    return HTTPException(
        status_code=413,
        detail=f"the body is larger than this server's limit of {limit:,} bytes (setting MONOSEMANTIC_"
        f"{setting.upper()}): send less, or split it over several requests",
    )


def json_problems(body: bytes) -> list[dict[str, Any]]:
    """Validation errors for what JSON does not allow but Python's parser takes: NaN, Infinity, lone surrogates.

    Empty when the body is fine or not JSON at all (FastAPI's own parse then names the syntax error).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [
            _error(["body"], f"the body is not UTF-8 text ({exc.reason} at byte {exc.start})", "json_invalid", None)
        ]
    try:
        value = json.loads(text, parse_constant=_NonFinite)
    except (ValueError, RecursionError):
        return _unparsable(text)
    problems: list[dict[str, Any]] = []
    _walk(value, ["body"], problems)
    return problems


def _unparsable(text: str) -> list[dict[str, Any]]:
    # Syntax errors keep FastAPI's json_invalid reply; what only Python refuses (an integer of more than
    # 4,300 digits, nesting deeper than the recursion limit) would become a bare 400, so it is named here.
    try:
        json.loads(text, parse_int=lambda digits: 0, parse_constant=_NonFinite)
    except json.JSONDecodeError:
        return []
    except (ValueError, RecursionError):
        return [_error(["body"], "the JSON nests too deeply to read", "json_invalid", None)]
    return [_error(["body"], "an integer has too many digits: send at most 4,300", "int_parsing", None)]


def _walk(value: Any, loc: list[str | int], problems: list[dict[str, Any]]) -> None:
    if isinstance(value, _NonFinite):
        problems.append(
            _error(loc, f"{value.literal} is not a JSON number: send a finite number", "finite_number", value.literal)
        )
    elif isinstance(value, str):
        if _has_surrogate(value):
            problems.append(
                _error(
                    loc,
                    "the text holds a lone surrogate (an unpaired \\ud800-\\udfff escape): send valid Unicode text",
                    "string_unicode",
                    value,
                )
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            if _has_surrogate(key):
                problems.append(
                    _error(loc, "a key holds a lone surrogate: send valid Unicode text", "string_unicode", key)
                )
            _walk(item, [*loc, key], problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, [*loc, i], problems)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _error(loc: list[str | int], msg: str, kind: str, given: Any) -> dict[str, Any]:
    return {"type": kind, "loc": tuple(loc), "msg": msg, "input": given}


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is read within ``json_body_max_bytes`` and refused when it is not strict JSON.

    Routes without a body model (the label import reads its own, larger, body) are left as they are.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict_handler(request: Request) -> Response:
            limit = request.app.state.settings.json_body_max_bytes
            body = await read_limited_body(request, limit, "json_body_max_bytes")
            if body and (problems := json_problems(body)):
                raise RequestValidationError(problems, body=None)

            unread = [{"type": "http.request", "body": body, "more_body": False}]

            async def replay() -> dict[str, Any]:
                # The body once, as read; after it, what the client sends next (its disconnect).
                return unread.pop() if unread else await request.receive()

            return await handler(Request(request.scope, replay))

        return strict_handler
