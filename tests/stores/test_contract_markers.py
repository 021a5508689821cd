"""The store contract for markers, and for records a store cannot decode."""

from __future__ import annotations

import logging

import pytest

from flask_keepsake.stores import Store

from ..store_registry import StoreSpec
from .store_helpers import NOW, TTL, key_for, make_record
from .test_contract import run_threads


def test_put_marker_then_get_marker_round_trips(store: Store) -> None:
    """A marker's value comes back until it expires."""
    assert store.put_marker("m1", "value ✓", NOW + TTL, NOW) is True
    assert store.get_marker("m1", NOW) == "value ✓"
    assert store.get_marker("m1", NOW + TTL - 1) == "value ✓"
    assert store.get_marker("m1", NOW + TTL) is None


def test_get_marker_of_an_unknown_name_is_none(store: Store) -> None:
    """An absent marker reads as None."""
    assert store.get_marker("never", NOW) is None


def test_put_marker_replaces_by_default(store: Store) -> None:
    """A second put with replace=True overwrites the value and the expiry."""
    store.put_marker("m", "1", NOW + 10, NOW)
    assert store.put_marker("m", "2", NOW + TTL, NOW) is True
    assert store.get_marker("m", NOW + 20) == "2"


def test_put_marker_without_replace_is_a_claim(store: Store) -> None:
    """replace=False keeps a live marker and says so; an expired one may be claimed again."""
    assert store.put_marker("claim", "first", NOW + 10, NOW, replace=False) is True
    assert store.put_marker("claim", "second", NOW + 10, NOW, replace=False) is False
    assert store.get_marker("claim", NOW) == "first"
    assert store.put_marker("claim", "third", NOW + 30, NOW + 10, replace=False) is True
    assert store.get_marker("claim", NOW + 10) == "third"


def test_concurrent_claims_let_exactly_one_win(store: Store) -> None:
    """Eight threads claiming one marker: exactly one gets True."""
    results: list[bool] = []

    def claim(index: int) -> None:
        results.append(store.put_marker("once", str(index), NOW + TTL, NOW, replace=False))

    run_threads(8, claim)
    assert sorted(results) == [False] * 7 + [True]


def test_markers_are_not_records(store: Store) -> None:
    """A marker named like a session key neither loads nor counts as a session."""
    record = make_record("a")
    store.put_marker(record.key, "marker", NOW + TTL, NOW)
    assert store.load(record.key, NOW) is None
    assert store.count(NOW) == 0
    store.create(record)
    assert store.load(record.key, NOW) == record
    assert store.get_marker(record.key, NOW) == "marker"
    assert store.delete(record.key) is True
    assert store.get_marker(record.key, NOW) == "marker"


def test_purge_expired_removes_expired_markers(store: Store, native_expiry: bool) -> None:
    """Expired markers are purged (or dropped by the backend's own expiry); live ones stay."""
    store.put_marker("old", "1", NOW + 1, NOW)
    store.put_marker("live", "1", NOW + TTL, NOW)
    assert store.purge_expired(NOW + 1) == (0 if native_expiry else 1)
    assert store.get_marker("old", NOW + 1) is None
    assert store.get_marker("live", NOW + 1) == "1"


def test_delete_all_removes_markers(store: Store) -> None:
    """delete_all leaves no marker behind and counts only records."""
    store.put_marker("m", "1", NOW + TTL, NOW)
    store.create(make_record())
    assert store.delete_all() == 1
    assert store.get_marker("m", NOW) is None


def test_an_unreadable_record_is_absent_and_logged_once(
    store: Store, store_spec: StoreSpec, caplog: pytest.LogCaptureFixture
) -> None:
    """A record the store cannot decode loads as None, is skipped in listings, logged once."""
    if store_spec.corrupt is None:
        pytest.skip("this store keeps Python objects: it has nothing to decode")
    bad = make_record("bad", user_id="u", handle="h-bad")
    good = make_record("good", user_id="u")
    store.create(bad)
    store.create(good)
    store_spec.corrupt(store, bad.key)
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        assert store.load(bad.key, NOW) is None
        assert store.load(bad.key, NOW) is None
        assert [record.key for record in store.list_user("u", NOW)] == [good.key]
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_keepsake.security"]
    assert len(messages) == 1
    assert bad.key not in messages[0]
    assert store.load(good.key, NOW) == good
    assert store.load(key_for("bad"), NOW) is None
