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
    assert page.inner_text("#document-cookie") == "script_visible=page-script-can-read-me"
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


#: Every page of the demo (the signed-in ones last).
PAGES = (
    "/",
    "/set_cookie",
    "/read_cookie",
    "/delete_cookie",
    "/last-visit",
    "/session/remember",
    "/session/hello",
    "/session/forget",
    "/session/flask",
    "/session",
    "/security",
    "/cookies",
    "/login",
    "/register",
    "/no-such-page",
    "/sessions",
    "/password",
)
SIGNED_IN_PAGES = ("/sessions", "/password")


def _overflow(page: Page) -> int:
    width: int = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return width


def _fill_the_session(page: Page) -> None:
    page.goto("/session/remember")
    page.fill("#name", "Ada")
    page.click("form.stack button[type=submit]")
    page.wait_for_selector("#kept")


def test_readable_on_a_phone(new_context: Any) -> None:
    """At 390 px (a phone) no page scrolls sideways, forms and tables included."""
    context = new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    sign_in(page)
    _fill_the_session(page)
    for path in PAGES:
        page.goto(path)
        assert _overflow(page) <= 0, path
    page.goto("/")
    screenshot(page, "home-phone")
    page.goto("/session/flask")
    screenshot(page, "session-flask-phone")


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


def test_session_lesson_in_browser(new_context: Any) -> None:
    """Remember a name, read it on another page, forget it: the session lives on."""
    context = new_context()
    page = context.new_page()
    page.goto("/session/remember")
    page.fill("#name", "<b>Ada</b>")
    page.click("form.stack button[type=submit]")
    page.wait_for_selector("#kept")
    assert "<b>Ada</b>" in page.inner_text("#kept")  # shown as text
    assert "name" in page.inner_text("#after")
    assert "name" not in page.inner_text("#before")
    screenshot(page, "session-remember")
    handle = page.inner_text("#after .handle")

    page.click("text=Open another page that reads it")
    assert page.inner_text("#greeting") == "Hello, <b>Ada</b>!"
    page.goto("/session/flask")
    assert '"name": "<b>Ada</b>"' in page.inner_text("#flask-decoded")
    session = cookies_by_name(context)["session"]["value"]
    assert session not in page.content()
    assert f"session={session[:4]}…" in page.inner_text("#keepsake-cookie")
    screenshot(page, "session-flask")

    page.goto("/session/hello")
    page.click("form[action='/session/forget'] button")
    page.wait_for_selector("#forgot")
    assert "removed <b>Ada</b>, and only that" in page.inner_text("#forgot")
    assert page.inner_text("#after .handle") == handle
    assert cookies_by_name(context)["session"]["value"] == session
    screenshot(page, "session-forget")
    page.goto("/session/hello")
    assert page.inner_text("#greeting") == "Hello, stranger!"


def test_set_cookie_with_your_own_value(new_context: Any) -> None:
    """The set-cookie form: Chromium keeps the chosen value for the chosen max_age."""
    context = new_context()
    page = context.new_page()
    page.goto("/set_cookie")
    page.fill("#value", "chocolate chip")
    page.fill("#max_age", "3600")
    page.click("form[action='/set_cookie'] button")
    page.wait_for_selector("#chosen-value")
    cookie = cookies_by_name(context)["flask_tutorial"]
    assert cookie["expires"] > 0  # a persistent cookie now
    page.goto("/read_cookie")
    assert page.inner_text("#value") == "chocolate chip"

    page.goto("/set_cookie")
    page.fill("#max_age", "-1")
    page.click("form[action='/set_cookie'] button")
    assert "from 1 to 34560000" in page.inner_text("main")
    assert "Cookie not set" in page.inner_text("h1")


def test_remember_me_flow(server: LiveServer, new_context: Any) -> None:
    """Keep me signed in; the devices page says so; revoked, the remember cookie is worthless."""
    laptop = new_context()
    page = laptop.new_page()
    page.goto("/login")
    page.fill("#username", "demo")
    page.fill("#password", "demo-password")
    page.check("#remember")
    page.click("form.stack button[type=submit]")
    page.wait_for_selector("text=Signed in as")
    jar = cookies_by_name(laptop)
    assert jar["session"]["expires"] > 0  # outlives the browser
    remembered = [
        {"name": name, "value": jar[name]["value"], "url": server.url}
        for name in ("remember_token", "session_remember")
    ]

    # A browser restart keeps only persistent cookies; the remember cookies alone sign in.
    restarted = new_context()
    restarted.add_cookies(remembered)
    probe = restarted.new_page()
    probe.goto("/")
    assert "You are signed in as demo" in probe.inner_text("main")
    restarted.close()

    page.goto("/sessions")
    mine = page.locator("li.device.current")
    assert "remembered" in mine.inner_text()
    assert "Remembered: stays signed in" in mine.inner_text()
    assert "no longer signs it back in" in page.inner_text("#revoke-remembered")
    handle = mine.get_attribute("data-handle")
    screenshot(page, "sessions-remembered")

    phone = new_context()
    phone_page = phone.new_page()
    sign_in(phone_page)
    phone_page.goto("/sessions")
    phone_page.click(f"li[data-handle='{handle}'] button")
    phone_page.wait_for_selector("text=That device is signed out")

    page.goto("/")
    assert "You are not signed in" in page.inner_text("main")
    again = new_context()
    again.add_cookies(remembered)
    probe = again.new_page()
    probe.goto("/")
    assert "You are not signed in" in probe.inner_text("main")
    assert "remember_token" not in cookies_by_name(again)  # cleared, not just ignored


