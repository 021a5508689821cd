"""Behaviour only the Redis store has: its data model, TTLs, indexes, commands and bad data."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import pytest
import redis
from flask import Flask

from flask_keepsake.errors import ConfigError, StoreUnavailable
from flask_keepsake.store_url import store_from_url
from flask_keepsake.stores import Outcome, Touch
from flask_keepsake.stores.redis import INDEX_GRACE, RedisStore, import_redis
from flask_keepsake.testing.servers import RedisServer, free_port

from ..stores.store_helpers import NOW, TTL, key_for, make_record
from .conftest import AppOnStore

COOKIE = "__Host-session"
#: Commands the store's Lua scripts call; INFO commandstats counts those calls too.
INSIDE_SCRIPTS = {"hget", "hmget", "hset", "hdel", "hincrby", "pexpire", "del", "type"}


def commands(server: RedisServer) -> dict[str, int]:
    """Calls per command so far, from INFO commandstats (the INFO calls themselves excluded)."""
    stats = server.admin().info("commandstats")
    counts = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    counts.pop("info", None)
    return counts


def sent(server: RedisServer, before: dict[str, int]) -> dict[str, int]:
    """Commands run since ``before``."""
    after = commands(server)
    diff = {name: n - before.get(name, 0) for name, n in after.items()}
    return {name: n for name, n in diff.items() if n}


def session_key(store: RedisStore, name: str = "a") -> bytes:
    """The Redis key of the record made by ``make_record(name)``."""
    return f"{store.prefix}s:{key_for(name)}".encode()


# Round trips and commands


def test_load_sends_one_hgetall(store: RedisStore, server: RedisServer) -> None:
    """Loading a session is a single HGETALL."""
    store.create(make_record())
    before = commands(server)
    assert store.load(key_for("a"), NOW) is not None
    assert sent(server, before) == {"hgetall": 1}


def test_apply_sends_one_script_call(store: RedisStore, server: RedisServer) -> None:
    """A delta, with a touch, is one EVALSHA."""
    store.create(make_record(data={"a": "1"}))
    store.apply(key_for("a"), {"b": "2"}, ["a"], NOW)
    before = commands(server)
    assert store.apply(key_for("a"), {"c": "3"}, ["b"], NOW, Touch(NOW, NOW + TTL)) is Outcome.DONE
    top_level = {n: c for n, c in sent(server, before).items() if n not in INSIDE_SCRIPTS}
    assert top_level == {"evalsha": 1}


def test_untouched_request_sends_no_command(
    store: RedisStore, server: RedisServer, make_app: AppOnStore
) -> None:
    """A request whose view never uses the session sends nothing to Redis, cookie or not."""
    client = make_app(store).test_client()
    client.post("/set/a", data="1")
    before = commands(server)
    assert client.get("/noop").status_code == 200
    assert sent(server, before) == {}


def test_no_command_uses_keys(store: RedisStore, server: RedisServer) -> None:
    """Every operation, count included, runs without KEYS."""
    store.create(make_record("a", user_id="u"))
    store.create(make_record("b", user_id="u"))
    store.list_user("u", NOW)
    store.rename(key_for("a"), make_record("c", user_id="u"), NOW)
    store.delete_handle("h-b", NOW)
    store.delete_user("u", NOW)
    store.count(NOW)
    assert "keys" not in commands(server)


# Data model


def test_data_keys_cannot_overwrite_metadata(store: RedisStore) -> None:
    """Session keys named like metadata fields are stored apart from them."""
    data = {"h": '"x"', "e": "0", "u": '"mallory"', "m": "[]", "d:x": "1", "l": "1"}
    record = make_record(data=data)
    store.create(record)
    assert store.apply(record.key, {"e": "-1", "h": "null"}, (), NOW) is Outcome.DONE
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == data | {"e": "-1", "h": "null"}
    assert (loaded.handle, loaded.user_id, loaded.expires_at) == ("h-a", None, NOW + TTL)


def test_session_key_with_lone_surrogate_round_trips(store: RedisStore) -> None:
    """Any Python str, even one that is not valid UTF-8, survives as a session key."""
    record = make_record(data={"\ud800": '"x"'})
    store.create(record)
    assert store.load(record.key, NOW) == record


def test_large_delta_is_applied_whole(store: RedisStore) -> None:
    """A delta of thousands of keys, changed and deleted, is applied in full."""
    record = make_record(data={f"old{i}": str(i) for i in range(2500)})
    store.create(record)
    changed = {f"new{i}": str(i) for i in range(2500)}
    assert store.apply(record.key, changed, [f"old{i}" for i in range(2500)], NOW) is Outcome.DONE
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == changed


def test_ttl_is_expires_at_minus_now(store: RedisStore, server: RedisServer) -> None:
    """The key's TTL is what is left until expires_at, measured from the caller's now."""
    store.create(make_record(expires_at=NOW + 100))
    ttl = server.admin().pttl(session_key(store))
    assert 99_000 < ttl <= 100_000


def test_touch_moves_the_ttl(store: RedisStore, server: RedisServer) -> None:
    """A touch sets the TTL from the new expires_at."""
    store.create(make_record(expires_at=NOW + 100))
    assert store.touch(key_for("a"), Touch(NOW + 50, NOW + 5000), NOW + 50) is Outcome.DONE
    ttl = server.admin().pttl(session_key(store))
    assert 4_900_000 < ttl <= 4_950_000


def test_apply_without_touch_keeps_the_ttl(store: RedisStore, server: RedisServer) -> None:
    """A delta without a touch leaves the TTL alone."""
    store.create(make_record(expires_at=NOW + 100))
    assert store.apply(key_for("a"), {"x": "1"}, (), NOW) is Outcome.DONE
    assert 99_000 < server.admin().pttl(session_key(store)) <= 100_000


def test_record_vanishes_when_its_ttl_runs_out(store: RedisStore, server: RedisServer) -> None:
    """Redis itself drops an expired session; nothing needs purging."""
    store.create(make_record(expires_at=NOW + 0.05))
    time.sleep(0.15)
    assert server.admin().exists(session_key(store)) == 0
    assert store.count_expired(NOW + 1) == 0


def test_indexes_expire_with_the_absolute_expiry(store: RedisStore, server: RedisServer) -> None:
    """The user and handle indexes carry a TTL up to the latest absolute expiry."""
    store.create(make_record(user_id="u", absolute_expires_at=NOW + 7200))
    for index in (b"keepsake:u:u", b"keepsake:h:h-a"):
        assert 7_100_000 < server.admin().pttl(index) <= 7_200_000


@pytest.mark.parametrize("how", ["touch", "apply"])
def test_a_touch_that_moves_the_absolute_expiry_extends_the_indexes(
    store: RedisStore, server: RedisServer, how: str
) -> None:
    """A session that becomes persistent keeps its indexes as long as it may itself live."""
    store.create(make_record(user_id="u", absolute_expires_at=NOW + 7200))
    touch = Touch(NOW, NOW + TTL, absolute_expires_at=NOW + 90_000)
    if how == "touch":
        assert store.touch(key_for("a"), touch, NOW) is Outcome.DONE
    else:
        assert store.apply(key_for("a"), {"b": "1"}, (), NOW, touch) is Outcome.DONE
    for index in (b"keepsake:u:u", b"keepsake:h:h-a"):
        assert 89_000_000 < server.admin().pttl(index) <= 90_000_000


def test_a_touch_never_shortens_the_indexes(store: RedisStore, server: RedisServer) -> None:
    """Another session of the user may need the index longer: its TTL only grows."""
    store.create(make_record("a", user_id="u", absolute_expires_at=NOW + 7200))
    store.create(make_record("b", user_id="u", absolute_expires_at=NOW + 9000))
    touch = Touch(NOW, NOW + 60, absolute_expires_at=NOW + 60)
    assert store.touch(key_for("a"), touch, NOW) is Outcome.DONE
    assert 8_900_000 < server.admin().pttl(b"keepsake:u:u") <= 9_000_000


# Indexes


def test_delete_removes_the_index_entries(store: RedisStore, server: RedisServer) -> None:
    """Deleting a session removes it from its user's and its handle's index."""
    store.create(make_record(user_id="u"))
    assert store.delete(key_for("a")) is True
    assert server.admin().exists(b"keepsake:u:u", b"keepsake:h:h-a") == 0


def test_delete_with_an_overwritten_index_still_deletes(
    store: RedisStore, server: RedisServer
) -> None:
    """An index key that someone replaced with a string does not stop a logout."""
    store.create(make_record(user_id="u"))
    server.admin().set(b"keepsake:u:u", "not a sorted set")
    assert store.delete(key_for("a")) is True
    assert server.admin().exists(session_key(store)) == 0
    assert server.admin().exists(b"keepsake:h:h-a") == 0


def test_rename_moves_the_index_entries(store: RedisStore, server: RedisServer) -> None:
    """After a rename the indexes name the new key only."""
    store.create(make_record("a", user_id="u"))
    renamed = make_record("b", handle="h-a", user_id="u")
    assert store.rename(key_for("a"), renamed, NOW) is Outcome.DONE
    admin = server.admin()
    assert admin.zrange(b"keepsake:u:u", 0, -1) == [key_for("b").encode()]
    assert admin.zrange(b"keepsake:h:h-a", 0, -1) == [key_for("b").encode()]


def test_list_user_removes_entries_of_vanished_sessions(
    store: RedisStore, server: RedisServer
) -> None:
    """An index entry whose session expired away is removed once it is older than the grace."""
    store.create(make_record(user_id="u"))
    server.admin().delete(session_key(store))
    assert store.list_user("u", NOW) == []
    assert server.admin().zcard(b"keepsake:u:u") == 1
    assert store.list_user("u", NOW + INDEX_GRACE + 1) == []
    assert server.admin().zcard(b"keepsake:u:u") == 0


def test_stale_entry_never_deletes_another_users_session(
    store: RedisStore, server: RedisServer
) -> None:
    """An index entry naming someone else's session is dropped, and that session survives."""
    alice = make_record("alice", user_id="alice")
    store.create(alice)
    server.admin().zadd(b"keepsake:u:mallory", {alice.key: NOW})
    assert store.list_user("mallory", NOW) == []
    server.admin().zadd(b"keepsake:u:mallory", {alice.key: NOW})
    assert store.delete_user("mallory", NOW) == 0
    assert store.load(alice.key, NOW) == alice
    assert server.admin().zcard(b"keepsake:u:mallory") == 0


