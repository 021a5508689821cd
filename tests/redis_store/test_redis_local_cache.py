"""The opt-in local cache of the Redis store, against a real redis-server.

The store contract and engine suites already run on ``redis-local-cache`` (tests/store_registry.py);
these tests pin what only a cache can get wrong: serving a copy that another process, a crash or
a flush has made stale.

A change made on another connection reaches the cache when Redis's invalidation message reaches
the cache's connection, which Redis writes just after its reply to the writer (microseconds on a
quiet machine, longer when the CPUs are busy). Tests that change a session from another
connection therefore wait for the change with :func:`seen`, for at most :data:`WITHIN` seconds,
far below the cache's ``local_cache_ttl`` of :data:`MAX_AGE` seconds: a cache that missed the
message would serve the old copy for the whole ``MAX_AGE`` and fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_keepsake.errors import ConfigError, StoreUnavailable
from flask_keepsake.store_url import store_from_url
from flask_keepsake.stores.base import ROTATED, Outcome, SessionRecord, Touch
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import RedisClusterServers, RedisServer

from .conftest import TIMEOUT, AppOnStore

NOW = time.time()
#: The cached stores' ``local_cache_ttl``, and how long a test waits for an invalidation.
MAX_AGE = 60.0
WITHIN = 2.0


def seen(store: RedisStore, data: dict[str, str] | None, key: str = "a" * 64) -> bool:
    """Whether ``store`` loads ``data`` (``None``: no session) within :data:`WITHIN` seconds."""
    deadline = time.monotonic() + WITHIN
    while True:
        loaded = store.load(key, NOW)
        if (None if loaded is None else loaded.data) == data:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)


def record(key: str = "a" * 64, handle: str = "handle-a", **data: str) -> SessionRecord:
    return SessionRecord(
        key,
        handle,
        dict(data or {"cart": '"apple"'}),
        None,
        NOW,
        NOW,
        NOW + 1800,
        NOW + 43200,
        None,
        "127.0.0.1",
        "test",
    )


def round_trips(server: RedisServer, command: str) -> int:
    """How many times ``command`` ran since the last ``CONFIG RESETSTAT``."""
    stats = server.admin().info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
def cached(server: RedisServer) -> Iterator[RedisStore]:
    """A store with a local cache on the shared server."""
    instance = RedisStore.from_url(server.url, local_cache=100, local_cache_ttl=MAX_AGE)
    yield instance
    instance.close()


@pytest.fixture
def other(server: RedisServer) -> Iterator[RedisStore]:
    """Another process's store: its own client and connections, no cache."""
    instance = RedisStore.from_url(server.url)
    yield instance
    instance.close()


def test_a_second_load_makes_no_round_trip(cached: RedisStore, server: RedisServer) -> None:
    cached.create(record())
    server.admin().config_resetstat()
    first = cached.load("a" * 64, NOW)
    second = cached.load("a" * 64, NOW)
    assert first == second == record()
    assert round_trips(server, "hgetall") == 1


def test_callers_get_copies(cached: RedisStore) -> None:
    cached.create(record())
    loaded = cached.load("a" * 64, NOW)
    assert loaded is not None
    loaded.data["cart"] = '"pear"'
    loaded.last_seen = 0.0
    assert cached.load("a" * 64, NOW) == record()


def test_a_change_by_another_process_is_seen_at_once(cached: RedisStore, other: RedisStore) -> None:
    cached.create(record())
    cached.load("a" * 64, NOW)
    assert other.apply("a" * 64, {"cart": '"pear"'}, (), NOW)
    assert seen(cached, {"cart": '"pear"'})


@pytest.mark.parametrize("how", ["delete", "delete_handle", "delete_user", "expire", "by hand"])
def test_an_end_by_another_process_is_seen_at_once(
    cached: RedisStore, other: RedisStore, server: RedisServer, how: str
) -> None:
    """Logout, revoke, revoke-all, expiry and a hand-made DEL: the next load finds nothing."""
    cached.create(record())
    cached.rename("a" * 64, SessionRecord(**{**_fields(record()), "user_id": "alice"}), NOW)
    assert cached.load("a" * 64, NOW) is not None
    skey = b"keepsake:s:" + b"a" * 64
    if how == "delete":
        assert other.delete("a" * 64)
    elif how == "delete_handle":
        assert other.delete_handle("handle-a", NOW) == ("a" * 64, "alice")
    elif how == "delete_user":
        assert other.delete_user("alice", NOW) == 1
    elif how == "expire":
        server.admin().pexpire(skey, 1)
        deadline = time.monotonic() + 5
        while server.admin().exists(skey) and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        server.admin().delete(skey)
    assert seen(cached, None)


def _fields(rec: SessionRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in SessionRecord.__slots__}


