"""Fixtures for the PostgreSQL-only tests: the shared store, apps, a server of one's own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from flask_keepsake import Keepsake
from flask_keepsake.stores.postgres import PostgresStore
from flask_keepsake.testing.servers import PostgresServer

from ..conftest import add_routes
from ..store_registry import POSTGRES_DB, empty_postgres

#: Pool and statement timeouts of the stores in the fault tests, in seconds.
TIMEOUT = 0.5
#: How much longer than its timeout a failing request may take (Flask, the 503 page).
SLACK = 0.5
COOKIE = "__Host-session"


@pytest.fixture
def server(postgres_server: PostgresServer) -> PostgresServer:
    """The shared PostgreSQL server of the run, its session tables emptied for this test."""
    empty_postgres(postgres_server)
    return postgres_server


@pytest.fixture
def url(server: PostgresServer) -> str:
    """The URL of the store tests' database on the shared server."""
    return server.url_of(POSTGRES_DB)


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    """A PostgreSQL store on the shared server."""
    instance = PostgresStore(url, max_size=4)
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A server of this module alone, which its tests may stop, restart or make read-only."""
    instance = PostgresServer(tmp_path_factory.mktemp("own-postgres")).start()
    instance.execute("CREATE DATABASE faults")
    yield instance
    instance.remove()


@pytest.fixture
def own_server(module_server: PostgresServer) -> Iterator[PostgresServer]:
    """The module's server, running and writable with empty tables; set back after the test."""
    if not module_server.data or not (module_server.data / "postmaster.pid").exists():
        module_server.start()
    module_server.execute(
        "DO $$ BEGIN IF to_regclass('public.keepsake_sessions') IS NOT NULL THEN "
        "TRUNCATE keepsake_sessions, keepsake_sessions_tombstones, keepsake_sessions_markers; "
        "END IF; END $$",
        dbname="faults",
    )
    yield module_server
    if not module_server.data or not (module_server.data / "postmaster.pid").exists():
        module_server.start()
    module_server.execute("ALTER DATABASE faults RESET default_transaction_read_only")


AppOnStore = Callable[..., Flask]


@pytest.fixture
def make_app() -> AppOnStore:
    """Build an app with Keepsake on the given store (real clock) and the test routes."""

    def factory(store: PostgresStore, **config: Any) -> Flask:
        app = Flask(__name__)
        app.config.update(TESTING=True, KEEPSAKE_RETRY_AFTER=7, **config)
        keepsake = Keepsake(app, store=store)
        add_routes(app, keepsake)
        return app

    return factory


def stored_rows(server: PostgresServer, dbname: str = POSTGRES_DB) -> list[tuple[Any, ...]]:
    """Every session row, as ``(key, data, xmin)``, read straight from the table."""
    rows: list[tuple[Any, ...]] = server.execute(
        "SELECT key, data, xmin::text FROM keepsake_sessions ORDER BY key", dbname=dbname
    )
    return rows
