"""The store contract around rotation: rename tombstones, following them, and the login race."""

from __future__ import annotations

import dataclasses
import threading

from flask_keepsake.stores import ROTATED, Outcome, Store, Touch

from .store_helpers import NOW, TTL, key_for, make_record
from .test_contract import run_threads

GRACE = 60.0


def rotate(store: Store, old: str = "old", new: str = "new", **fields: object) -> None:
    """Store a record named ``old`` and rename it to ``new`` with a tombstone."""
    store.create(make_record(old, data={"a": "1"}))
    record = make_record(new, data={}, **fields)  # type: ignore[arg-type]
    assert store.rename(key_for(old), record, NOW, grace=GRACE) is Outcome.DONE


def test_load_of_a_renamed_key_within_the_grace_window_is_rotated(store: Store) -> None:
    """Within the grace window the old key loads as ROTATED, never as the new record."""
    rotate(store)
    assert store.load(key_for("old"), NOW) is ROTATED
    assert store.load(key_for("old"), NOW + GRACE - 1) is ROTATED
    loaded = store.load(key_for("new"), NOW)
    assert loaded is not None
    assert loaded is not ROTATED


def test_load_of_a_renamed_key_after_the_grace_window_is_none(store: Store) -> None:
    """The tombstone lasts exactly the grace window."""
    rotate(store)
    assert store.load(key_for("old"), NOW + GRACE) is None


def test_rename_without_grace_leaves_no_tombstone(store: Store) -> None:
    """With grace 0 the old key is simply unknown after the rename."""
    store.create(make_record("old"))
    assert store.rename(key_for("old"), make_record("new"), NOW) is Outcome.DONE
    assert store.load(key_for("old"), NOW) is None
    assert store.apply(key_for("old"), {"b": "2"}, (), NOW) is Outcome.GONE


def test_apply_to_a_renamed_key_follows_to_the_new_record(store: Store) -> None:
    """A delta computed before the rename lands in the new record, and says so."""
    rotate(store)
    assert store.apply(key_for("old"), {"b": "2"}, ["a"], NOW + 1) is Outcome.FOLLOWED
    loaded = store.load(key_for("new"), NOW + 1)
    assert loaded is not None
    assert loaded is not ROTATED
    assert loaded.data == {"b": "2"}


def test_apply_that_follows_a_tombstone_drops_its_touch(store: Store) -> None:
    """The old request's touch is stale for the new record: only its data delta is applied."""
    rotate(store, auth_time=NOW)
    touch = Touch(last_seen=NOW + 5, expires_at=NOW + 10, absolute_expires_at=NOW + 10, stale=True)
    assert store.apply(key_for("old"), {"b": "2"}, (), NOW + 5, touch) is Outcome.FOLLOWED
    loaded = store.load(key_for("new"), NOW + 5)
    expected = dataclasses.replace(make_record("new", auth_time=NOW), data={"a": "1", "b": "2"})
    assert loaded == expected


def test_apply_follows_two_renames_in_a_row(store: Store) -> None:
    """A login then a regenerate within the grace window: the delta reaches the newest record."""
    rotate(store, new="mid")
    third = make_record("third", data={})
    assert store.rename(key_for("mid"), third, NOW, grace=GRACE) is Outcome.DONE
    assert store.apply(key_for("old"), {"b": "2"}, (), NOW) is Outcome.FOLLOWED
    loaded = store.load(key_for("third"), NOW)
    assert loaded is not None
    assert loaded is not ROTATED
    assert loaded.data == {"a": "1", "b": "2"}


def test_apply_to_a_tombstone_of_a_deleted_record_is_gone(store: Store) -> None:
    """A tombstone whose record was logged out or revoked leads nowhere: nothing is written."""
    rotate(store)
    assert store.delete(key_for("new")) is True
    assert store.apply(key_for("old"), {"b": "2"}, (), NOW) is Outcome.GONE
    assert store.load(key_for("new"), NOW) is None
    assert store.count(NOW) == 0


def test_apply_after_the_grace_window_is_gone(store: Store) -> None:
    """A delta that arrives after the tombstone expired writes nothing."""
    rotate(store)
    later = NOW + GRACE
    assert store.apply(key_for("old"), {"b": "2"}, (), later) is Outcome.GONE
    loaded = store.load(key_for("new"), later)
    assert loaded is not None
    assert loaded is not ROTATED
    assert loaded.data == {"a": "1"}


def test_touch_of_a_renamed_key_is_followed_and_writes_nothing(store: Store) -> None:
    """A touch for the old key says FOLLOWED and leaves the new record's expiry alone."""
    rotate(store)
    touch = Touch(last_seen=NOW + 5, expires_at=NOW + 6)
    assert store.touch(key_for("old"), touch, NOW + 5) is Outcome.FOLLOWED
    assert store.load(key_for("new"), NOW + 7) is not None


def test_rename_sets_the_remembered_flag_of_the_new_record(store: Store) -> None:
    """A login with remember-me renames into a remembered record; list_user shows it."""
    store.create(make_record("old", user_id="u"))
    new = make_record("new", user_id="u", remembered=True)
    assert store.rename(key_for("old"), new, NOW) is Outcome.DONE
    loaded = store.load(key_for("new"), NOW)
    assert loaded is not None
    assert loaded is not ROTATED
    assert loaded.remembered is True
    assert [record.remembered for record in store.list_user("u", NOW)] == [True]


