"""The store contract (flask_keepsake.stores.base), run against every store in conftest.STORES."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import pytest

from flask_keepsake.stores import ROTATED, Outcome, SessionRecord, Store, Touch

from .store_helpers import NOW, TTL, key_for, make_record

EXPIRES = NOW + TTL


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads released together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# create and load


def test_create_then_load_round_trips_every_field(store: Store) -> None:
    """Every field of a created record comes back from load unchanged."""
    record = SessionRecord(
        key=key_for("full"),
        handle="Zq3-handle",
        data={"user": '"ada"', "cart": "[1,2]", "ünïcode ✓": '"snow ☃"', "": ""},
        user_id="user-1",
        created=NOW - 10.5,
        last_seen=NOW - 1.25,
        expires_at=NOW + 99.5,
        absolute_expires_at=NOW + 999.75,
        auth_time=NOW - 5.0,
        ip="2001:db8::1",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) ✓",
        remembered=True,
    )
    store.create(record)
    assert store.load(record.key, NOW) == record


def test_create_then_load_round_trips_an_anonymous_record(store: Store) -> None:
    """A record with empty data and no user, auth time, address or agent round-trips."""
    record = make_record(data={}, user_id=None, auth_time=None, ip=None, user_agent=None)
    store.create(record)
    assert store.load(record.key, NOW) == record


def test_data_values_that_look_like_json_stay_strings(store: Store) -> None:
    """Values such as "null", "{}" or quotes are opaque strings, through create and apply."""
    tricky = {"n": "null", "o": '{"a": null}', "q": '"\\"', "e": "", "nl": "a\nb\x00c"}
    record = make_record(data=tricky)
    store.create(record)
    assert store.apply(record.key, {f"{k}2": v for k, v in tricky.items()}, (), NOW)
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == tricky | {f"{k}2": v for k, v in tricky.items()}


def test_create_keeps_a_copy_of_the_record(store: Store) -> None:
    """Mutating the record after create does not change what is stored."""
    record = make_record(data={"a": "1"})
    store.create(record)
    record.data["a"] = "2"
    record.user_id = "someone"
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == {"a": "1"}
    assert loaded.user_id is None


def test_load_returns_a_copy(store: Store) -> None:
    """Mutating a loaded record does not change what is stored."""
    record = make_record(data={"a": "1"})
    store.create(record)
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    loaded.data["a"] = "2"
    assert store.load(record.key, NOW) == record


def test_create_duplicate_live_key_raises_value_error(store: Store) -> None:
    """Creating a record under a live key raises ValueError and leaves the old one unchanged."""
    first = make_record("a", data={"first": "1"})
    store.create(first)
    with pytest.raises(ValueError, match="already exists"):
        store.create(make_record("a", handle="other-handle", data={"second": "2"}))
    assert store.load(first.key, NOW) == first
    assert store.count(NOW) == 1


def test_create_duplicate_live_handle_raises_value_error(store: Store) -> None:
    """Creating a record with the handle of a live record raises ValueError and stores nothing."""
    first = make_record("a")
    store.create(first)
    with pytest.raises(ValueError, match="already exists"):
        store.create(make_record("b", handle=first.handle))
    assert store.load(key_for("b"), NOW) is None
    assert store.load(first.key, NOW) == first


def test_create_replaces_an_expired_record_with_the_same_key(store: Store) -> None:
    """An expired record under the same key does not block create."""
    store.create(make_record("a", created=NOW - 2 * TTL, expires_at=NOW - TTL, data={"old": "1"}))
    fresh = make_record("a", data={"new": "1"})
    store.create(fresh)
    assert store.load(fresh.key, NOW) == fresh


def test_create_reuses_the_handle_of_an_expired_record(store: Store) -> None:
    """An expired record holding the same handle does not block create."""
    store.create(make_record("old", handle="shared", created=NOW - 2 * TTL, expires_at=NOW - 1))
    fresh = make_record("new", handle="shared")
    store.create(fresh)
    assert store.load(fresh.key, NOW) == fresh
    assert store.delete_handle("shared", NOW) == (fresh.key, None)


def test_concurrent_creates_of_one_key_let_exactly_one_win(store: Store) -> None:
    """Eight threads creating the same key: one succeeds, seven get ValueError."""
    outcomes: list[str] = []

    def create(index: int) -> None:
        try:
            store.create(make_record("a", handle=f"h{index}", data={"winner": str(index)}))
            outcomes.append("created")
        except ValueError:
            outcomes.append("duplicate")

    run_threads(8, create)
    assert sorted(outcomes) == ["created"] + ["duplicate"] * 7
    assert store.count(NOW) == 1


def test_load_absent_key_returns_none(store: Store) -> None:
    """Loading a key that was never stored returns None."""
    assert store.load(key_for("nothing"), NOW) is None


def test_load_just_before_expiry_returns_the_record(store: Store) -> None:
    """A record is live until the instant it expires."""
    record = make_record()
    store.create(record)
    assert store.load(record.key, record.expires_at - 0.001) == record


def test_load_at_exactly_expires_at_returns_none(store: Store) -> None:
    """A record whose expires_at equals now is expired."""
    record = make_record()
    store.create(record)
    assert store.load(record.key, record.expires_at) is None


def test_load_after_expires_at_returns_none(store: Store) -> None:
    """A record whose expires_at is before now is expired."""
    record = make_record()
    store.create(record)
    assert store.load(record.key, record.expires_at + TTL) is None


# apply


def test_apply_sets_changed_keys_and_keeps_the_others(store: Store) -> None:
    """Changed keys get their new values; keys outside the delta are untouched."""
    record = make_record(data={"keep": "1", "change": "2"})
    store.create(record)
    assert store.apply(record.key, {"change": "20", "add": "3"}, (), NOW) is Outcome.DONE
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == {"keep": "1", "change": "20", "add": "3"}


def test_apply_deletes_keys(store: Store) -> None:
    """Deleted keys are removed from the record."""
    record = make_record(data={"keep": "1", "drop": "2"})
    store.create(record)
    assert store.apply(record.key, {}, ["drop"], NOW) is Outcome.DONE
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == {"keep": "1"}


def test_apply_ignores_deleting_absent_keys(store: Store) -> None:
    """Deleting a key the record does not hold is not an error and changes nothing else."""
    record = make_record(data={"keep": "1"})
    store.create(record)
    assert store.apply(record.key, {}, {"never-there"}, NOW) is Outcome.DONE
    assert store.load(record.key, NOW) == record


def test_apply_with_a_key_both_changed_and_deleted_deletes_it(store: Store) -> None:
    """A key named in both changed and deleted ends up deleted, in every store alike."""
    record = make_record(data={"x": "1", "keep": "2"})
    store.create(record)
    assert store.apply(record.key, {"x": "9"}, ["x"], NOW) is Outcome.DONE
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == {"keep": "2"}


def test_apply_empty_delta_is_done_and_changes_nothing(store: Store) -> None:
    """An empty delta on a live record succeeds and leaves it as it was."""
    record = make_record()
    store.create(record)
    assert store.apply(record.key, {}, (), NOW) is Outcome.DONE
    assert store.load(record.key, NOW) == record


def test_apply_with_touch_sets_last_seen_and_expires_at(store: Store) -> None:
    """A touch given with the delta updates last_seen and expires_at along with the data."""
    record = make_record(data={"a": "1"})
    store.create(record)
    touch = Touch(last_seen=NOW + 60, expires_at=NOW + 60 + TTL)
    assert store.apply(record.key, {"b": "2"}, ["a"], NOW + 60, touch) is Outcome.DONE
    loaded = store.load(record.key, NOW + 60)
    expected = dataclasses.replace(
        record, data={"b": "2"}, last_seen=NOW + 60, expires_at=NOW + 60 + TTL
    )
    assert loaded == expected


def test_apply_without_touch_keeps_last_seen_and_expires_at(store: Store) -> None:
    """Without a touch, apply leaves the timestamps alone."""
    record = make_record()
    store.create(record)
    assert store.apply(record.key, {"a": "1"}, (), NOW + 60) is Outcome.DONE
    loaded = store.load(record.key, NOW + 60)
    assert loaded is not None
    assert (loaded.last_seen, loaded.expires_at) == (record.last_seen, record.expires_at)


def test_apply_to_absent_record_is_gone_and_writes_nothing(store: Store) -> None:
    """A delta for a key that was never stored creates nothing."""
    key = key_for("ghost")
    touch = Touch(last_seen=NOW, expires_at=NOW + TTL)
    assert store.apply(key, {"a": "1"}, (), NOW, touch) is Outcome.GONE
    assert store.load(key, NOW) is None
    assert store.count(NOW) == 0


def test_apply_to_expired_record_is_gone_and_writes_nothing(store: Store) -> None:
    """A delta for an expired record neither changes nor revives it, even with a touch."""
    record = make_record()
    store.create(record)
    later = record.expires_at
    touch = Touch(last_seen=later, expires_at=later + TTL)
    assert store.apply(record.key, {"a": "1"}, ["greeting"], later, touch) is Outcome.GONE
    assert store.load(record.key, later) is None
    assert store.load(record.key, NOW) == record


def test_apply_after_delete_does_not_resurrect(store: Store) -> None:
    """A delta computed before a logout arrives after it: the session stays deleted."""
    record = make_record()
    store.create(record)
    assert store.delete(record.key) is True
    assert store.apply(record.key, {"a": "1"}, (), NOW) is Outcome.GONE
    assert store.load(record.key, NOW) is None


def test_overlapping_deltas_on_different_keys_both_survive(store: Store) -> None:
    """Two requests that loaded the same state and changed different keys both keep them."""
    record = make_record(data={"shared": "0"})
    store.create(record)
    first_view = store.load(record.key, NOW)
    second_view = store.load(record.key, NOW)
    assert first_view is not None
    assert second_view is not None
    assert store.apply(record.key, {"cart": "[1]"}, (), NOW) is Outcome.DONE
    assert store.apply(record.key, {"theme": '"dark"'}, ["shared"], NOW) is Outcome.DONE
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == {"cart": "[1]", "theme": '"dark"'}


def test_overlapping_deltas_on_the_same_key_last_writer_wins(store: Store) -> None:
    """Two requests that changed the same key: the later apply's value stays."""
    record = make_record(data={"n": "0"})
    store.create(record)
    assert store.apply(record.key, {"n": "1"}, (), NOW) is Outcome.DONE
    assert store.apply(record.key, {"n": "2"}, (), NOW) is Outcome.DONE
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == {"n": "2"}


