"""What guards the app: the write token on API and page writes, and security headers on every response.

With a write token set, API writes need it as a bearer token, and the pages ask for it once (with the
labeller's name) and keep in a cookie an HMAC of it, never the token itself, which every page write checks.
The headers forbid inline script and framing, so a description a labeller typed can never run as code
in another labeller's browser, and pages load scripts only from our own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from fastapi import HTTPException, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.settings import Settings

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def token_matches(expected: str | None, authorization: str | None) -> bool:
    """Whether an Authorization header carries ``Bearer <expected>``; any header passes when no token is set."""
    if not expected:
        return True
    scheme, _, sent = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return secrets.compare_digest(sent.strip().encode(), expected.encode())


async def require_write_token(request: Request) -> None:
    """A dependency of every API write: 401 unless the request bears the configured write token.

    Async only so that FastAPI runs this header check on the event loop rather than in a worker thread.
    """
    expected = request.app.state.settings.write_token
    if not token_matches(expected, request.headers.get("authorization")):
        raise HTTPException(
            status_code=401,
            detail="this server needs a write token: send the header 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


WRITE_COOKIE = "monosemantic_write"
WRITE_COOKIE_AGE_S = 30 * 24 * 3600
WRITE_FIELD = "write_token"
# What the cookie's HMAC signs: a fixed purpose, so the cookie proves knowledge of the token and nothing else.
_WRITE_COOKIE_PURPOSE = b"monosemantic: this browser may write labels through the pages"


def write_cookie_value(token: str) -> str:
    """The page-write cookie for a server with this write token: HMAC-SHA256 keyed by the token (hex).

    It changes when the token changes, so rotating the token locks every browser out again.
    """
    return hmac.new(token.encode(), _WRITE_COOKIE_PURPOSE, hashlib.sha256).hexdigest()


def page_writes_unlocked(request: Request) -> bool:
    """Whether this browser may write through the pages: always without a write token, else by its cookie."""
    expected = request.app.state.settings.write_token
    if not expected:
        return True
    cookie = request.cookies.get(WRITE_COOKIE, "")
    return secrets.compare_digest(cookie.encode(), write_cookie_value(expected).encode())


def write_token_correct(request: Request, sent: str) -> bool:
    """Whether ``sent`` (typed into a page's form) is the server's write token; any text when none is set."""
    expected = request.app.state.settings.write_token
    return not expected or secrets.compare_digest(sent.strip().encode(), expected.encode())


def unlock_page_writes(request: Request, response: Response) -> None:
    """Give the browser the page-write cookie (HttpOnly, SameSite=Strict); nothing without a write token."""
    token = request.app.state.settings.write_token
    if token:
        response.set_cookie(
            WRITE_COOKIE,
            write_cookie_value(token),
            max_age=WRITE_COOKIE_AGE_S,
            httponly=True,
            samesite="strict",
            path="/",
        )


def require_page_write(request: Request) -> None:
    """403 unless this browser may write through the pages (see ``page_writes_unlocked``)."""
    if not page_writes_unlocked(request):
        raise HTTPException(
            status_code=403,
            detail="this server needs its write token before labels can be saved: reload the labelling page "
            "and enter the token with your name (ask whoever runs the server for it)",
        )


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_server_warning(settings: Settings) -> str | None:
    """A loud warning when the server listens beyond this machine and anyone reaching it may write labels."""
    if settings.write_token or is_loopback(settings.host):
        return None
    bar = "!" * 100
    return (
        f"{bar}\nWARNING: serving on {settings.host}:{settings.port} with no write token: anyone who can reach this "
        "address can add and import labels.\nSet MONOSEMANTIC_WRITE_TOKEN=<a long random secret> (API writes then "
        f"need 'Authorization: Bearer <token>' and the labelling page asks for it once), or bind to 127.0.0.1.\n{bar}"
    )


class SecurityHeadersMiddleware:
    """Adds ``SECURITY_HEADERS`` to every HTTP response, errors and static files included."""

    def __init__(self, app: ASGIApp, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or SECURITY_HEADERS).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
