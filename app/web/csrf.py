"""CSRF protection of the pages' form posts: a per-browser token in a cookie, echoed by every POST.

Double-submit: the page embeds the cookie's token in each form (a hidden ``csrf_token`` field) and in a
``<meta name="csrf-token">`` that ``static/app.js`` copies into the ``X-CSRF-Token`` header of htmx
requests. A cross-site page can make the browser send the cookie but cannot read it, so it cannot echo it.
"""

from __future__ import annotations

import secrets

from fastapi import HTTPException, Request, Response

CSRF_COOKIE = "monosemantic_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_STATE_KEY = "csrf_token"


def csrf_token(request: Request) -> str:
    """The browser's CSRF token: its cookie's, or a new one kept on the request until the response sets it."""
    existing = getattr(request.state, _STATE_KEY, None)
    if existing:
        return existing
    token = request.cookies.get(CSRF_COOKIE) or ""
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
    setattr(request.state, _STATE_KEY, token)
    return token


def set_csrf_cookie(request: Request, response: Response) -> None:
    """Store the request's token in the cookie when the browser does not have it yet."""
    token = csrf_token(request)
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")


def verify_csrf(request: Request, form: dict[str, str]) -> None:
    """Raise 403 unless the POST echoes the cookie's token in the form field or the header."""
    cookie = request.cookies.get(CSRF_COOKIE)
    sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not cookie or not sent or not secrets.compare_digest(cookie.encode(), sent.encode()):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong: reload the page and try again")
