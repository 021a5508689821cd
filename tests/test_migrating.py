"""Switching to Keepsake from Flask's cookie session or Flask-Session without logging users out."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import TimestampSigner

from flask_keepsake import ConfigError, NotInitialized, tokens
from flask_keepsake.interface import engine_of
from flask_keepsake.migrate import adopt_old_sessions

from .conftest import AppFactory, spy
from .helpers import parse_set_cookie

#: What these tests check goes through each store's own code: run them on every store.
pytestmark = pytest.mark.every_store

SECRET = "test-secret-key-0123456789abcdef"  # the key make_app uses
COOKIE = "__Host-session"
OLD = "session"


def old_flask_cookie(data: dict[str, Any], secret: str = SECRET) -> str:
    """The cookie Flask's own session interface gives a browser holding ``data``."""
    old = Flask("old")
    old.config["SECRET_KEY"] = secret

    @old.get("/")
    def fill() -> str:
        session.update(data)
        return "ok"

    client = old.test_client()
    client.get("/")
    cookie = client.get_cookie(OLD)
    assert cookie is not None
    return str(cookie.value)


def browser(app: Flask, old_cookie: str) -> Any:
    """A test client that still holds the old session cookie."""
    client = app.test_client()
    client.set_cookie(OLD, old_cookie)
    return client


def migrating_app(make_app: AppFactory, **kwargs: Any) -> Flask:
    """A Keepsake app that adopts Flask's cookie sessions."""
    app = make_app()
    adopt_old_sessions(app, **kwargs)

    @app.get("/user-sessions/<user_id>")
    def user_sessions(user_id: str) -> str:
        return str(len(app.config["TEST_KEEPSAKE"].sessions(user_id)))

    return app


def test_flask_cookie_session_is_adopted(make_app: AppFactory) -> None:
    """The data of a valid Flask session cookie moves into a new server session."""
    app = migrating_app(make_app)
    stamp = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    client = browser(app, old_flask_cookie({"cart": ["apple", 2], "pair": (1, 2), "at": stamp}))
    response = client.get("/get/cart")
    assert response.data == b"['apple', 2]"
    assert client.get("/get/pair").data == b"(1, 2)"
    assert client.get("/get/at").data == repr(stamp).encode()
    cookies = {parse_set_cookie(h)[0]: h for h in response.headers.getlist("Set-Cookie")}
    assert tokens.is_token(parse_set_cookie(cookies[COOKIE])[1])
    assert parse_set_cookie(cookies[OLD])[1] == ""  # the old cookie is deleted
    assert client.get_cookie(OLD) is None


def test_adopted_session_is_bound_to_its_user(make_app: AppFactory) -> None:
    """Flask-Login's _user_id binds the adopted session: it is listed and revocable."""
    app = migrating_app(make_app)
    client = browser(app, old_flask_cookie({"_user_id": "7", "_fresh": True}))
    assert client.get("/whoami").data == b"7"
    assert client.get("/user-sessions/7").data == b"1"
    with app.app_context():
        assert app.config["TEST_KEEPSAKE"].revoke_all(7) == 1
    assert client.get("/whoami").data == b"anonymous"


def test_adopted_session_is_not_fresh(make_app: AppFactory) -> None:
    """An adopted session never counts as a fresh authentication."""
    app = migrating_app(make_app)

    @app.get("/fresh")
    def fresh() -> str:
        return str(app.config["TEST_KEEPSAKE"].is_fresh(3600))

    client = browser(app, old_flask_cookie({"_user_id": "7"}))
    assert client.get("/fresh").data == b"False"