def test_rename_of_a_renamed_key_is_rotated_and_writes_nothing(store: Store) -> None:
    """A second login with the old token finds the tombstone: ROTATED, no new record."""
    rotate(store)
    other = make_record("other", data={})
    result = store.rename(key_for("old"), other, NOW, changed={"x": "1"}, grace=GRACE)
    assert result is Outcome.ROTATED
    assert store.load(key_for("other"), NOW) is None
    assert store.count(NOW) == 1


def test_delete_leaves_a_tombstone_alone(store: Store) -> None:
    """delete() is for records; a tombstone stays until its grace window ends."""
    rotate(store)
    assert store.delete(key_for("old")) is False
    assert store.load(key_for("old"), NOW) is ROTATED


def test_tombstones_are_not_records(store: Store) -> None:
    """Tombstones are never counted, listed, counted per user or revoked by handle."""
    store.create(make_record("old", user_id="u"))
    new = make_record("new", handle="h-new", user_id="u")
    assert store.rename(key_for("old"), new, NOW, grace=GRACE) is Outcome.DONE
    assert store.count(NOW) == 1
    assert [record.key for record in store.list_user("u", NOW)] == [new.key]
    assert store.user_counts(NOW, 10) == [("u", 1)]
    assert store.delete_handle("h-old", NOW) is None
    assert store.delete_user("u", NOW) == 1
    assert store.load(key_for("old"), NOW) is ROTATED


def test_purge_expired_removes_expired_tombstones(store: Store, native_expiry: bool) -> None:
    """An expired tombstone is purged (or dropped by the backend's own expiry)."""
    rotate(store)
    purged = store.purge_expired(NOW + GRACE)
    assert purged == (0 if native_expiry else 1)
    assert store.load(key_for("old"), NOW + GRACE) is None
    assert store.load(key_for("new"), NOW + GRACE) is not None


def test_delete_all_removes_tombstones(store: Store) -> None:
    """After delete_all a renamed-away key is unknown, not ROTATED."""
    rotate(store)
    assert store.delete_all() == 1
    assert store.load(key_for("old"), NOW) is None


def test_writes_racing_a_rename_are_all_kept(store: Store) -> None:
    """Threads writing through the old key while it is renamed: every acknowledged write stays."""
    store.create(make_record("old", data={}))
    acknowledged: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def work(index: int) -> None:
        if index == 0:
            new = make_record("new", data={}, user_id="u")
            outcome = store.rename(key_for("old"), new, NOW, changed={"login": "1"}, grace=GRACE)
            assert outcome is Outcome.DONE
            done.set()
            return
        for step in range(15):
            name = f"w{index}-{step}"
            outcome = store.apply(key_for("old"), {name: '"x"'}, (), NOW)
            assert outcome in (Outcome.DONE, Outcome.FOLLOWED)
            with lock:
                acknowledged.append(name)

    run_threads(6, work)
    assert done.is_set()
    loaded = store.load(key_for("new"), NOW)
    assert loaded is not None
    assert loaded is not ROTATED
    assert set(loaded.data) == {"login", *acknowledged}


def test_touch_can_move_the_absolute_expiry(store: Store) -> None:
    """A touch with absolute_expires_at sets it (the session changed policy)."""
    record = make_record()
    store.create(record)
    touch = Touch(last_seen=NOW + 1, expires_at=NOW + 2 * TTL, absolute_expires_at=NOW + 90 * TTL)
    assert store.touch(record.key, touch, NOW + 1) is Outcome.DONE
    expected = dataclasses.replace(
        record, last_seen=NOW + 1, expires_at=NOW + 2 * TTL, absolute_expires_at=NOW + 90 * TTL
    )
    assert store.load(record.key, NOW + 1) == expected


def test_touch_without_absolute_expiry_keeps_it(store: Store) -> None:
    """absolute_expires_at None leaves the absolute expiry as stored."""
    record = make_record()
    store.create(record)
    assert store.touch(record.key, Touch(NOW + 1, NOW + TTL), NOW + 1) is Outcome.DONE
    loaded = store.load(record.key, NOW + 1)
    assert loaded is not None
    assert loaded is not ROTATED
    assert loaded.absolute_expires_at == record.absolute_expires_at


def test_stale_touch_forgets_the_authentication_time(store: Store) -> None:
    """A stale touch sets auth_time to None, with a delta as without."""
    first = make_record("first", auth_time=NOW - 100)
    second = make_record("second", auth_time=NOW - 100)
    store.create(first)
    store.create(second)
    stale = Touch(NOW + 1, NOW + TTL, stale=True)
    assert store.touch(first.key, stale, NOW + 1) is Outcome.DONE
    assert store.apply(second.key, {"b": "2"}, (), NOW + 1, stale) is Outcome.DONE
    for key in (first.key, second.key):
        loaded = store.load(key, NOW + 1)
        assert loaded is not None
        assert loaded is not ROTATED
        assert loaded.auth_time is None
