"""Flask-Login and Flask-WTF work with Keepsake without extra code."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, session

from flask_keepsake import Keepsake, tokens

from .conftest import AppFactory, spy

#: Remember-me and revocation through Flask-Login must hold on every store (issue 12).
pytestmark = pytest.mark.every_store

flask_login = pytest.importorskip("flask_login")
flask_wtf_csrf = pytest.importorskip("flask_wtf.csrf")

COOKIE = "__Host-session"


class User(flask_login.UserMixin):  # type: ignore[misc]
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def _login_app(make_app: AppFactory, **config: Any) -> Flask:
    app = make_app(**config)
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]
    manager = flask_login.LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> User:
        return User(user_id)

    @app.post("/fl-login/<user_id>")
    def fl_login(user_id: str) -> str:
        remember = bool(session.get("want_remember"))
        flask_login.login_user(User(user_id), remember=remember)
        return "ok"

    @app.post("/fl-logout")
    def fl_logout() -> str:
        flask_login.logout_user()
        return "ok"

    @app.get("/me")
    def me() -> str:
        user = flask_login.current_user
        name = user.get_id() if user.is_authenticated else "anon"
        bound = keepsake.current_user_id
        fresh = keepsake.is_fresh(60)
        return f"{name}|{bound}|{fresh}"

    return app


def test_login_user_rotates_and_binds(make_app: AppFactory) -> None:
    """login_user gives a new token and binds the session to the user."""
    app = _login_app(make_app)
    client = app.test_client()
    client.post("/set/cart", data="apple")
    old = client.get_cookie(COOKIE).value  # type: ignore[union-attr]
    client.post("/fl-login/42")
    assert client.get_cookie(COOKIE).value != old  # type: ignore[union-attr]
    assert client.get("/me").data == b"42|42|True"
    assert client.get("/get/cart").data == b"'apple'"
    replay = app.test_client()
    replay.set_cookie(COOKIE, old)
    assert replay.get("/me").data == b"anon|None|False"


def test_logout_user_ends_session(make_app: AppFactory) -> None:
    """logout_user deletes the stored session; replaying its cookie is anonymous."""
    app = _login_app(make_app)
    client = app.test_client()
    client.post("/fl-login/42")
    token = client.get_cookie(COOKIE).value  # type: ignore[union-attr]
    client.post("/fl-logout")
    assert spy(app).inner.load(tokens.storage_key(token), 0.0 + 1) is None
    assert client.get("/me").data == b"anon|None|False"
    replay = app.test_client()
    replay.set_cookie(COOKIE, token)
    assert replay.get("/me").data == b"anon|None|False"


def test_remember_me_rebinds_without_freshness(make_app: AppFactory) -> None:
    """A user restored from the remember-me cookie is bound again but not fresh."""
    app = _login_app(make_app)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["want_remember"] = True
    client.post("/fl-login/7")
    assert client.get_cookie("remember_token") is not None
    token = client.get_cookie(COOKIE).value  # type: ignore[union-attr]
    spy(app).inner.delete(tokens.storage_key(token))
    assert client.get("/me").data == b"7|7|False"
    assert client.get_cookie(COOKIE).value != token  # type: ignore[union-attr]


def test_logout_user_clears_remember_cookie(make_app: AppFactory) -> None:
    """logout_user still removes Flask-Login's remember-me cookie."""
    app = _login_app(make_app)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["want_remember"] = True
    client.post("/fl-login/7")
    assert client.get_cookie("remember_token") is not None
    client.post("/fl-logout")
    assert client.get_cookie("remember_token") is None
    assert client.get("/me").data == b"anon|None|False"


def test_csrf_token_rotated_at_login(make_app: AppFactory) -> None:
    """A Flask-WTF CSRF token issued before login does not validate after it."""
    app = _login_app(make_app)
    flask_wtf_csrf.CSRFProtect(app)

    @app.get("/token")
    def token() -> str:
        return str(flask_wtf_csrf.generate_csrf())

    @app.post("/protected")
    def protected() -> str:
        return "done"

    client = app.test_client()
    before = client.get("/token").data.decode()
    assert client.post("/protected", data={"csrf_token": before}).data == b"done"
    client.post("/fl-login/1", data={"csrf_token": before})
    after = client.get("/token").data.decode()
    assert after != before
    assert client.post("/protected", data={"csrf_token": before}).status_code == 400
    assert client.post("/protected", data={"csrf_token": after}).data == b"done"


def test_csrf_secret_dropped_at_logout(make_app: AppFactory) -> None:
    """Logout drops Flask-WTF's CSRF secret with the session."""
    app = _login_app(make_app)

    @app.get("/token")
    def token() -> str:
        return str(flask_wtf_csrf.generate_csrf())

    client = app.test_client()
    client.post("/fl-login/1")
    client.get("/token")
    with client.session_transaction() as sess:
        assert "csrf_token" in sess
    client.post("/fl-logout")
    with client.session_transaction() as sess:
        assert "csrf_token" not in sess


def _page_app(make_app: AppFactory) -> Flask:
    app = _login_app(make_app)

    @app.get("/page")
    def page() -> str:
        from flask import render_template_string

        return render_template_string("{{ 'in' if current_user.is_authenticated else 'out' }}")

    @app.get("/static-like")
    def static_like() -> str:
        return "plain"

    return app


def test_flask_login_untouched_request_costs_one_read(make_app: AppFactory) -> None:
    """Flask-Login's after-request hook reads the session: one load, no write (accepted)."""
    app = _page_app(make_app)
    client = app.test_client()
    client.post("/fl-login/3")
    spy(app).reset()
    assert client.get("/static-like").data == b"plain"
    assert dict(spy(app).calls) == {"load": 1}


def test_flask_login_request_without_cookie_makes_no_store_call(make_app: AppFactory) -> None:
    """Without a session cookie there is nothing to load, with Flask-Login as without."""
    app = _page_app(make_app)
    spy(app).reset()
    assert app.test_client().get("/static-like").data == b"plain"
    assert sum(spy(app).calls.values()) == 0


def test_flask_login_store_outage_is_503(make_app: AppFactory) -> None:
    """With Flask-Login, pages answer 503 (not 500) while the store is down."""
    app = _page_app(make_app)
    app.testing = False
    client = app.test_client()
    client.post("/fl-login/3")
    assert client.get("/page").data == b"in"
    spy(app).down = True
    assert client.get("/page").status_code == 503
    # Flask-Login's after-request hook reads the session here, outside the view.
    outside = client.get("/static-like")
    assert (outside.status_code, outside.headers["Retry-After"]) == (503, "5")
    spy(app).down = False
    assert client.get("/page").data == b"in"


def test_flask_login_remember_cookie_still_set(make_app: AppFactory) -> None:
    """The wrapped remember-me hook still sets and clears the cookie when the session is used."""
    app = _page_app(make_app)
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["want_remember"] = True
    client.post("/fl-login/3")
    assert client.get_cookie("remember_token") is not None
