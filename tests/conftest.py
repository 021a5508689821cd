"""Fixtures shared by the engine tests: stores by id, a fake clock, an app factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, request, session

from flask_keepsake import Keepsake
from flask_keepsake.interface import engine_of
from flask_keepsake.stores.base import Store
from flask_keepsake.testing.servers import PostgresServer, RedisClusterServers, RedisServer

from .helpers import FakeClock, SpyStore
from .store_registry import POSTGRES_DB, STORES


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Engine tests run on the memory store, those marked ``every_store`` on every store, and
    those marked ``stores("a", "b")`` on the stores named.

    The contract suite (``tests/stores``) proves that the stores behave alike; an engine test
    runs on each of them only where what it checks goes through the store's own code (deltas,
    rotation, expiry, faults, the CLI's store calls).
    """
    if "engine_store" in metafunc.fixturenames:
        chosen = metafunc.definition.get_closest_marker("stores")
        if chosen is not None:
            names = list(chosen.args)
        elif metafunc.definition.get_closest_marker("every_store") is not None:
            names = list(STORES)
        else:
            names = ["memory"]
        metafunc.parametrize("engine_store", names, indirect=True)


@pytest.fixture
def engine_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A real, empty store of the kind in ``tests/store_registry.STORES`` named by the param."""
    store = STORES[request.param].factory(request)
    yield store
    store.close()


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock shared by the app and the test."""
    return FakeClock()


AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(engine_store: Store, clock: FakeClock) -> AppFactory:
    """Build a test app on a spied real store; keyword arguments go to ``app.config``."""

    def factory(**config: Any) -> Flask:
        app = Flask(__name__)
        app.config.update(TESTING=True, SECRET_KEY="test-secret-key-0123456789abcdef")
        app.config.update(config)
        keepsake = Keepsake(app, store=SpyStore(engine_store), clock=clock)
        app.config["TEST_KEEPSAKE"] = keepsake
        add_routes(app, keepsake)
        return app

    return factory


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    """A test app with default configuration."""
    return make_app()


def spy(app: Flask) -> SpyStore:
    """The spied store of an app built by ``make_app``."""
    store = engine_of(app).store
    assert isinstance(store, SpyStore)
    return store


def add_routes(app: Flask, keepsake: Keepsake) -> None:
    """Small routes that exercise the session from tests."""

    @app.get("/noop")
    def noop() -> str:
        return "ok"

    @app.get("/get/<key>")
    def get(key: str) -> str:
        return repr(session.get(key))

    @app.post("/set/<key>")
    def set_(key: str) -> str:
        session[key] = request.get_data(as_text=True)
        return "ok"

    @app.post("/del/<key>")
    def delete(key: str) -> str:
        session.pop(key, None)
        return "ok"

    @app.get("/keys")
    def keys() -> str:
        return ",".join(sorted(session))

    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        keepsake.login(user_id)
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        keepsake.logout()
        return "ok"

    @app.post("/regenerate")
    def regenerate() -> str:
        keepsake.regenerate()
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return keepsake.current_user_id or "anonymous"

    @app.post("/fail/<key>")
    def fail(key: str) -> Response:
        session[key] = "half-done"
        return Response("boom", status=500)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run, started on a free loopback port, no persistence."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A real three-primary Redis Cluster for the whole run, on free loopback ports."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run, with an empty database for the store tests."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres")).start()
    try:
        server.execute(f"CREATE DATABASE {POSTGRES_DB}")
        yield server
    finally:
        server.remove()