def test_old_cookie_is_adopted_only_once(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy of an adopted cookie replayed later gets a fresh, anonymous session."""
    app = migrating_app(make_app)
    old = old_flask_cookie({"_user_id": "7"})
    assert browser(app, old).get("/whoami").data == b"7"
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        replay = browser(app, old)
        assert replay.get("/whoami").data == b"anonymous"
    assert any("already adopted" in r.getMessage() for r in caplog.records)
    assert replay.get_cookie(OLD) is None


def test_replay_after_logout_does_not_log_back_in(make_app: AppFactory) -> None:
    """Logging out of an adopted session and replaying the old cookie stays logged out."""
    app = migrating_app(make_app)
    old = old_flask_cookie({"_user_id": "7"})
    client = browser(app, old)
    assert client.get("/whoami").data == b"7"
    client.post("/logout")
    client.set_cookie(OLD, old)
    assert client.get("/whoami").data == b"anonymous"


def test_tampered_cookie_is_ignored_and_deleted(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A Flask cookie whose signature does not verify is ignored, deleted and logged."""
    app = migrating_app(make_app)
    good = old_flask_cookie({"_user_id": "7"})
    forged = old_flask_cookie({"_user_id": "1"}).rsplit(".", 1)[0] + "." + good.rsplit(".", 1)[1]
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        client = browser(app, forged)
        assert client.get("/whoami").data == b"anonymous"
    messages = [r.getMessage() for r in caplog.records]
    assert any("bad signature" in m for m in messages)
    assert all(forged not in m for m in messages)
    assert client.get_cookie(OLD) is None


def test_cookie_signed_with_another_key_is_ignored(make_app: AppFactory) -> None:
    """A cookie signed with a different SECRET_KEY is not adopted."""
    app = migrating_app(make_app)
    client = browser(app, old_flask_cookie({"_user_id": "7"}, secret="another-key-" * 4))
    assert client.get("/whoami").data == b"anonymous"


def test_expired_old_cookie_is_ignored(make_app: AppFactory) -> None:
    """A cookie signed longer ago than max_age is not adopted."""
    app = migrating_app(make_app, max_age=60)
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3600

    serializer.signer = Earlier
    client = browser(app, str(serializer.dumps({"_user_id": "7"})))
    assert client.get("/whoami").data == b"anonymous"
    assert client.get_cookie(OLD) is None


def test_keepsake_cookie_wins_over_old_cookie(make_app: AppFactory) -> None:
    """A browser that already has a Keepsake session keeps it; the old cookie is not read."""
    app = migrating_app(make_app)
    client = app.test_client()
    client.post("/set/a", data="new")
    client.set_cookie(OLD, old_flask_cookie({"a": "old"}))
    assert client.get("/get/a").data == b"'new'"


def test_old_cookie_ignored_without_adoption(make_app: AppFactory) -> None:
    """Without adopt_old_sessions, an old Flask cookie is simply not read."""
    app = make_app()
    client = browser(app, old_flask_cookie({"_user_id": "7"}))
    assert client.get("/whoami").data == b"anonymous"


def test_request_without_any_cookie_is_unchanged(make_app: AppFactory) -> None:
    """With adoption on, a request without cookies gets an ordinary empty session."""
    app = migrating_app(make_app)
    response = app.test_client().get("/get/a")
    assert response.data == b"None"
    assert response.headers.getlist("Set-Cookie") == []


def test_unsupported_old_value_is_dropped(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A value Keepsake cannot store is dropped with a warning; the rest is adopted."""
    app = make_app()
    adopt_old_sessions(app, loader=lambda value: {"a": "kept", "b": {1, 2}})
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        client = browser(app, "any-old-id")
        assert client.get("/get/a").data == b"'kept'"
    assert client.get("/get/b").data == b"None"
    assert any("'b'" in r.getMessage() for r in caplog.records)


def test_unknown_old_session_is_ignored(make_app: AppFactory) -> None:
    """A loader that finds no old session leaves an ordinary empty session."""
    app = make_app()
    adopt_old_sessions(app, loader=lambda value: None)
    client = browser(app, "gone")
    assert client.get("/get/a").data == b"None"
    assert client.get_cookie(OLD) is None


def test_adoption_is_logged_without_the_cookie(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Adoption logs INFO with a fingerprint and the user, never the old cookie."""
    app = migrating_app(make_app)
    old = old_flask_cookie({"_user_id": "7"})
    with caplog.at_level(logging.INFO, logger="flask_keepsake.security"):
        browser(app, old).get("/whoami")
    [message] = [r.getMessage() for r in caplog.records if "Adopted" in r.getMessage()]
    assert tokens.fingerprint(old) in message
    assert "user 7" in message
    assert old not in message


def test_flask_session_sessions_are_adopted(make_app: AppFactory) -> None:
    """Sessions of Flask-Session are adopted with a loader that reads its store."""
    pytest.importorskip("flask_session")
    from cachelib import SimpleCache
    from flask_session import Session  # type: ignore[import-untyped]

    cache = SimpleCache()
    old = Flask("old")
    old.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache, SECRET_KEY=SECRET)
    Session(old)

    @old.get("/")
    def fill() -> str:
        session.update({"_user_id": "9", "cart": ["pear"]})
        return "ok"

    old_client = old.test_client()
    old_client.get("/")
    sid = old_client.get_cookie(OLD)
    assert sid is not None

    app = make_app()
    adopt_old_sessions(app, loader=lambda value: cache.get("session:" + value))
    client = browser(app, sid.value)
    assert client.get("/whoami").data == b"9"
    assert client.get("/get/cart").data == b"['pear']"


def test_adoption_needs_secret_key(make_app: AppFactory) -> None:
    """Adopting Flask's signed cookies without SECRET_KEY is refused, naming the key."""
    app = make_app(SECRET_KEY=None)
    with pytest.raises(ConfigError) as info:
        adopt_old_sessions(app)
    assert info.value.key == "SECRET_KEY"


def test_adoption_refuses_a_shared_cookie_name(make_app: AppFactory) -> None:
    """The old and the new cookie cannot have the same name."""
    app = make_app(SESSION_COOKIE_NAME="sid")
    with pytest.raises(ConfigError) as info:
        adopt_old_sessions(app, cookie_name="sid")
    assert info.value.key == "SESSION_COOKIE_NAME"


def test_adoption_needs_keepsake_first() -> None:
    """adopt_old_sessions before Keepsake is set up is a clear error."""
    app = Flask(__name__)
    with pytest.raises(NotInitialized):
        adopt_old_sessions(app)


def test_claims_are_not_counted_as_sessions(make_app: AppFactory) -> None:
    """An adopted cookie's claim is a store marker: stats, list and cleanup see sessions only."""
    app = migrating_app(make_app)
    client = browser(app, old_flask_cookie({"_user_id": "5", "cart": [1]}))
    client.get("/get/cart")
    store = spy(app).inner
    assert store.count(clock_now(app)) == 1
    assert app.test_cli_runner().invoke(args=["keepsake", "list", "--user", "5"]).exit_code == 0
    stats = app.test_cli_runner().invoke(args=["keepsake", "stats", "--json"])
    assert json.loads(stats.stdout)["live"] == 1


def clock_now(app: Flask) -> float:
    """The app's clock, now."""
    return float(engine_of(app).clock())
