"""Remember-me is a persistent Keepsake session that logout and revocation reach (Flask-Login)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask, session

from flask_keepsake import Keepsake, tokens

from .conftest import AppFactory, spy
from .helpers import FakeClock, parse_set_cookie

#: What these tests check goes through each store's own code: run them on every store.
pytestmark = pytest.mark.every_store

flask_login = pytest.importorskip("flask_login")

COOKIE = "__Host-session"
GRANT = "__Host-session_remember"
REMEMBER = "remember_token"
DAY = 86400.0


class User(flask_login.UserMixin):  # type: ignore[misc]
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def _app(make_app: AppFactory, **config: Any) -> Flask:
    app = make_app(**config)
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]
    manager = flask_login.LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> User:
        return User(user_id)

    @app.post("/in/<user_id>")
    def sign_in(user_id: str) -> str:
        flask_login.login_user(User(user_id), remember=True)
        return "ok"

    @app.post("/out")
    def sign_out() -> str:
        flask_login.logout_user()
        return "ok"

    @app.get("/me")
    def me() -> str:
        user = flask_login.current_user
        name = user.get_id() if user.is_authenticated else "anon"
        return f"{name}|{keepsake.current_user_id}|{keepsake.is_fresh()}"

    @app.get("/sensitive")
    @flask_login.fresh_login_required
    def sensitive() -> str:
        return "secret"

    @app.post("/confirm")
    def confirm() -> str:
        flask_login.confirm_login()
        return "ok"

    @app.post("/password")
    def password() -> str:
        return str(keepsake.revoke_all(keep_current=True))

    return app


def _forget_session(app: Flask, client: Any) -> None:
    """The server-side session goes away (emptied), as Flask-Login's own tests do it."""
    with client.session_transaction() as sess:
        sess.clear()


def _copy(app: Flask, client: Any, *names: str) -> Any:
    """A thief's client holding copies of ``names`` from ``client``."""
    thief = app.test_client()
    for name in names:
        cookie = client.get_cookie(name)
        assert cookie is not None, name
        thief.set_cookie(name, cookie.value)
    return thief


def test_remember_makes_a_persistent_session(make_app: AppFactory, clock: FakeClock) -> None:
    """login_user(remember=True): the cookie expires with the server's persistent session."""
    app = _app(make_app)
    client = app.test_client()
    response = client.post("/in/7")
    by_name = {
        parse_set_cookie(h)[0]: parse_set_cookie(h)[2]
        for h in response.headers.getlist("Set-Cookie")
    }
    assert {COOKIE, GRANT, REMEMBER} <= set(by_name)
    expires = datetime.strptime(by_name[COOKIE]["expires"], "%a, %d %b %Y %H:%M:%S GMT")
    assert expires.replace(tzinfo=UTC).timestamp() == pytest.approx(clock.now + 31 * DAY, abs=1)
    assert {"secure", "httponly"} <= set(by_name[GRANT])
    clock.advance(3 * DAY)
    assert client.get("/me").text == "7|7|False"


def test_remember_cookie_restores_a_user_whose_session_went(make_app: AppFactory) -> None:
    """With a valid grant, Flask-Login's remember cookie restores the user, not fresh."""
    app = _app(make_app)
    client = app.test_client()
    client.post("/in/7")
    _forget_session(app, client)
    assert client.get("/me").text == "7|7|False"
    assert client.get("/sensitive").status_code == 401


def test_revoke_all_stops_remembered_devices(make_app: AppFactory) -> None:
    """After "sign out everywhere", the remember cookie restores nobody and is cleared."""
    app = _app(make_app)
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]
    device = app.test_client()
    device.post("/in/7")
    thief = _copy(app, device, REMEMBER, GRANT)
    with app.test_request_context():
        assert keepsake.revoke_all(7) == 1
    assert device.get("/me").text == "anon|None|False"
    assert device.get_cookie(REMEMBER) is None
    assert thief.get("/me").text == "anon|None|False"