def test_a_field_written_by_hand_is_seen(cached: RedisStore, server: RedisServer) -> None:
    cached.create(record())
    cached.load("a" * 64, NOW)
    server.admin().hset(b"keepsake:s:" + b"a" * 64, "d:cart", '"plum"')
    assert seen(cached, {"cart": '"plum"'})


def test_an_own_delta_keeps_the_entry_and_its_tracking(
    cached: RedisStore, other: RedisStore, server: RedisServer
) -> None:
    """After a delta, the next load needs no round trip, and Redis still reports changes."""
    cached.create(record())
    cached.load("a" * 64, NOW)
    server.admin().config_resetstat()
    touch = Touch(NOW + 5, NOW + 1805)
    assert cached.apply("a" * 64, {"n": "1"}, ["cart"], NOW + 5, touch)
    loaded = cached.load("a" * 64, NOW + 5)
    assert loaded is not None
    assert loaded.data == {"n": "1"}
    assert (loaded.last_seen, loaded.expires_at) == (NOW + 5, NOW + 1805)
    assert round_trips(server, "hgetall") == 0
    assert other.apply("a" * 64, {"m": "2"}, (), NOW + 6)
    assert seen(cached, {"n": "1", "m": "2"})


def test_a_change_between_load_and_delta_is_not_lost(cached: RedisStore, other: RedisStore) -> None:
    """Another writer got in between: the versions disagree and the entry is read again."""
    cached.create(record())
    cached.load("a" * 64, NOW)
    assert other.apply("a" * 64, {"b": "2"}, (), NOW)
    assert cached.apply("a" * 64, {"a": "1"}, (), NOW)
    loaded = cached.load("a" * 64, NOW)
    assert loaded is not None
    assert loaded.data == {"cart": '"apple"', "a": "1", "b": "2"}


def test_a_delta_on_an_ended_session_writes_nothing(cached: RedisStore, other: RedisStore) -> None:
    cached.create(record())
    cached.load("a" * 64, NOW)
    assert other.delete("a" * 64)
    assert not cached.apply("a" * 64, {"a": "1"}, (), NOW)
    assert cached.load("a" * 64, NOW) is None
    assert other.load("a" * 64, NOW) is None


def test_a_delta_through_a_tombstone_drops_the_cached_new_record(
    cached: RedisStore, server: RedisServer
) -> None:
    """The delta script wrote the renamed record through T, which Redis reports to no one."""
    cached.create(record())
    new = record("b" * 64, "handle-b")
    assert cached.rename("a" * 64, new, NOW, changed={"n": "1"}, grace=60) is Outcome.DONE
    assert cached.load("b" * 64, NOW) is not None
    assert cached.apply("a" * 64, {"m": "2"}, (), NOW) is Outcome.FOLLOWED
    server.admin().config_resetstat()
    loaded = cached.load("b" * 64, NOW)
    assert isinstance(loaded, SessionRecord)
    assert loaded.data == {"cart": '"apple"', "n": "1", "m": "2"}
    assert round_trips(server, "hgetall") == 1


def test_a_rename_by_another_process_is_seen_as_rotated(
    cached: RedisStore, other: RedisStore
) -> None:
    """A cached record renamed elsewhere loads as ROTATED, not as the old session."""
    cached.create(record())
    assert cached.load("a" * 64, NOW) == record()
    new = record("b" * 64, "handle-b")
    assert other.rename("a" * 64, new, NOW, grace=60) is Outcome.DONE
    deadline = time.monotonic() + WITHIN
    while cached.load("a" * 64, NOW) is not ROTATED and time.monotonic() < deadline:
        time.sleep(0.0005)
    assert cached.load("a" * 64, NOW) is ROTATED


def test_a_tombstone_is_not_cached(cached: RedisStore, server: RedisServer) -> None:
    """Every load of an old token asks Redis: tombstones are read too seldom to keep."""
    cached.create(record())
    cached.rename("a" * 64, record("b" * 64, "handle-b"), NOW, grace=60)
    server.admin().config_resetstat()
    assert cached.load("a" * 64, NOW) is ROTATED
    assert cached.load("a" * 64, NOW) is ROTATED
    assert round_trips(server, "hgetall") == 2
    assert cached.load("a" * 64, NOW + 60) is None


def test_an_own_touch_that_changes_policy_keeps_the_entry_right(
    cached: RedisStore, other: RedisStore, server: RedisServer
) -> None:
    """A touch that moves the absolute expiry and drops the auth time updates the cached copy."""
    fresh = dataclasses.replace(record(), auth_time=NOW - 1)
    cached.create(fresh)
    cached.load("a" * 64, NOW)
    touch = Touch(NOW + 5, NOW + 900, absolute_expires_at=NOW + 900, stale=True)
    assert cached.touch("a" * 64, touch, NOW + 5) is Outcome.DONE
    server.admin().config_resetstat()
    loaded = cached.load("a" * 64, NOW + 5)
    assert round_trips(server, "hgetall") == 0
    expected = dataclasses.replace(
        fresh,
        last_seen=NOW + 5,
        expires_at=NOW + 900,
        absolute_expires_at=NOW + 900,
        auth_time=None,
    )
    assert loaded == expected
    assert other.load("a" * 64, NOW + 5) == expected


