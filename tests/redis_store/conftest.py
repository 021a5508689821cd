"""Fixtures for the Redis-only tests: a store on the shared server, apps, a server of one's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request, session

from flask_keepsake import Keepsake
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import RedisServer

from ..conftest import add_routes

#: Socket timeout of the stores in the fault tests, in seconds.
TIMEOUT = 0.25


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    """The shared redis-server of the run, emptied for this test."""
    redis_server.admin().flushdb()
    return redis_server


@pytest.fixture
def store(server: RedisServer) -> Iterator[RedisStore]:
    """A Redis store on the shared server."""
    instance = RedisStore.from_url(server.url)
    yield instance
    instance.close()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may pause, fill or kill."""
    instance = RedisServer(tmp_path / "redis").start()
    yield instance
    instance.stop()


AppOnStore = Callable[[RedisStore], Flask]


@pytest.fixture
def make_app() -> AppOnStore:
    """Build an app with Keepsake on the given store (real clock) and the test routes."""

    def factory(store: RedisStore, **config: Any) -> Flask:
        app = Flask(__name__)
        app.config.update(TESTING=True, KEEPSAKE_RETRY_AFTER=7, **config)
        keepsake = Keepsake(app, store=store)
        add_routes(app, keepsake)

        @app.post("/set-many")
        def set_many() -> str:
            session.get("first")
            for name in request.get_data(as_text=True).split(","):
                session[name] = "new"
            return "ok"

        return app

    return factory
