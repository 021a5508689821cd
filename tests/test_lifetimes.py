"""Two kinds of session, each with server-enforced windows; the cookie's Expires is the server's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask, session
from flask.testing import FlaskClient

from flask_keepsake import ConfigError, Keepsake
from flask_keepsake.stores.memory import MemoryStore

from .conftest import AppFactory, spy
from .helpers import FakeClock, parse_set_cookie

#: What these tests check goes through each store's own code: run them on every store.
pytestmark = pytest.mark.every_store

DAY = 86400.0


def _persistent_app(make_app: AppFactory, **config: object) -> Flask:
    app = make_app(**config)
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]

    @app.post("/permanent/<flag>")
    def permanent(flag: str) -> str:
        session.permanent = flag == "on"
        session["kept"] = "yes"
        return "ok"

    @app.post("/remember/<user_id>")
    def remember(user_id: str) -> str:
        keepsake.login(user_id, remember=True)
        return "ok"

    @app.get("/fresh")
    def fresh() -> str:
        return str(keepsake.is_fresh())

    @app.get("/info")
    def info() -> str:
        current = keepsake.current_session()
        assert current is not None
        return f"{current.persistent}|{current.expires.timestamp():.0f}"

    return app


def _expires(response: object) -> float | None:
    """The Expires of the response's session cookie, in epoch seconds (None: no Expires)."""
    headers = [h for h in response.headers.getlist("Set-Cookie") if "session=" in h]  # type: ignore[attr-defined]
    assert len(headers) == 1, headers
    attrs = parse_set_cookie(headers[0])[2]
    if "expires" not in attrs:
        return None
    parsed = datetime.strptime(attrs["expires"], "%a, %d %b %Y %H:%M:%S GMT")
    return parsed.replace(tzinfo=UTC).timestamp()


def _kept(client: FlaskClient) -> bool:
    return client.get("/get/kept").text == "'yes'"


