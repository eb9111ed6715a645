"""The interactive API reference at ``/docs``, served under the app's strict Content-Security-Policy.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script, both of which the
policy forbids. This page loads Swagger UI from ``static/vendor/swagger-ui/`` and starts it from a script
served by the app; without those vendored files it says how to get them and links the raw schema.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.web.vendor import SWAGGER_UI_DIR, SWAGGER_UI_FILES

SWAGGER_DIR = Path("vendor") / SWAGGER_UI_DIR  # under static/, where app.web.vendor puts it
SWAGGER_FILES = SWAGGER_UI_FILES

router = APIRouter(include_in_schema=False)

# validatorUrl null: Swagger UI would otherwise load a badge from an outside validator, which the policy forbids.
_INIT_SCRIPT = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null });
});
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>monosemantic API</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
{head}
</head>
<body>
<p><a href="/">&larr; back to the monosemantic app</a></p>
{body}
</body>
</html>
"""


def swagger_available(static_dir: Path) -> bool:
    """Whether the Swagger UI files are vendored under static_dir."""
    return all((static_dir / SWAGGER_DIR / name).is_file() for name in SWAGGER_FILES)


@router.get("/docs", response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    """Swagger UI over /openapi.json, or a plain page linking the schema when Swagger UI is not vendored."""
    static_dir: Path = request.app.state.static_dir
    if swagger_available(static_dir):
        head = (
            '<link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">\n'
            '<script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>\n'
            '<script src="/docs/init.js"></script>'
        )
        body = (
            '<div id="swagger-ui"></div>\n'
            "<noscript>The interactive reference needs JavaScript; the OpenAPI schema is at "
            '<a href="/openapi.json">/openapi.json</a>.</noscript>'
        )
        return HTMLResponse(_PAGE.format(head=head, body=body))
    body = (
        "<h1>monosemantic API</h1>\n"
        '<p>The OpenAPI schema is at <a href="/openapi.json">/openapi.json</a>. The interactive reference '
        "needs Swagger UI in <code>static/vendor/swagger-ui/</code> (swagger-ui-bundle.js and "
        "swagger-ui.css from the swagger-ui-dist package): run <code>python -m app.web.vendor</code> or "
        "<code>make setup</code>.</p>"
    )
    return HTMLResponse(_PAGE.format(head="", body=body))


@router.get("/docs/init.js")
def docs_init() -> Response:
    """The script that starts Swagger UI (a file, not inline, so the policy can forbid inline script)."""
    return Response(_INIT_SCRIPT, media_type="text/javascript")
