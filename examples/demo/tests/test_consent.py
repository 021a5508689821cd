"""The consent banner, the cookie policy, and the theme preferences cookie."""

from __future__ import annotations

import pytest
from demo_helpers import csrf_token, post_form
from flask.testing import FlaskClient


def _consent(client: FlaskClient, choice: str, *categories: str, next: str = "/") -> None:
    data: dict[str, object] = {"choice": choice, "next": next}
    if categories:
        data["category"] = list(categories)
    response = post_form(client, "/cookies", "/consent", **data)
    assert response.status_code == 302


def _theme(client: FlaskClient, value: str) -> str:
    response = post_form(client, "/cookies", "/theme", theme=value)
    assert response.status_code == 302
    return client.get("/cookies").get_data(as_text=True)


def test_banner_on_every_page_until_decided(client: FlaskClient) -> None:
    """Undecided visitors see the banner, with a CSRF token, on every page."""
    for path in ("/", "/set_cookie", "/session", "/security", "/login", "/cookies"):
        html = client.get(path).get_data(as_text=True)
        assert 'id="consent-banner"' in html, path
        banner = html[html.index('id="consent-banner"') :]
        assert 'value="all">Accept all' in banner
        assert 'value="essential"' in banner
        assert 'href="/cookies">Choose' in banner
        assert csrf_token(banner)


def test_accept_all(client: FlaskClient) -> None:
    """Accept all grants only the categories with cookies (essential, preferences)."""
    token = csrf_token(client.get("/set_cookie").data)
    response = client.post(
        "/consent", data={"csrf_token": token, "choice": "all", "next": "/set_cookie"}
    )
    assert response.headers["Location"] == "/set_cookie"
    header = next(h for h in response.headers.getlist("Set-Cookie") if "consent=" in h)
    assert header.startswith("__Host-consent=essential.preferences;")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Max-Age="):
        assert flag in header
    html = client.get("/").get_data(as_text=True)
    assert 'id="consent-banner"' not in html
    assert "Saved: essential cookies and preferences cookies." in html


def test_essentials_only(client: FlaskClient) -> None:
    """Essentials only is a decision too: the banner goes, only essential is allowed."""
    _consent(client, "essential")
    cookie = client.get_cookie("__Host-consent")
    assert cookie is not None
    assert cookie.value == "essential"
    html = client.get("/cookies").get_data(as_text=True)
    assert 'id="consent-banner"' not in html
    assert "You allowed:\n  essential." in html


def test_choose_categories(client: FlaskClient) -> None:
    """The policy page's form grants the categories ticked, and ignores unknown or empty ones."""
    _consent(client, "custom", "preferences", "no-such-category", "analytics", "marketing")
    cookie = client.get_cookie("__Host-consent")
    assert cookie is not None
    assert cookie.value == "essential.preferences"


def test_consent_needs_csrf(client: FlaskClient) -> None:
    """Consent cannot be forged by another site: the form needs its token."""
    response = client.post("/consent", data={"choice": "all"})
    assert response.status_code == 400
    assert client.get_cookie("__Host-consent") is None


def test_cross_site_post_refused(client: FlaskClient) -> None:
    """A form posted from another site is refused by the origin check, even with a token."""
    token = csrf_token(client.get("/cookies").data)
    response = client.post(
        "/consent",
        data={"csrf_token": token, "choice": "all"},
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "came from another site" in response.get_data(as_text=True)


def test_consent_next_must_be_local(client: FlaskClient) -> None:
    """The redirect after a choice stays on this site."""
    response = post_form(client, "/cookies", "/consent", choice="all", next="//evil.example/")
    assert response.headers["Location"] == "/cookies"


def test_theme_not_set_without_consent(client: FlaskClient) -> None:
    """Before consent to preferences, the theme cookie is not set."""
    response = post_form(client, "/cookies", "/theme", theme="dark")
    assert not [h for h in response.headers.getlist("Set-Cookie") if "theme=" in h]
    html = client.get("/cookies").get_data(as_text=True)
    assert "Not saved" in html
    assert 'data-theme="dark"' not in html


def test_theme_not_set_with_essentials_only(client: FlaskClient) -> None:
    """Essentials only: still no theme cookie."""
    _consent(client, "essential")
    _theme(client, "dark")
    assert client.get_cookie("__Host-theme") is None


def test_theme_set_after_consent(client: FlaskClient) -> None:
    """With consent to preferences, the theme is saved in a signed cookie and applied."""
    _consent(client, "custom", "preferences")
    html = _theme(client, "dark")
    assert "Theme saved: dark" in html
    assert '<html lang="en" data-theme="dark">' in html
    cookie = client.get_cookie("__Host-theme")
    assert cookie is not None
    assert cookie.value != "dark"  # signed: value, timestamp and signature
    assert '<html lang="en" data-theme="dark">' in client.get("/").get_data(as_text=True)


def test_withdrawing_consent_deletes_theme(client: FlaskClient) -> None:
    """Withdrawing consent deletes the theme cookie on the very next response."""
    _consent(client, "all")
    _theme(client, "light")
    assert client.get_cookie("__Host-theme") is not None
    token = csrf_token(client.get("/cookies").data)
    response = client.post("/consent", data={"csrf_token": token, "choice": "essential"})
    deleting = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("__Host-theme=")]
    assert deleting
    assert "Max-Age=0" in deleting[0]
    assert client.get_cookie("__Host-theme") is None
    assert "data-theme" not in client.get("/").get_data(as_text=True)