def test_concurrent_applies_of_different_keys_all_survive(store: Store) -> None:
    """Eight threads each applying its own keys to one record: every write is kept."""
    record = make_record(data={})
    store.create(record)

    def write(index: int) -> None:
        for step in range(20):
            assert store.apply(record.key, {f"t{index}": str(step)}, (), NOW) is Outcome.DONE

    run_threads(8, write)
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == {f"t{index}": "19" for index in range(8)}


# touch


def test_touch_sets_last_seen_and_expires_at_only(store: Store) -> None:
    """A touch moves the timestamps and leaves the data and everything else alone."""
    record = make_record()
    store.create(record)
    touch = Touch(last_seen=NOW + 5, expires_at=NOW + 5 + TTL)
    assert store.touch(record.key, touch, NOW + 5) is Outcome.DONE
    loaded = store.load(record.key, NOW + TTL)
    assert loaded == dataclasses.replace(record, last_seen=NOW + 5, expires_at=NOW + 5 + TTL)


def test_touch_can_bring_expiry_closer(store: Store) -> None:
    """A touch sets expires_at as given, even when that is earlier than before."""
    record = make_record()
    store.create(record)
    assert store.touch(record.key, Touch(last_seen=NOW, expires_at=NOW + 1), NOW) is Outcome.DONE
    assert store.load(record.key, NOW + 1) is None


