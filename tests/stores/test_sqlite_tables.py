"""The SQLite store's tables: tombstones and markers apart from sessions, rows it cannot read, and
how many statements the hot paths run."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_keepsake.stores import ROTATED, Outcome, SessionRecord, SQLiteStore, Touch

from .store_helpers import NOW, TTL, key_for, make_record


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the test database lives."""
    return tmp_path / "sessions.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    """A SQLite store on ``path``."""
    instance = SQLiteStore(path)
    yield instance
    instance.close()


def run_sql(path: Path, statement: str, *params: object) -> list[tuple[object, ...]]:
    """Run one statement on ``path`` behind the store's back and return its rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def test_tombstones_and_markers_live_in_tables_of_their_own(store: SQLiteStore, path: Path) -> None:
    """A rename with grace and a marker add no row to keepsake_sessions."""
    store.create(make_record("old"))
    assert store.rename(key_for("old"), make_record("new"), NOW, grace=60) is Outcome.DONE
    store.put_marker("m", "v", NOW + TTL, NOW)
    assert run_sql(path, "SELECT count(*) FROM keepsake_sessions") == [(1,)]
    assert run_sql(path, "SELECT key, successor, expires_at FROM keepsake_tombstones") == [
        (bytes.fromhex(key_for("old")), bytes.fromhex(key_for("new")), NOW + 60)
    ]
    assert run_sql(path, "SELECT name, value FROM keepsake_markers") == [("m", "v")]


def test_a_file_without_the_new_tables_gains_them(path: Path) -> None:
    """A file made before tombstones and markers keeps its sessions and gets the two tables."""
    first = SQLiteStore(path)
    first.create(make_record("old", data={"a": "1"}))
    first.close()
    run_sql(path, "DROP TABLE keepsake_tombstones")
    run_sql(path, "DROP TABLE keepsake_markers")
    second = SQLiteStore(path)
    try:
        assert second.rename(key_for("old"), make_record("new"), NOW, grace=60) is Outcome.DONE
        assert second.load(key_for("old"), NOW) is ROTATED
        assert second.put_marker("m", "v", NOW + TTL, NOW) is True
        assert second.get_marker("m", NOW) == "v"
    finally:
        second.close()


def test_a_file_without_the_remembered_column_gains_it(path: Path) -> None:
    """A sessions table made before remember-me keeps its rows (not remembered) and gains it."""
    run_sql(
        path,
        "CREATE TABLE keepsake_sessions (key BLOB NOT NULL UNIQUE, handle TEXT NOT NULL UNIQUE, "
        "data TEXT NOT NULL, user_id TEXT, created REAL NOT NULL, last_seen REAL NOT NULL, "
        "expires_at REAL NOT NULL, absolute_expires_at REAL NOT NULL, auth_time REAL, ip TEXT, "
        "user_agent TEXT)",
    )
    old = make_record("old")
    run_sql(
        path,
        "INSERT INTO keepsake_sessions VALUES (?, ?, ?, NULL, ?, ?, ?, ?, NULL, NULL, NULL)",
        bytes.fromhex(old.key),
        old.handle,
        json.dumps(old.data),
        old.created,
        old.last_seen,
        old.expires_at,
        old.absolute_expires_at,
    )
    store = SQLiteStore(path)
    try:
        loaded = store.load(old.key, NOW)
        assert loaded is not None
        assert loaded is not ROTATED
        assert loaded.remembered is False
        remembered = make_record("new", remembered=True)
        store.create(remembered)
        assert store.load(remembered.key, NOW) == remembered
    finally:
        store.close()


def test_a_claim_on_an_expired_marker_takes_it_over_in_place(
    store: SQLiteStore, path: Path
) -> None:
    """Claiming a marker whose expiry passed replaces its row: one row per name, ever."""
    assert store.put_marker("once", "first", NOW + 1, NOW, replace=False) is True
    assert store.put_marker("once", "second", NOW + 9, NOW + 1, replace=False) is True
    assert run_sql(path, "SELECT name, value, expires_at FROM keepsake_markers") == [
        ("once", "second", NOW + 9)
    ]


#: SQL for what a session row's data column may hold after someone wrote to the file by hand.
UNREADABLE = {
    "not-json": "'{not json'",
    "json-list": "'[1, 2]'",
    "not-strings": "'{\"a\": 1}'",
    "blob": "x'7b7d'",
    "bad-utf8": "CAST(x'7b2261223a2022ff227d' AS TEXT)",
}