def test_flushdb_empties_the_cache(cached: RedisStore, server: RedisServer) -> None:
    cached.create(record())
    cached.load("a" * 64, NOW)
    server.admin().flushdb()
    assert seen(cached, None)


def test_a_killed_tracking_connection_empties_the_cache(
    cached: RedisStore, other: RedisStore, server: RedisServer
) -> None:
    """Redis forgets what a dead connection tracked: nothing read through it is trusted."""
    cached.create(record())
    cached.load("a" * 64, NOW)
    server.admin().client_kill_filter(_type="normal", skipme=True)
    # No invalidation can reach the cache now; only dropping everything keeps it honest.
    assert other.apply("a" * 64, {"cart": '"pear"'}, (), NOW)
    loaded = cached.load("a" * 64, NOW)
    assert loaded is not None
    assert loaded.data == {"cart": '"pear"'}


def test_an_old_entry_is_read_again(server: RedisServer) -> None:
    store = RedisStore.from_url(server.url, local_cache=10, local_cache_ttl=0.05)
    try:
        store.create(record())
        server.admin().config_resetstat()
        store.load("a" * 64, NOW)
        time.sleep(0.1)
        store.load("a" * 64, NOW)
        assert round_trips(server, "hgetall") == 2
    finally:
        store.close()


def test_the_cache_keeps_at_most_its_size(server: RedisServer) -> None:
    store = RedisStore.from_url(server.url, local_cache=2)
    try:
        for n in range(3):
            store.create(record(str(n) * 64, f"h{n}"))
        for n in range(3):
            store.load(str(n) * 64, NOW)
        server.admin().config_resetstat()
        store.load("2" * 64, NOW)
        store.load("0" * 64, NOW)  # the least recently used one went first
        assert round_trips(server, "hgetall") == 1
    finally:
        store.close()


def test_an_expired_entry_is_not_served(cached: RedisStore) -> None:
    cached.create(record())
    cached.load("a" * 64, NOW)
    assert cached.load("a" * 64, NOW + 1800) is None


def test_a_forked_child_does_not_share_the_parent_connection(
    cached: RedisStore, other: RedisStore
) -> None:
    cached.create(record())
    cached.load("a" * 64, NOW)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            loaded = cached.load("a" * 64, NOW)
            other.apply("a" * 64, {"cart": '"fig"'}, (), NOW)
            if loaded == record() and seen(cached, {"cart": '"fig"'}):
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert seen(cached, {"cart": '"fig"'})