def test_persistent_cookie_expires_when_the_server_record_does(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """Cookie Expires and server expiry are one number: PERMANENT_SESSION_LIFETIME from now."""
    app = _persistent_app(make_app, PERMANENT_SESSION_LIFETIME=timedelta(hours=2))
    client = app.test_client()
    expires = _expires(client.post("/permanent/on"))
    assert expires == pytest.approx(clock.now + 7200, abs=1)
    assert client.get("/info").text == f"True|{clock.now + 7200:.0f}"


def test_persistent_session_refused_once_its_cookie_expired(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """A cookie replayed after the Expires it carried loads nothing (issue: 2 s lifetime)."""
    app = _persistent_app(make_app, PERMANENT_SESSION_LIFETIME=2)
    client = app.test_client()
    client.post("/permanent/on")
    clock.advance(1.5)
    assert _kept(client)
    clock.advance(2.1)
    assert not _kept(client)


def test_flask_default_lifetime_outlives_the_browser_idle_timeout(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """With Flask's 31 days, a persistent session survives two idle days; a browser one not."""
    app = _persistent_app(make_app)
    persistent, browser = app.test_client(), app.test_client()
    expires = _expires(persistent.post("/permanent/on"))
    assert expires == pytest.approx(clock.now + 31 * DAY, abs=1)
    assert _expires(browser.post("/permanent/off")) is None
    clock.advance(2 * DAY)
    assert _kept(persistent)
    assert not _kept(browser)


def test_browser_session_keeps_its_own_windows(make_app: AppFactory, clock: FakeClock) -> None:
    """A browser session ends after KEEPSAKE_IDLE_TIMEOUT idle, whatever Flask's lifetime."""
    app = _persistent_app(make_app, KEEPSAKE_IDLE_TIMEOUT=600, KEEPSAKE_ABSOLUTE_TIMEOUT=3600)
    client = app.test_client()
    client.post("/permanent/off")
    clock.advance(590)
    assert _kept(client)
    clock.advance(599)
    assert _kept(client)
    clock.advance(601)
    assert not _kept(client)


def test_persistent_session_slides_with_use(make_app: AppFactory, clock: FakeClock) -> None:
    """Each touch renews the server expiry and the cookie's Expires alike."""
    app = _persistent_app(make_app, PERMANENT_SESSION_LIFETIME=timedelta(hours=1))
    client = app.test_client()
    client.post("/permanent/on")
    for _ in range(5):
        clock.advance(50 * 60)
        response = client.get("/get/kept")
        assert response.text == "'yes'"
        assert _expires(response) == pytest.approx(clock.now + 3600, abs=1)


def test_refreshed_cookie_between_touches_repeats_the_server_expiry(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """Within the touch interval the cookie is re-sent with the expiry the server keeps."""
    app = _persistent_app(make_app, PERMANENT_SESSION_LIFETIME=timedelta(hours=1))
    client = app.test_client()
    first = _expires(client.post("/permanent/on"))
    clock.advance(10)
    spy(app).reset()
    response = client.get("/get/kept")
    assert _expires(response) == first
    assert spy(app).writes == 0


def test_without_refresh_reads_do_not_extend_a_persistent_session(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """SESSION_REFRESH_EACH_REQUEST off: no cookie on reads, and no longer server expiry."""
    app = _persistent_app(
        make_app, PERMANENT_SESSION_LIFETIME=timedelta(hours=1), SESSION_REFRESH_EACH_REQUEST=False
    )
    client = app.test_client()
    client.post("/permanent/on")
    for _ in range(2):
        clock.advance(25 * 60)
        response = client.get("/get/kept")
        assert response.text == "'yes'"
        assert "Set-Cookie" not in response.headers
    clock.advance(25 * 60)
    assert not _kept(client)


def test_modified_session_renews_without_refresh(make_app: AppFactory, clock: FakeClock) -> None:
    """Without refresh, a change renews the cookie and the server expiry, as Flask does."""
    app = _persistent_app(
        make_app, PERMANENT_SESSION_LIFETIME=timedelta(hours=1), SESSION_REFRESH_EACH_REQUEST=False
    )
    client = app.test_client()
    client.post("/permanent/on")
    clock.advance(50 * 60)
    assert _expires(client.post("/set/more", data="1")) == pytest.approx(clock.now + 3600, abs=1)
    clock.advance(50 * 60)
    assert _kept(client)


def test_persistent_session_ends_at_its_absolute_window(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """Used every day, a persistent session still ends KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT on."""
    app = _persistent_app(make_app, KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT=timedelta(days=40))
    client = app.test_client()
    client.post("/permanent/on")
    for _ in range(39):
        clock.advance(DAY)
        response = client.get("/get/kept")
        assert response.text == "'yes'"
    # The cookie's Expires never goes past the absolute end.
    assert _expires(response) == pytest.approx(1_800_000_000 + 40 * DAY, abs=1)
    clock.advance(DAY)
    assert not _kept(client)


def test_turning_permanent_on_moves_the_session_to_the_persistent_policy(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """A browser session made permanent gets an Expires cookie and outlives the idle timeout."""
    app = _persistent_app(make_app)
    client = app.test_client()
    client.post("/permanent/off")
    clock.advance(60)
    assert _expires(client.post("/permanent/on")) == pytest.approx(clock.now + 31 * DAY, abs=1)
    clock.advance(3 * DAY)
    assert _kept(client)


def test_turning_permanent_off_moves_the_session_to_the_browser_policy(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """A persistent session made a browser one gets a cookie without Expires and idles out."""
    app = _persistent_app(make_app)
    client = app.test_client()
    client.post("/permanent/on")
    clock.advance(60)
    assert _expires(client.post("/permanent/off")) is None
    clock.advance(31 * 60)
    assert not _kept(client)


def test_turning_permanent_off_after_the_browser_absolute_window_ends_it(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """A three-day-old persistent session made a browser session is past 12 hours: it ends."""
    app = _persistent_app(make_app)
    client = app.test_client()
    client.post("/permanent/on")
    clock.advance(3 * DAY)
    client.post("/permanent/off")
    assert not _kept(client)


def test_login_remember_makes_a_persistent_session(make_app: AppFactory, clock: FakeClock) -> None:
    """login(..., remember=True) gives a persistent cookie bound to the user."""
    app = _persistent_app(make_app)
    client = app.test_client()
    assert _expires(client.post("/remember/7")) == pytest.approx(clock.now + 31 * DAY, abs=1)
    clock.advance(5 * DAY)
    assert client.get("/whoami").text == "7"
    assert client.get("/info").text.startswith("True|")


def test_persistent_session_is_no_longer_fresh_after_a_long_idle(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """Back after more than the browser idle timeout: signed in, but not fresh until login."""
    app = _persistent_app(make_app)
    client = app.test_client()
    client.post("/remember/7")
    clock.advance(10 * 60)
    assert client.get("/fresh").text == "True"
    clock.advance(2 * 3600)
    assert client.get("/fresh").text == "False"
    assert client.get("/whoami").text == "7"
    clock.advance(60)
    assert client.get("/fresh").text == "False"
    client.post("/remember/7")
    assert client.get("/fresh").text == "True"


def test_browser_session_in_use_stays_fresh(make_app: AppFactory, clock: FakeClock) -> None:
    """A browser session never comes back after a long idle: it stays fresh while it lives."""
    app = _persistent_app(make_app)
    client = app.test_client()
    client.post("/login/7")
    for _ in range(5):
        clock.advance(20 * 60)
        assert client.get("/fresh").text == "True"


def test_sessions_lists_persistence_and_end(make_app: AppFactory, clock: FakeClock) -> None:
    """keepsake.sessions() says which sessions are persistent and until when."""
    app = _persistent_app(make_app)
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]
    app.test_client().post("/remember/7")
    app.test_client().post("/login/7")
    with app.test_request_context():
        infos = keepsake.sessions(7)
    kinds = sorted((info.persistent, info.expires.timestamp()) for info in infos)
    assert kinds == [(False, clock.now + 30 * 60), (True, clock.now + 31 * DAY)]


@pytest.mark.parametrize("lifetime", [0, -5, timedelta(0), timedelta(seconds=-1)])
def test_non_positive_permanent_lifetime_refused_at_start(lifetime: object) -> None:
    """PERMANENT_SESSION_LIFETIME of zero or less fails at start-up naming the key."""
    app = Flask(__name__)
    app.config.update(TESTING=True, PERMANENT_SESSION_LIFETIME=lifetime)
    with pytest.raises(ConfigError, match="PERMANENT_SESSION_LIFETIME"):
        Keepsake(app, store=MemoryStore())


def test_absolute_window_shorter_than_lifetime_refused_at_start() -> None:
    """An absolute window shorter than PERMANENT_SESSION_LIFETIME names the new key."""
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        PERMANENT_SESSION_LIFETIME=timedelta(days=31),
        KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT=timedelta(days=7),
    )
    with pytest.raises(ConfigError, match="KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT"):
        Keepsake(app, store=MemoryStore())


def test_lifetime_set_after_init_is_used(make_app: AppFactory, clock: FakeClock) -> None:
    """PERMANENT_SESSION_LIFETIME is read when used: a value set after Keepsake(app) counts."""
    app = _persistent_app(make_app)
    app.permanent_session_lifetime = timedelta(hours=3)
    assert _expires(app.test_client().post("/permanent/on")) == pytest.approx(
        clock.now + 3 * 3600, abs=1
    )
