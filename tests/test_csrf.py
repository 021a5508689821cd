"""CSRF: Flask-WTF tokens rotated at login, dropped at logout, its 400 if bad; the origin check."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_keepsake import ConfigError, Keepsake
from flask_keepsake.stores.memory import MemoryStore

from .conftest import AppFactory

csrf = pytest.importorskip("flask_wtf.csrf")

SECRET = "csrf-test-secret-0123456789abcdef"


def _add_csrf_routes(app: Flask) -> None:
    @app.get("/token")
    def token() -> str:
        return str(csrf.generate_csrf())

    @app.post("/transfer")
    def transfer() -> str:
        return "done"


@pytest.fixture
def protected(make_app: AppFactory) -> Flask:
    """An app on each store with CSRFProtect and the engine's login and logout routes."""
    app = make_app()
    csrf.CSRFProtect(app)
    _add_csrf_routes(app)
    return app


def _memory_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY=SECRET)
    app.config.update(config)
    Keepsake(app, store=MemoryStore())
    csrf.CSRFProtect(app)
    _add_csrf_routes(app)
    return app


@pytest.fixture
def app() -> Flask:
    """A memory-store app with CSRFProtect."""
    return _memory_app()


def _token(client: FlaskClient) -> str:
    return client.get("/token").text


def _post(client: FlaskClient, token: str | None, path: str = "/transfer") -> int:
    data = {} if token is None else {"csrf_token": token}
    return client.post(path, data=data).status_code


# -- rotation -----------------------------------------------------------------------------------


def test_valid_token_passes(protected: Flask) -> None:
    """A token from this session is accepted."""
    client = protected.test_client()
    assert _post(client, _token(client)) == 200


def test_token_before_login_rejected_after_login(protected: Flask) -> None:
    """A token seen before login (a fixated or leaked one) is refused with 400 after login."""
    client = protected.test_client()
    before = _token(client)
    assert _post(client, before, "/login/42") == 200
    assert _post(client, before) == 400


def test_new_token_after_login_accepted(protected: Flask) -> None:
    """After login the page gets a new token, which works."""
    client = protected.test_client()
    before = _token(client)
    _post(client, before, "/login/42")
    after = _token(client)
    assert after != before
    assert _post(client, after) == 200


def test_token_dropped_at_logout(protected: Flask) -> None:
    """The logged-in token is refused after logout."""
    client = protected.test_client()
    _post(client, _token(client), "/login/42")
    during = _token(client)
    assert _post(client, during, "/logout") == 200
    assert _post(client, during) == 400


def test_token_rotated_by_flask_login(protected: Flask) -> None:
    """Flask-Login's login_user rotates the token too."""
    flask_login = pytest.importorskip("flask_login")

    class User:
        is_active = is_authenticated = True
        is_anonymous = False

        def __init__(self, uid: str) -> None:
            self.id = uid

        def get_id(self) -> str:
            return self.id

    manager = flask_login.LoginManager(protected)
    manager.user_loader(User)

    @protected.post("/fl-login")
    def fl_login() -> str:
        flask_login.login_user(User("7"))
        return "ok"

    client = protected.test_client()
    before = _token(client)
    assert _post(client, before, "/fl-login") == 200
    assert _post(client, before) == 400
    assert _post(client, _token(client)) == 200


# -- every bad token is Flask-WTF's 400 ----------------------------------------------------------


def test_missing_token_is_400(app: Flask) -> None:
    """A POST without a token is refused with 400, not Flask-WTF's 400."""
    client = app.test_client()
    _token(client)
    assert _post(client, None) == 400


def test_missing_session_is_400(app: Flask) -> None:
    """A token sent by a client that has no session is refused with 400."""
    token = _token(app.test_client())
    assert _post(app.test_client(), token) == 400


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "ü-not-ascii", "x" * 10_000, "\x00", ".", "Ii4i.aaa.bbb", " " * 10],
)
def test_malformed_or_oversized_token_is_400(app: Flask, token: str) -> None:
    """Malformed, non-ASCII and oversized tokens are refused with 400."""
    client = app.test_client()
    _token(client)
    assert _post(client, token) == 400


