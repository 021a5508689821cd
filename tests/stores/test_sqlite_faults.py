"""The SQLite store heals or refuses, and never acknowledges a write no file at its path holds.

Faults: a file or directory without write permission (at start-up and while running), the file
deleted, replaced by another database, deleted and restored, and threads writing through a
deletion. Permission faults run in a subprocess as an unprivileged user, since root ignores file
permissions.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import flask_keepsake.stores.sqlite as sqlite_module
from flask_keepsake.errors import StoreUnavailable
from flask_keepsake.stores import Outcome, SessionRecord, SQLiteStore

from .store_helpers import NOW, key_for, make_record

#: The uid and gid of ``nobody``, as which the permission faults run when the tests run as root.
NOBODY = 65534
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where the test database lives."""
    return tmp_path / "sessions.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    """A SQLite store on ``path``."""
    instance = SQLiteStore(path, timeout=2)
    yield instance
    instance.close()


def stored_data(path: Path, name: str = "a") -> dict[str, str]:
    """The data of the record ``name`` in the file at ``path``, read behind the store's back."""
    conn = sqlite3.connect(path)
    try:
        (data,) = conn.execute(
            "SELECT data FROM keepsake_sessions WHERE key = ?", (bytes.fromhex(key_for(name)),)
        ).fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    result: dict[str, str] = json.loads(data)
    return result


def backup(source: Path, target: Path) -> None:
    """Copy the database at ``source`` to ``target`` with SQLite's online backup."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)


def in_thread(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a new thread (so with a new connection) and return or raise its result."""
    results: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def keepsake_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The ERROR lines logged on ``flask_keepsake`` itself."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_keepsake" and r.levelno == logging.ERROR
    ]


# Permission faults, in a subprocess as an unprivileged user.