def test_prefix_keeps_two_stores_apart(store: RedisStore, server: RedisServer) -> None:
    """Stores with different prefixes in one database never see each other's sessions."""
    other = RedisStore.from_url(server.url, prefix="other-app:")
    try:
        store.create(make_record(user_id="u"))
        assert other.load(key_for("a"), NOW) is None
        assert other.list_user("u", NOW) == []
        assert other.count(NOW) == 0
        other.create(make_record(user_id="u"))
        assert store.count(NOW) == 1
    finally:
        other.close()


def test_count_escapes_glob_characters_in_the_prefix(server: RedisServer) -> None:
    """A prefix with glob characters counts only its own sessions."""
    starred = RedisStore.from_url(server.url, prefix="a*:")
    plain = RedisStore.from_url(server.url, prefix="ab:")
    try:
        plain.create(make_record())
        assert starred.count(NOW) == 0
        starred.create(make_record())
        assert starred.count(NOW) == 1
    finally:
        starred.close()
        plain.close()


# Clients, errors and construction


def test_client_that_decodes_responses_works(server: RedisServer) -> None:
    """A client made with decode_responses=True is served just as well."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        store = RedisStore(client)
        record = make_record(user_id="u", data={"ü": '"✓"'})
        store.create(record)
        assert store.load(record.key, NOW) == record
        assert store.list_user("u", NOW) == [record]
        assert store.delete_handle(record.handle, NOW) == (record.key, "u")
    finally:
        client.close()


def test_close_leaves_a_passed_client_open(server: RedisServer) -> None:
    """The store does not close a client it was given."""
    client = redis.Redis.from_url(server.url)
    try:
        RedisStore(client).close()
        assert client.ping() is True
    finally:
        client.close()


def test_unreachable_server_raises_store_unavailable_quickly() -> None:
    """Connection refused becomes StoreUnavailable, without retries."""
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="Redis session store"):
            store.load(key_for("a"), NOW)
        assert time.monotonic() - started < 0.5
    finally:
        store.close()


def test_describe_hides_the_password() -> None:
    """describe() names host, port, database and prefix, never the password."""
    store = RedisStore.from_url("redis://:s3cret@127.0.0.1:6390/3", prefix="p:")
    try:
        assert store.describe() == "redis://127.0.0.1:6390/3 prefix='p:'"
        assert "s3cret" not in repr(store)
    finally:
        store.close()


def test_missing_redis_py_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-py, building a Redis store says which extra to install."""
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ModuleNotFoundError, match=r"flask-keepsake\[redis\]"):
        import_redis()
    with pytest.raises(ConfigError, match=r"KEEPSAKE_STORE.*flask-keepsake\[redis\]"):
        store_from_url("redis://127.0.0.1:6379/0", Flask(__name__))