def test_touch_absent_record_is_gone_and_writes_nothing(store: Store) -> None:
    """Touching a key that was never stored creates nothing."""
    key = key_for("ghost")
    assert store.touch(key, Touch(last_seen=NOW, expires_at=NOW + TTL), NOW) is Outcome.GONE
    assert store.load(key, NOW) is None
    assert store.count(NOW) == 0


def test_touch_expired_record_is_gone_and_writes_nothing(store: Store) -> None:
    """Touching an expired record does not revive it."""
    record = make_record()
    store.create(record)
    later = record.expires_at + 1
    assert (
        store.touch(record.key, Touch(last_seen=later, expires_at=later + TTL), later)
        is Outcome.GONE
    )
    assert store.load(record.key, later) is None
    assert store.load(record.key, NOW) == record


# rename


def test_rename_moves_the_record_to_the_new_key(store: Store) -> None:
    """After rename the old key is gone and the new key holds the new record."""
    old = make_record("old", data={"a": "1"}, user_id="u")
    store.create(old)
    new = make_record("new", handle=old.handle, data={}, user_id="u", auth_time=NOW)
    assert store.rename(old.key, new, NOW, changed={"b": "2"}) is Outcome.DONE
    assert store.load(old.key, NOW) is None
    assert store.load(new.key, NOW) == dataclasses.replace(new, data={"a": "1", "b": "2"})
    assert store.count(NOW) == 1


