"""The session cookie is secure by default, with a loopback exception for development."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from flask_keepsake import ConfigError, Keepsake
from flask_keepsake.interface import engine_of
from flask_keepsake.stores.memory import MemoryStore

from .conftest import AppFactory
from .helpers import parse_set_cookie


def _new_cookie(app: Flask, base_url: str = "http://localhost") -> tuple[str, str, dict[str, str]]:
    response = app.test_client().post("/set/a", data="1", base_url=base_url)
    headers = response.headers.getlist("Set-Cookie")
    assert len(headers) == 1
    return parse_set_cookie(headers[0])


def test_secure_defaults(app: Flask) -> None:
    """__Host- name, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain, no Expires."""
    name, value, attrs = _new_cookie(app)
    assert name == "__Host-session"
    assert len(value) == 43
    assert set(attrs) == {"secure", "httponly", "path", "samesite"}
    assert attrs["path"] == "/"
    assert attrs["samesite"] == "Lax"


def test_cache_control_no_store_when_cookie_set(app: Flask) -> None:
    """A response that sets the session cookie is marked no-store."""
    response = app.test_client().post("/set/a", data="1")
    assert response.cache_control.no_store
    assert not response.cache_control.public


def test_deleting_cookie_has_same_attributes(app: Flask) -> None:
    """The deleting cookie carries the attributes the cookie was issued with."""
    client = app.test_client()
    client.post("/login/1")
    response = client.post("/logout")
    name, value, attrs = parse_set_cookie(response.headers["Set-Cookie"])
    assert (name, value) == ("__Host-session", "")
    assert {"secure", "httponly", "path", "samesite", "expires", "max-age"} <= set(attrs)
    assert attrs["max-age"] == "0"
    assert "domain" not in attrs


def test_replaced_defaults_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """Keepsake says at start-up which of Flask's insecure defaults it replaced."""
    app = Flask(__name__)
    with caplog.at_level(logging.INFO, logger="flask_keepsake"):
        Keepsake(app, store=MemoryStore())
    messages = [r.getMessage() for r in caplog.records if "replaces" in r.getMessage()]
    assert len(messages) == 1
    assert "SESSION_COOKIE_NAME" in messages[0]
    assert "SESSION_COOKIE_SAMESITE" in messages[0]


def test_flask_config_is_left_as_the_app_wrote_it() -> None:
    """Keepsake's defaults come from its hooks; app.config keeps Flask's values."""
    app = Flask(__name__)
    Keepsake(app, store=MemoryStore())
    assert app.config["SESSION_COOKIE_NAME"] == "session"
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert app.config["SESSION_COOKIE_SAMESITE"] is None
    interface = app.session_interface
    assert interface.get_cookie_name(app) == "__Host-session"
    assert interface.get_cookie_secure(app) is True
    assert interface.get_cookie_samesite(app) == "Lax"


def test_flask_keys_are_honoured(make_app: AppFactory) -> None:
    """SESSION_COOKIE_* keys set by the app are used."""
    app = make_app(
        SESSION_COOKIE_NAME="myapp_sid",
        SESSION_COOKIE_DOMAIN="example.com",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    response = app.test_client().post("/set/a", data="1", base_url="https://www.example.com/app")
    name, _, attrs = parse_set_cookie(response.headers["Set-Cookie"])
    assert name == "myapp_sid"
    assert attrs["domain"] == "example.com"
    assert attrs["path"] == "/app"
    assert attrs["samesite"] == "Strict"
    assert "partitioned" in attrs
    assert "secure" in attrs


def test_default_name_with_domain_uses_secure_prefix(make_app: AppFactory) -> None:
    """With a Domain the __Host- prefix cannot hold, so the default name becomes __Secure-."""
    app = make_app(SESSION_COOKIE_DOMAIN="example.com")
    response = app.test_client().post("/set/a", data="1", base_url="https://www.example.com")
    assert parse_set_cookie(response.headers["Set-Cookie"])[0] == "__Secure-session"


def test_httponly_can_be_turned_off(make_app: AppFactory) -> None:
    """SESSION_COOKIE_HTTPONLY=False is honoured (an explicit choice)."""
    app = make_app(SESSION_COOKIE_HTTPONLY=False)
    _, _, attrs = _new_cookie(app)
    assert "httponly" not in attrs


def test_no_secret_key_needed() -> None:
    """Sessions work without SECRET_KEY: the token is random, not signed."""
    app = Flask(__name__)
    app.testing = True
    Keepsake(app, store=MemoryStore())

    @app.post("/set")
    def set_() -> str:
        from flask import session

        session["a"] = 1
        return "ok"

    assert app.test_client().post("/set").status_code == 200


def _debug_app(**config: object) -> Flask:
    app = Flask(__name__)
    app.debug = True
    app.config.update(config)
    keepsake = Keepsake(app, store=MemoryStore())
    from .conftest import add_routes

    add_routes(app, keepsake)
    return app


@pytest.mark.parametrize(
    "base_url",
    ["http://localhost:5000", "http://127.0.0.1:5000", "http://[::1]:5000", "http://app.localhost"],
)
def test_auto_drops_secure_on_plain_http_loopback(base_url: str) -> None:
    """In debug mode a plain-HTTP loopback request gets a cookie without Secure or prefix."""
    app = _debug_app()
    assert engine_of(app).settings.cookie_secure == "auto"
    name, _, attrs = _new_cookie(app, base_url)
    assert name == "session"
    assert "secure" not in attrs
    assert attrs["samesite"] == "Lax"
    assert "httponly" in attrs


@pytest.mark.parametrize("base_url", ["https://localhost", "http://example.com", "http://10.0.0.5"])
def test_auto_keeps_secure_elsewhere(base_url: str) -> None:
    """In debug mode HTTPS and non-loopback hosts still get the secure cookie."""
    name, _, attrs = _new_cookie(_debug_app(), base_url)
    assert name == "__Host-session"
    assert "secure" in attrs


def test_auto_reads_back_loopback_cookie() -> None:
    """A loopback development session round-trips between requests."""
    app = _debug_app()
    client = app.test_client()
    client.post("/set/a", data="1", base_url="http://localhost:5000")
    assert client.get("/get/a", base_url="http://localhost:5000").data == b"'1'"


def test_secure_true_in_debug_is_honoured() -> None:
    """KEEPSAKE_COOKIE_SECURE=True keeps Secure even on loopback in debug mode."""
    name, _, attrs = _new_cookie(_debug_app(KEEPSAKE_COOKIE_SECURE=True))
    assert name == "__Host-session"
    assert "secure" in attrs


def test_secure_from_env_string() -> None:
    """The string 'true' from a FLASK_ environment variable means True."""
    app = _debug_app(KEEPSAKE_COOKIE_SECURE="true")
    assert engine_of(app).settings.cookie_secure is True


def test_secure_false_refused_in_production() -> None:
    """KEEPSAKE_COOKIE_SECURE=False outside debug and testing fails at start-up."""
    app = Flask(__name__)
    app.config["KEEPSAKE_COOKIE_SECURE"] = False
    with pytest.raises(ConfigError, match="KEEPSAKE_COOKIE_SECURE"):
        Keepsake(app, store=MemoryStore())


def test_secure_false_allowed_in_testing(make_app: AppFactory) -> None:
    """In testing, KEEPSAKE_COOKIE_SECURE=False gives a plain cookie named as Flask's."""
    app = make_app(KEEPSAKE_COOKIE_SECURE=False)
    name, _, attrs = _new_cookie(app)
    assert name == "session"
    assert "secure" not in attrs
