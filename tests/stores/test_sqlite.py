"""Behaviour only the SQLite store has: files, WAL, locking, several processes."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_keepsake.errors import StoreUnavailable
from flask_keepsake.stores import Outcome, SessionRecord, SQLiteStore, Touch

from .store_helpers import NOW, TTL, key_for, make_record


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the test database lives."""
    return tmp_path / "sessions.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    """A SQLite store whose writes give up after 50 ms of waiting for a lock."""
    instance = SQLiteStore(path, timeout=0.05)
    yield instance
    instance.close()


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Hold the write lock of ``path`` from another connection while the block runs."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def test_describe_is_a_sqlite_url(store: SQLiteStore, path: Path) -> None:
    """describe() names the file as a sqlite:/// URL."""
    assert store.describe() == f"sqlite:///{path}"


def test_creates_missing_parent_directories(tmp_path: Path) -> None:
    """The store creates the directories leading to its file on first use."""
    path = tmp_path / "instance" / "nested" / "sessions.sqlite3"
    store = SQLiteStore(path)
    try:
        store.create(make_record())
    finally:
        store.close()
    assert path.is_file()


def test_nothing_is_created_before_first_use(path: Path) -> None:
    """Constructing the store touches no file; the first call does."""
    store = SQLiteStore(path)
    store.close()
    assert not path.exists()


def test_wal_journal_mode_is_on(store: SQLiteStore, path: Path) -> None:
    """The database file is in WAL mode after first use."""
    store.create(make_record())
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_data_survives_close_and_reopen(path: Path) -> None:
    """Records written before close are there when the file is opened again."""
    record = make_record(user_id="u", data={"a": "1"})
    first = SQLiteStore(path)
    first.create(record)
    assert first.apply(record.key, {"b": "2"}, (), NOW) is Outcome.DONE
    first.close()
    second = SQLiteStore(path)
    try:
        loaded = second.load(record.key, NOW)
    finally:
        second.close()
    assert isinstance(loaded, SessionRecord)
    assert loaded.data == {"a": "1", "b": "2"}


def test_memory_path_is_refused() -> None:
    """ ":memory:" would give each thread its own empty database, so it is refused."""
    with pytest.raises(ValueError, match="MemoryStore"):
        SQLiteStore(":memory:")


def test_use_after_close_raises_store_unavailable(store: SQLiteStore) -> None:
    """A closed store does not silently reopen its file."""
    store.create(make_record())
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.load(key_for("a"), NOW)


def test_close_closes_connections_opened_by_other_threads(store: SQLiteStore, path: Path) -> None:
    """close() closes every thread's connection: the last close removes the WAL file."""
    store.create(make_record())
    opened = threading.Event()
    release = threading.Event()

    def hold_a_connection() -> None:
        store.load(key_for("a"), NOW)
        opened.set()
        release.wait()

    thread = threading.Thread(target=hold_a_connection)
    thread.start()
    try:
        opened.wait()
        assert path.with_name(path.name + "-wal").exists()
        store.close()
        assert not path.with_name(path.name + "-wal").exists()
    finally:
        release.set()
        thread.join()


def test_connection_of_a_finished_thread_is_closed(store: SQLiteStore, path: Path) -> None:
    """A thread's connection closes when the thread ends, so threads do not leak open files."""
    thread = threading.Thread(target=store.create, args=(make_record(),))
    thread.start()
    thread.join()
    assert path.is_file()
    assert not path.with_name(path.name + "-wal").exists()


def test_load_does_not_wait_for_a_writer(store: SQLiteStore, path: Path) -> None:
    """In WAL mode a load succeeds while another connection holds the write lock."""
    record = make_record()
    store.create(record)
    with write_lock(path):
        assert store.load(record.key, NOW) == record


def test_write_blocked_past_timeout_raises_store_unavailable(
    store: SQLiteStore, path: Path
) -> None:
    """An apply that cannot get the write lock in time raises StoreUnavailable from sqlite3."""
    record = make_record()
    store.create(record)
    with write_lock(path), pytest.raises(StoreUnavailable) as caught:
        store.apply(record.key, {"a": "1"}, (), NOW)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)


def test_create_blocked_past_timeout_raises_store_unavailable(
    store: SQLiteStore, path: Path
) -> None:
    """A blocked create raises StoreUnavailable, not ValueError, and stores nothing."""
    store.create(make_record("first"))
    with write_lock(path), pytest.raises(StoreUnavailable):
        store.create(make_record("second"))
    assert store.load(key_for("second"), NOW) is None