def test_foreign_token_is_400(app: Flask) -> None:
    """A valid token of another visitor's session is refused."""
    attacker, victim = app.test_client(), app.test_client()
    _token(victim)
    assert _post(victim, _token(attacker)) == 400


def test_token_signed_with_other_secret_is_400(app: Flask) -> None:
    """A token made by another application (another SECRET_KEY) is refused."""
    other = _memory_app(SECRET_KEY="another-secret-0123456789abcdef")
    client = app.test_client()
    _token(client)
    assert _post(client, _token(other.test_client())) == 400


def test_bad_token_in_header_is_400(app: Flask) -> None:
    """A bad X-CSRFToken header (JavaScript clients) is refused with 400."""
    client = app.test_client()
    _token(client)
    assert client.post("/transfer", headers={"X-CSRFToken": "nope"}).status_code == 400


def test_keepsake_registers_no_csrf_error_handler(app: Flask) -> None:
    """Flask-WTF answers a failed check itself: Keepsake adds no CSRFError handler."""
    handlers = app.error_handler_spec[None][400]
    assert csrf.CSRFError not in handlers


def test_csrf_failure_reaches_the_apps_400_handler(app: Flask) -> None:
    """The CSRFError goes through the application's own 400 handler, as without Keepsake."""
    seen: list[Exception] = []

    @app.errorhandler(400)
    def bad_request(exc: Exception) -> tuple[str, int]:
        seen.append(exc)
        return "custom bad request page", 400

    client = app.test_client()
    _token(client)
    response = client.post("/transfer")
    assert (response.status_code, response.text) == (400, "custom bad request page")
    assert isinstance(seen[0], csrf.CSRFError)


def test_documented_csrf_handler_logs_refusals(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    """The handler docs/cookies.md shows logs a refusal on the security logger."""
    security = logging.getLogger("flask_keepsake.security")

    @app.errorhandler(csrf.CSRFError)
    def csrf_failed(exc: csrf.CSRFError) -> tuple[str, int]:
        security.warning("CSRF check failed: %s", exc.description)
        return exc.description or "CSRF check failed", 400

    client = app.test_client()
    _token(client)
    with caplog.at_level(logging.WARNING, "flask_keepsake.security"):
        assert _post(client, None) == 400
    assert "CSRF check failed: The CSRF token is missing." in caplog.text


def test_apps_own_csrf_handler_wins(app: Flask) -> None:
    """An application that handles CSRFError itself keeps its handler."""

    @app.errorhandler(csrf.CSRFError)
    def handle(exc: Exception) -> tuple[str, int]:
        return "mine", 419

    assert app.test_client().post("/transfer").status_code == 419


def test_csrf_handler_registered_before_keepsake_is_kept() -> None:
    """A CSRFError handler registered before init_app is not replaced."""
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY=SECRET)
    app.register_error_handler(csrf.CSRFError, lambda exc: ("mine", 419))
    csrf.CSRFProtect(app)
    Keepsake(app, store=MemoryStore())
    _add_csrf_routes(app)
    assert app.test_client().post("/transfer").status_code == 419


@given(token=st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.hex()))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_token_is_400_never_500(app: Flask, token: str) -> None:
    """Whatever the token, the answer is 400 (or 200 for the real one), never a 500."""
    client = app.test_client()
    real = _token(client)
    status = client.post("/transfer", data={"csrf_token": token}).status_code
    assert status == (200 if token == real else 400)


def test_csrfprotect_without_secret_key_refused_at_start() -> None:
    """CSRFProtect set up before Keepsake on an app without SECRET_KEY names SECRET_KEY."""
    app = Flask(__name__)
    app.config["TESTING"] = True
    csrf.CSRFProtect(app)
    with pytest.raises(ConfigError, match="SECRET_KEY") as info:
        Keepsake(app, store=MemoryStore())
    assert info.value.key == "SECRET_KEY"


