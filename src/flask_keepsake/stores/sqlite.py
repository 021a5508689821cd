"""The embedded default store: one SQLite file, shared by every thread and process of one machine.

Each thread gets its own connection (SQLite connections must not be used by two threads at once),
opened lazily and closed when the thread ends or the store is closed. The file runs in WAL mode,
so loads never wait for a writer, and writes wait up to ``timeout`` seconds for one another before
:class:`~flask_keepsake.errors.StoreUnavailable` is raised.

The store watches the file itself, not only the errors SQLite reports: SQLite goes on writing
into a file that was deleted or replaced under it, and acknowledges those writes. So every write
ends with a ``stat`` of the path, and a connection whose file is no longer there is closed; see
:class:`SQLiteStore` for what heals and what is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from ..errors import StoreUnavailable
from .base import MAX_FOLLOW, ROTATED, AdminStore, Outcome, Rotated, SessionRecord, Touch

# An ordinary rowid table, not WITHOUT ROWID: a WITHOUT ROWID table keeps whole rows in its interior
# B-tree pages, so with rows of several hundred bytes an interior page held about ten of them and
# a million sessions needed a tree six levels deep with 35 MB of interior pages, far more than any
# page cache holds. Here the interior pages of the table hold only rowids and those of the key
# index only 32-byte keys: about 1.3 MB for a million sessions. The key is the SHA-256 digest as
# its 32 raw bytes (BLOB), not 64 hex characters, which also shrinks every index that holds it.
_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS keepsake_sessions (
        key BLOB NOT NULL UNIQUE,
        handle TEXT NOT NULL UNIQUE,
        data TEXT NOT NULL,
        user_id TEXT,
        created REAL NOT NULL,
        last_seen REAL NOT NULL,
        expires_at REAL NOT NULL,
        absolute_expires_at REAL NOT NULL,
        auth_time REAL,
        ip TEXT,
        user_agent TEXT,
        remembered INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS keepsake_sessions_expires_at ON keepsake_sessions (expires_at)",
    "CREATE INDEX IF NOT EXISTS keepsake_sessions_user_id ON keepsake_sessions (user_id, created)",
    # Tombstones and markers live in tables of their own, so no query over sessions (count,
    # listings, revocation, purging by rowid) ever has to tell them apart from records. Their rows
    # are a few dozen bytes, so WITHOUT ROWID (one B-tree instead of a table plus a key index)
    # costs none of what it cost the sessions table.
    """CREATE TABLE IF NOT EXISTS keepsake_tombstones (
        key BLOB PRIMARY KEY,
        successor BLOB NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS keepsake_tombstones_expires_at ON keepsake_tombstones (expires_at)",
    """CREATE TABLE IF NOT EXISTS keepsake_markers (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS keepsake_markers_expires_at ON keepsake_markers (expires_at)",
)

# Statement texts are constants so that sqlite3's per-connection statement cache always hits.
_INSERT: Final = (
    "INSERT INTO keepsake_sessions (key, handle, data, user_id, created, last_seen, expires_at, "
    "absolute_expires_at, auth_time, ip, user_agent, remembered) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT: Final = (
    "SELECT key, handle, data, user_id, created, last_seen, expires_at, absolute_expires_at, "
    "auth_time, ip, user_agent, remembered FROM keepsake_sessions WHERE key = ? AND expires_at > ?"
)
# One statement, so the delta is merged into whatever the row holds at this instant: keys this
# request did not touch keep the value another request may have written since our load, and the
# expiry condition means a revoked or expired session is never brought back. Values are always
# strings, so a JSON null in the patch can only mean "delete this key" (RFC 7396 merge patch).
_APPLY: Final = (
    "UPDATE keepsake_sessions SET data = json_patch(data, ?) WHERE key = ? AND expires_at > ?"
)
# A separate statement for a delta with a touch: naming expires_at in SET makes SQLite rewrite
# its index entry even when the value stays the same, which a delta without a touch need not pay.
_APPLY_TOUCH: Final = (
    "UPDATE keepsake_sessions SET data = json_patch(data, ?), last_seen = ?, expires_at = ? "
    "WHERE key = ? AND expires_at > ?"
)
_TOUCH: Final = (
    "UPDATE keepsake_sessions SET last_seen = ?, expires_at = ? WHERE key = ? AND expires_at > ?"
)
# A touch that also moves the absolute expiry or ends freshness is rare (a change of policy, a
# long idle): it gets statements of its own so that the usual ones above stay as small as they are.
_APPLY_TOUCH_POLICY: Final = (
    "UPDATE keepsake_sessions SET data = json_patch(data, ?1), last_seen = ?2, expires_at = ?3, "
    "absolute_expires_at = coalesce(?4, absolute_expires_at), "
    "auth_time = CASE WHEN ?5 THEN NULL ELSE auth_time END WHERE key = ?6 AND expires_at > ?7"
)
_TOUCH_POLICY: Final = (
    "UPDATE keepsake_sessions SET last_seen = ?1, expires_at = ?2, "
    "absolute_expires_at = coalesce(?3, absolute_expires_at), "
    "auth_time = CASE WHEN ?4 THEN NULL ELSE auth_time END WHERE key = ?5 AND expires_at > ?6"
)
_SELECT_DATA: Final = "SELECT data, handle FROM keepsake_sessions WHERE key = ? AND expires_at > ?"
_SUCCESSOR: Final = "SELECT successor FROM keepsake_tombstones WHERE key = ? AND expires_at > ?"
_PUT_TOMBSTONE: Final = (
    "INSERT OR REPLACE INTO keepsake_tombstones (key, successor, expires_at) VALUES (?, ?, ?)"
)
_PUT_MARKER: Final = (
    "INSERT OR REPLACE INTO keepsake_markers (name, value, expires_at) VALUES (?, ?, ?)"
)
# One statement, so two processes claiming the same marker cannot both win: the insert, or the
# takeover of an expired marker, happens under SQLite's write lock, and a live marker makes the
# statement change no row.
_CLAIM_MARKER: Final = (
    "INSERT INTO keepsake_markers (name, value, expires_at) VALUES (?1, ?2, ?3) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at "
    "WHERE keepsake_markers.expires_at <= ?4"
)
_GET_MARKER: Final = "SELECT value FROM keepsake_markers WHERE name = ? AND expires_at > ?"
_DELETE: Final = "DELETE FROM keepsake_sessions WHERE key = ?"
_DELETE_LIVE: Final = "DELETE FROM keepsake_sessions WHERE key = ? AND expires_at > ?"
# A new record may take the key or handle of an expired one that purge_expired has not reached.
_DELETE_EXPIRED_HOLDERS: Final = (
    "DELETE FROM keepsake_sessions WHERE (key = ? OR handle = ?) AND expires_at <= ?"
)
_LIST_USER: Final = (
    "SELECT key, handle, data, user_id, created, last_seen, expires_at, absolute_expires_at, "
    "auth_time, ip, user_agent, remembered FROM keepsake_sessions "
    "WHERE user_id = ? AND expires_at > ? ORDER BY created, key"
)
_DELETE_USER: Final = (
    "DELETE FROM keepsake_sessions WHERE user_id = ? AND key IS NOT ? AND expires_at > ?"
)
_FIND_HANDLE: Final = (
    "SELECT key, user_id FROM keepsake_sessions WHERE handle = ?1 AND expires_at > ?2 "
    "AND (?3 IS NULL OR user_id = ?3)"
)
_PURGE: Final = (
    "DELETE FROM keepsake_sessions WHERE rowid IN "
    "(SELECT rowid FROM keepsake_sessions WHERE expires_at <= ? LIMIT ?)"
)
_PURGE_TOMBSTONES: Final = (
    "DELETE FROM keepsake_tombstones WHERE key IN "
    "(SELECT key FROM keepsake_tombstones WHERE expires_at <= ? LIMIT ?)"
)
_PURGE_MARKERS: Final = (
    "DELETE FROM keepsake_markers WHERE name IN "
    "(SELECT name FROM keepsake_markers WHERE expires_at <= ? LIMIT ?)"
)
_COUNT: Final = "SELECT count(*) FROM keepsake_sessions WHERE expires_at > ?"
_COUNT_EXPIRED: Final = "SELECT count(*) FROM keepsake_sessions WHERE expires_at <= ?"
_USER_COUNTS: Final = (
    "SELECT user_id, count(*) AS n FROM keepsake_sessions "
    "WHERE user_id IS NOT NULL AND expires_at > ? "
    "GROUP BY user_id ORDER BY n DESC, user_id LIMIT ?"
)
_DELETE_ALL: Final = "DELETE FROM keepsake_sessions"
_DELETE_ALL_TOMBSTONES: Final = "DELETE FROM keepsake_tombstones"
_DELETE_ALL_MARKERS: Final = "DELETE FROM keepsake_markers"
# Used only after sqlite3 failed to decode a text column as UTF-8 (a row written by hand): the same
# rows with every text column as bytes, so that one bad row is skipped instead of failing the call.
_SELECT_RAW: Final = (
    "SELECT key, CAST(handle AS BLOB), CAST(data AS BLOB), CAST(user_id AS BLOB), created, "
    "last_seen, expires_at, absolute_expires_at, auth_time, CAST(ip AS BLOB), "
    "CAST(user_agent AS BLOB), remembered FROM keepsake_sessions WHERE key = ? AND expires_at > ?"
)
_LIST_USER_RAW: Final = (
    "SELECT key, CAST(handle AS BLOB), CAST(data AS BLOB), CAST(user_id AS BLOB), created, "
    "last_seen, expires_at, absolute_expires_at, auth_time, CAST(ip AS BLOB), "
    "CAST(user_agent AS BLOB), remembered FROM keepsake_sessions "
    "WHERE user_id = ? AND expires_at > ? ORDER BY created, key"
)
_TABLE_SQL: Final = (
    "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'keepsake_sessions'"
)
# Files made before the remembered column existed gain it (existing sessions: not remembered).
_ADD_REMEMBERED: Final = (
    "ALTER TABLE keepsake_sessions ADD COLUMN remembered INTEGER NOT NULL DEFAULT 0"
)

#: Default of ``cache_mib``: SQLite's own default is 2 MiB per connection.
DEFAULT_CACHE_MIB: Final = 8
#: How often, at most, a read checks that the path still names the file it reads (seconds).
#: Writes check after every commit.
READ_CHECK_INTERVAL: Final = 1.0

logger = logging.getLogger("flask_keepsake")


def _packed(key: str) -> bytes | str:
    """Return the stored form of ``key``: the raw digest bytes of a lowercase hex digest.

    Any other string (only tests make such keys) is stored as text; it round-trips unchanged and
    never equals a packed key.
    """
    if len(key) == 64:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            return key
        if raw.hex() == key:
            return raw
    return key


def _unpacked(value: bytes | str) -> str:
    return value.hex() if isinstance(value, bytes) else value


#: Where sqlite3 returns the text columns of a session row (handle, data, user_id, ip, user_agent).
_TEXT_COLUMNS: Final = ((1, "handle"), (2, "data"), (3, "user_id"), (9, "ip"), (10, "user_agent"))


def _undecodable(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is sqlite3 failing to decode a stored text column as UTF-8.

    That error comes from the Python module, not from SQLite (so it has no error code), and it
    says nothing about the connection: only the row is bad.
    """
    return getattr(exc, "sqlite_errorcode", None) is None and str(exc).startswith(
        "Could not decode to UTF-8"
    )


def _malformed(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is ``json_patch`` refusing stored data that is not JSON (a bad row)."""
    return "malformed JSON" in str(exc)


def _record_params(record: SessionRecord) -> tuple[Any, ...]:
    return (
        _packed(record.key),
        record.handle,
        json.dumps(record.data, separators=(",", ":")),
        record.user_id,
        record.created,
        record.last_seen,
        record.expires_at,
        record.absolute_expires_at,
        record.auth_time,
        record.ip,
        record.user_agent,
        int(record.remembered),
    )


def _patch_text(changed: Mapping[str, str], deleted: Collection[str]) -> str:
    """The delta as an RFC 7396 merge patch: values are strings, so null can only mean delete."""
    patch: dict[str, str | None] = dict(changed)
    for name in deleted:
        patch[name] = None
    return json.dumps(patch, separators=(",", ":"))


def _unavailable(path: Path, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"SQLite session store {str(path)!r}: {exc}")


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block in one write transaction, taken up front so it cannot deadlock later."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # SQLite rolls back by itself after some errors (disk full, I/O); a second ROLLBACK would
        # then fail and hide the original error.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


#: Another connection holds the lock: the connection itself is fine, and waiting is the cure.
_BUSY: Final = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
#: Errors about the file rather than the statement. Every connection to the file may be in the
#: same state, and SQLite lets a connection opened next to a read-only one in the same process
#: be read-only too, so all of them are closed, not only the one that failed.
_FILE_ERRORS: Final = frozenset(
    {
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOTADB,
    }
)
#: The epoch of a link whose connection is closed; no store epoch ever equals it.
_SHUT: Final = -1


class _Link:
    """One thread's connection, and what the store knows of it.

    The owning thread holds ``lock`` for the length of each call, so another thread may close the
    connection only while it is idle. ``epoch`` is the store's epoch when the connection opened:
    one of an older epoch is closed before its next use, and before any newer one opens.
    ``identity`` is ``(st_dev, st_ino)`` of the file it opened.
    """

    __slots__ = ("conn", "epoch", "finalizer", "identity", "lock")

    def __init__(self, conn: sqlite3.Connection, identity: tuple[int, int], epoch: int) -> None:
        self.conn = conn
        self.identity = identity
        self.epoch = epoch
        self.lock = threading.Lock()
        self.finalizer: weakref.finalize[Any, Any] | None = None


class _Owner:
    """Kept in the thread's local storage; when the thread ends, its finalizer closes the link."""

    __slots__ = ("__weakref__",)


def _names(path: str, identity: tuple[int, int]) -> bool:
    """Whether ``path`` names the file whose ``(st_dev, st_ino)`` is ``identity``."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return stat.st_ino == identity[1] and stat.st_dev == identity[0]


def _shut(link: _Link, links: set[_Link], lock: threading.RLock, path: str) -> None:
    """Close ``link``'s connection. The caller holds ``link.lock``, or the link's thread is gone."""
    if link.epoch == _SHUT:
        return
    link.epoch = _SHUT
    if link.finalizer is not None:
        link.finalizer.detach()
    with lock:
        links.discard(link)
    if not _names(path, link.identity):
        # When the last connection to a file that was deleted or moved away closes, SQLite neither
        # checkpoints nor deletes its WAL, and the frames left in it would be replayed into the
        # next database at the path (a restored backup, a replacement): empty it first.
        with contextlib.suppress(sqlite3.Error):
            link.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with contextlib.suppress(sqlite3.Error):
        link.conn.close()


def _finalize(link: _Link, links: set[_Link], lock: threading.RLock, path: str) -> None:
    """Close the link of a thread that ended (or whose store dropped its thread-local state)."""
    with link.lock:
        _shut(link, links, lock, path)


#: Every SQLiteStore alive in this process, so that a forked child can disown their connections.
_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
#: Connections inherited from the parent process. SQLite must not touch them in the child, not
#: even to close them, so they are kept here for the life of the process.
_INHERITED: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._disown_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteStore(AdminStore):
    """Keep session records in one SQLite database file.

    :param path: the database file; missing parent directories are created on first use. The
        sessions live in their own table, ``keepsake_sessions``, so the file may be shared.
    :param timeout: how many seconds a write waits for another writer to finish before the
        store raises :class:`~flask_keepsake.errors.StoreUnavailable`.
    :param cache_mib: the page cache of each connection, in MiB (``PRAGMA cache_size``). Every
        thread that uses the store has its own connection and its own cache, which grows only
        as pages are read: a connection holds at most this much, or the whole file if it is
        smaller. The default of 8 MiB keeps the interior pages of the B-trees of a million
        sessions (about 1.3 MB) in memory next to hundreds of recently used sessions.
    :param mmap_mib: map up to this many MiB of the file into memory (``PRAGMA mmap_size``);
        0, the default, reads with system calls. Off by default because with a mapped file an
        I/O error (a failing disk, a file truncated or on a network file system that goes away)
        kills the process with ``SIGBUS`` instead of raising
        :class:`~flask_keepsake.errors.StoreUnavailable`.

    The store heals or refuses, and never acknowledges a write that no file at ``path`` holds:

    - A connection that fails for any reason but another writer holding the lock is closed, and
      the next call opens a new one; a read-only, missing, corrupt file or an I/O error closes
      every connection of this process, which reopen on their next call.
    - After every write it checks (one ``stat``) that ``path`` still names the file the
      connection opened; if the file was deleted or replaced, the write raises
      :class:`~flask_keepsake.errors.StoreUnavailable` instead of being acknowledged. Reads check
      at most once every :data:`READ_CHECK_INTERVAL` seconds.
    - Once this process has used a database at ``path`` it never creates a new one there: while
      no file is there every call raises :class:`~flask_keepsake.errors.StoreUnavailable`, and
      the store reopens the file that comes back (a restored backup) by itself.
    - When another database takes the path (a replacement, a restored backup), the store closes
      every connection of this process to the old file, emptying the old file's WAL into it
      first, before it reads the new one: both would otherwise share the ``-wal`` and ``-shm``
      files named after the path. Processes are not told of each other: each one notices on its
      own next write, or read after the check interval.
    - A file that this process cannot write is not opened at all (every call raises
      :class:`~flask_keepsake.errors.StoreUnavailable` until its permissions are fixed): SQLite
      would create the ``-wal`` and ``-shm`` files beside it with its read-only mode, which would
      keep the store read-only after the file itself is fixed.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 5.0,
        cache_mib: int = DEFAULT_CACHE_MIB,
        mmap_mib: int = 0,
    ) -> None:
        if str(path) in ("", ":memory:"):
            # Every thread opens its own connection, and each would get a private empty database.
            raise ValueError(
                "SQLiteStore needs a file path; use MemoryStore for an in-memory store"
            )
        if cache_mib < 1:
            raise ValueError(f"cache_mib must be at least 1, not {cache_mib}")
        if mmap_mib < 0:
            raise ValueError(f"mmap_mib must be 0 (off) or more, not {mmap_mib}")
        self.path = Path(path)
        self.timeout = timeout
        self.cache_mib = cache_mib
        self.mmap_mib = mmap_mib
        # Absolute once, so that a later chdir cannot point the checks at another file.
        self._fspath = os.path.abspath(path)
        #: Guards _links, _epoch, _closed and _fault.
        self._lock = threading.RLock()
        #: One thread at a time opens a connection (and closes those of older epochs first).
        self._open_lock = threading.Lock()
        self._links: set[_Link] = set()
        self._local = threading.local()
        self._epoch = 0
        #: ``(st_dev, st_ino)`` of the file this store initialized last; None before first use.
        self._identity: tuple[int, int] | None = None
        #: The path stopped naming that file. Once every connection to a file is closed, a new
        #: file may get its inode number, so the next file opened is initialized whatever its
        #: identity.
        self._lost = False
        #: When a read next checks that the path still names the open file (monotonic seconds).
        self._check_after = 0.0
        #: The fault last logged, so that one outage logs one line, not one per request.
        self._fault: str | None = None
        self._closed = False
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}>"

    def describe(self) -> str:
        """Return ``sqlite:///`` followed by the database path."""
        return f"sqlite:///{self.path}"

    # Connections. Every call takes this thread's link with _link(), holds its lock for the
    # length of the call, and releases it in a finally clause.

    def _conn(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it if needed (for tests and subclasses)."""
        link = self._link(False)
        link.lock.release()
        return link.conn

    def _link(self, read: bool) -> _Link:
        """Return this thread's link, its lock held; the caller releases it after the call."""
        try:
            link: _Link = self._local.link
        except AttributeError:
            return self._open()
        link.lock.acquire()
        if link.epoch == self._epoch and (
            not read or time.monotonic() < self._check_after or self._still_there(link)
        ):
            return link
        self._forget(link)
        link.lock.release()
        return self._open()

    def _still_there(self, link: _Link) -> bool:
        """Whether the path still names the file ``link`` opened (for reads, once a second)."""
        if _names(self._fspath, link.identity):
            self._check_after = time.monotonic() + READ_CHECK_INTERVAL
            return True
        self._lost = True
        self._retire()
        return False

    def _verify(self, link: _Link) -> None:
        """Refuse to acknowledge a write unless the path still names the file that took it."""
        if _names(self._fspath, link.identity):
            return
        self._lost = True
        self._retire()
        self._forget(link)
        raise self._report(
            "changed",
            "the database file was deleted or replaced while this process had it open; "
            "the write was not acknowledged",
        )

    def _failure(self, link: _Link, exc: sqlite3.Error) -> StoreUnavailable:
        """Wrap ``exc``; close ``link`` unless another writer merely held the lock."""
        code = getattr(exc, "sqlite_errorcode", None)
        base = None if code is None else code & 0xFF
        if base not in _BUSY:
            self._forget(link)
            if base in _FILE_ERRORS:
                self._retire()
        error = _unavailable(self.path, exc)
        if base == sqlite3.SQLITE_READONLY:
            unwritable = [
                name
                for name in (self._fspath, f"{self._fspath}-wal", f"{self._fspath}-shm")
                if os.path.exists(name) and not os.access(name, os.W_OK)
            ]
            if unwritable:
                error = StoreUnavailable(f"{error} (not writable here: {', '.join(unwritable)})")
        return error

    def _retire(self) -> None:
        """Make every open connection reopen before its next use."""
        with self._lock:
            self._epoch += 1

    def _forget(self, link: _Link) -> None:
        """Close this thread's ``link`` (its lock held) and drop it from the thread's state."""
        _shut(link, self._links, self._lock, self._fspath)
        if getattr(self._local, "link", None) is link:
            del self._local.link
            del self._local.owner

    def _report(self, fault: str, message: str) -> StoreUnavailable:
        """Log ``message`` at ERROR once per fault; return the error for the caller to raise."""
        text = f"SQLite session store {str(self.path)!r}: {message}"
        with self._lock:
            new, self._fault = self._fault != fault, fault
        if new:
            logger.error("%s.", text)
        return StoreUnavailable(text)

    def _open(self) -> _Link:
        """Open this thread's connection and return its link, locked."""
        with self._open_lock:
            if self._closed:
                raise StoreUnavailable(f"SQLite session store {str(self.path)!r} has been closed")
            if self._sweep():
                raise StoreUnavailable(
                    f"SQLite session store {str(self.path)!r}: a connection opened before the "
                    "database file changed is still in use"
                )
            conn, identity = self._connect()
            try:
                if identity != self._identity or self._lost:
                    self._switch(conn, identity)
                conn.execute("PRAGMA synchronous = NORMAL")
                # Negative means KiB, so the budget does not depend on the file's page size.
                conn.execute(f"PRAGMA cache_size = {-1024 * self.cache_mib}")
                if self.mmap_mib:
                    conn.execute(f"PRAGMA mmap_size = {1024 * 1024 * self.mmap_mib}")
            except sqlite3.Error as exc:
                conn.close()
                raise _unavailable(self.path, exc) from exc
            except BaseException:
                conn.close()
                raise
            link = _Link(conn, identity, self._epoch)
            link.lock.acquire()
            owner = _Owner()
            # The finalizer fires when the thread ends and its thread-local owner is dropped, so
            # servers that start a thread per request do not pile up open connections.
            link.finalizer = weakref.finalize(
                owner, _finalize, link, self._links, self._lock, self._fspath
            )
            with self._lock:
                self._links.add(link)
                recovered, self._fault = self._fault, None
            self._local.link = link
            self._local.owner = owner
        if recovered is not None:
            logger.warning(
                "SQLite session store %r: the database file is usable again.", str(self.path)
            )
        return link

    def _sweep(self) -> list[_Link]:
        """Close the connections of older epochs; return those still busy after ``timeout``.

        A connection to the previous file must be closed before one to a new file at the same
        path is used: both would share the ``-wal`` and ``-shm`` files that SQLite names after
        the path, and SQLite would read one file's pages into the other.
        """
        with self._lock:
            stale = [link for link in self._links if link.epoch != self._epoch]
        busy = []
        for link in stale:
            if not link.lock.acquire(timeout=self.timeout):
                busy.append(link)
                continue
            try:
                _shut(link, self._links, self._lock, self._fspath)
            finally:
                link.lock.release()
        return busy

    def _connect(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """Connect to the file at the path; return the connection and the file's identity."""
        path = self._fspath
        first = self._identity is None
        try:
            before: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            if not first:
                raise self._gone() from None
            before = None
        except OSError as exc:
            raise _unavailable(self.path, exc) from exc
        if before is not None and not os.access(path, os.R_OK | os.W_OK):
            raise self._report(
                "read-only",
                "this process may not read and write the database file; answering 503 until "
                "its permissions (and those of its directory) are fixed",
            )
        try:
            if first:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # mode=rw never creates the file: once this process has used a database here, a new
            # empty one in its place would take writes while every session was gone.
            mode = "rwc" if first else "rw"
            # check_same_thread is off so that another thread may close an idle connection;
            # each connection is still only ever used by the thread that opened it.
            conn = sqlite3.connect(
                f"{Path(path).as_uri()}?mode={mode}",
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except (sqlite3.Error, OSError) as exc:
            if not first and not os.path.lexists(path):
                raise self._gone() from exc
            raise _unavailable(self.path, exc) from exc
        try:
            after = os.stat(path)
        except OSError as exc:
            conn.close()
            raise _unavailable(self.path, exc) from exc
        identity = (after.st_dev, after.st_ino)
        if before is not None and (before.st_dev, before.st_ino) != identity:
            # The connection may hold either file: it cannot be told which.
            conn.close()
            raise StoreUnavailable(
                f"SQLite session store {str(self.path)!r}: the database file changed while it "
                "was being opened"
            )
        return conn, identity

    def _gone(self) -> StoreUnavailable:
        self._lost = True
        return self._report(
            "gone",
            "the database file is gone (deleted or moved away); answering 503 and not creating "
            "an empty one in its place: put the database back at this path (a restored backup) "
            "and the store reopens it",
        )

    def _switch(self, conn: sqlite3.Connection, identity: tuple[int, int]) -> None:
        """Make the file ``conn`` opened the store's file: close the old one's connections, and
        create the tables the new one lacks."""
        previous = self._identity
        if previous is not None:
            self._retire()
            if self._sweep():
                raise StoreUnavailable(
                    f"SQLite session store {str(self.path)!r}: a connection to the previous "
                    "database file is still in use"
                )
        self._initialize(conn)
        self._identity = identity
        self._lost = False
        # The same identity after a loss may be the same file put back, or a new one that got
        # the freed inode number: only a different one is surely a replacement.
        if previous is not None and previous != identity:
            logger.warning(
                "SQLite session store %r: the file at this path is not the database this "
                "process had open (it was replaced or restored); using it from now on.",
                str(self.path),
            )

    def _initialize(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL and create the store's tables and indexes it lacks."""
        # journal_mode is stored in the file, so setting it once is enough for every
        # connection and every process.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreUnavailable(
                f"SQLite session store {str(self.path)!r}: could not enable WAL journal mode "
                f"(got {mode!r}); the file system may not support it"
            )
        try:
            conn.execute("SELECT json_patch('{}', '{}')")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(
                f"this SQLite library ({sqlite3.sqlite_version}) lacks the JSON functions "
                "the session store needs"
            ) from exc
        with _immediate(conn):
            row = conn.execute(_TABLE_SQL).fetchone()
            if row is not None and "without rowid" in str(row[0]).lower():
                raise StoreUnavailable(
                    f"SQLite session store {str(self.path)!r}: the keepsake_sessions table "
                    "has the layout of a development version before 0.1.0; delete the file "
                    "or drop the table (its sessions will be lost) and start again"
                )
            if row is not None and "remembered" not in str(row[0]):
                conn.execute(_ADD_REMEMBERED)
            for statement in _SCHEMA:
                conn.execute(statement)

    def _disown_connections(self) -> None:
        """Forget, without closing, the connections inherited by a forked child."""
        for link in self._links:
            if link.finalizer is not None:
                link.finalizer.detach()
            _INHERITED.append(link.conn)
        self._links = set()
        self._lock = threading.RLock()
        self._open_lock = threading.Lock()
        self._local = threading.local()

    def close(self) -> None:
        """Close every connection this store opened, in any thread.

        A connection still in use after ``timeout`` seconds is closed by its own thread's
        finalizer when that thread ends; its next call raises StoreUnavailable.
        """
        with self._open_lock:
            with self._lock:
                self._closed = True
                self._epoch += 1
            self._sweep()
            # Dropping this thread's owner, whose finalizer the sweep detached.
            self._local = threading.local()

    # The contract. Reads take _link(True), writes _link(False) and end with _verify().

    def create(self, record: SessionRecord) -> None:
        """Store a new record; see :meth:`Store.create`.

        ``create`` receives no clock, so a record under the same key or handle counts as expired
        when its ``expires_at`` is at or before the new record's ``created``.
        """
        params = _record_params(record)
        link = self._link(False)
        try:
            conn = link.conn
            try:
                # Almost always nothing holds the key or handle: one autocommit INSERT does it.
                conn.execute(_INSERT, params)
            except sqlite3.IntegrityError:
                # A record holds the key or handle; if it has expired, replace it.
                try:
                    with _immediate(conn):
                        conn.execute(
                            _DELETE_EXPIRED_HOLDERS, (params[0], record.handle, record.created)
                        )
                        conn.execute(_INSERT, params)
                except sqlite3.IntegrityError as exc:
                    raise ValueError(
                        "a live session record with this key or handle already exists"
                    ) from exc
            self._verify(link)
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()

    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        """Return the live record under ``key`` in one SELECT; see :meth:`Store.load`.

        Only a miss costs a second, small SELECT, to tell a rotation tombstone from nothing.
        """
        packed = _packed(key)
        link = self._link(True)
        try:
            conn = link.conn
            row = conn.execute(_SELECT, (packed, now)).fetchone()
            if row is None:
                rotated = conn.execute(_SUCCESSOR, (packed, now)).fetchone() is not None
                return ROTATED if rotated else None
        except sqlite3.Error as exc:
            if not _undecodable(exc):
                raise self._failure(link, exc) from exc
            return self._load_raw(link, packed, now)
        finally:
            link.lock.release()
        return self._record(row)

    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> Outcome:
        """Apply a per-key delta in one UPDATE; see :meth:`Store.apply`.

        A key named in both ``changed`` and ``deleted`` ends up deleted. Only when no live
        record matched does the store look for a tombstone and follow it.
        """
        text = _patch_text(changed, deleted)
        target = _packed(key)
        statement: str
        params: tuple[object, ...]
        if touch is None:
            statement, params = _APPLY, (text, target, now)
        elif touch.absolute_expires_at is None and not touch.stale:
            statement = _APPLY_TOUCH
            params = (text, touch.last_seen, touch.expires_at, target, now)
        else:
            statement = _APPLY_TOUCH_POLICY
            params = (
                text,
                touch.last_seen,
                touch.expires_at,
                touch.absolute_expires_at,
                touch.stale,
                target,
                now,
            )
        link = self._link(False)
        try:
            conn = link.conn
            outcome = Outcome.DONE
            if not conn.execute(statement, params).rowcount:
                outcome = Outcome.GONE
                # Tombstones never change once written, so following one outside a transaction
                # is safe: if the record it names is renamed meanwhile, the next step follows it.
                for _ in range(MAX_FOLLOW):
                    row = conn.execute(_SUCCESSOR, (target, now)).fetchone()
                    if row is None:
                        break
                    target = row[0]
                    # The touch was for the old key; the new record's expiry is newer than it.
                    if conn.execute(_APPLY, (text, target, now)).rowcount:
                        outcome = Outcome.FOLLOWED
                        break
            self._verify(link)
        except sqlite3.Error as exc:
            if _malformed(exc):
                self.log_unreadable(_unpacked(target), "its data is not JSON")
                return Outcome.GONE
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return outcome

    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        """Refresh ``last_seen`` and ``expires_at``; see :meth:`Store.touch`."""
        packed = _packed(key)
        statement: str
        params: tuple[object, ...]
        if touch.absolute_expires_at is None and not touch.stale:
            statement, params = _TOUCH, (touch.last_seen, touch.expires_at, packed, now)
        else:
            statement = _TOUCH_POLICY
            params = (
                touch.last_seen,
                touch.expires_at,
                touch.absolute_expires_at,
                touch.stale,
                packed,
                now,
            )
        link = self._link(False)
        try:
            conn = link.conn
            outcome = Outcome.DONE
            if not conn.execute(statement, params).rowcount:
                followed = conn.execute(_SUCCESSOR, (packed, now)).fetchone() is not None
                outcome = Outcome.FOLLOWED if followed else Outcome.GONE
            self._verify(link)
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return outcome

    def rename(
        self,
        old_key: str,
        record: SessionRecord,
        now: float,
        *,
        changed: Mapping[str, str] | None = None,
        deleted: Collection[str] = (),
        grace: float = 0.0,
    ) -> Outcome:
        """Move the live record under ``old_key`` to ``record.key`` in one transaction.

        See :meth:`Store.rename`. The data is read inside the transaction, so a write that
        reached the old record just before is carried over. Raise ``ValueError``, changing
        nothing, if another live record already holds ``record.key`` or ``record.handle``.
        """
        params = list(_record_params(record))
        link = self._link(False)
        try:
            conn = link.conn
            with _immediate(conn):
                outcome = self._move(conn, old_key, params, now, changed, deleted, grace)
            self._verify(link)
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                "a live session record with this key or handle already exists"
            ) from exc
        except sqlite3.Error as exc:
            if _undecodable(exc):
                self.log_unreadable(old_key, "a text column is not valid UTF-8")
                return Outcome.GONE
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return outcome

    def _move(
        self,
        conn: sqlite3.Connection,
        old_key: str,
        params: list[Any],
        now: float,
        changed: Mapping[str, str] | None,
        deleted: Collection[str],
        grace: float,
    ) -> Outcome:
        """The statements of :meth:`rename`, inside its transaction."""
        old = _packed(old_key)
        row = conn.execute(_SELECT_DATA, (old, now)).fetchone()
        if row is None:
            rotated = conn.execute(_SUCCESSOR, (old, now)).fetchone() is not None
            return Outcome.ROTATED if rotated else Outcome.GONE
        data = self._stored_data(old_key, row[0], row[1])
        if data is None:
            return Outcome.GONE
        data.update(changed or {})
        for name in deleted:
            data.pop(name, None)
        params[2] = json.dumps(data, separators=(",", ":"))
        # Deleting first frees the handle, which the new record usually keeps.
        conn.execute(_DELETE, (old,))
        conn.execute(_DELETE_EXPIRED_HOLDERS, (params[0], params[1], now))
        conn.execute(_INSERT, params)
        if grace > 0 and params[0] != old:
            conn.execute(_PUT_TOMBSTONE, (old, params[0], now + grace))
        return Outcome.DONE

    def delete(self, key: str) -> bool:
        """Delete the record under ``key``; see :meth:`Store.delete`.

        ``delete`` receives no clock, so the result says whether any record, live or expired but
        not yet purged, was removed.
        """
        link = self._link(False)
        try:
            deleted = link.conn.execute(_DELETE, (_packed(key),)).rowcount > 0
            self._verify(link)
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return deleted

    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        """Return the user's live records, oldest first; see :meth:`Store.list_user`."""
        link = self._link(True)
        try:
            rows = link.conn.execute(_LIST_USER, (user_id, now)).fetchall()
            decode = self._record
        except sqlite3.Error as exc:
            if not _undecodable(exc):
                raise self._failure(link, exc) from exc
            rows = self._list_user_raw(link, user_id, now)
            decode = self._raw_record
        finally:
            link.lock.release()
        return [record for row in rows if (record := decode(row)) is not None]

    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        """Delete the user's live records except ``except_key``; see :meth:`Store.delete_user`.

        The user's expired records are left to :meth:`purge_expired`; no method can see them.
        """
        excepted = None if except_key is None else _packed(except_key)
        link = self._link(False)
        try:
            deleted: int = link.conn.execute(_DELETE_USER, (user_id, excepted, now)).rowcount
            self._verify(link)
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return deleted

    def delete_handle(
        self, handle: str, now: float, *, user_id: str | None = None
    ) -> tuple[str, str | None] | None:
        """Delete the live record named ``handle``; see :meth:`Store.delete_handle`."""
        link = self._link(False)
        try:
            conn = link.conn
            with _immediate(conn):
                row = conn.execute(_FIND_HANDLE, (handle, now, user_id)).fetchone()
                if row is not None:
                    conn.execute(_DELETE, (row[0],))
            self._verify(link)
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return None if row is None else (_unpacked(row[0]), row[1])

    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        """Delete up to ``batch_size`` expired records, then tombstones and markers; see
        :meth:`Store.purge_expired`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        link = self._link(False)
        try:
            conn = link.conn
            purged: int = conn.execute(_PURGE, (now, batch_size)).rowcount
            for statement in (_PURGE_TOMBSTONES, _PURGE_MARKERS):
                if purged >= batch_size:
                    break
                purged += conn.execute(statement, (now, batch_size - purged)).rowcount
            self._verify(link)
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return purged

    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        """Store a marker in one statement; see :meth:`Store.put_marker`."""
        link = self._link(False)
        try:
            if replace:
                link.conn.execute(_PUT_MARKER, (name, value, expires_at))
                stored = True
            else:
                cursor = link.conn.execute(_CLAIM_MARKER, (name, value, expires_at, now))
                stored = cursor.rowcount > 0
            self._verify(link)
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return stored

    def get_marker(self, name: str, now: float) -> str | None:
        """Return a live marker's value; see :meth:`Store.get_marker`."""
        link = self._link(True)
        try:
            row = link.conn.execute(_GET_MARKER, (name, now)).fetchone()
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return None if row is None else str(row[0])

    def count(self, now: float) -> int:
        """Return the number of live records; see :meth:`Store.count`."""
        return self._count(_COUNT, now)

    def count_expired(self, now: float) -> int:
        """Return the number of expired records; see :meth:`Store.count_expired`."""
        return self._count(_COUNT_EXPIRED, now)

    def user_counts(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Return the users with the most live records; see :meth:`Store.user_counts`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        link = self._link(True)
        try:
            rows = link.conn.execute(_USER_COUNTS, (now, limit)).fetchall()
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return [(str(row[0]), int(row[1])) for row in rows]

    def delete_all(self) -> int:
        """Delete every record, tombstone and marker in one transaction; see
        :meth:`Store.delete_all`.

        Other tables in the same file are left alone.
        """
        link = self._link(False)
        try:
            conn = link.conn
            with _immediate(conn):
                deleted: int = conn.execute(_DELETE_ALL).rowcount
                conn.execute(_DELETE_ALL_TOMBSTONES)
                conn.execute(_DELETE_ALL_MARKERS)
            self._verify(link)
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return deleted

    def _count(self, statement: str, now: float) -> int:
        link = self._link(True)
        try:
            row = link.conn.execute(statement, (now,)).fetchone()
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        finally:
            link.lock.release()
        return int(row[0])

    # Rows.

    def _load_raw(self, link: _Link, packed: bytes | str, now: float) -> SessionRecord | None:
        """:meth:`load` again, after sqlite3 could not decode a text column of the row."""
        try:
            row = link.conn.execute(_SELECT_RAW, (packed, now)).fetchone()
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        return None if row is None else self._raw_record(row)

    def _list_user_raw(self, link: _Link, user_id: str, now: float) -> list[tuple[Any, ...]]:
        """:meth:`list_user`'s rows again, after sqlite3 could not decode a text column."""
        try:
            rows: list[tuple[Any, ...]] = link.conn.execute(
                _LIST_USER_RAW, (user_id, now)
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._failure(link, exc) from exc
        return rows

    def _record(self, row: tuple[Any, ...]) -> SessionRecord | None:
        """Build the record of a session row, or log the row as unreadable and return None."""
        data = self._stored_data(row[0], row[2], row[1])
        if data is None:
            return None
        # Positional arguments, in SessionRecord's field order, cost less than keywords on the
        # path of every load, which pays for the checks of the data above.
        return SessionRecord(
            _unpacked(row[0]),
            row[1],
            data,
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
            row[11] == 1,
        )

    def _raw_record(self, row: tuple[Any, ...]) -> SessionRecord | None:
        """:meth:`_record` for a row read with :data:`_SELECT_RAW` (text columns as bytes)."""
        values = list(row)
        for index, column in _TEXT_COLUMNS:
            value = values[index]
            if isinstance(value, bytes):
                try:
                    values[index] = value.decode("utf-8")
                except UnicodeDecodeError:
                    handle = values[1] if isinstance(values[1], str) else None
                    self.log_unreadable(
                        _unpacked(row[0]), f"its {column} is not valid UTF-8", handle
                    )
                    return None
        return self._record(tuple(values))

    def _stored_data(self, key: bytes | str, text: object, handle: object) -> dict[str, str] | None:
        """Decode a row's ``data`` column, or log the row as unreadable and return None.

        Anything but a JSON object of strings (a row written by hand, a torn copy) is unreadable:
        handing it on would fail far from here, in the engine, or turn into a 500.
        """
        try:
            if type(text) is not str:
                raise TypeError(f"its data is {type(text).__name__}, not text")
            data = json.loads(text)
            if type(data) is not dict:
                raise TypeError(f"its data is a JSON {type(data).__name__}, not an object")
            for value in data.values():
                if type(value) is not str:
                    raise TypeError("its data holds a value that is not a string")
        except (ValueError, TypeError, RecursionError) as exc:
            self.log_unreadable(_unpacked(key), exc, handle if isinstance(handle, str) else None)
            return None
        return data