def test_tampered_theme_is_ignored(client: FlaskClient) -> None:
    """A theme cookie changed by the client reads as no theme."""
    _consent(client, "all")
    client.set_cookie("__Host-theme", "dark")
    html = client.get("/").get_data(as_text=True)
    assert "data-theme" not in html


@pytest.mark.parametrize("value", ["", "purple", "dark; Secure"])
def test_theme_refuses_unknown_values(client: FlaskClient, value: str) -> None:
    """Only the offered themes are accepted."""
    _consent(client, "all")
    html = _theme(client, value)
    assert "Pick one of the themes offered." in html
    assert client.get_cookie("__Host-theme") is None


def test_policy_lists_every_cookie(client: FlaskClient) -> None:
    """The policy page lists the session, consent and every declared cookie, and nothing else."""
    html = client.get("/cookies").get_data(as_text=True)
    table = html[html.index('id="policy"') : html.index("</table>")]
    names = [part.split("</code>")[0] for part in table.split("<tr><td><code>")[1:]]
    assert names == [
        "__Host-session",
        "remember_token",
        "__Host-session_remember",
        "__Host-consent",
        "__Host-theme",
        "__Host-last_visit",
        "flask_tutorial",
        "__Host-script_visible",
    ]
    assert "preferences" in table
    assert "365 days" in table
    assert "signed" in table


def test_policy_offers_only_used_categories(client: FlaskClient) -> None:
    """The choice form offers the categories the demo has cookies in."""
    html = client.get("/cookies").get_data(as_text=True)
    assert 'id="category-essential"' in html
    assert 'id="category-preferences"' in html
    assert 'id="category-analytics"' not in html


def test_banner_lists_only_categories_with_cookies(client: FlaskClient) -> None:
    """The banner names preferences, and neither analytics nor marketing, which have no cookie."""
    html = client.get("/").get_data(as_text=True)
    banner = html[html.index('id="consent-banner"') : html.index("</section>")]
    assert "preferences cookies" in banner
    assert '"Accept all" allows\n  essential and preferences cookies and nothing more.' in banner
    assert "analytics" not in banner
    assert "marketing" not in banner


def test_policy_says_only_used_categories_are_offered(client: FlaskClient) -> None:
    """The policy page says what is offered, and that analytics and marketing are not."""
    html = client.get("/cookies").get_data(as_text=True)
    assert "Only categories with at least one cookie" in html
    assert "(essential, preferences)" in html
    assert "This demo has no analytics or marketing cookies" in html


def _policy_rows(html: str) -> dict[str, str]:
    table = html[html.index('id="policy"') : html.index("</table>")]
    rows = {}
    for part in table.split("<tr><td><code>")[1:]:
        name, _, rest = part.partition("</code>")
        rows[name] = rest[: rest.index("</tr>")]
    return rows


def test_policy_in_production_mode_shows_development_beside(client: FlaskClient) -> None:
    """Production: __Host- names with Secure, the development names and flags beside them."""
    html = client.get("/cookies").get_data(as_text=True)
    assert "<strong>production (HTTPS)</strong> mode" in html
    rows = _policy_rows(html)
    assert "Secure, HttpOnly, SameSite=Lax" in rows["__Host-session"]
    assert (
        '<code class="name">session</code><br>HttpOnly, SameSite=Lax</td>' in rows["__Host-session"]
    )
    assert '<code class="name">consent</code><br>HttpOnly' in rows["__Host-consent"]
    # Flask-Login's cookie is Secure outside debug mode (the demo sets REMEMBER_COOKIE_SECURE).
    assert "<td>Secure, HttpOnly, SameSite=Lax, signed</td>" in rows["remember_token"]
    assert (
        '<code class="name">remember_token</code><br>HttpOnly, SameSite=Lax, signed</td>'
        in (rows["remember_token"])
    )
    assert "<td>1 hour</td>" in rows["__Host-script_visible"]


def test_policy_in_development_mode_names_what_the_browser_holds(make_app) -> None:  # type: ignore[no-untyped-def]
    """Development on localhost: the table names the cookies as sent here, production beside."""
    client = make_app(KEEPSAKE_COOKIE_SECURE="auto").test_client()
    html = client.get("/cookies").get_data(as_text=True)
    assert "<strong>development (plain HTTP on localhost" in html
    rows = _policy_rows(html)
    assert list(rows) == [
        "session",
        "remember_token",
        "session_remember",
        "consent",
        "theme",
        "last_visit",
        "flask_tutorial",
        "script_visible",
    ]
    assert "<td>HttpOnly, SameSite=Lax</td>" in rows["session"]
    assert (
        '<code class="name">__Host-session</code><br>Secure, HttpOnly, SameSite=Lax'
        in rows["session"]
    )
    assert '<code class="name">flask_tutorial</code><br>Secure, HttpOnly' in rows["flask_tutorial"]
    # What the pages really send in this mode, by name.
    sent = client.get("/").headers.getlist("Set-Cookie")
    sent += client.get("/last-visit").headers.getlist("Set-Cookie")
    sent += client.get("/security").headers.getlist("Set-Cookie")
    for header in sent:
        name = header.split("=", 1)[0]
        assert name in rows, name
        assert "Secure" not in header, header
