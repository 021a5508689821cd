"""Sentinel: the store on the client ``Sentinel.master_for`` gives, through a real failover.

A primary, a replica and a sentinel, each a process of this test on a free loopback port. The
primary is killed; the sentinel promotes the replica; the same store (and its local cache, if
any) carries on against the new primary without a restart, and sessions written before the
failover (and replicated, which ``WAIT`` makes sure of) are there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.sentinel import Sentinel

from flask_keepsake.errors import StoreUnavailable
from flask_keepsake.stores.base import SessionRecord
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import RedisSentinel, RedisServer

pytestmark = pytest.mark.slow

NOW = time.time()
#: Seconds the failover may take (down-after 0.5 s, then the election and promotion).
FAILOVER_TIMEOUT = 30.0


def record(key: str) -> SessionRecord:
    return SessionRecord(
        key, f"h-{key[:8]}", {"cart": '"apple"'}, "alice", NOW, NOW, NOW + 1800, NOW + 43200
    )


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, RedisSentinel]]:
    primary = RedisServer(tmp_path / "primary").start()
    replica = RedisServer(tmp_path / "replica", "--replicaof", "127.0.0.1", str(primary.port))
    sentinel = RedisSentinel(tmp_path / "sentinel", primary)
    try:
        replica.start()
        deadline = time.monotonic() + 10
        while replica.admin().info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync in time")
            time.sleep(0.05)
        sentinel.start()
        yield primary, replica, sentinel
    finally:
        sentinel.stop()
        replica.stop()
        primary.stop()


@pytest.mark.parametrize("local_cache", [0, 100], ids=["no-cache", "local-cache"])
def test_sessions_survive_a_failover(
    topology: tuple[RedisServer, RedisServer, RedisSentinel], local_cache: int
) -> None:
    primary, replica, sentinel = topology
    client = Sentinel(
        [("127.0.0.1", sentinel.port)], socket_timeout=0.5, socket_connect_timeout=0.5
    ).master_for(sentinel.name, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = RedisStore(client, local_cache=local_cache)
    try:
        store.create(record("a" * 64))
        assert store.apply("a" * 64, {"n": "1"}, (), NOW)
        loaded = store.load("a" * 64, NOW)
        assert loaded is not None
        assert loaded.data == {"cart": '"apple"', "n": "1"}
        assert primary.admin().wait(1, 5000) == 1  # replicated before the crash

        primary.kill()
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while sentinel.primary_port() != replica.port:
            assert time.monotonic() < deadline, "the sentinel did not promote the replica"
            time.sleep(0.1)

        # The first call may still meet the dead primary's socket: a 503, never a wrong answer.
        deadline = time.monotonic() + 10
        while True:
            try:
                loaded = store.load("a" * 64, NOW)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not reach the new primary"
                time.sleep(0.1)
        assert loaded is not None
        assert loaded.data == {"cart": '"apple"', "n": "1"}
        assert store.apply("a" * 64, {"n": "2"}, (), NOW)
        assert replica.admin().hget(b"keepsake:s:" + b"a" * 64, "d:n") == b"2"
        # A change made on the new primary behind the store's back reaches its cache.
        other = redis.Redis(port=replica.port)
        other.hset(b"keepsake:s:" + b"a" * 64, "d:n", "3")
        other.close()
        deadline = time.monotonic() + 2
        while (loaded := store.load("a" * 64, NOW)) is not None and loaded.data["n"] != "3":
            assert time.monotonic() < deadline, "the cache kept the old value"
            time.sleep(0.001)
        assert store.delete("a" * 64)
        assert store.load("a" * 64, NOW) is None
    finally:
        store.close()
        client.close()
