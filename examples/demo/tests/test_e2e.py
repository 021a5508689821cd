"""End-to-end: the demo in real headless Chromium, driven by Playwright, on a real server.

The server runs in development mode's cookie setting (``KEEPSAKE_COOKIE_SECURE = "auto"``, what
``keepsake-demo`` uses), except where a test says otherwise. Screenshots of the main pages go to
``docs/images/`` when missing there, or always with ``KEEPSAKE_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from demo_servers import CHROMIUM_ARGS, IMAGES, LiveServer, live_server, require_browser

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.slow

TIMEZONE = "Asia/Tokyo"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, shared by the tests of this module."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The demo on a free loopback port, in development mode's cookie setting."""
    live = live_server(tmp_path_factory.mktemp("e2e"), KEEPSAKE_COOKIE_SECURE="auto")
    yield live
    live.stop()


@pytest.fixture
def new_context(browser: Browser, server: LiveServer) -> Iterator[Any]:
    """Make browser contexts (separate cookie jars, like separate devices) for one test."""
    contexts: list[BrowserContext] = []

    def factory(*, decided: bool = True, **options: Any) -> BrowserContext:
        options.setdefault("viewport", {"width": 1000, "height": 800})
        context = browser.new_context(
            base_url=server.url, timezone_id=TIMEZONE, locale="en-US", **options
        )
        context.set_default_timeout(10_000)
        if decided:
            # Essentials only, decided beforehand: keeps the banner out of the screenshots.
            context.add_cookies(
                [
                    {
                        "name": "consent",
                        "value": "essential",
                        "url": server.url,
                        "httpOnly": True,
                        "sameSite": "Lax",
                    }
                ]
            )
        contexts.append(context)
        return context

    yield factory
    for context in contexts:
        context.close()


def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot for the docs (see the module docstring)."""
    target = IMAGES / f"{name}.png"
    if not IMAGES.parent.is_dir():
        return
    if target.exists() and os.environ.get("KEEPSAKE_UPDATE_SCREENSHOTS") != "1":
        page.screenshot(full_page=True)  # still render it, as a check
        return
    IMAGES.mkdir(exist_ok=True)
    page.screenshot(path=str(target), full_page=True)


def cookies_by_name(context: BrowserContext) -> dict[str, Any]:
    """The context's cookies, by name."""
    return {c["name"]: c for c in context.cookies()}


def sign_in(page: Page, username: str = "demo", password: str = "demo-password") -> None:
    """Sign in through the form."""
    page.goto("/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form.stack button[type=submit]")
    page.wait_for_selector("text=Signed in as")


def test_tutorial_cookie_routes_in_browser(new_context: Any) -> None:
    """/set_cookie, /read_cookie and /delete_cookie as Chromium stores them."""
    context = new_context()
    page = context.new_page()
    page.goto("/set_cookie")
    cookie = cookies_by_name(context)["flask_tutorial"]
    assert cookie["value"] == '"Hello World"'
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["secure"] is False  # development mode on plain-HTTP loopback
    assert cookie["expires"] == -1  # a session cookie
    assert 'flask_tutorial="Hello World"; HttpOnly; Path=/; SameSite=Lax' in page.inner_text(
        "#header"
    )
    screenshot(page, "set-cookie")

    page.goto("/read_cookie")
    assert page.inner_text("#value") == "Hello World"
    screenshot(page, "read-cookie")

    page.goto("/delete_cookie")
    assert "flask_tutorial" not in cookies_by_name(context)
    page.goto("/read_cookie")
    assert page.inner_text("#value") == "None"


