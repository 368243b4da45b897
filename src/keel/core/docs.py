"""/docs and /redoc served entirely by Keel: no CDN, and a CSP that allows only 'self'.

The Swagger UI and ReDoc bundles come from the `fastapi-offline` package (which ships and
updates them). FastAPI's own pages load them from a CDN and start Swagger UI with an inline
script: offline that is a blank page, and an inline script would need the CSP to allow it.
Here the start-up code is a static script of its own, so the pages run under
`script-src 'self'`.
"""

from __future__ import annotations

import re
from html import escape
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# Swagger UI's icons are data: SVGs inside its own stylesheet: images only, never scripts.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'; object-src 'none'"
)
# ReDoc styles itself with styled-components, which injects <style> elements: inline
# styles, and only styles, are allowed there (scripts stay 'self'; workers need blob:).
REDOC_CSP = DOCS_CSP + "; style-src 'self' 'unsafe-inline'; worker-src 'self' blob:"
_SWAGGER_INIT = """\
window.ui = SwaggerUIBundle({
  url: document.body.dataset.openapi,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  persistAuthorization: false,
  oauth2RedirectUrl: window.location.origin + document.body.dataset.oauth2Redirect,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""


def bundled_assets() -> Path:
    """The directory holding swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js."""
    return Path(str(files("fastapi_offline") / "static"))


def _redirect_script() -> str:
    # FastAPI's OAuth2 redirect page, minus the <script> tags: served as a file.
    html = bytes(get_swagger_ui_oauth2_redirect_html().body).decode()
    match = re.search(r"<script>(.*)</script>", html, re.DOTALL)
    if match is None:
        raise RuntimeError("FastAPI's OAuth2 redirect page changed shape")
    return match.group(1)


def _page(
    title: str, head: str, body: str, attributes: str = "", csp: str = DOCS_CSP
) -> HTMLResponse:
    html = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="{ASSETS}/favicon.png"><title>{escape(title)}</title>{head}'
        f"</head><body{attributes}>{body}</body></html>"
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": csp})


def install_offline_docs(app: FastAPI, openapi_url: str) -> None:
    """Serve /docs (Swagger UI) and /redoc from bundled assets, under a self-only CSP."""
    title = app.title
    redirect_js = _redirect_script()
    spec = escape(openapi_url, quote=True)

    async def swagger_ui(request: Request) -> HTMLResponse:
        return _page(
            f"{title} - Swagger UI",
            f'<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">',
            f'<div id="swagger-ui"></div><script src="{ASSETS}/swagger-ui-bundle.js"></script>'
            f'<script src="/docs/swagger-init.js"></script>',
            f' data-openapi="{spec}" data-oauth2-redirect="{OAUTH2_REDIRECT}"',
        )

    async def swagger_init(request: Request) -> Response:
        return Response(_SWAGGER_INIT, media_type="text/javascript")

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return _page(
            f"{title} - OAuth2 redirect", "", '<script src="/docs/oauth2-redirect.js"></script>'
        )

    async def oauth2_redirect_js(request: Request) -> Response:
        return Response(redirect_js, media_type="text/javascript")

    async def redoc(request: Request) -> HTMLResponse:
        return _page(
            f"{title} - ReDoc",
            "",
            f'<redoc spec-url="{spec}"></redoc>'
            f'<script src="{ASSETS}/redoc.standalone.js"></script>',
            csp=REDOC_CSP,
        )

    for path, endpoint in (
        ("/docs", swagger_ui),
        ("/docs/swagger-init.js", swagger_init),
        (OAUTH2_REDIRECT, oauth2_redirect),
        ("/docs/oauth2-redirect.js", oauth2_redirect_js),
        ("/redoc", redoc),
    ):
        app.add_route(path, endpoint, include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=bundled_assets()), name="docs-assets")
