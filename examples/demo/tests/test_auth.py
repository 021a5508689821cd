"""Sign in, sign out, register, change password, and CSRF on every form."""

from __future__ import annotations

import pytest
from demo_helpers import api, csrf_token, post_form, session_cookie, sign_in
from flask import Flask
from flask.testing import FlaskClient


def test_login_page_shows_demo_credentials(client: FlaskClient) -> None:
    """The login page shows the seeded account and carries a CSRF token."""
    html = client.get("/login").get_data(as_text=True)
    assert "<code>demo</code>" in html
    assert "<code>demo-password</code>" in html
    assert 'name="username"' in html
    assert 'name="password"' in html
    assert csrf_token(html)


def test_login_signs_in_and_rotates_token(client: FlaskClient) -> None:
    """Signing in binds the session to the user under a new token, keeping its data."""
    client.get("/")
    before = session_cookie(client)[1]
    response = sign_in(client)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    after = session_cookie(client)[1]
    assert after != before
    body = api(client)
    assert body["user"] == "demo"
    assert "visits" in body["keys"]


def test_login_old_token_is_dead(app: Flask) -> None:
    """A cookie planted before sign-in (session fixation) is anonymous after it."""
    client = app.test_client()
    client.get("/")
    name, planted = session_cookie(client)
    sign_in(client)
    attacker = app.test_client()
    attacker.set_cookie(name, planted)
    assert api(attacker)["user"] is None


def test_login_wrong_password(client: FlaskClient) -> None:
    """A wrong password re-shows the form with one message, whatever was wrong."""
    response = sign_in(client, password="not-it")
    assert response.status_code == 200
    assert "Unknown username or wrong password." in response.get_data(as_text=True)
    unknown = sign_in(client, username="nobody", password="whatever1")
    assert "Unknown username or wrong password." in unknown.get_data(as_text=True)
    assert api(client)["user"] is None


def test_login_username_is_case_insensitive(client: FlaskClient) -> None:
    """Usernames match regardless of case."""
    sign_in(client, username="DEMO")
    assert api(client)["user"] == "demo"


def test_login_follows_safe_next(client: FlaskClient) -> None:
    """After a login_required redirect, signing in returns to the page asked for."""
    redirect = client.get("/sessions")
    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith("/login?next=")
    token = csrf_token(client.get("/login?next=/sessions").data)
    response = client.post(
        "/login?next=/sessions",
        data={"csrf_token": token, "username": "demo", "password": "demo-password"},
    )
    assert response.headers["Location"] == "/sessions"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_login_refuses_open_redirect(client: FlaskClient, target: str) -> None:
    """A next parameter pointing off-site is ignored."""
    token = csrf_token(client.get("/login").data)
    response = client.post(
        "/login",
        query_string={"next": target},
        data={"csrf_token": token, "username": "demo", "password": "demo-password"},
    )
    assert response.headers["Location"] == "/"


def test_login_when_signed_in_redirects_home(client: FlaskClient) -> None:
    """The login page sends a signed-in visitor home."""
    sign_in(client)
    assert client.get("/login").headers["Location"] == "/"


def test_logout_form_on_every_page(client: FlaskClient) -> None:
    """A signed-in visitor finds a sign-out form with a CSRF token on every page."""
    sign_in(client)
    for path in (
        "/",
        "/set_cookie",
        "/read_cookie",
        "/last-visit",
        "/session",
        "/security",
        "/sessions",
        "/password",
        "/no-such-page",
    ):
        html = client.get(path).get_data(as_text=True)
        assert 'action="/logout"' in html, path
        form = html[html.index('action="/logout"') :]
        assert 'name="csrf_token" value="' in form[:300], path


def test_logout_ends_session_on_server(app: Flask) -> None:
    """After sign-out, replaying the old cookie gives an anonymous page."""
    client = app.test_client()
    sign_in(client)
    name, old = session_cookie(client)
    response = post_form(client, "/", "/logout")
    assert response.status_code == 302
    headers = response.headers.getlist("Set-Cookie")
    assert any(h.startswith(f"{name}=") for h in headers)
    assert session_cookie(client)[1] != old
    assert "You are signed out" in client.get("/").get_data(as_text=True)

    replay = app.test_client()
    replay.set_cookie(name, old)
    html = replay.get("/").get_data(as_text=True)
    assert "You are not signed in" in html
    assert api(replay)["user"] is None