def test_revoke_of_the_remembered_device_stops_it(make_app: AppFactory) -> None:
    """Revoking one remembered device by handle signs it out, remember cookie included."""
    app = _app(make_app)
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]
    device = app.test_client()
    device.post("/in/7")
    with app.test_request_context():
        [info] = keepsake.sessions(7)
        assert info.persistent
        assert keepsake.revoke(info.handle, user_id=7)
    assert device.get("/me").text == "anon|None|False"


def test_admin_revoke_by_handle_alone_stops_the_remembered_device(make_app: AppFactory) -> None:
    """An administrator's revoke(handle), without the user id, reaches the remember cookie too."""
    app = _app(make_app)
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]
    device = app.test_client()
    device.post("/in/7")
    with app.test_request_context():
        [info] = keepsake.sessions(7)
        assert keepsake.revoke(info.handle)
    assert device.get("/me").text == "anon|None|False"


def test_logout_stops_a_stolen_remember_cookie(make_app: AppFactory) -> None:
    """Copies of the remember cookie and grant taken before a logout restore nobody after it."""
    app = _app(make_app)
    device = app.test_client()
    device.post("/in/7")
    thief = _copy(app, device, REMEMBER, GRANT)
    device.post("/out")
    assert device.get_cookie(REMEMBER) is None
    assert device.get_cookie(GRANT) is None
    assert thief.get("/me").text == "anon|None|False"
    assert thief.get_cookie(REMEMBER) is None


def test_password_change_keeps_this_device_remembered(make_app: AppFactory) -> None:
    """revoke_all(keep_current=True): this device keeps its session and its remember-me."""
    app = _app(make_app)
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/in/7")
    laptop.post("/in/7")
    assert laptop.post("/password").text == "1"
    assert phone.get("/me").text == "anon|None|False"
    _forget_session(app, laptop)
    assert laptop.get("/me").text == "7|7|False"


def test_remember_cookie_without_a_grant_restores_nobody(make_app: AppFactory) -> None:
    """A remember cookie from before Keepsake (no grant) is refused and cleared, never a 5xx."""
    app = _app(make_app)
    client = app.test_client()
    with app.test_request_context():
        value = flask_login.encode_cookie("7")
    client.set_cookie(REMEMBER, value)
    response = client.get("/me")
    assert (response.status_code, response.text) == (200, "anon|None|False")
    assert client.get_cookie(REMEMBER) is None


@pytest.mark.parametrize(
    "grant",
    ["", "garbage", "a.b.c", "x" * 4000, "\u00fc", "eyJ9.AAAA.BBBB"],
)
def test_forged_grant_restores_nobody(make_app: AppFactory, grant: str) -> None:
    """A forged or malformed grant beside a valid remember cookie restores nobody."""
    app = _app(make_app)
    device = app.test_client()
    device.post("/in/7")
    thief = _copy(app, device, REMEMBER)
    thief.set_cookie(GRANT, grant)
    response = thief.get("/me")
    assert (response.status_code, response.text) == (200, "anon|None|False")


def test_forged_remember_cookie_restores_nobody(make_app: AppFactory) -> None:
    """A remember cookie that does not verify never restores, with or without a grant."""
    app = _app(make_app)
    device = app.test_client()
    device.post("/in/7")
    thief = _copy(app, device, GRANT)
    thief.set_cookie(REMEMBER, "8|" + "0" * 128)
    response = thief.get("/me")
    assert (response.status_code, response.text) == (200, "anon|None|False")


def test_grant_of_another_user_restores_nobody(make_app: AppFactory) -> None:
    """User 8's grant does not make user 7's remember cookie work."""
    app = _app(make_app)
    seven, eight = app.test_client(), app.test_client()
    seven.post("/in/7")
    eight.post("/in/8")
    mixed = _copy(app, seven, REMEMBER)
    mixed.set_cookie(GRANT, eight.get_cookie(GRANT).value)  # type: ignore[union-attr]
    assert mixed.get("/me").text == "anon|None|False"