# Bad data


def test_garbage_string_in_a_session_key_loads_as_absent(
    store: RedisStore, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes written over a session key make load return None and log a security warning."""
    store.create(make_record())
    server.admin().set(session_key(store), b"\x00\xffgarbage\xfe")
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        assert store.load(key_for("a"), NOW) is None
    assert any(r.name == "flask_keepsake.security" for r in caplog.records)


def test_hash_without_metadata_loads_as_absent(
    store: RedisStore, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A hash missing its metadata is unreadable: None and a security warning."""
    server.admin().hset(session_key(store), mapping={b"d:a": b"1", b"e": b"not-a-number"})
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        assert store.load(key_for("a"), NOW) is None
    assert "cannot be read (no field 'm')" in caplog.text


def test_garbage_key_is_not_written_to_and_can_be_replaced(
    store: RedisStore, server: RedisServer
) -> None:
    """apply and touch leave a garbage key alone; create replaces it."""
    server.admin().set(session_key(store), b"\xff")
    assert store.apply(key_for("a"), {"x": "1"}, (), NOW) is Outcome.GONE
    assert store.touch(key_for("a"), Touch(NOW, NOW + TTL), NOW) is Outcome.GONE
    assert server.admin().get(session_key(store)) == b"\xff"
    store.create(make_record())
    assert store.load(key_for("a"), NOW) == make_record()


def _client_with_session(app: Flask, data: str = "1") -> Any:
    client = app.test_client()
    assert client.post("/set/a", data=data).status_code == 200
    return client


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(("set", b"\x00\xff\xfegarbage"), id="string"),
        pytest.param(("hset", b"d:a", b"\xff\xfe{not json"), id="bad-utf8-field"),
        pytest.param(("hset", b"d:a", b"{not json"), id="bad-json-field"),
        pytest.param(("hset", b"m", b"[1,2"), id="bad-metadata"),
    ],
)
def test_garbage_in_a_session_key_gives_an_empty_session_and_a_warning(
    store: RedisStore,
    server: RedisServer,
    make_app: AppOnStore,
    caplog: pytest.LogCaptureFixture,
    garbage: tuple[Any, ...],
) -> None:
    """Garbage written straight into a session key: an empty session, a warning, no crash."""
    app = make_app(store)
    client = _client_with_session(app)
    (key,) = list(server.admin().scan_iter(match="keepsake:s:*"))
    command, *args = garbage
    if command == "set":
        server.admin().set(key, args[0])
    else:
        server.admin().hset(key, args[0], args[1])
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        response = client.get("/get/a")
    assert response.status_code == 200
    assert response.data == b"None"
    assert any(
        r.name == "flask_keepsake.security" and r.levelno == logging.WARNING for r in caplog.records
    )