#: Runs first in every unprivileged script. The script starts as whoever runs the tests and drops
#: to nobody itself, after its imports: the interpreter may live where nobody cannot read (a
#: pyenv under a 0700 /root), which makes subprocess's own user= fail before the script starts.
PRELUDE = textwrap.dedent(
    """
    import json, os, sys, threading
    from pathlib import Path
    from flask_keepsake.errors import StoreUnavailable
    from flask_keepsake.stores import SessionRecord, SQLiteStore
    import flask_keepsake.tokens  # imported lazily by the store, to log unreadable rows
    from tests.stores.store_helpers import NOW, key_for, make_record

    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    db = Path(sys.argv[1])
    seen = []

    def attempt(call):
        try:
            result = call()
        except StoreUnavailable:
            return "unavailable"
        if isinstance(result, SessionRecord):
            return sorted(result.data)
        return getattr(result, "value", repr(result))

    def in_thread(call):
        results = []
        thread = threading.Thread(target=lambda: results.append(attempt(call)))
        thread.start()
        thread.join()
        return results[0]

    def apply(store, name):
        return lambda: store.apply(key_for("a"), {name: '"x"'}, (), NOW)

    def load(store):
        return lambda: store.load(key_for("a"), NOW)
    """
).replace("NOBODY", str(NOBODY))


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user may write in (pytest's own tmp_path is 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="keepsake-faults-"))
    directory.chmod(0o777)
    yield directory
    # Whatever mode the script left behind, root (or the owner) can remove it.
    for child in [directory, *directory.rglob("*")]:
        if child.is_dir():
            child.chmod(0o777)
    shutil.rmtree(directory)


def run_unprivileged(script: str, directory: Path, db: Path) -> list[Any]:
    """Run :data:`PRELUDE` and ``script`` from ``directory`` as nobody (or as ourselves when not
    root), with ``db`` as the script's ``db``; return the script's ``seen`` list."""
    source = directory / "fault_script.py"
    source.write_text(
        PRELUDE + textwrap.dedent(script) + "\nprint(json.dumps([os.getuid(), seen]))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(source), str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=directory,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    uid, seen = json.loads(done.stdout.splitlines()[-1])
    if os.getuid() == 0:
        assert uid == NOBODY
    assert isinstance(seen, list)
    return seen


def test_a_file_read_only_at_start_up_answers_503_until_fixed(shared_dir: Path) -> None:
    """A file the process may not write is refused (reads too), and works once fixed."""
    db = shared_dir / "sessions.sqlite3"
    seen = run_unprivileged(
        """
        first = SQLiteStore(db)
        first.create(make_record("a"))
        first.close()
        db.chmod(0o444)
        store = SQLiteStore(db)
        seen += [attempt(load(store)), attempt(apply(store, "b"))]
        db.chmod(0o644)
        seen += [attempt(apply(store, "c")), attempt(load(store))]
        store.close()
        """,
        shared_dir,
        db,
    )
    assert seen == ["unavailable", "unavailable", "done", ["c", "greeting"]]
    assert set(stored_data(db)) == {"c", "greeting"}


def test_a_file_made_read_only_while_running_refuses_new_connections_until_fixed(
    shared_dir: Path,
) -> None:
    """Open connections keep writing the file at the path; new ones answer 503 until fixed."""
    db = shared_dir / "sessions.sqlite3"
    seen = run_unprivileged(
        """
        store = SQLiteStore(db)
        store.create(make_record("a"))
        db.chmod(0o444)
        seen += [attempt(apply(store, "open")), in_thread(apply(store, "new"))]
        db.chmod(0o644)
        seen += [in_thread(apply(store, "new-fixed")), attempt(apply(store, "open-fixed"))]
        store.close()
        """,
        shared_dir,
        db,
    )
    assert seen == ["done", "unavailable", "done", "done"]
    assert set(stored_data(db)) == {"greeting", "open", "new-fixed", "open-fixed"}


def test_a_directory_made_read_only_while_running_heals_once_fixed(shared_dir: Path) -> None:
    """SQLite cannot create its -wal and -shm files: 503 for reads and writes, then healed."""
    db = shared_dir / "data" / "sessions.sqlite3"
    seen = run_unprivileged(
        """
        store = SQLiteStore(db)
        # The first use creates the directory, owned by the unprivileged user. A thread's
        # connection closes when the thread ends, and the last one removes -wal and -shm.
        in_thread(lambda: store.create(make_record("a")))
        seen.append(sorted(os.listdir(db.parent)))
        db.parent.chmod(0o555)
        seen += [in_thread(load(store)), in_thread(apply(store, "b"))]
        db.parent.chmod(0o777)
        seen += [in_thread(apply(store, "c")), attempt(load(store))]
        store.close()
        """,
        shared_dir,
        db,
    )
    assert seen == [["sessions.sqlite3"], "unavailable", "unavailable", "done", ["c", "greeting"]]


# The file deleted, replaced or restored, in this process.


def test_a_write_after_the_file_was_deleted_is_not_acknowledged(
    store: SQLiteStore, path: Path
) -> None:
    """The write lands in the deleted file, so it raises StoreUnavailable instead of DONE."""
    store.create(make_record("a"))
    assert store.apply(key_for("a"), {"before": '"1"'}, (), NOW) is Outcome.DONE
    path.unlink()
    with pytest.raises(StoreUnavailable, match="not acknowledged"):
        store.apply(key_for("a"), {"after": '"1"'}, (), NOW)


def test_a_deleted_file_is_never_recreated_empty(
    store: SQLiteStore, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call, in any thread, answers 503 while no file is there; one error names the path."""
    store.create(make_record("a"))
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="flask_keepsake"):
        with pytest.raises(StoreUnavailable):
            store.apply(key_for("a"), {"b": '"1"'}, (), NOW)
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match="gone"):
                store.load(key_for("a"), NOW)
            with pytest.raises(StoreUnavailable, match="gone"):
                in_thread(lambda: store.create(make_record("b")))
    assert not path.exists()
    gone = [message for message in keepsake_errors(caplog) if "gone" in message]
    assert len(gone) == 1
    assert str(path) in gone[0]


def test_a_deleted_file_restored_from_a_backup_heals(
    store: SQLiteStore, path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The restored file is served as it is: nothing of the deleted file's WAL is replayed."""
    store.create(make_record("a"))
    backup(path, tmp_path / "backup.sqlite3")
    # Still in the WAL of the file that will be deleted, which outlives it.
    store.create(make_record("later"))
    path.unlink()
    with pytest.raises(StoreUnavailable):
        store.load(key_for("a"), NOW)
    shutil.copyfile(tmp_path / "backup.sqlite3", path)
    with caplog.at_level(logging.INFO, logger="flask_keepsake"):
        assert store.load(key_for("later"), NOW) is None
    assert store.apply(key_for("a"), {"b": '"1"'}, (), NOW) is Outcome.DONE
    store.close()
    assert set(stored_data(path)) == {"b", "greeting"}
    assert any("usable again" in record.getMessage() for record in caplog.records)


def test_an_empty_file_put_at_a_deleted_path_starts_over(store: SQLiteStore, path: Path) -> None:
    """An empty file gets the store's tables, even when it inherits the deleted file's inode
    number (which file systems reuse once the last connection lets go of it)."""
    store.create(make_record("a"))
    path.unlink()
    with pytest.raises(StoreUnavailable, match="gone"):
        store.load(key_for("a"), NOW)
    path.touch()
    assert store.load(key_for("a"), NOW) is None
    store.create(make_record("b"))
    assert isinstance(store.load(key_for("b"), NOW), SessionRecord)


def test_a_file_replaced_by_another_database_is_switched_to(
    store: SQLiteStore, path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A write to the old file is refused; then the store serves the new file, and only it."""
    store.create(make_record("a"))
    store.apply(key_for("a"), {"old": '"1"'}, (), NOW)
    other = SQLiteStore(tmp_path / "other.sqlite3")
    other.create(make_record("b"))
    other.close()
    os.replace(tmp_path / "other.sqlite3", path)
    with pytest.raises(StoreUnavailable, match="not acknowledged"):
        store.apply(key_for("a"), {"lost": '"1"'}, (), NOW)
    with caplog.at_level(logging.WARNING, logger="flask_keepsake"):
        assert store.load(key_for("a"), NOW) is None
    assert isinstance(store.load(key_for("b"), NOW), SessionRecord)
    assert store.apply(key_for("b"), {"new": '"1"'}, (), NOW) is Outcome.DONE
    store.close()
    assert set(stored_data(path, "b")) == {"greeting", "new"}
    assert any("replaced" in record.getMessage() for record in caplog.records)


def test_reads_notice_a_replaced_file_without_any_write(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read after READ_CHECK_INTERVAL stats the path, and reads the new file from then on."""
    monkeypatch.setattr(sqlite_module, "READ_CHECK_INTERVAL", 0.05)
    store = SQLiteStore(path)
    store.create(make_record("a"))
    assert isinstance(store.load(key_for("a"), NOW), SessionRecord)
    other = SQLiteStore(tmp_path / "other.sqlite3")
    other.create(make_record("b"))
    other.close()
    os.replace(tmp_path / "other.sqlite3", path)
    time.sleep(0.1)
    try:
        assert isinstance(store.load(key_for("b"), NOW), SessionRecord)
        assert store.load(key_for("a"), NOW) is None
    finally:
        store.close()


def test_reads_within_the_check_interval_make_no_stat(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loads within one interval cost no system call of the store's own; a write costs one stat."""
    monkeypatch.setattr(sqlite_module, "READ_CHECK_INTERVAL", 60.0)
    store = SQLiteStore(path)
    store.create(make_record("a"))
    store.load(key_for("a"), NOW)
    calls: list[object] = []
    real_stat = os.stat

    def counting_stat(*args: Any, **kwargs: Any) -> os.stat_result:
        calls.append(args[0])
        return real_stat(*args, **kwargs)

    monkeypatch.setattr(os, "stat", counting_stat)
    try:
        for _ in range(5):
            store.load(key_for("a"), NOW)
        assert calls == []
        store.apply(key_for("a"), {"b": '"1"'}, (), NOW)
        assert calls == [str(path)]
    finally:
        monkeypatch.undo()
        store.close()


def test_a_connection_that_met_a_busy_writer_is_kept(path: Path) -> None:
    """Another writer holding the lock says nothing about the connection: it stays open."""
    store = SQLiteStore(path, timeout=0.05)
    try:
        store.create(make_record("a"))
        conn = store._conn()
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            store.apply(key_for("a"), {"b": '"1"'}, (), NOW)
        holder.close()
        assert store._conn() is conn
    finally:
        store.close()


def test_a_connection_that_failed_otherwise_is_replaced(store: SQLiteStore, path: Path) -> None:
    """Any other error closes the connection; the next call opens a new one and works."""
    store.create(make_record("a"))
    conn = store._conn()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("DROP TABLE keepsake_markers")
    with pytest.raises(StoreUnavailable, match="no such table"):
        store.get_marker("m", NOW)
    assert store._conn() is not conn
    assert isinstance(store.load(key_for("a"), NOW), SessionRecord)


def test_threads_writing_through_a_deletion_lose_no_acknowledged_write(
    store: SQLiteStore, path: Path, tmp_path: Path
) -> None:
    """Six threads write while the path is deleted, then given its file back: no write made while
    no file was there is acknowledged, and every acknowledged write is in the file at the path."""
    store.create(make_record("a", data={}))
    kept = tmp_path / "kept.sqlite3"
    #: (name, started, finished, acknowledged) of every write, in monotonic seconds.
    writes: list[tuple[str, float, float, bool]] = []
    stop = threading.Event()

    def write(index: int) -> None:
        step = 0
        while not stop.is_set():
            name = f"t{index}-{step}"
            step += 1
            started = time.monotonic()
            try:
                outcome = store.apply(key_for("a"), {name: '"x"'}, (), NOW)
            except StoreUnavailable:
                writes.append((name, started, time.monotonic(), False))
                continue
            assert outcome is Outcome.DONE
            writes.append((name, started, time.monotonic(), True))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    # Deleted from the path; a second name keeps the file, to be put back.
    os.link(path, kept)
    path.unlink()
    deleted = time.monotonic()
    time.sleep(0.3)
    restored = time.monotonic()
    os.rename(kept, path)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join()
    store.close()
    in_gap = [w for w in writes if w[1] >= deleted and w[2] <= restored]
    assert in_gap
    assert not [w for w in in_gap if w[3]]
    assert [w for w in writes if w[1] >= restored and w[3]]
    acknowledged = {name for name, _, _, ok in writes if ok}
    assert acknowledged <= set(stored_data(path))


def test_a_thread_meeting_a_replaced_file_first_closes_the_old_files_connections(
    store: SQLiteStore, path: Path, tmp_path: Path
) -> None:
    """A new thread that opens the replacement while another thread's connection still holds the
    old file closes that connection first, so the old WAL is never read into the new file."""
    store.create(make_record("a"))
    store.apply(key_for("a"), {"in-the-wal": '"1"'}, (), NOW)
    other = SQLiteStore(tmp_path / "other.sqlite3")
    other.create(make_record("b"))
    other.close()
    os.replace(tmp_path / "other.sqlite3", path)
    assert isinstance(in_thread(lambda: store.load(key_for("b"), NOW)), SessionRecord)
    assert in_thread(lambda: store.load(key_for("a"), NOW)) is None
    assert store.load(key_for("a"), NOW) is None
    store.close()
    assert set(stored_data(path, "b")) == {"greeting"}


def test_a_file_deleted_while_being_opened_is_not_recreated(
    store: SQLiteStore, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connect itself never creates the file once the store has used one at the path."""
    in_thread(lambda: store.create(make_record("a")))
    real_access = os.access

    def delete_then_access(name: Any, mode: int, **kwargs: Any) -> bool:
        # The store checks the permissions between its stat and its connect: the worst moment.
        if str(name) == str(path) and path.exists():
            path.unlink()
            return True
        return real_access(name, mode, **kwargs)

    monkeypatch.setattr(os, "access", delete_then_access)
    with pytest.raises(StoreUnavailable, match="gone"):
        store.load(key_for("a"), NOW)
    assert not path.exists()


class FailingConnection:
    """Stands in for a connection whose file gives an I/O error, which a test cannot provoke."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, *args: object) -> sqlite3.Cursor:
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = sqlite3.SQLITE_IOERR
        raise error

    def close(self) -> None:
        self.conn.close()


def test_an_error_of_the_file_reopens_the_connections_of_every_thread(
    store: SQLiteStore,
) -> None:
    """An I/O error in one thread closes every thread's connection: each reopens when next used."""
    store.create(make_record("a"))
    opened = threading.Event()
    go_on = threading.Event()
    seen: list[sqlite3.Connection] = []

    def other_thread() -> None:
        seen.append(store._conn())
        opened.set()
        go_on.wait()
        seen.append(store._conn())

    thread = threading.Thread(target=other_thread)
    thread.start()
    opened.wait()
    link = store._local.link
    link.conn = FailingConnection(link.conn)
    with pytest.raises(StoreUnavailable, match="disk I/O error"):
        store.load(key_for("a"), NOW)
    go_on.set()
    thread.join()
    assert seen[1] is not seen[0]
    assert isinstance(store.load(key_for("a"), NOW), SessionRecord)
