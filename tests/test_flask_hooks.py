"""Flask's conventions: SessionInterface hooks per request, late config, one extension key."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask, session

from flask_keepsake import Keepsake, KeepsakeError, NotInitialized
from flask_keepsake.interface import KeepsakeSessionInterface
from flask_keepsake.stores.memory import MemoryStore

from .conftest import add_routes
from .helpers import parse_set_cookie


def _app(**config: object) -> tuple[Flask, Keepsake]:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="hooks-secret-0123456789abcdef0123")
    app.config.update(config)
    keepsake = Keepsake(app, store=MemoryStore())
    add_routes(app, keepsake)
    return app, keepsake


def _cookie(app: Flask, base_url: str = "https://localhost") -> tuple[str, dict[str, str]]:
    response = app.test_client().post("/set/a", data="1", base_url=base_url)
    name, _, attrs = parse_set_cookie(response.headers["Set-Cookie"])
    return name, attrs


def test_cookie_keys_set_after_init_are_used() -> None:
    """SESSION_COOKIE_* set after Keepsake(app), as app factories often do, take effect."""
    app, _ = _app()
    app.config.update(
        SESSION_COOKIE_NAME="late_sid",
        SESSION_COOKIE_DOMAIN="example.com",
        SESSION_COOKIE_PATH="/shop",
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    name, attrs = _cookie(app, "https://www.example.com/shop")
    assert name == "late_sid"
    assert (attrs["domain"], attrs["path"], attrs["samesite"]) == ("example.com", "/shop", "Strict")
    assert "httponly" not in attrs
    assert {"secure", "partitioned"} <= set(attrs)


def test_application_root_set_after_init_moves_the_default_cookie() -> None:
    """With APPLICATION_ROOT set later, the default cookie gets that Path and __Secure-."""
    app, _ = _app()
    app.config["APPLICATION_ROOT"] = "/foo"
    name, attrs = _cookie(app, "https://localhost/foo")
    assert (name, attrs["path"]) == ("__Secure-session", "/foo")


def test_invalid_samesite_set_after_init_fails_when_used() -> None:
    """An invalid SESSION_COOKIE_SAMESITE set later fails as Werkzeug fails (ValueError)."""
    app, _ = _app()
    app.config["SESSION_COOKIE_SAMESITE"] = "invalid"
    with pytest.raises(ValueError, match="SameSite"):
        app.test_client().post("/set/a", data="1")


def test_refresh_each_request_set_after_init_is_used() -> None:
    """SESSION_REFRESH_EACH_REQUEST is read when used."""
    app, _ = _app()

    @app.post("/remember")
    def remember() -> str:
        session.permanent = True
        session["a"] = 1
        return "ok"

    client = app.test_client()
    client.post("/remember")
    assert "Set-Cookie" in client.get("/get/a").headers
    app.config["SESSION_REFRESH_EACH_REQUEST"] = False
    assert "Set-Cookie" not in client.get("/get/a").headers


class Renamed(KeepsakeSessionInterface):
    def get_cookie_name(self, app: Flask) -> str:
        return "__Host-renamed"

    def get_cookie_domain(self, app: Flask) -> str | None:
        return None

    def get_cookie_samesite(self, app: Flask) -> str | None:
        return "Strict"


def test_subclass_hooks_are_honoured() -> None:
    """A KeepsakeSessionInterface subclass that overrides hooks changes the cookie."""
    app = Flask(__name__)
    app.config.update(TESTING=True, SESSION_COOKIE_DOMAIN="example.com")
    keepsake = Keepsake(app, store=MemoryStore(), session_interface=Renamed)
    add_routes(app, keepsake)
    client = app.test_client()
    response = client.post("/set/a", data="1")
    name, _, attrs = parse_set_cookie(response.headers["Set-Cookie"])
    assert (name, attrs["samesite"]) == ("__Host-renamed", "Strict")
    assert "domain" not in attrs
    assert client.get("/get/a").text == "'1'"
    with app.test_request_context():
        assert keepsake.session_cookie().name == "__Host-renamed"


def test_should_set_cookie_hook_decides_renewals() -> None:
    """should_set_cookie returning False stops renewals; a new token is still sent."""

    class NoRenewals(KeepsakeSessionInterface):
        def should_set_cookie(self, app: Flask, session: object) -> bool:
            return False

    app = Flask(__name__)
    app.config["TESTING"] = True
    keepsake = Keepsake(app, store=MemoryStore(), session_interface=NoRenewals)
    add_routes(app, keepsake)

    @app.post("/remember")
    def remember() -> str:
        session.permanent = True
        session["a"] = 1
        return "ok"

    client = app.test_client()
    assert "Set-Cookie" in client.post("/remember").headers
    assert "Set-Cookie" not in client.get("/get/a").headers
    assert "Set-Cookie" in client.post("/login/1").headers


def test_session_interface_must_be_a_keepsake_subclass() -> None:
    """Passing another class is a TypeError at construction."""
    with pytest.raises(TypeError, match="KeepsakeSessionInterface"):
        Keepsake(session_interface=object)  # type: ignore[arg-type]


def test_extension_key_is_the_keepsake_object() -> None:
    """app.extensions["keepsake"] is the Keepsake object, and Keepsake adds no other key."""
    app = Flask(__name__)
    before = set(app.extensions)
    keepsake = Keepsake(app, store=MemoryStore())
    assert app.extensions["keepsake"] is keepsake
    assert set(app.extensions) - before == {"keepsake"}


def test_second_init_app_on_one_app_is_refused() -> None:
    """A second init_app on the same application raises a clear error."""
    app, keepsake = _app()
    with pytest.raises(KeepsakeError, match="already set up"):
        keepsake.init_app(app)
    with pytest.raises(KeepsakeError, match="already set up"):
        Keepsake(app, store=MemoryStore())


def test_one_extension_on_several_apps() -> None:
    """One Keepsake object serves several applications, each with its own engine."""
    keepsake = Keepsake(store=MemoryStore())
    first, second = Flask("first"), Flask("second")
    for app in (first, second):
        app.config["TESTING"] = True
        keepsake.init_app(app)
        add_routes(app, keepsake)
    assert first.session_interface.engine is not second.session_interface.engine  # type: ignore[attr-defined]
    client = first.test_client()
    client.post("/login/4")
    assert client.get("/whoami").text == "4"


def test_replaced_session_interface_gives_a_clear_error() -> None:
    """Replacing app.session_interface after init_app makes the API say what happened."""
    app, keepsake = _app()
    app.session_interface = Flask.session_interface
    with app.test_request_context(), pytest.raises(NotInitialized, match="session_interface"):
        keepsake.login(1)


def test_api_outside_a_request_of_a_keepsake_app_is_not_initialized() -> None:
    """Using Keepsake on an app it was not set up on raises NotInitialized naming the app."""
    keepsake = Keepsake(store=MemoryStore())
    app = Flask("bare")
    with app.test_request_context(), pytest.raises(NotInitialized, match="bare"):
        keepsake.login(1)


class SubclassWithSecret(Flask):
    secret_key = "class-attribute-secret-0123456789abcdef"


def test_secret_key_as_a_flask_subclass_attribute_is_the_secret() -> None:
    """app.secret_key set on a Flask subclass (as Flask-WTF's tests do) is used, as Flask does."""
    csrf = pytest.importorskip("flask_wtf.csrf")
    app = SubclassWithSecret(__name__)
    app.config["TESTING"] = True
    assert app.config["SECRET_KEY"] is None
    csrf.CSRFProtect(app)
    keepsake = Keepsake(app, store=MemoryStore())
    theme = keepsake.cookie("theme", purpose="Theme.", category="essential", signed=True)

    @app.get("/theme")
    def set_theme() -> object:
        from flask import make_response

        response = make_response("ok")
        theme.set(response, "dark")
        return response

    @app.get("/read")
    def read() -> str:
        return str(theme.get())

    client = app.test_client()
    client.get("/theme", base_url="https://localhost")
    assert client.get("/read", base_url="https://localhost").text == "dark"


def test_declared_cookies_follow_a_rotated_secret_key() -> None:
    """The keys of signed cookies are read when used: a new key with the old as fallback works."""
    app, keepsake = _app()
    theme = keepsake.cookie("theme2", purpose="Theme.", category="essential", signed=True)

    @app.get("/theme")
    def set_theme() -> object:
        from flask import make_response

        response = make_response("ok")
        theme.set(response, "dark")
        return response

    @app.get("/read")
    def read() -> str:
        return str(theme.get())

    client = app.test_client()
    client.get("/theme")
    old = app.secret_key
    app.secret_key = "rotated-secret-0123456789abcdef0123"
    assert client.get("/read").text == "None"
    app.config["SECRET_KEY_FALLBACKS"] = [old]
    assert client.get("/read").text == "dark"


def test_permanent_lifetime_on_app_attribute_is_used() -> None:
    """app.permanent_session_lifetime set as an attribute is PERMANENT_SESSION_LIFETIME."""
    app, keepsake = _app()
    app.permanent_session_lifetime = timedelta(minutes=90)

    @app.post("/remember")
    def remember() -> str:
        keepsake.login(1, remember=True)
        return "ok"

    response = app.test_client().post("/remember")
    assert "expires" in parse_set_cookie(response.headers["Set-Cookie"])[2]
    with app.test_request_context():
        [info] = keepsake.sessions(1)
    assert (info.expires - info.created).total_seconds() == pytest.approx(90 * 60, abs=1)


@pytest.mark.parametrize("login_manager", [False, True])
def test_untouched_session_is_not_accessed(login_manager: bool) -> None:
    """As in Flask's test_session_accessed: Keepsake's own hooks never mark an untouched
    session accessed (reading flask.session does, since Flask 3.1.3)."""
    seen: list[bool] = []

    class Recording(KeepsakeSessionInterface):
        def save_session(self, app: Flask, session: object, response: object) -> None:
            seen.append(bool(getattr(session, "accessed")))  # noqa: B009 - typed as object
            super().save_session(app, session, response)  # type: ignore[arg-type]

    app = Flask(__name__)
    app.config["TESTING"] = True
    keepsake = Keepsake(app, store=MemoryStore(), session_interface=Recording)
    add_routes(app, keepsake)
    if login_manager:
        flask_login = pytest.importorskip("flask_login")
        flask_login.LoginManager(app).user_loader(lambda user_id: None)
    client = app.test_client()
    client.get("/noop")
    client.get("/get/a")
    # Flask-Login's after-request hook reads the session, so it is accessed there.
    assert seen == [login_manager, True]