def test_rename_carries_the_stored_data_and_applies_the_delta(store: Store) -> None:
    """The new record holds the old record's data as stored, with changed set and deleted gone."""
    old = make_record("old", data={"keep": "1", "change": "2", "drop": "3"})
    store.create(old)
    new = make_record("new", data={"ignored": "x"})
    result = store.rename(old.key, new, NOW, changed={"change": "20", "add": "4"}, deleted=["drop"])
    assert result is Outcome.DONE
    loaded = store.load(new.key, NOW)
    assert loaded is not None
    assert loaded.data == {"keep": "1", "change": "20", "add": "4"}


def test_rename_keeps_a_write_that_landed_after_the_caller_loaded(store: Store) -> None:
    """A write to the old record between the login's load and its rename survives the rename."""
    old = make_record("old", data={"cart": "[]"})
    store.create(old)
    assert store.load(old.key, NOW) is not None  # the login request loads
    assert store.apply(old.key, {"coupon": '"SAVE10"'}, (), NOW) is Outcome.DONE  # another tab
    new = make_record("new", user_id="u")
    assert store.rename(old.key, new, NOW, changed={"_user_id": '"u"'}) is Outcome.DONE
    loaded = store.load(new.key, NOW)
    assert loaded is not None
    assert loaded.data == {"cart": "[]", "coupon": '"SAVE10"', "_user_id": '"u"'}


def test_rename_with_a_key_both_changed_and_deleted_deletes_it(store: Store) -> None:
    """As in apply, a key named in both changed and deleted ends up deleted."""
    old = make_record("old", data={"x": "1", "keep": "2"})
    store.create(old)
    new = make_record("new")
    assert store.rename(old.key, new, NOW, changed={"x": "9"}, deleted=["x"]) is Outcome.DONE
    loaded = store.load(new.key, NOW)
    assert loaded is not None
    assert loaded.data == {"keep": "2"}


def test_rename_updates_the_user_and_handle_indexes(store: Store) -> None:
    """The renamed record is found by its user and handle; the old one is not."""
    old = make_record("old", user_id="u")
    store.create(old)
    new = make_record("new", handle="h-renamed", user_id="u")
    assert store.rename(old.key, new, NOW) is Outcome.DONE
    assert [record.key for record in store.list_user("u", NOW)] == [new.key]
    assert store.delete_handle(old.handle, NOW) is None
    assert store.delete_handle("h-renamed", NOW) == (new.key, "u")


def test_rename_binds_an_anonymous_record_to_a_user(store: Store) -> None:
    """A login renames an anonymous record into one bound to a user, listed under that user."""
    old = make_record("old", user_id=None)
    store.create(old)
    new = make_record("new", handle="h-login", user_id="u")
    assert store.rename(old.key, new, NOW) is Outcome.DONE
    assert [record.key for record in store.list_user("u", NOW)] == [new.key]
    assert store.delete_user("u", NOW) == 1
    assert store.count(NOW) == 0