def test_httponly_hides_session_cookie(new_context: Any) -> None:
    """The session cookie exists in the browser, but page script cannot see it."""
    context = new_context()
    page = context.new_page()
    page.goto("/")
    session = cookies_by_name(context)["session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Lax"
    page.goto("/security")
    assert "session" not in page.evaluate("document.cookie")
    assert page.inner_text("#document-cookie") == '"" (an empty string)'
    assert "HttpOnly hides it from script" in page.inner_text("#document-cookie-verdict")
    assert "session" in page.inner_text("#received")
    screenshot(page, "security")


def test_login_and_logout(server: LiveServer, new_context: Any) -> None:
    """Sign in rotates the cookie; sign out ends the session, and the old cookie is worthless."""
    context = new_context()
    page = context.new_page()
    page.goto("/login")
    assert "demo-password" in page.inner_text("main")
    screenshot(page, "login")
    page.goto("/")
    before = cookies_by_name(context)["session"]["value"]
    sign_in(page)
    after = cookies_by_name(context)["session"]["value"]
    assert after != before
    page.goto("/")
    assert "You are signed in as demo" in page.inner_text("main")
    screenshot(page, "home")
    page.goto("/session")
    assert "demo (id 1)" in page.inner_text("main")
    assert after not in page.content()
    screenshot(page, "session")

    page.click("header form button:has-text('Sign out')")
    page.wait_for_selector("text=You are signed out")
    assert cookies_by_name(context)["session"]["value"] != after

    replay = new_context()
    replay.add_cookies([{"name": "session", "value": after, "url": server.url}])
    other = replay.new_page()
    other.goto("/")
    assert "You are not signed in" in other.inner_text("main")


def test_revoke_other_device(new_context: Any) -> None:
    """Two browsers signed in; revoking one from the other signs it out."""
    laptop, phone = new_context(), new_context()
    laptop_page, phone_page = laptop.new_page(), phone.new_page()
    sign_in(laptop_page)
    sign_in(phone_page)
    phone_handle = phone_page.evaluate("fetch('/api/session').then(r => r.json())")["handle"]

    laptop_page.goto("/sessions")
    assert laptop_page.locator("li.device").count() == 2
    screenshot(laptop_page, "sessions")
    laptop_page.click(f"li[data-handle='{phone_handle}'] button")
    laptop_page.wait_for_selector("text=That device is signed out")
    assert laptop_page.locator("li.device").count() == 1

    phone_page.reload()
    assert "You are not signed in" in phone_page.inner_text("main")
    phone_page.goto("/api/session")
    assert json.loads(phone_page.inner_text("body"))["user"] is None


def test_consent_gates_theme_cookie(new_context: Any) -> None:
    """The theme cookie is only set after consent to preferences, and goes when it is withdrawn."""
    context = new_context(decided=False)
    page = context.new_page()
    page.goto("/cookies")
    assert page.locator("#consent-banner").is_visible()
    screenshot(page, "cookies")

    page.check("#theme-dark")
    page.click("form[action='/theme'] button")
    page.wait_for_selector("text=Not saved")
    assert "theme" not in cookies_by_name(context)

    page.click("#consent-banner button[value=all]")
    page.wait_for_selector("text=Saved: essential cookies and")
    assert page.locator("#consent-banner").count() == 0
    assert cookies_by_name(context)["consent"]["httpOnly"] is True

    page.check("#theme-dark")
    page.click("form[action='/theme'] button")
    page.wait_for_selector("text=Theme saved: dark")
    theme = cookies_by_name(context)["theme"]
    assert theme["httpOnly"] is True
    assert theme["value"] != "dark"  # signed
    assert page.get_attribute("html", "data-theme") == "dark"
    page.goto("/")
    screenshot(page, "home-dark")

    page.goto("/cookies")
    page.uncheck("#category-preferences")
    page.click("form[action='/consent'] button[value=custom]")
    page.wait_for_selector("text=Saved: essential cookies only.")
    assert "theme" not in cookies_by_name(context)
    assert page.get_attribute("html", "data-theme") is None


def test_last_visit_on_second_visit(new_context: Any) -> None:
    """The second visit shows the first one's time, in the browser's time zone."""
    context = new_context()
    page = context.new_page()
    page.goto("/last-visit")
    assert "This is your first visit" in page.inner_text("#last-visit")
    page.reload()
    text = page.inner_text("#last-visit")
    assert text.startswith("Your last visit was ")
    assert f"(your time zone: {TIMEZONE})" in text
    assert "GMT+9" in text  # shown in Tokyo time, not UTC
    screenshot(page, "last-visit")


def test_readable_on_a_phone(new_context: Any) -> None:
    """On a phone-sized screen no page scrolls sideways."""
    context = new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    sign_in(page)
    for path in ("/", "/set_cookie", "/session", "/sessions", "/security", "/cookies"):
        page.goto(path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, path
    page.goto("/")
    screenshot(page, "home-phone")


def test_production_cookie_in_chromium(browser: Browser, tmp_path: Path) -> None:
    """With KEEPSAKE_COOKIE_SECURE=True, Chromium keeps the __Host- Secure cookies on localhost."""
    live = live_server(tmp_path, KEEPSAKE_COOKIE_SECURE=True)
    try:
        context = browser.new_context(base_url=live.url)
        try:
            page = context.new_page()
            page.goto("/")
            page.click("#consent-banner button[value=essential]")
            sign_in(page)
            cookies = cookies_by_name(context)
            session = cookies["__Host-session"]
            assert session["secure"] is True
            assert session["httpOnly"] is True
            assert cookies["__Host-consent"]["secure"] is True
            page.goto("/security")
            assert "This is the production cookie." in page.inner_text("main")
            assert re.search(
                r"__Host-session=<43-character random token>; Secure",
                page.inner_text("#cookie-here"),
            )
        finally:
            context.close()
    finally:
        live.stop()