def test_scripts_are_loaded_again_after_script_flush(
    store: RedisStore, server: RedisServer
) -> None:
    """After SCRIPT FLUSH (or a restart) every operation reloads its Lua scripts by itself."""
    store.create(make_record("a", user_id="u"))
    server.admin().script_flush()
    store.create(make_record("b", user_id="u"))
    server.admin().script_flush()
    assert store.apply(key_for("b"), {"x": "1"}, (), NOW) is Outcome.DONE
    server.admin().script_flush()
    assert store.delete_user("u", NOW) == 2


# user_counts and delete_all: SCAN over the store's own prefix


def test_delete_all_and_user_counts_keep_to_their_prefix(server: RedisServer) -> None:
    """Glob metacharacters in the prefix match literally; other prefixes and keys stay."""
    mine = RedisStore.from_url(server.url, prefix="app?[a]*:")
    # Keys the unescaped pattern "app?[a]*:*" would match.
    other = RedisStore.from_url(server.url, prefix="appXa-other:")
    try:
        for store in (mine, other):
            store.create(make_record("one", user_id="u"))
            store.create(make_record("two", user_id="u"))
        server.admin().set("app?[a]*:unrelated", "kept")
        before = commands(server)
        assert mine.user_counts(NOW, 10) == [("u", 2)]
        assert mine.delete_all() == 2
        assert "keys" not in sent(server, before)
        assert mine.count(NOW) == 0
        assert mine.list_user("u", NOW) == []
        assert other.count(NOW) == 2
        assert other.user_counts(NOW, 10) == [("u", 2)]
        assert server.admin().get("app?[a]*:unrelated") == b"kept"
        assert not list(server.admin().scan_iter(match=b"app\\?\\[a\\]\\*:[shu]:*"))
    finally:
        mine.close()
        other.close()


def test_user_counts_skips_stale_and_foreign_index_entries(
    store: RedisStore, server: RedisServer
) -> None:
    """An index entry counts only if its session exists, is live and is bound to that user."""
    store.create(make_record("mine", user_id="u"))
    store.create(make_record("theirs", user_id="v"))
    admin = server.admin()
    admin.zadd(f"{store.prefix}u:u", {key_for("theirs"): NOW, key_for("gone"): NOW})
    admin.set(f"{store.prefix}u:w", "not a sorted set")
    assert store.user_counts(NOW, 10) == [("u", 1), ("v", 1)]
