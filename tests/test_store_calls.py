"""How many store calls each kind of request makes, counted by the store spy.

The counts are the engine's, so they are the same on every store; they run on the single-server
stores of the registry (the cluster adds nothing here but start-up time). Redis gets two more
tests: what reaches the server for an untouched and a read request.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_keepsake import Keepsake
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing import FakeClock, StoreSpy
from flask_keepsake.testing.servers import RedisServer

from .conftest import AppFactory, add_routes, spy

#: The single-server stores: a cluster adds nothing here but start-up time.
pytestmark = pytest.mark.stores("memory", "sqlite", "redis", "redis-local-cache", "postgres")


def _signed_in(app: Flask) -> FlaskClient:
    """A client with a stored five-key session bound to a user; the spy's counts start at 0."""
    client = app.test_client()
    for key in ("user_id", "username", "theme", "cart", "visits"):
        assert client.post(f"/set/{key}", data="value").status_code == 200
    assert client.post("/login/7").status_code == 200
    spy(app).reset()
    return client


def test_untouched_request_makes_no_store_call(app: Flask) -> None:
    """A view that never uses the session makes no store call, with the cookie sent."""
    client = _signed_in(app)
    assert client.get("/noop").status_code == 200
    assert spy(app).calls == {}


def test_read_makes_one_load_and_no_write(app: Flask) -> None:
    """Reading one key of a stored session is exactly one load."""
    client = _signed_in(app)
    assert client.get("/get/username").get_data(as_text=True) == "'value'"
    assert spy(app).calls == {"load": 1}
    assert spy(app).writes == 0


def test_repeated_reads_stay_one_load_each(app: Flask) -> None:
    """Ten reads inside the touch interval are ten loads and no write."""
    client = _signed_in(app)
    for _ in range(10):
        client.get("/get/username")
    assert spy(app).calls == {"load": 10}


def test_write_makes_one_load_and_one_apply(app: Flask) -> None:
    """Changing one key is one load and one atomic delta."""
    client = _signed_in(app)
    client.post("/set/visits", data="1")
    assert spy(app).calls == {"load": 1, "apply": 1}


def test_writing_the_same_value_writes_nothing(app: Flask) -> None:
    """Setting a key to the value it already holds is a load and no write."""
    client = _signed_in(app)
    client.post("/set/theme", data="value")
    assert spy(app).calls == {"load": 1}


def test_new_session_makes_one_create(app: Flask) -> None:
    """A first request that stores a key creates the record in one call, and loads nothing."""
    client = app.test_client()
    client.post("/set/visits", data="1")
    assert spy(app).calls == {"create": 1}


def test_request_without_cookie_that_stores_nothing_makes_no_call(app: Flask) -> None:
    """An anonymous visitor who reads the empty session costs no store call."""
    client = app.test_client()
    client.get("/get/username")
    assert spy(app).calls == {}


def test_login_makes_one_load_and_one_rename(app: Flask) -> None:
    """Signing in a stored session renames it in one call (with its delta and tombstone)."""
    client = _signed_in(app)
    client.post("/login/8")
    assert spy(app).calls == {"load": 1, "rename": 1}


def test_login_without_rotation_grace_is_the_same_calls(make_app: AppFactory) -> None:
    """The tombstone is written inside the rename: no grace, same calls."""
    app = make_app(KEEPSAKE_ROTATION_GRACE=0)
    client = _signed_in(app)
    client.post("/login/8")
    assert spy(app).calls == {"load": 1, "rename": 1}


def test_regenerate_makes_one_load_and_one_rename(app: Flask) -> None:
    """A new token for the same data is one rename."""
    client = _signed_in(app)
    client.post("/regenerate")
    assert spy(app).calls == {"load": 1, "rename": 1}


def test_logout_deletes_the_record_and_marks_the_user(app: Flask) -> None:
    """Signing out is one delete, plus one marker that ends the user's remember-me grants."""
    client = _signed_in(app)
    client.post("/logout")
    assert spy(app).calls == {"load": 1, "delete": 1, "put_marker": 1}


def test_reads_touch_at_most_once_per_interval(app: Flask, clock: FakeClock) -> None:
    """600 reads one second apart, with the default 60 s touch interval, touch 10 times."""
    client = _signed_in(app)
    for _ in range(600):
        clock.advance(1)
        client.get("/get/username")
    calls = spy(app).calls
    assert calls["load"] == 600
    assert calls["touch"] + calls["apply"] == 10
    assert spy(app).writes == 10


def test_flask_login_app_loads_the_session_of_an_untouched_request(app: Flask) -> None:
    """Flask-Login's after-request hook reads the session: one load, no write."""
    flask_login = pytest.importorskip("flask_login")
    manager = flask_login.LoginManager(app)
    manager.user_loader(lambda user_id: None)
    client = _signed_in(app)
    client.get("/noop")
    assert spy(app).calls == {"load": 1}


def test_flask_login_app_without_cookie_makes_no_call(app: Flask) -> None:
    """Without a session cookie, Flask-Login's read costs no store call."""
    flask_login = pytest.importorskip("flask_login")
    manager = flask_login.LoginManager(app)
    manager.user_loader(lambda user_id: None)
    app.test_client().get("/noop")
    assert spy(app).calls == {}


def _commands(server: RedisServer) -> int:
    """Commands the server ran since the last ``CONFIG RESETSTAT``, other than the test's own."""
    stats = server.admin().info("commandstats")
    own = ("cmdstat_info", "cmdstat_config")
    return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith(own))


@pytest.fixture(params=[0, 1000], ids=["plain", "local-cache"])
def redis_app(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Flask]:
    """An app on a spied Redis store, without and with the local cache."""
    redis_server.admin().flushdb()
    store = RedisStore.from_url(redis_server.url, local_cache=request.param)
    app = Flask(__name__)
    app.config.update(TESTING=True, LOCAL_CACHE=request.param)
    add_routes(app, Keepsake(app, store=StoreSpy(store)))
    yield app
    store.close()


def test_redis_untouched_request_sends_no_command(
    redis_app: Flask, redis_server: RedisServer
) -> None:
    """An untouched request sends Redis nothing, with or without the local cache."""
    client = _signed_in(redis_app)
    client.get("/get/username")
    redis_server.admin().config_resetstat()
    for _ in range(5):
        client.get("/noop")
    assert _commands(redis_server) == 0


def test_redis_read_is_one_command_or_none_cached(
    redis_app: Flask, redis_server: RedisServer
) -> None:
    """Five reads send five commands, one each; with the local cache, none once it holds them."""
    client = _signed_in(redis_app)
    client.get("/get/username")
    redis_server.admin().config_resetstat()
    for _ in range(5):
        client.get("/get/username")
    expected = 0 if redis_app.config["LOCAL_CACHE"] else 5
    assert _commands(redis_server) == expected
