"""Rotation tombstones and markers in Redis: their keys, fields and TTLs, and their round trips.

The store contract suite already checks what tombstones and markers do on every store; these
tests pin how the Redis store keeps them (see the data model in ``docs/stores.md``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from flask_keepsake.stores import ROTATED, Outcome, SessionRecord, Touch
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import RedisServer

from ..stores.store_helpers import NOW, TTL, key_for, make_record
from .test_redis_store import commands, sent, session_key

GRACE = 30.0


def rotate(store: RedisStore, grace: float = GRACE) -> None:
    """Store the record ``old`` and rename it to ``new`` (bound to user ``u``)."""
    store.create(make_record("old", data={"a": "1"}))
    new = make_record("new", user_id="u", data={})
    assert store.rename(key_for("old"), new, NOW, changed={"b": "2"}, grace=grace) is Outcome.DONE


class CountingRedis(redis.Redis):
    """A client that records the name of every command it sends (each one round trip)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[str] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).lower())
        return super().execute_command(*args, **options)


@pytest.fixture
def other(server: RedisServer) -> Iterator[RedisStore]:
    """Another process's store on the same server."""
    instance = RedisStore.from_url(server.url)
    yield instance
    instance.close()


@pytest.fixture
def counted(server: RedisServer) -> Iterator[tuple[RedisStore, CountingRedis]]:
    """A store on a client that counts what it sends."""
    client = CountingRedis.from_url(server.url)
    yield RedisStore(client), client
    client.close()


# Tombstones


def test_the_tombstone_replaces_the_old_hash(store: RedisStore, server: RedisServer) -> None:
    """The old key holds only the new key and the tombstone's end, with a TTL of the grace."""
    rotate(store)
    admin = server.admin()
    old = session_key(store, "old")
    assert admin.hgetall(old) == {b"r": key_for("new").encode(), b"x": repr(NOW + GRACE).encode()}
    assert GRACE * 1000 - 1000 < admin.pttl(old) <= GRACE * 1000


def test_a_rename_without_grace_removes_the_old_key(store: RedisStore, server: RedisServer) -> None:
    """Grace 0: nothing is left under the old key."""
    rotate(store, grace=0)
    assert server.admin().exists(session_key(store, "old")) == 0