def test_contrast_cookie_visible_to_script(new_context: Any) -> None:
    """document.cookie shows the non-HttpOnly contrast cookie and not the session cookie."""
    context = new_context()
    page = context.new_page()
    page.goto("/")
    page.goto("/security")
    seen = page.evaluate("document.cookie")
    assert "script_visible=page-script-can-read-me" in seen
    assert "session=" not in seen
    assert "is there: without HttpOnly" in page.inner_text("#contrast-verdict")
    assert "HttpOnly hides it from script" in page.inner_text("#document-cookie-verdict")
    assert cookies_by_name(context)["script_visible"]["httpOnly"] is False


def test_no_errors_and_no_404_on_any_page(new_context: Any) -> None:
    """Every page loads with no failed request (the favicon included) and no console error."""
    context = new_context()
    page = context.new_page()
    failed: list[str] = []
    errors: list[str] = []
    loaded: list[str] = []
    page.on("response", lambda r: loaded.append(r.url))
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/no-such-page")
            else None
        ),
    )
    page.on(
        "console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    sign_in(page)
    _fill_the_session(page)
    for path in PAGES:
        if path == "/no-such-page":
            continue
        page.goto(path)
        page.wait_for_load_state("load")
    # Chromium fetches the icon outside the page's own requests: ask for it as it does.
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert icon == page.url.split("/", 3)[0] + "//" + page.url.split("/", 3)[2] + "/favicon.ico"
    status = page.evaluate(f"fetch({icon!r}).then(r => [r.status, r.headers.get('content-type')])")
    assert status == [200, "image/vnd.microsoft.icon"]
    assert loaded  # the listener saw the pages' requests
    assert failed == []
    assert errors == []


def test_every_page_works_without_javascript(browser: Browser, server: LiveServer) -> None:
    """With JavaScript off every page renders, and the forms (sign-in, session lesson) work."""
    context = browser.new_context(base_url=server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto("/")
        page.click("#consent-banner button[value=essential]")
        assert page.locator("#consent-banner").count() == 0
        sign_in(page)
        _fill_the_session(page)
        for path in PAGES:
            response = page.goto(path)
            assert response is not None
            expected = 404 if path == "/no-such-page" else 200
            assert response.status == expected, path
            assert page.locator("h1").count() == 1, path
        page.goto("/security")
        assert "JavaScript is off" in page.inner_text("#document-cookie")
        page.goto("/session/hello")
        page.click("form[action='/session/forget'] button")
        page.wait_for_selector("#forgot")
        page.goto("/sessions")
        page.click("li.device.current button")
        page.wait_for_selector("text=You signed out this device.")
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_light_and_dark(new_context: Any, scheme: str) -> None:
    """The system's colour scheme picks the palette on every page; text stays readable."""
    context = new_context(color_scheme=scheme)
    page = context.new_page()
    sign_in(page)
    expected = {"light": "rgb(253, 252, 250)", "dark": "rgb(22, 24, 28)"}[scheme]
    for path in PAGES:
        page.goto(path)
        colours = page.evaluate(
            "(() => { const s = getComputedStyle(document.body);"
            " return [s.backgroundColor, s.color]; })()"
        )
        assert colours[0] == expected, path
        assert colours[0] != colours[1], path
    if scheme == "dark":
        page.goto("/session/remember")
        screenshot(page, "session-remember-dark")


def test_keyboard_focus_is_visible(new_context: Any) -> None:
    """Tabbing through a page, every focused link, field and button has a visible outline."""
    context = new_context()
    page = context.new_page()
    for path in ("/", "/session/remember", "/set_cookie", "/login", "/cookies"):
        page.goto(path)
        seen = set()
        for _ in range(12):
            page.keyboard.press("Tab")
            focus = page.evaluate(
                "(() => { const e = document.activeElement; const s = getComputedStyle(e);"
                " return [e.tagName, e.id || e.getAttribute('href') || e.textContent.trim(),"
                " s.outlineStyle, s.outlineWidth]; })()"
            )
            if focus[0] == "BODY":
                continue
            seen.add(focus[0])
            assert focus[2] == "solid", (path, focus)
            assert focus[3] == "3px", (path, focus)
        assert "A" in seen, path
    page.goto("/session/remember")
    page.focus("#name")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.tagName") == "BUTTON"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"


def test_policy_names_the_cookies_chromium_holds(new_context: Any) -> None:
    """In development mode the policy table names each cookie as the browser holds it."""
    context = new_context()
    page = context.new_page()
    sign_in(page)
    for path in ("/last-visit", "/set_cookie", "/security"):
        page.goto(path)
    page.goto("/cookies")
    assert "development" in page.inner_text("#policy-mode")
    names = page.eval_on_selector_all(
        "#policy tbody tr td:first-child code", "els => els.map(e => e.textContent)"
    )
    for name, cookie in cookies_by_name(context).items():
        assert name in names, name
        assert cookie["secure"] is False, name
    screenshot(page, "cookies-policy")
