"""The devices page: list, revoke one, revoke the others."""

from __future__ import annotations

from demo_helpers import api, csrf_token, post_form, sign_in
from flask import Flask
from flask.testing import FlaskClient

from flask_keepsake.testing import login_client


def _handle(client: FlaskClient) -> str:
    handle: str = api(client)["handle"]
    return handle


def test_devices_lists_every_session(app: Flask) -> None:
    """Every session of the account is listed, this one marked, with device and IP."""
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop)
    sign_in(phone)
    html = laptop.get("/sessions").get_data(as_text=True)
    assert html.count('data-handle="') == 2
    assert f'data-handle="{_handle(laptop)}"' in html
    assert f'data-handle="{_handle(phone)}"' in html
    assert "this device" in html
    assert "127.0.0.1" in html
    assert "Sign out all other devices" in html


def test_devices_page_needs_login(client: FlaskClient) -> None:
    """Anonymous visitors are sent to sign in."""
    response = client.get("/sessions")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2Fsessions"


def test_revoke_from_one_client_logs_out_the_other(app: Flask) -> None:
    """Signing out the phone from the laptop: the phone's next request is anonymous."""
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop)
    sign_in(phone)
    target = _handle(phone)
    response = post_form(laptop, "/sessions", f"/sessions/{target}/revoke")
    assert response.status_code == 302
    assert response.headers["Location"] == "/sessions"
    assert "That device is signed out" in laptop.get("/sessions").get_data(as_text=True)
    assert api(phone)["user"] is None
    assert "You are not signed in" in phone.get("/").get_data(as_text=True)
    assert api(laptop)["user"] == "demo"


def test_revoke_this_device(client: FlaskClient) -> None:
    """Revoking the current session signs this device out."""
    sign_in(client)
    response = post_form(client, "/sessions", f"/sessions/{_handle(client)}/revoke")
    assert response.headers["Location"] == "/login"
    assert api(client)["user"] is None
    assert "You signed out this device." in client.get("/login").get_data(as_text=True)


def test_revoke_someone_elses_session_is_refused(app: Flask) -> None:
    """A user cannot end another user's session, even knowing its handle."""
    victim = app.test_client()
    victim_handle = login_client(victim, 999)
    attacker = app.test_client()
    sign_in(attacker)
    response = post_form(attacker, "/sessions", f"/sessions/{victim_handle}/revoke")
    assert response.status_code == 302
    assert "That session had already ended." in attacker.get("/sessions").get_data(as_text=True)
    assert api(victim)["handle"] == victim_handle


def test_revoke_unknown_handle(client: FlaskClient) -> None:
    """An unknown handle is reported, not an error."""
    sign_in(client)
    response = post_form(client, "/sessions", "/sessions/no-such-handle/revoke")
    assert response.status_code == 302
    assert "already ended" in client.get("/sessions").get_data(as_text=True)


def test_revoke_others_keeps_this_one(app: Flask) -> None:
    """Sign out all other devices: they end, this one stays."""
    clients = [app.test_client() for _ in range(3)]
    for c in clients:
        sign_in(c)
    response = post_form(clients[0], "/sessions", "/sessions/revoke-others")
    assert response.status_code == 302
    assert "2 sessions ended" in clients[0].get("/sessions").get_data(as_text=True)
    assert api(clients[0])["user"] == "demo"
    assert [api(c)["user"] for c in clients[1:]] == [None, None]


def test_revoke_needs_csrf(app: Flask) -> None:
    """Revocation is a form like any other: no CSRF token, no revocation."""
    laptop, phone = app.test_client(), app.test_client()
    sign_in(laptop)
    sign_in(phone)
    response = laptop.post(f"/sessions/{_handle(phone)}/revoke")
    assert response.status_code == 400
    response = laptop.post("/sessions/revoke-others", data={"csrf_token": "forged"})
    assert response.status_code == 400
    assert api(phone)["user"] == "demo"


def test_revoke_needs_login(app: Flask) -> None:
    """An anonymous visitor cannot revoke anything."""
    victim = app.test_client()
    sign_in(victim)
    anonymous = app.test_client()
    token = csrf_token(anonymous.get("/login").data)
    response = anonymous.post(f"/sessions/{_handle(victim)}/revoke", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert api(victim)["user"] == "demo"