def test_rename_absent_old_key_is_gone_and_writes_nothing(store: Store) -> None:
    """Renaming a key that was never stored does not create the new record."""
    new = make_record("new")
    assert store.rename(key_for("ghost"), new, NOW, changed={"a": "1"}) is Outcome.GONE
    assert store.load(new.key, NOW) is None
    assert store.count(NOW) == 0


def test_rename_expired_old_key_is_gone_and_writes_nothing(store: Store) -> None:
    """Renaming an expired record neither creates the new record nor revives the old one."""
    old = make_record("old")
    store.create(old)
    later = old.expires_at
    new = make_record("new", created=later, expires_at=later + TTL)
    assert store.rename(old.key, new, later, grace=60) is Outcome.GONE
    assert store.load(new.key, later) is None
    assert store.load(old.key, later) is None
    assert store.load(old.key, NOW) == old


def test_rename_onto_another_live_record_raises_value_error(store: Store) -> None:
    """Renaming onto a key another live record holds raises ValueError and changes nothing."""
    old = make_record("old")
    other = make_record("other")
    store.create(old)
    store.create(other)
    with pytest.raises(ValueError, match="already exists"):
        store.rename(old.key, make_record("other", handle="h-new"), NOW, grace=60)
    assert store.load(old.key, NOW) == old
    assert store.load(other.key, NOW) == other


def test_rename_onto_a_handle_another_live_record_holds_raises_value_error(store: Store) -> None:
    """A new record whose handle a live record holds is refused, and nothing changes."""
    old = make_record("old", user_id="u")
    holder = make_record("holder", user_id="v")
    store.create(old)
    store.create(holder)
    with pytest.raises(ValueError, match="already exists"):
        store.rename(old.key, make_record("new", handle=holder.handle, user_id="u"), NOW, grace=60)
    assert store.load(old.key, NOW) == old
    assert store.load(holder.key, NOW) == holder
    assert store.load(key_for("new"), NOW) is None
    assert [record.key for record in store.list_user("u", NOW)] == [old.key]


def test_rename_may_take_the_handle_of_an_expired_record(store: Store) -> None:
    """An expired record does not hold its handle: a rename may take it."""
    gone = make_record("gone", expires_at=NOW + 1)
    old = make_record("old")
    store.create(gone)
    store.create(old)
    later = NOW + 2
    new = make_record("new", handle=gone.handle, created=later, expires_at=later + TTL, data={})
    assert store.rename(old.key, new, later) is Outcome.DONE
    assert store.load(new.key, later) == dataclasses.replace(new, data=old.data)
    assert store.load(old.key, later) is None


def test_concurrent_renames_of_one_key_let_exactly_one_win(store: Store) -> None:
    """Eight threads renaming the same old key: exactly one succeeds, the others see it."""
    old = make_record("old")
    store.create(old)
    results: list[Outcome] = []

    def rename(index: int) -> None:
        results.append(store.rename(old.key, make_record(f"new{index}"), NOW, grace=60))

    run_threads(8, rename)
    assert sorted(results, key=lambda outcome: outcome.value) == (
        [Outcome.DONE] + [Outcome.ROTATED] * 7
    )
    assert store.count(NOW) == 1
    assert store.load(old.key, NOW) is ROTATED


# delete


def test_delete_removes_a_live_record(store: Store) -> None:
    """Deleting a live record returns True and the record is gone."""
    record = make_record()
    store.create(record)
    assert store.delete(record.key) is True
    assert store.load(record.key, NOW) is None
    assert store.count(NOW) == 0


def test_delete_absent_key_returns_false(store: Store) -> None:
    """Deleting a key that was never stored returns False."""
    assert store.delete(key_for("ghost")) is False


def test_delete_removes_the_record_from_user_and_handle_lookups(store: Store) -> None:
    """A deleted record is no longer listed for its user nor found by its handle."""
    record = make_record(user_id="u")
    store.create(record)
    assert store.delete(record.key) is True
    assert store.list_user("u", NOW) == []
    assert store.delete_handle(record.handle, NOW) is None
    store.create(make_record("b", handle=record.handle))