@pytest.mark.parametrize("stored", list(UNREADABLE.values()), ids=list(UNREADABLE))
def test_an_unreadable_row_is_absent_and_logged_once_by_handle(
    store: SQLiteStore, path: Path, stored: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Load gives None and listings skip the row, logged once by handle; other rows stay."""
    bad = make_record("bad", user_id="u", handle="h-bad")
    good = make_record("good", user_id="u", created=NOW + 1)
    store.create(bad)
    store.create(good)
    run_sql(path, f"UPDATE keepsake_sessions SET data = {stored} WHERE handle = 'h-bad'")
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        assert store.load(bad.key, NOW) is None
        assert store.list_user("u", NOW) == [good]
        assert store.load(bad.key, NOW) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "flask_keepsake.security"]
    assert len(messages) == 1
    assert "h-bad" in messages[0]
    assert bad.key not in messages[0]
    assert store.load(good.key, NOW) == good


def test_a_row_with_undecodable_text_is_logged_by_fingerprint(
    store: SQLiteStore, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A handle that is not UTF-8 cannot name the row, so the log line names a fingerprint."""
    bad = make_record("bad")
    store.create(bad)
    run_sql(path, "UPDATE keepsake_sessions SET handle = CAST(x'ff' AS TEXT)")
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        assert store.load(bad.key, NOW) is None
    (message,) = [r.getMessage() for r in caplog.records if r.name == "flask_keepsake.security"]
    assert "fingerprint" in message
    assert bad.key not in message


def test_apply_to_a_row_that_is_not_json_is_gone(store: SQLiteStore, path: Path) -> None:
    """json_patch cannot merge into garbage: the delta writes nothing and answers GONE."""
    record = make_record()
    store.create(record)
    run_sql(path, "UPDATE keepsake_sessions SET data = '{not json'")
    assert store.apply(record.key, {"b": "2"}, (), NOW) is Outcome.GONE
    assert run_sql(path, "SELECT data FROM keepsake_sessions") == [("{not json",)]
    assert store.apply(record.key, {"b": "2"}, (), NOW) is Outcome.GONE


def test_rename_of_an_unreadable_row_is_gone_and_changes_nothing(
    store: SQLiteStore, path: Path
) -> None:
    """A login from a session the store cannot read creates nothing and leaves no tombstone."""
    store.create(make_record("old"))
    run_sql(path, "UPDATE keepsake_sessions SET data = '[]'")
    assert store.rename(key_for("old"), make_record("new"), NOW, grace=60) is Outcome.GONE
    assert store.load(key_for("new"), NOW) is None
    assert run_sql(path, "SELECT count(*) FROM keepsake_tombstones") == [(0,)]
    assert run_sql(path, "SELECT data FROM keepsake_sessions") == [("[]",)]


def traced(store: SQLiteStore) -> list[str]:
    """Collect every statement this thread's connection runs from now on."""
    statements: list[str] = []
    store._conn().set_trace_callback(statements.append)
    return statements


def test_the_hot_paths_run_one_statement_each(store: SQLiteStore) -> None:
    """create is one INSERT, a live load one SELECT, apply and touch one UPDATE each."""
    store.load(key_for("warm-up"), NOW)
    statements = traced(store)
    record = make_record()
    store.create(record)
    store.load(record.key, NOW)
    store.apply(record.key, {"b": "2"}, (), NOW)
    store.apply(record.key, {"b": "3"}, (), NOW, Touch(NOW + 1, NOW + TTL))
    store.touch(record.key, Touch(NOW + 2, NOW + TTL), NOW)
    verbs = [statement.split()[0] for statement in statements]
    assert verbs == ["INSERT", "SELECT", "UPDATE", "UPDATE", "UPDATE"]


def test_a_miss_costs_one_more_select_for_the_tombstone(store: SQLiteStore) -> None:
    """Loading an absent key looks in the sessions table, then in the tombstones table."""
    store.load(key_for("warm-up"), NOW)
    statements = traced(store)
    assert store.load(key_for("absent"), NOW) is None
    assert [" ".join(s.split()[:4]) for s in statements] == [
        "SELECT key, handle, data,",
        "SELECT successor FROM keepsake_tombstones",
    ]


def test_a_policy_touch_sets_both_fields_in_one_update(store: SQLiteStore) -> None:
    """Moving the absolute expiry and ending freshness is still a single UPDATE."""
    record = make_record(auth_time=NOW)
    store.create(record)
    statements = traced(store)
    touch = Touch(NOW + 1, NOW + TTL, absolute_expires_at=NOW + 5 * TTL, stale=True)
    assert store.apply(record.key, {"b": "2"}, (), NOW + 1, touch) is Outcome.DONE
    assert len(statements) == 1
    loaded = store.load(record.key, NOW + 1)
    assert isinstance(loaded, SessionRecord)
    assert (loaded.absolute_expires_at, loaded.auth_time) == (NOW + 5 * TTL, None)
