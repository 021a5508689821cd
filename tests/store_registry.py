"""Every store the tests run against, in one registry.

Both the store contract suite (``tests/stores``) and the engine tests (``tests/test_*.py``) are
parametrized over :data:`STORES`. To add a backend, add an entry whose factory builds a fresh,
empty store (it may ask ``request`` for other fixtures, such as a server the tests start, and
register extra cleanup with ``request.addfinalizer``); every test then runs against it unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from flask_keepsake.stores import MemoryStore, SQLiteStore, Store
from flask_keepsake.stores.postgres import PostgresStore
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import PostgresServer, RedisClusterServers, RedisServer


@dataclass(frozen=True)
class StoreSpec:
    """How to build one kind of store for the tests.

    :param factory: builds a fresh, empty store; the fixture closes it after the test.
    :param native_expiry: the backend drops expired records by itself (Redis TTLs), so
        :meth:`Store.count_expired` and :meth:`Store.purge_expired` always return 0.
    :param corrupt: overwrite the stored form of the record under a key with something the
        store cannot decode, behind the store's back; ``None`` for a store that keeps Python
        objects and decodes nothing.
    """

    factory: Callable[[pytest.FixtureRequest], Store]
    native_expiry: bool = False
    corrupt: Callable[[Store, str], None] | None = None


def _memory(request: pytest.FixtureRequest) -> Store:
    return MemoryStore()


def _sqlite(request: pytest.FixtureRequest) -> Store:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return SQLiteStore(tmp_path / "sessions.sqlite3")


def _corrupt_sqlite(store: Store, key: str) -> None:
    assert isinstance(store, SQLiteStore)
    with sqlite3.connect(store.path) as conn:
        cursor = conn.execute(
            "UPDATE keepsake_sessions SET data = '{not json' WHERE key = ?", (bytes.fromhex(key),)
        )
        assert cursor.rowcount == 1
    conn.close()


def _corrupt_redis(store: Store, key: str) -> None:
    # Through the store's own client, so that one hook serves a server and a cluster alike; the
    # local cache hears of the change from Redis, as it would from any other writer.
    assert isinstance(store, RedisStore)
    assert store.client.hset(f"{store.prefix}s:{key}", "m", "{not json") == 0


def _redis(request: pytest.FixtureRequest) -> Store:
    server: RedisServer = request.getfixturevalue("redis_server")
    server.admin().flushdb()
    return RedisStore.from_url(server.url)


def _redis_local_cache(request: pytest.FixtureRequest) -> Store:
    server: RedisServer = request.getfixturevalue("redis_server")
    server.admin().flushdb()
    return RedisStore.from_url(server.url, local_cache=1000)


def _redis_cluster(request: pytest.FixtureRequest) -> Store:
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return RedisStore.from_url(cluster.url, cluster=True)


#: The database of the shared PostgreSQL server that the store tests use.
POSTGRES_DB = "keepsake_test"


def empty_postgres(server: PostgresServer) -> None:
    """Empty the store's tables on the shared server (they stay, so no test pays for DDL)."""
    server.execute(
        "DO $$ BEGIN IF to_regclass('public.keepsake_sessions') IS NOT NULL THEN "
        "TRUNCATE keepsake_sessions, keepsake_sessions_tombstones, keepsake_sessions_markers; "
        "END IF; END $$",
        dbname=POSTGRES_DB,
    )


def _postgres(request: pytest.FixtureRequest) -> Store:
    server: PostgresServer = request.getfixturevalue("postgres_server")
    empty_postgres(server)
    return PostgresStore(server.url_of(POSTGRES_DB), max_size=4)


def _corrupt_postgres(store: Store, key: str) -> None:
    # Valid JSON that is not an object of strings: jsonb itself holds nothing worse.
    assert isinstance(store, PostgresStore)
    with store.pool.connection() as conn:
        cursor = conn.execute(
            "UPDATE keepsake_sessions SET data = '[1]'::jsonb WHERE key = %s", (bytes.fromhex(key),)
        )
        assert cursor.rowcount == 1


STORES: dict[str, StoreSpec] = {
    "memory": StoreSpec(_memory),
    "sqlite": StoreSpec(_sqlite, corrupt=_corrupt_sqlite),
    "redis": StoreSpec(_redis, native_expiry=True, corrupt=_corrupt_redis),
    "redis-local-cache": StoreSpec(_redis_local_cache, native_expiry=True, corrupt=_corrupt_redis),
    "redis-cluster": StoreSpec(_redis_cluster, native_expiry=True, corrupt=_corrupt_redis),
    "postgres": StoreSpec(_postgres, corrupt=_corrupt_postgres),
}