# list_user


def test_list_user_returns_the_users_records_oldest_first(store: Store) -> None:
    """Records come back ordered by created, whatever the order they were stored in."""
    for name, created in (("mid", NOW - 20), ("new", NOW - 10), ("old", NOW - 30)):
        store.create(make_record(name, user_id="u", created=created))
    listed = store.list_user("u", NOW)
    assert [record.key for record in listed] == [key_for("old"), key_for("mid"), key_for("new")]


def test_list_user_returns_complete_records(store: Store) -> None:
    """Listed records carry every field, as load returns them."""
    record = make_record(user_id="u", auth_time=NOW - 1, ip="203.0.113.9", user_agent="curl/8")
    store.create(record)
    assert store.list_user("u", NOW) == [record]


def test_list_user_excludes_expired_records(store: Store) -> None:
    """Expired records of the user are not listed."""
    store.create(make_record("live", user_id="u"))
    store.create(make_record("gone", user_id="u", expires_at=NOW))
    assert [record.key for record in store.list_user("u", NOW)] == [key_for("live")]


def test_list_user_excludes_other_users_and_anonymous_records(store: Store) -> None:
    """Only records bound to the given user are listed."""
    store.create(make_record("mine", user_id="u"))
    store.create(make_record("theirs", user_id="v"))
    store.create(make_record("anon", user_id=None))
    assert [record.key for record in store.list_user("u", NOW)] == [key_for("mine")]


def test_list_user_unknown_user_returns_empty_list(store: Store) -> None:
    """A user without sessions has an empty list."""
    assert store.list_user("nobody", NOW) == []


# delete_user


def test_delete_user_deletes_every_record_of_the_user(store: Store) -> None:
    """All the user's live records are deleted and counted."""
    for name in ("a", "b", "c"):
        store.create(make_record(name, user_id="u"))
    assert store.delete_user("u", NOW) == 3
    assert store.list_user("u", NOW) == []
    assert store.count(NOW) == 0


def test_delete_user_keeps_except_key(store: Store) -> None:
    """The record under except_key survives and is not counted."""
    for name in ("current", "b", "c"):
        store.create(make_record(name, user_id="u"))
    assert store.delete_user("u", NOW, except_key=key_for("current")) == 2
    assert [record.key for record in store.list_user("u", NOW)] == [key_for("current")]


def test_delete_user_counts_only_live_records(store: Store) -> None:
    """Expired records of the user are not counted as deleted."""
    store.create(make_record("live", user_id="u"))
    store.create(make_record("gone", user_id="u", expires_at=NOW - 1))
    assert store.delete_user("u", NOW) == 1
    assert store.count(NOW) == 0


def test_delete_user_leaves_other_users_alone(store: Store) -> None:
    """Records of other users and anonymous records survive."""
    store.create(make_record("mine", user_id="u"))
    theirs = make_record("theirs", user_id="v")
    anon = make_record("anon")
    store.create(theirs)
    store.create(anon)
    assert store.delete_user("u", NOW) == 1
    assert store.load(theirs.key, NOW) == theirs
    assert store.load(anon.key, NOW) == anon


def test_delete_user_unknown_user_returns_zero(store: Store) -> None:
    """Deleting the sessions of a user who has none returns 0."""
    store.create(make_record())
    assert store.delete_user("nobody", NOW) == 0
    assert store.count(NOW) == 1


# delete_handle


def test_delete_handle_deletes_and_returns_the_key_and_user(store: Store) -> None:
    """The live record with the handle is deleted; its key and user come back."""
    record = make_record(user_id="u")
    anonymous = make_record("anon")
    store.create(record)
    store.create(anonymous)
    assert store.delete_handle(record.handle, NOW) == (record.key, "u")
    assert store.delete_handle(anonymous.handle, NOW) == (anonymous.key, None)
    assert store.load(record.key, NOW) is None


def test_delete_handle_unknown_handle_returns_none(store: Store) -> None:
    """An unknown handle deletes nothing and returns None."""
    store.create(make_record())
    assert store.delete_handle("no-such-handle", NOW) is None
    assert store.count(NOW) == 1


