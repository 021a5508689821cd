"""Home, the session inspector, the security page, the headers and the error pages."""

from __future__ import annotations

from demo_helpers import api, session_cookie, sign_in, store_down
from flask import Flask
from flask.testing import FlaskClient

from flask_keepsake.testing import login_client


def test_home_counts_visits(client: FlaskClient) -> None:
    """The home page counts visits in the server-side session."""
    assert b'id="visits">1<' in client.get("/").data
    assert b'id="visits">2<' in client.get("/").data


def test_home_links_every_lesson(client: FlaskClient) -> None:
    """The home page links to every lesson."""
    html = client.get("/").get_data(as_text=True)
    for path in (
        "/set_cookie",
        "/read_cookie",
        "/delete_cookie",
        "/last-visit",
        "/login",
        "/session",
        "/api/session",
        "/sessions",
        "/password",
        "/security",
        "/cookies",
    ):
        assert f'href="{path}"' in html, path


def test_home_says_who_you_are(client: FlaskClient) -> None:
    """Anonymous visitors are invited to sign in; signed-in ones are named."""
    assert "You are not signed in" in client.get("/").get_data(as_text=True)
    sign_in(client)
    assert "You are signed in as <strong>demo</strong>" in client.get("/").get_data(as_text=True)


def test_session_cookie_is_production_grade(client: FlaskClient) -> None:
    """Outside development mode the session cookie is __Host-, Secure, HttpOnly, SameSite=Lax."""
    header = client.get("/").headers["Set-Cookie"]
    assert header.startswith("__Host-session=")
    for flag in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
        assert flag in header


def test_inspector_anonymous_without_session(client: FlaskClient) -> None:
    """A first visit to the inspector explains that nothing is stored yet."""
    html = client.get("/session").get_data(as_text=True)
    assert "There was no stored session for you" in html
    assert "a session starts with this very page" in html  # the banner's CSRF secret
    assert "<code>csrf_token</code>" in client.get("/session").get_data(as_text=True)


def test_inspector_shows_keys_and_facts_never_the_token(client: FlaskClient) -> None:
    """The inspector lists keys, values, handle and times, and never the token."""
    client.get("/")
    html = client.get("/session").get_data(as_text=True)
    _, token = session_cookie(client)
    assert token not in html
    assert "<code>visits</code>" in html
    assert api(client)["handle"] in html
    for label in ("Created", "Last seen", "Ends if unused until", "Ends at the latest"):
        assert label in html


def test_inspector_hides_csrf_secret(client: FlaskClient) -> None:
    """The CSRF secret is named but its value is not shown."""
    client.get("/login")
    with client.session_transaction() as sess:
        secret = sess["csrf_token"]
    html = client.get("/session").get_data(as_text=True)
    assert "<code>csrf_token</code>" in html
    assert secret not in html


def test_inspector_signed_in(client: FlaskClient) -> None:
    """Signed in, the inspector names the user and the time of sign-in, and says it is fresh."""
    sign_in(client)
    html = client.get("/session").get_data(as_text=True)
    assert "demo (id 1)" in html
    assert "fresh: within the last 10 minutes" in html


def test_inspector_stale_cookie(client: FlaskClient) -> None:
    """A cookie the server does not know is explained, not adopted."""
    client.set_cookie("__Host-session", "A" * 43)
    html = client.get("/session").get_data(as_text=True)
    assert "the server has no session for it" in html


def test_api_session_anonymous(client: FlaskClient) -> None:
    """An anonymous visitor gets 200 with "user": null and no cookie."""
    response = client.get("/api/session")
    assert response.status_code == 200
    assert response.get_json() == {
        "user": None,
        "handle": None,
        "keys": [],
        "created": None,
        "last_seen": None,
        "expires": None,
        "absolute_expires": None,
        "auth_time": None,
    }
    assert "Set-Cookie" not in response.headers
    assert "no-store" in response.headers["Cache-Control"]


def test_api_session_signed_in(client: FlaskClient) -> None:
    """Signed in, the JSON names the user, the handle, the keys and the times."""
    sign_in(client)
    client.get("/")
    body = api(client)
    assert body["user"] == "demo"
    assert len(body["handle"]) == 16
    assert "visits" in body["keys"]
    assert "_user_id" in body["keys"]
    for key in ("created", "last_seen", "expires", "absolute_expires", "auth_time"):
        assert body[key].endswith("Z"), key


