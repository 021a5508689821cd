"""Remember-me: "Keep me signed in on this device", the devices page, and revoking it."""

from __future__ import annotations

from demo_helpers import api, csrf_token, post_form
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from keepsake_demo.accounts import DEMO_PASSWORD, DEMO_USERNAME

SESSION = "__Host-session"
GRANT = "__Host-session_remember"
REMEMBER = "remember_token"


def _sign_in_remembered(client: FlaskClient) -> TestResponse:
    return post_form(
        client, "/login", "/login", username=DEMO_USERNAME, password=DEMO_PASSWORD, remember="y"
    )


def _set_cookie(response: TestResponse, name: str) -> str:
    (header,) = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    return header


def _handle(client: FlaskClient) -> str:
    handle: str = api(client)["handle"]
    return handle


def _restarted_browser(app: Flask, client: FlaskClient) -> FlaskClient:
    """A new client holding only the remember-me cookies of ``client`` (its session gone)."""
    other = app.test_client()
    for name in (REMEMBER, GRANT):
        cookie = client.get_cookie(name)
        assert cookie is not None, name
        other.set_cookie(name, cookie.value)
    return other


def test_login_form_has_the_remember_checkbox(client: FlaskClient) -> None:
    """The login form offers "Keep me signed in on this device", a checkbox named remember."""
    html = client.get("/login").get_data(as_text=True)
    assert 'id="remember" name="remember" type="checkbox"' in html
    assert '<label for="remember">Keep me signed in on this device</label>' in html


def test_remember_makes_a_persistent_session(client: FlaskClient) -> None:
    """Ticked, the session cookie gets an Expires date and the remember-me cookies are set."""
    response = _sign_in_remembered(client)
    assert response.status_code == 302
    assert "Expires=" in _set_cookie(response, SESSION)
    assert "Secure" in _set_cookie(response, GRANT)
    assert "SameSite=Lax" in _set_cookie(response, REMEMBER)


def test_without_remember_a_browser_session(client: FlaskClient) -> None:
    """Not ticked: a cookie that ends with the browser, no remember-me cookie, no badge."""
    response = post_form(client, "/login", "/login", username=DEMO_USERNAME, password=DEMO_PASSWORD)
    assert "Expires=" not in _set_cookie(response, SESSION)
    assert client.get_cookie(REMEMBER) is None
    assert '<span class="badge remembered">remembered</span></p>' not in client.get(
        "/sessions"
    ).get_data(as_text=True)


def test_devices_page_marks_remembered_sessions_and_their_end(client: FlaskClient) -> None:
    """The devices page marks the remembered session and says when it ends."""
    _sign_in_remembered(client)
    html = client.get("/sessions").get_data(as_text=True)
    device = html[html.index(f'data-handle="{_handle(client)}"') :]
    device = device[: device.index("</li>")]
    assert '<span class="badge remembered">remembered</span>' in device
    assert "Remembered: stays signed in, even after the browser closes" in device
    assert device.count("<time datetime=") == 4  # signed in, last seen, idle end, latest end


def test_devices_page_says_what_revoking_a_remembered_device_does(client: FlaskClient) -> None:
    """The lesson line: signing out a remembered device retires its remember-me grant."""
    _sign_in_remembered(client)
    html = client.get("/sessions").get_data(as_text=True)
    assert 'id="revoke-remembered"' in html
    assert "no longer signs it back in" in html


def test_remember_cookie_signs_in_after_a_restart(app: Flask) -> None:
    """The remember-me cookies alone bring the user back, in a session that is not fresh."""
    laptop = app.test_client()
    _sign_in_remembered(laptop)
    restarted = _restarted_browser(app, laptop)
    assert api(restarted)["user"] == DEMO_USERNAME
    html = restarted.get("/session").get_data(as_text=True)
    assert "restored\n    from remember-me, without a password (not fresh" in html
    assert "persistent (remember-me)" in html


def test_revoked_remembered_device_stays_signed_out(app: Flask) -> None:
    """Revoked from another device, the remembered one is out, and its remember cookie too."""
    laptop, phone = app.test_client(), app.test_client()
    _sign_in_remembered(laptop)
    post_form(phone, "/login", "/login", username=DEMO_USERNAME, password=DEMO_PASSWORD)
    restarted = _restarted_browser(app, laptop)
    response = post_form(phone, "/sessions", f"/sessions/{_handle(laptop)}/revoke")
    assert response.headers["Location"] == "/sessions"
    assert api(laptop)["user"] is None
    response = restarted.get("/api/session")
    assert response.get_json()["user"] is None
    assert "Max-Age=0" in _set_cookie(response, REMEMBER)
    assert api(phone)["user"] == DEMO_USERNAME


def test_sign_out_everywhere_reaches_remembered_devices(app: Flask) -> None:
    """ "Sign out all other devices" ends a remembered one too, remember-me included."""
    laptop, phone = app.test_client(), app.test_client()
    _sign_in_remembered(laptop)
    restarted = _restarted_browser(app, laptop)
    post_form(phone, "/login", "/login", username=DEMO_USERNAME, password=DEMO_PASSWORD)
    post_form(phone, "/sessions", "/sessions/revoke-others")
    assert api(laptop)["user"] is None
    assert api(restarted)["user"] is None


def test_remember_value_is_client_input(client: FlaskClient) -> None:
    """A remember value other than the checkbox's is just a checkbox left unticked or ticked."""
    token = csrf_token(client.get("/login").data)
    response = client.post(
        "/login",
        data={
            "csrf_token": token,
            "username": DEMO_USERNAME,
            "password": DEMO_PASSWORD,
            "remember": "\x00<b>",
        },
    )
    assert response.status_code == 302
    assert api(client)["user"] == DEMO_USERNAME
