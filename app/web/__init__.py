"""The web application.

- ``factory``: ``create_app``: settings, database, routers, static files, security headers;
- ``api``: the JSON REST API under ``/api``; ``api_docs``: the OpenAPI reference at ``/docs``;
- ``pages``: the HTML pages (Jinja2 + htmx), with ``page_data``, ``page_shell``, ``evidence_cache``,
  ``svg_charts`` and ``token_display`` for what they render;
- ``deps``: request dependencies the routes and pages share; ``security``, ``csrf``: what guards writes;
- ``vendor``: fetching htmx and Swagger UI into ``static/vendor/`` at setup.
"""