def test_logout_anonymous_is_harmless(client: FlaskClient) -> None:
    """Signing out when not signed in just goes home."""
    response = post_form(client, "/login", "/logout")
    assert response.status_code == 302


def test_csrf_refused_without_token(client: FlaskClient) -> None:
    """A form posted without its CSRF token gets the friendly 400 page, and changes nothing."""
    sign_in(client)
    response = client.post("/logout")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Request refused" in html
    assert "The CSRF token is missing." in html
    assert api(client)["user"] == "demo"


def test_csrf_refused_with_foreign_token(app: Flask) -> None:
    """A valid token from another visitor's session is refused."""
    victim = app.test_client()
    sign_in(victim)
    attacker = app.test_client()
    token = csrf_token(attacker.get("/login").data)
    response = victim.post("/logout", data={"csrf_token": token})
    assert response.status_code == 400
    assert api(victim)["user"] == "demo"


def test_csrf_token_from_before_login_is_useless(client: FlaskClient) -> None:
    """Sign-in rotates the CSRF secret: a token seen before it no longer works."""
    before = csrf_token(client.get("/login").data)
    sign_in(client)
    response = client.post("/logout", data={"csrf_token": before})
    assert response.status_code == 400


def test_csrf_refused_on_login(client: FlaskClient) -> None:
    """The login form itself needs its token (login CSRF)."""
    response = client.post("/login", data={"username": "demo", "password": "demo-password"})
    assert response.status_code == 400
    assert api(client)["user"] is None


def test_register_creates_account_and_signs_in(app: Flask) -> None:
    """Registering creates the account and signs in; the password works afterwards."""
    client = app.test_client()
    response = post_form(
        client,
        "/register",
        "/register",
        username="alice",
        password="correct horse",
        confirm="correct horse",
    )
    assert response.status_code == 302
    assert api(client)["user"] == "alice"
    other = app.test_client()
    sign_in(other, "alice", "correct horse")
    assert api(other)["user"] == "alice"


@pytest.mark.parametrize(
    ("username", "password", "confirm", "message"),
    [
        ("demo", "long enough", "long enough", "That username is taken."),
        ("Demo", "long enough", "long enough", "That username is taken."),
        ("a", "long enough", "long enough", "3 to 32 letters"),
        ("bad name", "long enough", "long enough", "3 to 32 letters"),
        ("bob", "short", "short", "Use at least 8 characters"),
        ("bob", "long enough", "different!", "The passwords differ."),
    ],
)
def test_register_refuses_bad_input(
    client: FlaskClient, username: str, password: str, confirm: str, message: str
) -> None:
    """Invalid registrations re-show the form with the reason."""
    response = post_form(
        client, "/register", "/register", username=username, password=password, confirm=confirm
    )
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert api(client)["user"] is None


def test_password_change_ends_other_sessions(app: Flask) -> None:
    """Changing the password signs out every other device and renews this session's token."""
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop)
    sign_in(phone)
    before = session_cookie(laptop)[1]
    response = post_form(
        laptop,
        "/password",
        "/password",
        current="demo-password",
        password="new-password",
        confirm="new-password",
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/sessions"
    assert "1 other session of your account ended" in laptop.get("/sessions").get_data(as_text=True)
    assert session_cookie(laptop)[1] != before
    assert api(laptop)["user"] == "demo"
    assert api(phone)["user"] is None
    assert "Unknown username" in sign_in(phone).get_data(as_text=True)
    sign_in(phone, password="new-password")
    assert api(phone)["user"] == "demo"


def test_password_change_needs_current_password(client: FlaskClient) -> None:
    """A wrong current password changes nothing."""
    sign_in(client)
    response = post_form(
        client,
        "/password",
        "/password",
        current="wrong",
        password="new-password",
        confirm="new-password",
    )
    assert response.status_code == 200
    assert "That is not your current password." in response.get_data(as_text=True)


def test_password_page_needs_login(client: FlaskClient) -> None:
    """The password page sends anonymous visitors to sign in."""
    response = client.get("/password")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
