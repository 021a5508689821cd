"""Login, logout, regenerate, freshness, device lists, revocation and timeouts."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, jsonify

from flask_keepsake import Keepsake, tokens

from .conftest import AppFactory, spy
from .helpers import FakeClock, parse_set_cookie

#: What these tests check goes through each store's own code: run them on every store.
pytestmark = pytest.mark.every_store

COOKIE = "__Host-session"


def _token(client: Any) -> str:
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return str(cookie.value)


def _ks(app: Flask) -> Keepsake:
    keepsake = app.config["TEST_KEEPSAKE"]
    assert isinstance(keepsake, Keepsake)
    return keepsake


def test_login_rotates_token_and_keeps_data(app: Flask) -> None:
    """Login issues a new token, the old one stops working, and the data is carried over."""
    client = app.test_client()
    client.post("/set/cart", data="apple")
    old = _token(client)
    client.post("/login/42")
    new = _token(client)
    assert new != old
    assert client.get("/get/cart").data == b"'apple'"
    assert client.get("/whoami").data == b"42"
    replay = app.test_client()
    replay.set_cookie(COOKIE, old)
    assert replay.get("/get/cart").data == b"None"


def test_login_on_empty_session_creates_bound_record(app: Flask) -> None:
    """Logging in with nothing in the session still stores a session bound to the user."""
    client = app.test_client()
    client.post("/login/7")
    assert client.get("/whoami").data == b"7"


def test_login_records_device_and_auth_time(app: Flask, clock: FakeClock) -> None:
    """The bound record keeps auth time, IP and user agent."""
    client = app.test_client()
    client.post("/login/7", headers={"User-Agent": "TestBrowser/1.0"})
    record = spy(app).inner.load(tokens.storage_key(_token(client)), clock())
    assert record is not None
    assert record.user_id == "7"
    assert record.auth_time == clock.now
    assert record.ip == "127.0.0.1"
    assert record.user_agent == "TestBrowser/1.0"


def test_logout_deletes_record_and_cookie(app: Flask) -> None:
    """Logout deletes the stored session and removes the cookie with its attributes."""
    client = app.test_client()
    client.post("/login/42")
    old = _token(client)
    response = client.post("/logout")
    headers = response.headers.getlist("Set-Cookie")
    assert len(headers) == 1
    name, value, attrs = parse_set_cookie(headers[0])
    assert (name, value) == (COOKIE, "")
    assert {"secure", "httponly", "path"} <= set(attrs)
    assert attrs["samesite"] == "Lax"
    assert spy(app).inner.load(tokens.storage_key(old), 0.0) is None
    replay = app.test_client()
    replay.set_cookie(COOKIE, old)
    assert replay.get("/whoami").data == b"anonymous"


def test_write_after_logout_starts_new_session(make_app: AppFactory) -> None:
    """A flash after logout lands in a new anonymous session with a new token."""
    app = make_app()
    keepsake = _ks(app)

    @app.post("/bye")
    def bye() -> str:
        keepsake.logout()
        from flask import flash

        flash("Signed out")
        return "ok"

    client = app.test_client()
    client.post("/login/1")
    old = _token(client)
    client.post("/bye")
    assert _token(client) != old
    assert client.get("/whoami").data == b"anonymous"


def test_regenerate_keeps_data_and_user(app: Flask) -> None:
    """Regenerate gives a new token, same data, same user, same handle."""
    client = app.test_client()
    client.post("/login/5")
    client.post("/set/a", data="1")
    old = _token(client)
    handle = spy(app).inner.load(tokens.storage_key(old), 0.0 + 1).handle  # type: ignore[union-attr]
    client.post("/regenerate")
    new = _token(client)
    assert new != old
    assert client.get("/get/a").data == b"'1'"
    assert client.get("/whoami").data == b"5"
    record = spy(app).inner.load(tokens.storage_key(new), 0.0 + 1)
    assert record is not None
    assert record.handle == handle


def test_regenerate_of_revoked_session_does_not_resurrect(app: Flask) -> None:
    """Regenerating a session revoked meanwhile ends it instead of recreating it."""
    client = app.test_client()
    client.post("/login/5")
    spy(app).inner.delete(tokens.storage_key(_token(client)))
    client.post("/regenerate")
    assert client.get("/whoami").data == b"anonymous"


def test_is_fresh(make_app: AppFactory, clock: FakeClock) -> None:
    """is_fresh is true within max_age of the login and false after."""
    app = make_app()
    keepsake = _ks(app)

    @app.get("/fresh")
    def fresh() -> str:
        return str(keepsake.is_fresh(300))

    client = app.test_client()
    assert client.get("/fresh").data == b"False"
    client.post("/login/1")
    assert client.get("/fresh").data == b"True"
    clock.advance(301)
    assert client.get("/fresh").data == b"False"


def _devices_app(make_app: AppFactory) -> Flask:
    app = make_app()
    keepsake = _ks(app)

    @app.get("/devices")
    def devices() -> Any:
        return jsonify(
            [
                {"handle": s.handle, "current": s.current, "ip": s.ip, "ua": s.user_agent}
                for s in keepsake.sessions()
            ]
        )

    @app.post("/revoke/<handle>")
    def revoke(handle: str) -> str:
        return str(keepsake.revoke(handle, user_id=keepsake.current_user_id))

    @app.post("/revoke-others")
    def revoke_others() -> str:
        return str(keepsake.revoke_all())

    @app.post("/revoke-everything")
    def revoke_everything() -> str:
        return str(keepsake.revoke_all(keep_current=False))

    return app


def test_sessions_lists_devices_with_current(make_app: AppFactory, clock: FakeClock) -> None:
    """sessions() lists every session of the user with device facts and the current one marked."""
    app = _devices_app(make_app)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/9", headers={"User-Agent": "Laptop"})
    clock.advance(1)
    phone.post("/login/9", headers={"User-Agent": "Phone"})
    devices = laptop.get("/devices").get_json()
    assert [d["ua"] for d in devices] == ["Laptop", "Phone"]
    assert [d["current"] for d in devices] == [True, False]
    assert all(d["ip"] == "127.0.0.1" for d in devices)


def test_revoke_from_one_client_logs_out_other(make_app: AppFactory) -> None:
    """Revoking a device's handle logs that device out at once."""
    app = _devices_app(make_app)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login/9")
    phone.post("/login/9")
    phone_handle = next(d["handle"] for d in laptop.get("/devices").get_json() if not d["current"])
    assert laptop.post(f"/revoke/{phone_handle}").data == b"True"
    assert phone.get("/whoami").data == b"anonymous"
    assert laptop.get("/whoami").data == b"9"


