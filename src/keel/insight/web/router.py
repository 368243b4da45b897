"""The dashboard's pages and static files at `/admin/db` (no data: that comes from the API).

Each page is the same document, rendered by Jinja2 with every view in it; the script shows
the one asked for, signs in through `/api/v1/auth/login`, keeps the access token in memory
only, and sends it as a bearer header. No cookie is involved, so there is nothing for a
cross-site request to ride on (CSRF); every value is written with `textContent` (XSS);
the strict CSP below allows only Keel's own scripts and styles, nothing inline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from keel.core.errors import NotFound

BASE = "/admin/db"
HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Page:
    slug: str
    title: str

    @property
    def path(self) -> str:
        return BASE if self.slug == "overview" else f"{BASE}/{self.slug}"


PAGES = (
    Page("overview", "Overview"),
    Page("queries", "Queries"),
    Page("activity", "Live"),
    Page("space", "Space"),
    Page("indexes", "Indexes"),
    Page("io", "I/O"),
    Page("settings", "Settings"),
)
BY_SLUG = {page.slug: page for page in PAGES}

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
router = APIRouter(prefix=BASE, include_in_schema=False)


class StaticWithCsp(StaticFiles):
    """Static files under the same policy (a stray HTML file could not run scripts)."""

    def file_response(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


static = StaticWithCsp(directory=HERE / "static")


def _render(page: Page) -> HTMLResponse:
    html = templates.get_template("dashboard.html").render(
        pages=PAGES, current=page, base=BASE, static=f"{BASE}/static"
    )
    return HTMLResponse(html, headers=HEADERS)


@router.get("")
async def overview_page() -> HTMLResponse:
    return _render(BY_SLUG["overview"])


@router.get("/{slug}")
async def page(slug: str) -> HTMLResponse:
    found = BY_SLUG.get(slug)
    if found is None or found.slug == "overview":
        raise NotFound("No such dashboard page.")
    return _render(found)