def test_wtf_csrf_secret_key_is_enough() -> None:
    """WTF_CSRF_SECRET_KEY instead of SECRET_KEY satisfies the start-up check."""
    app = Flask(__name__)
    app.config.update(TESTING=True, WTF_CSRF_SECRET_KEY=SECRET)
    csrf.CSRFProtect(app)
    Keepsake(app, store=MemoryStore())


# -- the Origin / Sec-Fetch-Site check ----------------------------------------------------------


def _origin_app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, KEEPSAKE_CHECK_ORIGIN=True)
    app.config.update(config)
    Keepsake(app, store=MemoryStore())

    @app.route("/change", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    def change() -> str:
        return "changed"

    return app


@pytest.fixture
def origin_app() -> Flask:
    """An app with KEEPSAKE_CHECK_ORIGIN on and no CSRF tokens."""
    return _origin_app()


def _status(app: Flask, method: str = "POST", **headers: str) -> int:
    return app.test_client().open("/change", method=method, headers=headers).status_code


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_cross_site_write_is_403(origin_app: Flask, method: str) -> None:
    """A cross-site POST, PUT, PATCH or DELETE is refused with 403."""
    headers = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    assert _status(origin_app, method, **headers) == 403


def test_same_site_sibling_is_403(origin_app: Flask) -> None:
    """A sibling subdomain (same-site, cross-origin) is refused too."""
    headers = {"Sec-Fetch-Site": "same-site", "Origin": "https://blog.localhost"}
    assert _status(origin_app, **headers) == 403


@pytest.mark.parametrize("site", ["same-origin", "none", "Same-Origin"])
def test_same_origin_and_user_initiated_pass(origin_app: Flask, site: str) -> None:
    """same-origin requests and user-initiated ones (typed URL, bookmark) pass."""
    assert _status(origin_app, **{"Sec-Fetch-Site": site}) == 200


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_cross_site_safe_method_passes(origin_app: Flask, method: str) -> None:
    """Cross-site GET, HEAD and OPTIONS are not refused (they must not change state)."""
    assert _status(origin_app, method, **{"Sec-Fetch-Site": "cross-site"}) == 200


def test_no_browser_headers_passes(origin_app: Flask) -> None:
    """A request with neither header (curl, a webhook) passes: CSRF needs a browser."""
    assert _status(origin_app) == 200


def test_matching_origin_without_fetch_metadata_passes(origin_app: Flask) -> None:
    """An older browser's Origin naming this host passes."""
    assert _status(origin_app, Origin="http://localhost") == 200


def test_origin_of_another_scheme_is_403(origin_app: Flask) -> None:
    """An http:// page posting to the https:// site is another origin, whatever its host."""
    client = origin_app.test_client()
    headers = {"Origin": "http://localhost"}
    response = client.post("/change", headers=headers, base_url="https://localhost")
    assert response.status_code == 403
    same = client.post(
        "/change", headers={"Origin": "https://localhost"}, base_url="https://localhost"
    )
    assert same.status_code == 200


def test_origin_with_the_default_port_spelled_out_passes(origin_app: Flask) -> None:
    """https://host:443 and https://host are the same origin."""
    client = origin_app.test_client()
    headers = {"Origin": "https://localhost:443"}
    assert client.post("/change", headers=headers, base_url="https://localhost").status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://localhost.evil", "::"])
def test_foreign_origin_without_fetch_metadata_is_403(origin_app: Flask, origin: str) -> None:
    """An older browser's Origin naming another host, or null, is refused."""
    assert _status(origin_app, Origin=origin) == 403


def test_unknown_fetch_site_value_is_403(origin_app: Flask) -> None:
    """A Sec-Fetch-Site value that is not a pass is refused."""
    assert _status(origin_app, **{"Sec-Fetch-Site": "whatever"}) == 403


def test_trusted_origin_passes() -> None:
    """An origin in KEEPSAKE_TRUSTED_ORIGINS may post cross-site."""
    app = _origin_app(KEEPSAKE_TRUSTED_ORIGINS=["https://Pay.Example/"])
    headers = {"Sec-Fetch-Site": "cross-site", "Origin": "https://pay.example"}
    assert _status(app, **headers) == 200
    assert _status(app, Origin="https://pay.example") == 200
    assert _status(app, **{**headers, "Origin": "https://evil.example"}) == 403


def test_origin_refusal_is_logged(origin_app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """A refused cross-site request is logged with its method and origin."""
    with caplog.at_level(logging.WARNING, "flask_keepsake.security"):
        _status(origin_app, **{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"})
    assert "Cross-site POST" in caplog.text
    assert "evil.example" in caplog.text


def test_origin_check_off_by_default() -> None:
    """Without KEEPSAKE_CHECK_ORIGIN a cross-site POST is left to CSRF tokens."""
    app = _origin_app(KEEPSAKE_CHECK_ORIGIN=False)
    assert _status(app, **{"Sec-Fetch-Site": "cross-site"}) == 200


def test_origin_check_from_env_string() -> None:
    """KEEPSAKE_CHECK_ORIGIN accepts "true" (from an environment variable)."""
    app = _origin_app(KEEPSAKE_CHECK_ORIGIN="true")
    assert _status(app, **{"Sec-Fetch-Site": "cross-site"}) == 403


def test_origin_check_runs_before_csrf_token_check() -> None:
    """With both, a cross-site request is a 403 whatever its token."""
    app = _origin_app(SECRET_KEY=SECRET)
    csrf.CSRFProtect(app)
    assert _status(app, **{"Sec-Fetch-Site": "cross-site"}) == 403


@pytest.mark.parametrize("value", ["maybe", 2])
def test_check_origin_config_checked(value: Any) -> None:
    """KEEPSAKE_CHECK_ORIGIN must be a boolean."""
    with pytest.raises(ConfigError, match="KEEPSAKE_CHECK_ORIGIN"):
        _origin_app(KEEPSAKE_CHECK_ORIGIN=value)


@pytest.mark.parametrize(
    "value",
    [["pay.example"], ["https://pay.example/path"], ["ftp://pay.example"], [3], 5, ["https://"]],
)
def test_trusted_origins_config_checked(value: Any) -> None:
    """KEEPSAKE_TRUSTED_ORIGINS holds scheme://host[:port] origins."""
    with pytest.raises(ConfigError, match="KEEPSAKE_TRUSTED_ORIGINS"):
        _origin_app(KEEPSAKE_TRUSTED_ORIGINS=value)


def test_trusted_origins_without_check_refused() -> None:
    """Trusted origins with the check off would do nothing, and are refused."""
    with pytest.raises(ConfigError, match="KEEPSAKE_TRUSTED_ORIGINS"):
        _origin_app(KEEPSAKE_CHECK_ORIGIN=False, KEEPSAKE_TRUSTED_ORIGINS=["https://a.example"])


@given(
    site=st.none() | st.text(max_size=30),
    origin=st.none() | st.text(max_size=60),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
)
@settings(max_examples=200, deadline=None)
def test_any_headers_give_200_or_403(site: str | None, origin: str | None, method: str) -> None:
    """Whatever the headers, the origin check answers 200 or 403, never a 500."""
    app = _origin_app()
    environ: dict[str, str] = {}
    if site is not None:
        environ["HTTP_SEC_FETCH_SITE"] = site.encode().decode("latin-1")
    if origin is not None:
        environ["HTTP_ORIGIN"] = origin.encode().decode("latin-1")
    status = app.test_client().open("/change", method=method, environ_base=environ).status_code
    assert status in {200, 403}