def test_a_client_that_decodes_responses_works(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    store = RedisStore(client, local_cache=10, local_cache_ttl=MAX_AGE)
    other = RedisStore(client)
    try:
        store.create(record())
        store.load("a" * 64, NOW)
        assert store.apply("a" * 64, {"n": "1"}, (), NOW)
        assert other.apply("a" * 64, {"m": "2"}, (), NOW)
        assert seen(store, {"cart": '"apple"', "n": "1", "m": "2"})
    finally:
        store.close()
        client.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"local_cache": -1}, "local_cache must be"),
        ({"local_cache": "10"}, "local_cache must be"),
        ({"local_cache": True}, "local_cache must be"),
        ({"local_cache": 10, "local_cache_ttl": 0}, "local_cache_ttl must be"),
        ({"local_cache": 10, "local_cache_ttl": float("inf")}, "local_cache_ttl must be"),
    ],
)
def test_bad_options_fail_at_once(server: RedisServer, options: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisStore.from_url(server.url, **options)


def test_url_options(server: RedisServer, tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    store = store_from_url(f"{server.url}?local_cache=500&local_cache_ttl=5", app)
    assert isinstance(store, RedisStore)
    try:
        assert "local_cache=500" in store.describe()
    finally:
        store.close()
    with pytest.raises(ConfigError, match=r"KEEPSAKE_STORE.*local_cache"):
        store_from_url(f"{server.url}?local_cache=many", app)


def test_a_cluster_is_refused(redis_cluster: RedisClusterServers) -> None:
    with pytest.raises(ValueError, match="Redis Cluster"):
        RedisStore.from_url(redis_cluster.url, cluster=True, local_cache=10)


@pytest.mark.slow
def test_paused_server_serves_cached_reads_and_refuses_writes(
    own_server: RedisServer, make_app: AppOnStore
) -> None:
    """Documented: while Redis is paused, cached reads answer; every write answers 503 in time."""
    store = RedisStore.from_url(own_server.url, socket_timeout=TIMEOUT, local_cache=10)
    try:
        client = make_app(store).test_client()
        assert client.post("/set/cart", data="apple").status_code == 200
        assert client.get("/get/cart").data == b"'apple'"
        own_server.pause()
        try:
            assert client.get("/get/cart").data == b"'apple'"
            started = time.monotonic()
            response = client.post("/set/cart", data="pear")
            assert response.status_code == 503
            assert response.headers.getlist("Set-Cookie") == []
            assert time.monotonic() - started < TIMEOUT + 0.25
        finally:
            own_server.resume()
        # The delta reached the paused server before the timeout: Redis runs it when it wakes,
        # all of it or (had it not arrived) none of it, as without a cache.
        assert client.get("/get/cart").data in (b"'apple'", b"'pear'")
        assert client.post("/set/cart", data="plum").status_code == 200
        assert client.get("/get/cart").data == b"'plum'"
    finally:
        store.close()


@pytest.mark.slow
def test_a_restarted_server_without_persistence_serves_nothing_stale(
    own_server: RedisServer, make_app: AppOnStore, tmp_path: Path
) -> None:
    """Redis lost every session in a crash: the cache must not bring one back."""
    store = RedisStore.from_url(own_server.url, socket_timeout=TIMEOUT, local_cache=10)
    server = own_server
    try:
        client = make_app(store).test_client()
        client.post("/login/42")
        assert client.get("/whoami").data == b"42"
        server.kill()
        assert client.get("/whoami").status_code == 503
        server = RedisServer(tmp_path / "again", port=server.port).start()
        assert client.get("/whoami").data == b"anonymous"
    finally:
        store.close()
        server.stop()


@pytest.mark.slow
def test_a_hit_is_served_while_another_thread_waits_on_redis(own_server: RedisServer) -> None:
    """No lock is held across a round trip: a miss stuck on a paused Redis blocks no hit."""
    store = RedisStore.from_url(own_server.url, socket_timeout=1.0, local_cache=10)
    try:
        store.create(record())
        store.create(record("b" * 64, "handle-b"))
        assert store.load("a" * 64, NOW) == record()
        own_server.pause()
        try:
            stuck = threading.Thread(target=_load_quietly, args=(store, "b" * 64))
            stuck.start()
            time.sleep(0.2)  # the miss is now waiting for Redis's answer
            started = time.monotonic()
            assert store.load("a" * 64, NOW) == record()
            assert time.monotonic() - started < 0.1
        finally:
            own_server.resume()
        stuck.join()
    finally:
        store.close()


def test_threads_sharing_a_cache_end_up_with_every_change(
    cached: RedisStore, other: RedisStore
) -> None:
    """Loads racing another process's changes never keep a copy that a change overtook."""
    cached.create(record())
    stop = threading.Event()
    errors: list[BaseException] = []

    def keep_loading() -> None:
        while not stop.is_set():
            try:
                cached.load("a" * 64, NOW)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=keep_loading) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for n in range(1, 301):
            assert other.apply("a" * 64, {"n": str(n)}, (), NOW)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert seen(cached, {"cart": '"apple"', "n": "300"})


def _load_quietly(store: RedisStore, key: str) -> None:
    with contextlib.suppress(StoreUnavailable):
        store.load(key, NOW)


def test_store_errors_empty_the_cache(
    cached: RedisStore, server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any Redis error may have been a tracking connection dying: trust nothing cached after it."""
    cached.create(record())
    cached.load("a" * 64, NOW)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("connection reset")

    monkeypatch.setattr(cached.client, "evalsha", broken)
    with pytest.raises(StoreUnavailable):
        cached.delete("b" * 64)
    server.admin().config_resetstat()
    cached.load("a" * 64, NOW)
    assert round_trips(server, "hgetall") == 1


def test_a_server_without_client_side_caching_is_read_uncached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CLIENT renamed away (or refused by an ACL): one clear error, then every call uncached."""
    server = RedisServer(tmp_path / "old", "--rename-command", "CLIENT", "").start()
    store = RedisStore.from_url(server.url, local_cache=10, local_cache_ttl=MAX_AGE)
    other = RedisStore.from_url(server.url)
    try:
        store.create(record())
        assert store.load("a" * 64, NOW) == record()
        assert store.apply("a" * 64, {"n": "1"}, (), NOW)
        assert other.apply("a" * 64, {"m": "2"}, (), NOW)
        loaded = store.load("a" * 64, NOW)
        assert loaded is not None
        assert loaded.data == {"cart": '"apple"', "n": "1", "m": "2"}
        refusals = [r for r in caplog.records if "refused client-side caching" in r.getMessage()]
        assert len(refusals) == 1
        assert "KEEPSAKE_STORE local_cache" in refusals[0].getMessage()
    finally:
        store.close()
        other.close()
        server.stop()