def test_a_tombstone_vanishes_when_its_ttl_runs_out(store: RedisStore, server: RedisServer) -> None:
    """Redis drops a tombstone by itself once the grace window has passed in real time."""
    rotate(store, grace=0.05)
    deadline = time.monotonic() + 5
    while server.admin().exists(session_key(store, "old")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.admin().exists(session_key(store, "old")) == 0


def test_rename_is_one_script(counted: tuple[RedisStore, CountingRedis]) -> None:
    """On one server the rename, the delta, the indexes and the tombstone are one EVALSHA."""
    store, client = counted
    store.create(make_record("old", user_id="u"))
    client.sent.clear()
    new = make_record("new", user_id="u")
    assert store.rename(key_for("old"), new, NOW, changed={"b": "2"}, grace=GRACE)
    assert client.sent == ["evalsha"]


def test_loading_a_tombstone_is_one_hgetall(store: RedisStore, server: RedisServer) -> None:
    """A late request with the old token costs the same single HGETALL as a live one."""
    rotate(store)
    before = commands(server)
    assert store.load(key_for("old"), NOW) is ROTATED
    assert sent(server, before) == {"hgetall": 1}


def test_a_followed_delta_is_one_script(counted: tuple[RedisStore, CountingRedis]) -> None:
    """On one server the script that finds the tombstone writes the record it names."""
    store, client = counted
    rotate(store)
    client.sent.clear()
    assert store.apply(key_for("old"), {"c": "3"}, (), NOW) is Outcome.FOLLOWED
    assert client.sent == ["evalsha"]
    loaded = store.load(key_for("new"), NOW)
    assert loaded is not None
    assert loaded is not ROTATED
    assert loaded.data == {"a": "1", "b": "2", "c": "3"}


def test_a_touch_of_a_tombstone_writes_nothing(store: RedisStore, server: RedisServer) -> None:
    """A touch for the old key changes neither the tombstone nor the record it names."""
    rotate(store)
    admin = server.admin()
    old, new = session_key(store, "old"), session_key(store, "new")
    before = admin.hgetall(old), admin.hgetall(new)
    touch = Touch(NOW + 1, NOW + 10 * TTL)
    assert store.touch(key_for("old"), touch, NOW + 1) is Outcome.FOLLOWED
    assert (admin.hgetall(old), admin.hgetall(new)) == before
    assert admin.pttl(new) <= TTL * 1000


def test_a_tombstone_is_not_counted_and_leaves_no_index_entry(
    store: RedisStore, server: RedisServer
) -> None:
    """The renamed record's old index entries are gone; the tombstone is in no index."""
    store.create(make_record("old", user_id="u"))
    rotate_to = make_record("new", handle="h-new", user_id="u")
    assert store.rename(key_for("old"), rotate_to, NOW, grace=GRACE) is Outcome.DONE
    admin = server.admin()
    assert admin.zrange(b"keepsake:u:u", 0, -1) == [key_for("new").encode()]
    assert admin.exists(b"keepsake:h:h-old") == 0
    assert store.count(NOW) == 1


def test_an_unreadable_tombstone_is_absent_and_logged(
    store: RedisStore, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A tombstone whose end is not a number is neither ROTATED nor followed."""
    server.admin().hset(session_key(store, "old"), mapping={"r": key_for("new"), "x": "soon"})
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        assert store.load(key_for("old"), NOW) is None
    assert "cannot be read" in caplog.text
    assert store.apply(key_for("old"), {"a": "1"}, (), NOW) is Outcome.GONE


def test_the_absolute_expiry_and_auth_time_have_fields_of_their_own(
    store: RedisStore, server: RedisServer
) -> None:
    """A touch sets a and drops t in the hash itself: the JSON field m is never rewritten."""
    store.create(make_record(auth_time=NOW - 5))
    admin = server.admin()
    meta = admin.hget(session_key(store), "m")
    assert admin.hget(session_key(store), "t") == repr(NOW - 5).encode()
    touch = Touch(NOW + 1, NOW + TTL, absolute_expires_at=NOW + 99 * TTL, stale=True)
    assert store.touch(key_for("a"), touch, NOW + 1) is Outcome.DONE
    assert admin.hget(session_key(store), "a") == repr(NOW + 99 * TTL).encode()
    assert admin.hexists(session_key(store), "t") is False
    assert admin.hget(session_key(store), "m") == meta


# Markers


def test_a_marker_is_a_hash_under_its_own_prefix(store: RedisStore, server: RedisServer) -> None:
    """keepsake:m:<name> holds the value and its end, with a TTL until that end."""
    assert store.put_marker("revoked:u", "42", NOW + 100, NOW) is True
    admin = server.admin()
    assert admin.hgetall(b"keepsake:m:revoked:u") == {b"v": b"42", b"x": repr(NOW + 100).encode()}
    assert 99_000 < admin.pttl(b"keepsake:m:revoked:u") <= 100_000


def test_a_marker_vanishes_when_its_ttl_runs_out(store: RedisStore, server: RedisServer) -> None:
    """Redis drops a marker by itself once its TTL has passed in real time."""
    store.put_marker("short", "1", NOW + 0.05, NOW)
    deadline = time.monotonic() + 5
    while server.admin().exists(b"keepsake:m:short") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.admin().exists(b"keepsake:m:short") == 0


def test_a_claim_compares_the_stored_expiry_with_now(store: RedisStore) -> None:
    """A marker expired by the caller's clock may be claimed again while Redis still holds it."""
    assert store.put_marker("claim", "first", NOW + 10, NOW, replace=False) is True
    assert store.put_marker("claim", "second", NOW + TTL, NOW + 10, replace=False) is True
    assert store.get_marker("claim", NOW + 10) == "second"


def test_markers_are_one_command_each(counted: tuple[RedisStore, CountingRedis]) -> None:
    """put_marker is one EVALSHA, get_marker one HMGET."""
    store, client = counted
    store.put_marker("m", "1", NOW + TTL, NOW, replace=False)
    assert client.sent == ["evalsha"]
    client.sent.clear()
    assert store.get_marker("m", NOW) == "1"
    assert client.sent == ["hmget"]


def test_markers_keep_to_their_store_prefix(store: RedisStore, server: RedisServer) -> None:
    """Another prefix sees none of this store's markers, and delete_all leaves it its own."""
    other = RedisStore.from_url(server.url, prefix="other:")
    try:
        store.put_marker("m", "mine", NOW + TTL, NOW)
        other.put_marker("m", "theirs", NOW + TTL, NOW)
        assert store.delete_all() == 0
        assert store.get_marker("m", NOW) is None
        assert other.get_marker("m", NOW) == "theirs"
    finally:
        other.close()


def test_a_marker_key_written_over_by_hand_reads_as_absent(
    store: RedisStore, server: RedisServer
) -> None:
    """Garbage under a marker key is no marker; a put replaces it."""
    server.admin().set(b"keepsake:m:m", b"\xff")
    assert store.get_marker("m", NOW) is None
    assert store.put_marker("m", "1", NOW + TTL, NOW, replace=False) is True
    assert store.get_marker("m", NOW) == "1"


# Revocations racing a rename


class RenameAfterIndexRead(redis.Redis):
    """A client that runs ``after`` once, right after its first ``ZRANGE`` (an index read)."""

    after: Callable[[], None] | None = None

    def zrange(self, *args: Any, **kwargs: Any) -> Any:
        result = super().zrange(*args, **kwargs)
        hook, self.after = self.after, None
        if hook is not None:
            hook()
        return result


def renaming(other: RedisStore, new: SessionRecord) -> Callable[[], None]:
    """A callback that renames ``old`` to ``new`` through another process's store."""

    def rename() -> None:
        assert other.rename(key_for("old"), new, NOW, grace=GRACE) is Outcome.DONE

    return rename


@pytest.fixture
def racing(server: RedisServer) -> Iterator[tuple[RedisStore, RenameAfterIndexRead]]:
    """A store whose client lets a test act between an index read and what follows it."""
    client = RenameAfterIndexRead.from_url(server.url)
    yield RedisStore(client), client
    client.close()


def test_revoke_all_finds_a_session_renamed_after_the_index_was_read(
    racing: tuple[RedisStore, RenameAfterIndexRead], other: RedisStore
) -> None:
    """A regenerate lands between revoke_all's index read and its deletes: both keys end."""
    store, client = racing
    store.create(make_record("old", user_id="u"))
    new = make_record("new", handle="h-new", user_id="u")
    client.after = renaming(other, new)
    assert store.delete_user("u", NOW) == 1
    assert store.load(key_for("new"), NOW) is None
    assert store.list_user("u", NOW) == []


def test_revoke_all_keeps_a_session_renamed_to_another_user(
    racing: tuple[RedisStore, RenameAfterIndexRead], other: RedisStore
) -> None:
    """The record a tombstone names is deleted only if it is still bound to that user."""
    store, client = racing
    store.create(make_record("old", user_id="u"))
    new = make_record("new", handle="h-new", user_id="v")
    client.after = renaming(other, new)
    assert store.delete_user("u", NOW) == 0
    assert store.load(key_for("new"), NOW) == dataclasses.replace(new, data={"greeting": '"hello"'})


def test_revoke_finds_a_session_renamed_after_the_handle_index_was_read(
    racing: tuple[RedisStore, RenameAfterIndexRead], other: RedisStore
) -> None:
    """revoke(handle) racing a regenerate that keeps the handle still ends the session."""
    store, client = racing
    store.create(make_record("old", user_id="u"))
    new = make_record("new", handle="h-old", user_id="u")
    client.after = renaming(other, new)
    assert store.delete_handle("h-old", NOW, user_id="u") == (key_for("new"), "u")
    assert store.load(key_for("new"), NOW) is None


def test_tombstones_and_markers_work_on_a_client_that_decodes_responses(
    server: RedisServer,
) -> None:
    """A client made with decode_responses=True reads tombstones and markers just as well."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        store = RedisStore(client)
        rotate(store)
        assert store.load(key_for("old"), NOW) is ROTATED
        assert store.apply(key_for("old"), {"c": "3"}, (), NOW) is Outcome.FOLLOWED
        assert store.put_marker("m", "✓", NOW + TTL, NOW) is True
        assert store.get_marker("m", NOW) == "✓"
        assert store.delete_all() == 1
    finally:
        client.close()
