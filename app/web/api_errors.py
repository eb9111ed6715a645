"""Error replies of the REST API that can always be sent: any input they echo is made JSON-safe and short.

FastAPI's own 422 repeats each bad value as given, so a ``NaN``, an ``Infinity``, a lone surrogate or raw
bytes made the reply itself fail (a 500), and a 10 MB value came back 10 MB long. ``safe_echo`` turns any
value into plain JSON (non-finite floats and undecodable text as strings) cut to ``MAX_ECHO_CHARS``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

MAX_ECHO_CHARS = 200
MAX_ECHO_ITEMS = 20
MAX_ECHO_DEPTH = 4
MAX_DETAIL_CHARS = 4000


class ErrorOut(BaseModel):
    """An error reply other than a validation error: what went wrong and what to do about it."""

    detail: str = Field(description="what went wrong and how to fix it")


ERROR_DESCRIPTIONS = {
    400: "the body cannot be read (an import row that breaks a rule: the detail names every such line)",
    401: "the server has a write token and the request did not bear it (Authorization: Bearer <token>)",
    404: "no such dictionary or feature, or nothing of the kind in the server's run",
    409: "the server's run lacks what this needs (a trained LM, tokens or activations)",
    413: "the body is larger than the server's limit",
    500: "the run's metrics.json cannot be read",
    503: "busy with another search (see Retry-After) or past the search's time limit",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (422 FastAPI declares itself), each an ``ErrorOut``."""
    return {code: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


def safe_text(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """The text as valid Unicode (a lone surrogate shown as ``\\udXXX``), cut to ``limit`` characters."""
    cleaned = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(cleaned) <= limit:
        return cleaned
    return f"{cleaned[:limit]}... ({len(text):,} characters in all)"


def safe_echo(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON that always serializes: finite numbers, short valid text, at most 20 items a level."""
    if value is None or isinstance(value, bool | int):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**MAX_ECHO_CHARS:
            return f"an integer of more than {MAX_ECHO_CHARS} digits"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, bytes | bytearray):
        return safe_text(bytes(value[: MAX_ECHO_CHARS * 4]).decode("utf-8", "replace"))
    if depth >= MAX_ECHO_DEPTH:
        return "..."
    if isinstance(value, Mapping):
        items = list(value.items())
        echoed = {safe_text(str(k), 100): safe_echo(v, depth + 1) for k, v in items[:MAX_ECHO_ITEMS]}
        if len(items) > MAX_ECHO_ITEMS:
            echoed["..."] = f"{len(items) - MAX_ECHO_ITEMS} more"
        return echoed
    if isinstance(value, Sequence | set | frozenset):
        items = list(value)
        echoed = [safe_echo(v, depth + 1) for v in items[:MAX_ECHO_ITEMS]]
        if len(items) > MAX_ECHO_ITEMS:
            echoed.append(f"... {len(items) - MAX_ECHO_ITEMS} more")
        return echoed
    return safe_text(str(value))


def safe_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's validation errors with their ``loc``, ``msg``, ``type``, ``input`` and ``ctx`` made safe."""
    safe = []
    for error in list(errors)[:MAX_ECHO_ITEMS]:
        item: dict[str, Any] = {
            "type": safe_text(str(error.get("type", "value_error"))),
            "loc": [part if isinstance(part, int) else safe_text(str(part), 100) for part in error.get("loc", ())],
            "msg": safe_text(str(error.get("msg", "invalid value")), MAX_DETAIL_CHARS),
        }
        if "input" in error:
            item["input"] = safe_echo(error["input"])
        if error.get("ctx"):
            item["ctx"] = {
                safe_text(str(k), 100): safe_echo(v if _plain(v) else str(v)) for k, v in error["ctx"].items()
            }
        safe.append(item)
    return safe


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str | list | tuple | dict)


async def api_validation_error(request: Request, exc: RequestValidationError) -> Response:
    """422 with every wrong field named and its given value echoed safely."""
    return JSONResponse(status_code=422, content={"detail": safe_errors(exc.errors())})


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """The HTTPException's status and ``{"detail": ...}``, its detail made JSON-safe."""
    headers = getattr(exc, "headers", None)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    detail = safe_errors(exc.detail) if _error_list(exc.detail) else safe_detail(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)


def install_api_errors(app: FastAPI) -> None:
    """Make every HTTPException's reply JSON-safe (validation errors: see ``app.web.page_errors``)."""
    app.add_exception_handler(StarletteHTTPException, http_error)


def safe_detail(detail: Any) -> Any:
    """An HTTPException's detail made JSON-safe; our own sentences are kept whole up to ``MAX_DETAIL_CHARS``."""
    if isinstance(detail, str):
        return safe_text(detail, MAX_DETAIL_CHARS)
    return safe_echo(detail)


def _error_list(detail: Any) -> bool:
    return isinstance(detail, list) and all(isinstance(item, dict) and "msg" in item for item in detail)