def test_blocked_rename_leaves_both_keys_as_they_were(store: SQLiteStore, path: Path) -> None:
    """A rename that times out changes nothing: the old key still works, the new one does not."""
    old = make_record("old")
    store.create(old)
    with write_lock(path), pytest.raises(StoreUnavailable):
        store.rename(old.key, make_record("new"), NOW)
    assert store.load(old.key, NOW) == old
    assert store.load(key_for("new"), NOW) is None


def test_store_works_again_when_the_lock_is_released(store: SQLiteStore, path: Path) -> None:
    """After a timeout the data is intact and the next write succeeds, with no reconnect."""
    record = make_record(data={"a": "1"})
    store.create(record)
    with write_lock(path):
        with pytest.raises(StoreUnavailable):
            store.apply(record.key, {"a": "2"}, (), NOW)
        with pytest.raises(StoreUnavailable):
            store.touch(record.key, Touch(last_seen=NOW, expires_at=NOW + 2 * TTL), NOW)
    assert store.load(record.key, NOW) == record
    assert store.apply(record.key, {"a": "3"}, (), NOW) is Outcome.DONE
    loaded = store.load(record.key, NOW)
    assert isinstance(loaded, SessionRecord)
    assert loaded.data == {"a": "3"}


def test_corrupt_file_raises_store_unavailable(path: Path) -> None:
    """A file that is not a SQLite database makes every call raise StoreUnavailable."""
    path.write_bytes(b"this is not a database, just some bytes\n" * 200)
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.load(key_for("a"), NOW)
    finally:
        store.close()
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_path_below_a_regular_file_raises_store_unavailable(tmp_path: Path) -> None:
    """A path whose parent is a file cannot be created and raises StoreUnavailable."""
    (tmp_path / "file").write_text("x")
    store = SQLiteStore(tmp_path / "file" / "sessions.sqlite3")
    try:
        with pytest.raises(StoreUnavailable):
            store.create(make_record())
    finally:
        store.close()


def test_path_that_is_a_directory_raises_store_unavailable(tmp_path: Path) -> None:
    """A directory in place of the database file raises StoreUnavailable."""
    store = SQLiteStore(tmp_path)
    try:
        with pytest.raises(StoreUnavailable):
            store.load(key_for("a"), NOW)
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_connection(store: SQLiteStore, path: Path) -> None:
    """A child forked after the parent used the store writes through a connection of its own."""
    record = make_record()
    store.create(record)
    parent_conn = store._conn()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            if store._conn() is not parent_conn and store.apply(record.key, {"c": "1"}, (), NOW):
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    loaded = store.load(record.key, NOW)
    assert isinstance(loaded, SessionRecord)
    assert loaded.data["c"] == "1"


_WRITER = textwrap.dedent(
    """
    import sys
    from flask_keepsake.stores import SQLiteStore

    path, key, prefix, count, now = sys.argv[1:]
    store = SQLiteStore(path, timeout=30)
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(int(count)):
        if not store.apply(key, {f"{prefix}{i}": str(i)}, (), float(now)):
            sys.exit("apply found no record")
    store.close()
    """
)


@pytest.mark.slow
def test_two_processes_writing_different_keys_both_survive(path: Path) -> None:
    """Two processes applying deltas to one record at the same time lose none of them."""
    record = make_record(data={})
    setup = SQLiteStore(path)
    setup.create(record)
    setup.close()
    count = 300
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), record.key, prefix, str(count), str(NOW)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for prefix in ("p", "q")
    ]
    for writer in writers:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "ready\n"
    outputs = []
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
    for writer in writers:
        outputs.append(writer.communicate(timeout=60))
        assert writer.returncode == 0, outputs[-1]
    check = SQLiteStore(path)
    try:
        loaded = check.load(record.key, NOW)
    finally:
        check.close()
    assert isinstance(loaded, SessionRecord)
    expected = {f"{prefix}{i}": str(i) for prefix in ("p", "q") for i in range(count)}
    assert loaded.data == expected


def test_keys_are_stored_as_32_raw_bytes(store: SQLiteStore, path: Path) -> None:
    """A hex digest key is kept as its 32 raw bytes and comes back as the same hex string."""
    record = make_record()
    store.create(record)
    conn = sqlite3.connect(path)
    try:
        (stored,) = conn.execute("SELECT key FROM keepsake_sessions").fetchone()
    finally:
        conn.close()
    assert stored == bytes.fromhex(record.key)
    assert store.load(record.key, NOW) == record


