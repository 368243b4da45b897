"""/docs and /redoc work offline, under a self-only CSP, in a real headless Chromium.

A real `keel serve` process (on the test's database) serves the pages; Chromium may reach
that server and nothing else: any other request is aborted and fails the test.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from keel.core.docs import DOCS_CSP, REDOC_CSP
from tests.deploy.support import clean_environ, wait_for
from tests.processes import free_port

CHROMIUM = "/usr/bin/chromium"
PASSWORD = secrets.token_urlsafe(16)


@pytest.fixture
def server(test_database_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = clean_environ() | {
        "DATABASE_URL": test_database_url,
        "KEEL_DATA_DIR": str(tmp_path / "data"),
        "KEEL_AUTO_MIGRATE": "false",
        "ENVIRONMENT": "development",
        "DOCS_ENABLED": "true",
        "WORKER_ENABLED": "false",
        "LOG_JSON": "true",
    }
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "keel", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail((tmp_path / "serve.log").read_text())
        try:
            return httpx.get(f"{base}/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, "keel serve")
        yield base
    finally:
        proc.terminate()
        proc.wait(60)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


class OfflinePage:
    """A page that may only reach `base`; records what else it tried and every console error."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.page: Page = browser.new_page()
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._only_base(base))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _only_base(self, base: str) -> Callable[[Route], None]:
        def handle(route: Route) -> None:
            url = route.request.url
            if url.startswith((base + "/", "data:", "blob:")):
                route.continue_()
            else:
                self.outside.append(url)
                route.abort()

        return handle


def test_swagger_ui_renders_and_authorize_signs_in(server: str, browser: Browser) -> None:
    username = f"docs{secrets.token_hex(4)}"
    signup = httpx.post(
        f"{server}/api/v1/auth/signup",
        json={"email": f"{username}@example.com", "username": username, "password": PASSWORD},
    )
    assert signup.status_code == 201, signup.text

    offline = OfflinePage(browser, server)
    page = offline.page
    response = page.goto(f"{server}/docs")
    assert response is not None
    assert response.headers["content-security-policy"] == DOCS_CSP
    page.wait_for_selector(".opblock")
    assert page.locator(".opblock").count() >= 20
    assert page.locator(".opblock-summary-path", has_text="/api/v1/auth/login").count() >= 1

    page.locator(".auth-wrapper button.authorize").click()
    page.fill("#oauth_username", username)
    page.fill("#oauth_password", PASSWORD)
    page.locator(".auth-btn-wrapper button.authorize").click()
    page.wait_for_selector(".auth-btn-wrapper button:has-text('Logout')")
    authorized = page.evaluate("() => window.ui.authSelectors.authorized().toJS()")
    assert authorized["AccessTokenBearer"]["token"]["access_token"]
    page.locator(".auth-btn-wrapper button.btn-done").click()

    # The token is used: "Try it out" on My account answers 200 with this account.
    me = page.locator(".opblock-get", has=page.locator("[data-path='/api/v1/users/me']"))
    me.first.locator(".opblock-summary").click()
    me.first.locator("button.try-out__btn").click()
    me.first.locator("button.execute").click()
    status = me.first.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert username in me.first.locator(".live-responses-table .microlight").first.inner_text()

    assert offline.outside == []
    assert offline.errors == []


def test_redoc_renders_offline(server: str, browser: Browser) -> None:
    offline = OfflinePage(browser, server)
    response = offline.page.goto(f"{server}/redoc")
    assert response is not None
    assert response.headers["content-security-policy"] == REDOC_CSP
    offline.page.wait_for_selector("[data-section-id]")  # ReDoc's rendered sections
    assert offline.page.get_by_text("/api/v1/auth/login").count() >= 1
    assert offline.outside == []
    # ReDoc's footer always asks Redocly's CDN for a logo; the CSP blocks it, ReDoc hides
    # the image. Nothing else may be refused (no inline script, no other remote load).
    remote_logo = "Loading the image 'https://cdn.redoc.ly/redoc/logo-mini.svg'"
    assert [e for e in offline.errors if remote_logo not in e] == []


def test_docs_assets_come_from_keel(server: str) -> None:
    html = httpx.get(f"{server}/docs").text
    assert "cdn" not in html.lower()
    js = httpx.get(f"{server}/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200
    assert "SwaggerUIBundle" in js.text[:200_000]