def test_grant_of_another_app_restores_nobody(make_app: AppFactory) -> None:
    """A grant signed with another SECRET_KEY is refused."""
    app = _app(make_app)
    other = _app(make_app, SECRET_KEY="another-secret-key-0123456789abcdef")
    device = app.test_client()
    device.post("/in/7")
    foreign = other.test_client()
    foreign.post("/in/7")
    mixed = _copy(app, device, REMEMBER)
    mixed.set_cookie(GRANT, foreign.get_cookie(GRANT).value)  # type: ignore[union-attr]
    assert mixed.get("/me").text == "anon|None|False"


def test_grant_older_than_the_absolute_window_restores_nobody(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """Remember-me never outlives KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT."""
    app = _app(make_app, KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT=timedelta(days=40))
    device = app.test_client()
    device.post("/in/7")
    thief = _copy(app, device, REMEMBER, GRANT)
    clock.advance(39 * DAY)
    assert thief.get("/me").text == "7|7|False"
    clock.advance(2 * DAY)
    assert thief.get("/me").text == "anon|None|False"


def test_restored_session_ends_with_its_grant(make_app: AppFactory, clock: FakeClock) -> None:
    """A session restored from a grant may not outlive the grant's absolute window."""
    app = _app(make_app, KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT=timedelta(days=40))
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]
    device = app.test_client()
    device.post("/in/7")
    clock.advance(30 * DAY)
    _forget_session(app, device)
    assert device.get("/me").text == "7|7|False"
    with app.test_request_context():
        [info] = keepsake.sessions(7)
    assert info.absolute_expires.timestamp() == pytest.approx(1_800_000_000 + 40 * DAY, abs=1)


def test_long_idle_asks_for_the_password_again(make_app: AppFactory, clock: FakeClock) -> None:
    """fresh_login_required refuses a remembered session back from a long idle; confirm fixes it."""
    app = _app(make_app)
    client = app.test_client()
    client.post("/in/7")
    assert client.get("/sensitive").text == "secret"
    clock.advance(2 * 3600)
    assert client.get("/sensitive").status_code == 401
    assert client.get("/me").text == "7|7|False"
    old = client.get_cookie(COOKIE).value  # type: ignore[union-attr]
    client.post("/confirm")
    assert client.get_cookie(COOKIE).value != old  # type: ignore[union-attr]
    assert client.get("/sensitive").text == "secret"
    assert client.get("/me").text == "7|7|True"


def test_refused_remember_cookie_is_cleared_after_one_response(make_app: AppFactory) -> None:
    """The browser drops a refused remember cookie, so it is looked at once, not every request."""
    app = _app(make_app)
    client = app.test_client()
    with app.test_request_context():
        client.set_cookie(REMEMBER, flask_login.encode_cookie("7"))
    assert client.get("/me").text == "anon|None|False"
    assert client.get_cookie(REMEMBER) is None
    spy(app).reset()
    assert client.get("/me").text == "anon|None|False"
    assert "get_marker" not in spy(app).calls


def test_no_grant_without_remember(make_app: AppFactory) -> None:
    """A login without remember-me issues no grant and no persistent cookie."""
    app = _app(make_app)

    @app.post("/plain/<user_id>")
    def plain(user_id: str) -> str:
        flask_login.login_user(User(user_id))
        session["x"] = 1
        return "ok"

    client = app.test_client()
    response = client.post("/plain/7")
    names = {parse_set_cookie(h)[0] for h in response.headers.getlist("Set-Cookie")}
    assert names == {COOKIE}
    assert "expires" not in parse_set_cookie(response.headers["Set-Cookie"])[2]
    assert tokens.is_token(client.get_cookie(COOKIE).value)  # type: ignore[union-attr]


def test_remember_leaves_flask_permanent_alone(make_app: AppFactory) -> None:
    """Remembered is the record's flag: session.permanent stays as the app set it."""
    app = _app(make_app)

    @app.get("/permanent")
    def permanent() -> str:
        return str(session.permanent)

    client = app.test_client()
    client.post("/in/7")
    assert client.get("/permanent").text == "False"
    assert "expires" in parse_set_cookie(client.get("/me").headers["Set-Cookie"])[2]