def test_delete_handle_expired_record_returns_none(store: Store) -> None:
    """The handle of an expired record is treated as unknown."""
    record = make_record()
    store.create(record)
    assert store.delete_handle(record.handle, record.expires_at) is None


def test_delete_handle_scoped_to_the_owner_deletes(store: Store) -> None:
    """With the owner's user_id, the record is deleted."""
    record = make_record(user_id="u")
    store.create(record)
    assert store.delete_handle(record.handle, NOW, user_id="u") == (record.key, "u")
    assert store.load(record.key, NOW) is None


def test_delete_handle_scoped_to_another_user_deletes_nothing(store: Store) -> None:
    """With someone else's user_id, nothing is deleted and None is returned."""
    record = make_record(user_id="u")
    store.create(record)
    assert store.delete_handle(record.handle, NOW, user_id="intruder") is None
    assert store.load(record.key, NOW) == record


def test_delete_handle_scoped_to_a_user_skips_anonymous_records(store: Store) -> None:
    """A user_id scope never matches an anonymous record."""
    record = make_record(user_id=None)
    store.create(record)
    assert store.delete_handle(record.handle, NOW, user_id="u") is None
    assert store.load(record.key, NOW) == record


# purge_expired, count, count_expired


def test_purge_expired_deletes_in_batches_until_zero(store: Store, native_expiry: bool) -> None:
    """Five expired records with batches of two: 2, 2, 1, then 0."""
    for index in range(5):
        store.create(make_record(f"x{index}", created=NOW - TTL, expires_at=NOW - index))
    counts = [store.purge_expired(NOW, batch_size=2) for _ in range(4)]
    assert counts == ([0, 0, 0, 0] if native_expiry else [2, 2, 1, 0])
    assert store.count_expired(NOW) == 0


def test_purge_expired_leaves_live_records(store: Store) -> None:
    """Purging never removes a live record."""
    live = make_record("live", user_id="u")
    store.create(live)
    store.create(make_record("gone", user_id="u", expires_at=NOW))
    while store.purge_expired(NOW, batch_size=1):
        pass
    assert store.load(live.key, NOW) == live
    assert store.list_user("u", NOW) == [live]
    assert store.count(NOW) == 1


def test_purge_expired_on_an_empty_store_returns_zero(store: Store) -> None:
    """There is nothing to purge in an empty store."""
    assert store.purge_expired(NOW) == 0


def test_purge_expired_rejects_a_batch_size_below_one(store: Store) -> None:
    """A batch size of zero or less is a programming error."""
    with pytest.raises(ValueError, match="batch_size"):
        store.purge_expired(NOW, batch_size=0)


def test_count_counts_live_records_only(store: Store) -> None:
    """count ignores expired records."""
    for name in ("a", "b"):
        store.create(make_record(name))
    store.create(make_record("gone", expires_at=NOW))
    assert store.count(NOW) == 2
    assert store.count(NOW + TTL) == 0


def test_count_expired_counts_expired_records_only(store: Store, native_expiry: bool) -> None:
    """count_expired counts the records purge_expired would remove."""
    store.create(make_record("live"))
    store.create(make_record("gone", expires_at=NOW))
    store.create(make_record("gone too", expires_at=NOW - TTL))
    assert store.count_expired(NOW) == (0 if native_expiry else 2)


# user_counts


def test_user_counts_orders_by_count_then_user_id(store: Store) -> None:
    """Most live records first; users with as many records come in user id order."""
    for user, n in (("carol", 1), ("bob", 3), ("alice", 1), ("dave", 2)):
        for index in range(n):
            store.create(make_record(f"{user}{index}", user_id=user))
    assert store.user_counts(NOW, 10) == [("bob", 3), ("dave", 2), ("alice", 1), ("carol", 1)]


def test_user_counts_returns_at_most_limit_users(store: Store) -> None:
    """The limit cuts the list after the top users, ties still broken by user id."""
    for user, n in (("u1", 1), ("u2", 2), ("u3", 2), ("u4", 3)):
        for index in range(n):
            store.create(make_record(f"{user}-{index}", user_id=user))
    assert store.user_counts(NOW, 2) == [("u4", 3), ("u2", 2)]
    assert store.user_counts(NOW, 1) == [("u4", 3)]