def test_api_session_with_login_client(app: Flask) -> None:
    """The testing helper's sessions show up like any other."""
    client = app.test_client()
    handle = login_client(client, 1)
    body = api(client)
    assert body["user"] == "demo"
    assert body["handle"] == handle


def test_security_page_shows_both_cookies(make_app) -> None:  # type: ignore[no-untyped-def]
    """In development mode the page shows the loopback cookie beside the production one."""
    app = make_app(KEEPSAKE_COOKIE_SECURE="auto")
    client = app.test_client()
    client.get("/")
    html = client.get("/security").get_data(as_text=True)
    here = 'id="cookie-here">Set-Cookie: session=&lt;43-character random token&gt;; HttpOnly'
    assert here in html
    assert "__Host-session=&lt;43-character random token&gt;; Secure; HttpOnly" in html
    assert 'data-session-cookie="session"' in html
    assert "<li><code>session</code></li>" in html


def test_security_page_production(client: FlaskClient) -> None:
    """In production mode the cookie sent is the production cookie."""
    html = client.get("/security").get_data(as_text=True)
    assert "This is the production cookie." in html
    assert 'data-session-cookie="__Host-session"' in html


def test_security_headers(client: FlaskClient) -> None:
    """Pages carry a strict CSP and are never cached."""
    response = client.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response.headers["Cache-Control"]


def test_static_files_without_a_session_cookie_do_not_touch_the_store(app: Flask) -> None:
    """A stylesheet request of a visitor without a session makes no store call."""
    with store_down(app):
        response = app.test_client().get("/static/style.css")
        assert response.status_code == 200
        response.close()


def test_static_files_with_a_session_cookie_cost_flask_logins_read(app: Flask) -> None:
    """With a session cookie, Flask-Login's after-request hook reads it: a 503 while it is down."""
    client = app.test_client()
    client.get("/")
    with store_down(app):
        response = client.get("/static/style.css")
        assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
        response.close()


def test_not_found_page(client: FlaskClient) -> None:
    """An unknown page gets the friendly 404."""
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)


def test_method_not_allowed_page(client: FlaskClient) -> None:
    """GET on a POST-only route gets a friendly 405."""
    response = client.get("/logout")
    assert response.status_code == 405
    assert "Method not allowed" in response.get_data(as_text=True)


def test_store_down_friendly_503(app: Flask) -> None:
    """With the store down, pages answer a friendly 503 with Retry-After and no cookie."""
    client = app.test_client()
    sign_in(client)
    with store_down(app):
        for path in ("/", "/session", "/api/session", "/sessions"):
            response = client.get(path)
            assert response.status_code == 503, path
            assert response.headers["Retry-After"] == "5"
            assert "Set-Cookie" not in response.headers
            assert "Back in a moment" in response.get_data(as_text=True)
    assert api(client)["user"] == "demo"


def test_store_down_for_new_visitor(app: Flask) -> None:
    """A new visitor whose session cannot be created gets the 503 page, not a cookie."""
    with store_down(app):
        response = app.test_client().get("/")
    assert response.status_code == 503
    assert "Set-Cookie" not in response.headers


def test_favicon(client: FlaskClient) -> None:
    """/favicon.ico is an icon, not a 404, and every page links it."""
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.mimetype == "image/vnd.microsoft.icon"
    assert response.data[:4] == b"\x00\x00\x01\x00"  # the ICO signature
    assert "no-store" not in response.headers["Cache-Control"]
    response.close()
    assert '<link rel="icon" href="/favicon.ico"' in client.get("/").get_data(as_text=True)


def test_favicon_without_a_session_does_not_touch_the_store(app: Flask) -> None:
    """Like a stylesheet, the icon makes no store call for a visitor without a session."""
    with store_down(app):
        response = app.test_client().get("/favicon.ico")
        assert response.status_code == 200
        response.close()


def test_security_page_sets_a_script_readable_contrast_cookie(client: FlaskClient) -> None:
    """/security sets a cookie without HttpOnly, shows its header, and names it for the script."""
    response = client.get("/security")
    (header,) = [
        h for h in response.headers.getlist("Set-Cookie") if h.startswith("__Host-script_visible=")
    ]
    assert header.startswith("__Host-script_visible=page-script-can-read-me;")
    assert "HttpOnly" not in header
    assert "Secure" in header
    html = response.get_data(as_text=True)
    assert 'data-contrast-cookie="__Host-script_visible"' in html
    assert "<dt><code>(no HttpOnly)</code></dt>" in html
    # Without JavaScript the box says what the script would have shown.
    assert "__Host-script_visible=page-script-can-read-me and no __Host-session" in html