def test_revoke_is_scoped_to_user(make_app: AppFactory) -> None:
    """A user cannot revoke another user's session by its handle."""
    app = _devices_app(make_app)
    alice, bob = app.test_client(), app.test_client()
    alice.post("/login/alice")
    bob.post("/login/bob")
    bob_handle = bob.get("/devices").get_json()[0]["handle"]
    assert alice.post(f"/revoke/{bob_handle}").data == b"False"
    assert bob.get("/whoami").data == b"bob"


def test_revoke_all_keeps_current(make_app: AppFactory) -> None:
    """revoke_all() ends every other session of the user and keeps this one."""
    app = _devices_app(make_app)
    a, b, c = app.test_client(), app.test_client(), app.test_client()
    for client in (a, b, c):
        client.post("/login/3")
    assert a.post("/revoke-others").data == b"2"
    assert a.get("/whoami").data == b"3"
    assert b.get("/whoami").data == b"anonymous"
    assert c.get("/whoami").data == b"anonymous"


def test_revoke_all_without_keeping_current(make_app: AppFactory) -> None:
    """revoke_all(keep_current=False) ends this session too and removes its cookie."""
    app = _devices_app(make_app)
    a, b = app.test_client(), app.test_client()
    a.post("/login/3")
    b.post("/login/3")
    response = a.post("/revoke-everything")
    assert response.data == b"2"
    assert a.get("/whoami").data == b"anonymous"
    assert b.get("/whoami").data == b"anonymous"


def test_idle_timeout_is_enforced(make_app: AppFactory, clock: FakeClock) -> None:
    """A session unused for longer than the idle timeout is gone."""
    app = make_app(KEEPSAKE_IDLE_TIMEOUT=600, KEEPSAKE_TOUCH_INTERVAL=60)
    client = app.test_client()
    client.post("/login/1")
    clock.advance(599)
    assert client.get("/whoami").data == b"1"
    clock.advance(599)
    assert client.get("/whoami").data == b"1"
    clock.advance(601)
    assert client.get("/whoami").data == b"anonymous"


def test_absolute_timeout_is_enforced_while_active(make_app: AppFactory, clock: FakeClock) -> None:
    """An active session still ends at the absolute timeout."""
    app = make_app(KEEPSAKE_IDLE_TIMEOUT=600, KEEPSAKE_ABSOLUTE_TIMEOUT=3600)
    client = app.test_client()
    client.post("/login/1")
    for _ in range(5):
        clock.advance(590)
        assert client.get("/whoami").data == b"1"
    clock.advance(700)
    assert client.get("/whoami").data == b"anonymous"


def test_touch_at_most_once_per_interval(make_app: AppFactory, clock: FakeClock) -> None:
    """Read-only traffic writes last-seen at most once per touch interval."""
    app = make_app(KEEPSAKE_TOUCH_INTERVAL=60)
    client = app.test_client()
    client.post("/login/1")
    spy(app).reset()
    for _ in range(10):
        clock.advance(5)
        client.get("/whoami")
    assert spy(app).calls["touch"] == 0
    clock.advance(20)
    client.get("/whoami")
    client.get("/whoami")
    assert spy(app).calls["touch"] == 1
    record = spy(app).inner.load(tokens.storage_key(_token(client)), clock())
    assert record is not None
    assert record.last_seen == clock.now


def test_login_restarts_absolute_timeout(make_app: AppFactory, clock: FakeClock) -> None:
    """Login starts a new session lifetime: created and absolute expiry move to now."""
    app = make_app()
    client = app.test_client()
    client.post("/set/a", data="1")
    clock.advance(100)
    client.post("/login/1")
    record = spy(app).inner.load(tokens.storage_key(_token(client)), clock())
    assert record is not None
    assert record.created == clock.now
    assert record.absolute_expires_at == clock.now + 12 * 3600


def test_current_session_describes_this_session(make_app: AppFactory, clock: FakeClock) -> None:
    """current_session() gives the stored session's facts, or None before it is stored."""
    app = make_app()
    keepsake = _ks(app)

    @app.get("/current")
    def current() -> Any:
        info = keepsake.current_session()
        if info is None:
            return {"stored": False}
        return {"stored": True, "handle": info.handle, "user": info.user_id, "now": info.current}

    client = app.test_client()
    assert client.get("/current").get_json() == {"stored": False}
    client.post("/set/a", data="1")
    first = client.get("/current").get_json()
    assert first["stored"] is True
    assert first["user"] is None
    assert first["now"] is True
    assert len(first["handle"]) == 16