def test_user_counts_excludes_expired_and_anonymous_records(store: Store) -> None:
    """Only live records bound to a user count; a user with only expired records is absent."""
    store.create(make_record("live", user_id="u"))
    store.create(make_record("gone", user_id="u", expires_at=NOW))
    store.create(make_record("all gone", user_id="v", expires_at=NOW - 1))
    for index in range(3):
        store.create(make_record(f"anon{index}"))
    assert store.user_counts(NOW, 10) == [("u", 1)]
    assert store.user_counts(NOW + TTL, 10) == []


def test_user_counts_follows_deletes_and_renames(store: Store) -> None:
    """Deleted records stop counting; a renamed record counts once, for its user."""
    first, second = make_record("one", user_id="u"), make_record("two", user_id="u")
    store.create(first)
    store.create(second)
    store.delete(first.key)
    assert store.rename(second.key, dataclasses.replace(second, key=key_for("three")), NOW)
    assert store.user_counts(NOW, 5) == [("u", 1)]


def test_user_counts_on_an_empty_store_is_empty(store: Store) -> None:
    """No records, no users."""
    assert store.user_counts(NOW, 10) == []


def test_user_counts_rejects_a_limit_below_one(store: Store) -> None:
    """A limit of zero or less is a programming error."""
    for limit in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            store.user_counts(NOW, limit)


# delete_all


def test_delete_all_deletes_every_record_and_returns_the_count(store: Store) -> None:
    """Live and expired, anonymous and bound: everything goes, and each record is counted."""
    store.create(make_record("live bound", user_id="u"))
    store.create(make_record("live bound too", user_id="u"))
    store.create(make_record("live anon"))
    # Created long ago, so that Redis, whose TTLs run on real time, still holds them.
    past = NOW - 3 * TTL
    store.create(make_record("expired bound", user_id="v", created=past, expires_at=NOW))
    store.create(make_record("expired anon", created=past, expires_at=NOW - TTL))
    assert store.count_expired(NOW) in (0, 2)
    assert store.delete_all() == 5
    assert store.count(past) == 0
    assert store.count_expired(NOW + 20 * TTL) == 0
    assert store.list_user("u", NOW) == []
    assert store.user_counts(NOW, 10) == []
    for name in ("live bound", "live anon", "expired bound"):
        assert store.load(key_for(name), past) is None
    assert store.delete_handle("h-live bound", NOW) is None
    assert store.delete_user("u", NOW) == 0


def test_delete_all_on_an_empty_store_returns_zero(store: Store) -> None:
    """Nothing to delete, twice in a row."""
    assert store.delete_all() == 0
    store.create(make_record())
    assert store.delete_all() == 1
    assert store.delete_all() == 0


def test_store_works_normally_after_delete_all(store: Store) -> None:
    """After delete_all, new records (even with old keys and handles) behave as in a new store."""
    old = make_record("old", user_id="u")
    store.create(old)
    store.create(make_record("other", user_id="u"))
    assert store.delete_all() == 2
    fresh = make_record("old", user_id="u", data={"fresh": "1"})
    store.create(fresh)
    assert store.load(fresh.key, NOW) == fresh
    assert store.list_user("u", NOW) == [fresh]
    assert store.user_counts(NOW, 10) == [("u", 1)]
    assert store.count(NOW) == 1
    assert store.delete_handle(fresh.handle, NOW, user_id="u") == (fresh.key, "u")
    assert store.load(fresh.key, NOW) is None
    assert store.list_user("u", NOW) == []
    assert store.user_counts(NOW, 10) == []


# close and describe


def test_close_can_be_called_twice(store: Store) -> None:
    """Closing an already closed store is harmless."""
    store.create(make_record())
    store.close()
    store.close()


def test_store_has_a_name_and_a_description(store: Store) -> None:
    """Every store names itself and describes where its data lives."""
    assert store.name
    assert store.name != "store"
    assert store.describe()