def test_a_key_that_is_not_a_hex_digest_round_trips(store: SQLiteStore) -> None:
    """A key other than a lowercase hex digest is kept as text and found again unchanged."""
    odd = make_record("odd", key="A" * 64)
    store.create(odd)
    assert store.load("A" * 64, NOW) == odd
    assert store.load("a" * 64, NOW) is None
    assert store.apply("A" * 64, {"b": "1"}, (), NOW) is Outcome.DONE
    assert store.delete("A" * 64)


def test_every_key_path_uses_the_packed_key(store: SQLiteStore) -> None:
    """Rename, handle and user lookups return and accept the hex keys the caller uses."""
    old = make_record("old", user_id="u1")
    store.create(old)
    new = make_record("new", handle=old.handle, user_id="u1")
    assert store.rename(old.key, new, NOW) is Outcome.DONE
    assert [r.key for r in store.list_user("u1", NOW)] == [new.key]
    other = make_record("other", user_id="u1")
    store.create(other)
    assert store.delete_user("u1", NOW, except_key=new.key) == 1
    assert store.delete_handle(new.handle, NOW) == (new.key, new.user_id)


def test_table_is_a_rowid_table_with_a_unique_key(store: SQLiteStore, path: Path) -> None:
    """The sessions table is not WITHOUT ROWID, so its interior B-tree pages stay small."""
    store.count(NOW)
    conn = sqlite3.connect(path)
    try:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE name = 'keepsake_sessions'"
        ).fetchone()
        unique = {
            column
            for _, name, is_unique, *_ in conn.execute("PRAGMA index_list(keepsake_sessions)")
            if is_unique
            for _, _, column in conn.execute(f"PRAGMA index_info({name})")
        }
    finally:
        conn.close()
    assert "without rowid" not in sql.lower()
    assert {"key", "handle"} <= unique


def test_table_of_a_development_version_is_refused(path: Path) -> None:
    """A file with the old WITHOUT ROWID table raises StoreUnavailable saying what to do."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE keepsake_sessions (key TEXT PRIMARY KEY NOT NULL, handle TEXT) WITHOUT ROWID"
    )
    conn.close()
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreUnavailable, match="delete the file or drop the table"):
            store.load(key_for("a"), NOW)
    finally:
        store.close()


def _pragma(store: SQLiteStore, name: str) -> int:
    return int(store._conn().execute(f"PRAGMA {name}").fetchone()[0])


def test_cache_is_8_mib_per_connection_by_default(store: SQLiteStore) -> None:
    """Each connection asks SQLite for an 8 MiB page cache (cache_size is negative KiB)."""
    assert store.cache_mib == 8
    assert _pragma(store, "cache_size") == -8 * 1024


def test_cache_size_can_be_chosen(path: Path) -> None:
    """cache_mib sets the page cache of every connection, in this thread and others."""
    store = SQLiteStore(path, cache_mib=32)
    seen: list[int] = []
    try:
        thread = threading.Thread(target=lambda: seen.append(_pragma(store, "cache_size")))
        thread.start()
        thread.join()
        assert seen == [_pragma(store, "cache_size")] == [-32 * 1024]
    finally:
        store.close()


def test_mmap_is_off_by_default(store: SQLiteStore) -> None:
    """Memory-mapped I/O stays off unless asked for (an I/O error would be a SIGBUS)."""
    assert store.mmap_mib == 0
    assert _pragma(store, "mmap_size") == 0


def test_mmap_can_be_switched_on(path: Path) -> None:
    """mmap_mib maps up to that many MiB of the file, and the store still works."""
    store = SQLiteStore(path, mmap_mib=64)
    try:
        record = make_record()
        store.create(record)
        assert store.load(record.key, NOW) == record
        # SQLite caps the value at its compile-time limit, which may be lower (or 0).
        assert 0 <= _pragma(store, "mmap_size") <= 64 * 1024 * 1024
    finally:
        store.close()


@pytest.mark.parametrize("options", [{"cache_mib": 0}, {"mmap_mib": -1}])
def test_bad_cache_or_mmap_size_is_refused(path: Path, options: dict[str, int]) -> None:
    """cache_mib below 1 or a negative mmap_mib raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=next(iter(options))):
        SQLiteStore(path, **options)


def test_purge_deletes_by_rowid_in_batches(store: SQLiteStore) -> None:
    """purge_expired deletes at most batch_size expired rows per call and keeps live ones."""
    for i in range(7):
        store.create(make_record(f"old{i}", expires_at=NOW - 1))
    live = make_record("live")
    store.create(live)
    assert [store.purge_expired(NOW, 3) for _ in range(4)] == [3, 3, 1, 0]
    assert store.count(NOW) == 1
    assert store.load(live.key, NOW) == live
