"""The embedded default store: one SQLite file, shared by every thread and process of one machine.

Each thread gets its own connection (SQLite connections must not be used by two threads at once),
opened lazily and closed when the thread ends or the store is closed. The file runs in WAL mode,
so loads never wait for a writer, and writes wait up to ``timeout`` seconds for one another before
:class:`~flask_keepsake.errors.StoreUnavailable` is raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from ..errors import StoreUnavailable
from .base import MAX_FOLLOW, ROTATED, Outcome, Rotated, SessionRecord, Store, Touch

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
        user_agent TEXT
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
    "absolute_expires_at, auth_time, ip, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT: Final = (
    "SELECT key, handle, data, user_id, created, last_seen, expires_at, absolute_expires_at, "
    "auth_time, ip, user_agent FROM keepsake_sessions WHERE key = ? AND expires_at > ?"
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
    "auth_time, ip, user_agent FROM keepsake_sessions WHERE user_id = ? AND expires_at > ? "
    "ORDER BY created, key"
)
_DELETE_USER: Final = (
    "DELETE FROM keepsake_sessions WHERE user_id = ? AND key IS NOT ? AND expires_at > ?"
)
_FIND_HANDLE: Final = (
    "SELECT key FROM keepsake_sessions WHERE handle = ?1 AND expires_at > ?2 "
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
    "CAST(user_agent AS BLOB) FROM keepsake_sessions WHERE key = ? AND expires_at > ?"
)
_LIST_USER_RAW: Final = (
    "SELECT key, CAST(handle AS BLOB), CAST(data AS BLOB), CAST(user_id AS BLOB), created, "
    "last_seen, expires_at, absolute_expires_at, auth_time, CAST(ip AS BLOB), "
    "CAST(user_agent AS BLOB) FROM keepsake_sessions WHERE user_id = ? AND expires_at > ? "
    "ORDER BY created, key"
)
_TABLE_SQL: Final = (
    "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'keepsake_sessions'"
)

#: Default of ``cache_mib``: SQLite's own default is 2 MiB per connection.
DEFAULT_CACHE_MIB: Final = 8


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


class _Handle:
    """Owns one thread's connection; its finalizer closes the connection when the thread ends."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


def _close_connection(
    conn: sqlite3.Connection,
    registry: dict[sqlite3.Connection, weakref.finalize[Any, Any]],
    lock: threading.RLock,
) -> None:
    with lock:
        registry.pop(conn, None)
    conn.close()


#: Every SQLiteStore alive in this process, so that a forked child can disown their connections.
_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
#: Connections inherited from the parent process. SQLite must not touch them in the child, not
#: even to close them, so they are kept here for the life of the process.
_INHERITED: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._disown_connections()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteStore(Store):
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
        self._lock = threading.RLock()
        self._connections: dict[sqlite3.Connection, weakref.finalize[Any, Any]] = {}
        self._local = threading.local()
        self._initialized = False
        self._closed = False
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}>"

    def describe(self) -> str:
        """Return ``sqlite:///`` followed by the database path."""
        return f"sqlite:///{self.path}"

    # Connections.

    def _conn(self) -> sqlite3.Connection:
        try:
            conn: sqlite3.Connection = self._local.handle.conn
        except AttributeError:
            conn = self._open()
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            if not self._initialized:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread is off so that close() may close other threads' connections;
            # each connection is still only ever used by the thread that opened it.
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except (sqlite3.Error, OSError) as exc:
            raise _unavailable(self.path, exc) from exc
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            # Negative means KiB, so the budget does not depend on the file's page size.
            conn.execute(f"PRAGMA cache_size = {-1024 * self.cache_mib}")
            if self.mmap_mib:
                conn.execute(f"PRAGMA mmap_size = {1024 * 1024 * self.mmap_mib}")
            if not self._initialized:
                self._initialize(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise _unavailable(self.path, exc) from exc
        except BaseException:
            conn.close()
            raise
        handle = _Handle(conn)
        # The finalizer fires when the thread ends and its thread-local handle is dropped, so
        # servers that start a thread per request do not pile up open connections.
        finalizer = weakref.finalize(handle, _close_connection, conn, self._connections, self._lock)
        with self._lock:
            closed = self._closed
            if not closed:
                self._connections[conn] = finalizer
        if closed:
            finalizer()
            raise StoreUnavailable(f"SQLite session store {str(self.path)!r} has been closed")
        self._local.handle = handle
        return conn

    def _initialize(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if self._initialized:
                return
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
                for statement in _SCHEMA:
                    conn.execute(statement)
            self._initialized = True

    def _disown_connections(self) -> None:
        """Forget, without closing, the connections inherited by a forked child."""
        for conn, finalizer in self._connections.items():
            finalizer.detach()
            _INHERITED.append(conn)
        self._connections = {}
        self._lock = threading.RLock()
        self._local = threading.local()

    def close(self) -> None:
        """Close every connection this store opened, in any thread."""
        with self._lock:
            self._closed = True
            finalizers = list(self._connections.values())
            old_local, self._local = self._local, threading.local()
        # Dropping the old thread-local outside the lock: it fires the finalizers, which lock.
        del old_local
        for finalizer in finalizers:
            finalizer()

    # The contract.

    def create(self, record: SessionRecord) -> None:
        """Store a new record; see :meth:`Store.create`.

        ``create`` receives no clock, so a record under the same key or handle counts as expired
        when its ``expires_at`` is at or before the new record's ``created``.
        """
        conn = self._conn()
        params = _record_params(record)
        try:
            # Almost always nothing holds the key or handle: one autocommit INSERT does it.
            conn.execute(_INSERT, params)
            return
        except sqlite3.IntegrityError:
            pass  # a record holds the key or handle; if it has expired, replace it below
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        try:
            with _immediate(conn):
                conn.execute(
                    _DELETE_EXPIRED_HOLDERS, (_packed(record.key), record.handle, record.created)
                )
                conn.execute(_INSERT, params)
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                "a live session record with this key or handle already exists"
            ) from exc
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc

    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        """Return the live record under ``key`` in one SELECT; see :meth:`Store.load`.

        Only a miss costs a second, small SELECT, to tell a rotation tombstone from nothing.
        """
        packed = _packed(key)
        conn = self._conn()
        try:
            row = conn.execute(_SELECT, (packed, now)).fetchone()
            if row is None:
                rotated = conn.execute(_SUCCESSOR, (packed, now)).fetchone() is not None
                return ROTATED if rotated else None
        except sqlite3.Error as exc:
            if not _undecodable(exc):
                raise _unavailable(self.path, exc) from exc
            try:
                row = conn.execute(_SELECT_RAW, (packed, now)).fetchone()
            except sqlite3.Error as raw_exc:
                raise _unavailable(self.path, raw_exc) from raw_exc
            return None if row is None else self._raw_record(row)
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
        conn = self._conn()
        try:
            if conn.execute(statement, params).rowcount:
                return Outcome.DONE
            # Tombstones never change once written, so following one outside a transaction is
            # safe: if the record it names is renamed meanwhile, the next step follows again.
            for _ in range(MAX_FOLLOW):
                row = conn.execute(_SUCCESSOR, (target, now)).fetchone()
                if row is None:
                    return Outcome.GONE
                target = row[0]
                # The touch belongs to the old key's request; the new record's expiry is newer.
                if conn.execute(_APPLY, (text, target, now)).rowcount:
                    return Outcome.FOLLOWED
            return Outcome.GONE
        except sqlite3.Error as exc:
            if _malformed(exc):
                self.log_unreadable(_unpacked(target), "its data is not JSON")
                return Outcome.GONE
            raise _unavailable(self.path, exc) from exc

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
        conn = self._conn()
        try:
            if conn.execute(statement, params).rowcount:
                return Outcome.DONE
            followed = conn.execute(_SUCCESSOR, (packed, now)).fetchone() is not None
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return Outcome.FOLLOWED if followed else Outcome.GONE

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
        old = _packed(old_key)
        params = list(_record_params(record))
        conn = self._conn()
        try:
            with _immediate(conn):
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
                conn.execute(_DELETE_EXPIRED_HOLDERS, (params[0], record.handle, now))
                conn.execute(_INSERT, params)
                if grace > 0 and params[0] != old:
                    conn.execute(_PUT_TOMBSTONE, (old, params[0], now + grace))
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                "a live session record with this key or handle already exists"
            ) from exc
        except sqlite3.Error as exc:
            if _undecodable(exc):
                self.log_unreadable(old_key, "a text column is not valid UTF-8")
                return Outcome.GONE
            raise _unavailable(self.path, exc) from exc
        return Outcome.DONE

    def delete(self, key: str) -> bool:
        """Delete the record under ``key``; see :meth:`Store.delete`.

        ``delete`` receives no clock, so the result says whether any record, live or expired but
        not yet purged, was removed.
        """
        try:
            cursor = self._conn().execute(_DELETE, (_packed(key),))
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return cursor.rowcount > 0

    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        """Return the user's live records, oldest first; see :meth:`Store.list_user`."""
        conn = self._conn()
        try:
            rows = conn.execute(_LIST_USER, (user_id, now)).fetchall()
            decode = self._record
        except sqlite3.Error as exc:
            if not _undecodable(exc):
                raise _unavailable(self.path, exc) from exc
            try:
                rows = conn.execute(_LIST_USER_RAW, (user_id, now)).fetchall()
            except sqlite3.Error as raw_exc:
                raise _unavailable(self.path, raw_exc) from raw_exc
            decode = self._raw_record
        return [record for row in rows if (record := decode(row)) is not None]

    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        """Delete the user's live records except ``except_key``; see :meth:`Store.delete_user`.

        The user's expired records are left to :meth:`purge_expired`; no method can see them.
        """
        try:
            excepted = None if except_key is None else _packed(except_key)
            cursor = self._conn().execute(_DELETE_USER, (user_id, excepted, now))
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return cursor.rowcount

    def delete_handle(self, handle: str, now: float, *, user_id: str | None = None) -> str | None:
        """Delete the live record named ``handle``; see :meth:`Store.delete_handle`."""
        conn = self._conn()
        try:
            with _immediate(conn):
                row = conn.execute(_FIND_HANDLE, (handle, now, user_id)).fetchone()
                if row is not None:
                    conn.execute(_DELETE, (row[0],))
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return None if row is None else _unpacked(row[0])

    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        """Delete up to ``batch_size`` expired records; see :meth:`Store.purge_expired`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        conn = self._conn()
        try:
            purged = conn.execute(_PURGE, (now, batch_size)).rowcount
            for statement in (_PURGE_TOMBSTONES, _PURGE_MARKERS):
                if purged >= batch_size:
                    break
                purged += conn.execute(statement, (now, batch_size - purged)).rowcount
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return purged

    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        """Store a marker in one statement; see :meth:`Store.put_marker`."""
        try:
            if replace:
                self._conn().execute(_PUT_MARKER, (name, value, expires_at))
                return True
            cursor = self._conn().execute(_CLAIM_MARKER, (name, value, expires_at, now))
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return cursor.rowcount > 0

    def get_marker(self, name: str, now: float) -> str | None:
        """Return a live marker's value; see :meth:`Store.get_marker`."""
        try:
            row = self._conn().execute(_GET_MARKER, (name, now)).fetchone()
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
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
        try:
            rows = self._conn().execute(_USER_COUNTS, (now, limit)).fetchall()
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return [(str(row[0]), int(row[1])) for row in rows]

    def delete_all(self) -> int:
        """Delete every record, tombstone and marker in one transaction; see
        :meth:`Store.delete_all`.

        Other tables in the same file are left alone.
        """
        conn = self._conn()
        try:
            with _immediate(conn):
                deleted = conn.execute(_DELETE_ALL).rowcount
                conn.execute(_DELETE_ALL_TOMBSTONES)
                conn.execute(_DELETE_ALL_MARKERS)
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return deleted

    def _count(self, statement: str, now: float) -> int:
        try:
            row = self._conn().execute(statement, (now,)).fetchone()
        except sqlite3.Error as exc:
            raise _unavailable(self.path, exc) from exc
        return int(row[0])

    def _record(self, row: tuple[Any, ...]) -> SessionRecord | None:
        """Build the record of a session row, or log the row as unreadable and return None."""
        data = self._stored_data(row[0], row[2], row[1])
        if data is None:
            return None
        return SessionRecord(
            key=_unpacked(row[0]),
            handle=row[1],
            data=data,
            user_id=row[3],
            created=row[4],
            last_seen=row[5],
            expires_at=row[6],
            absolute_expires_at=row[7],
            auth_time=row[8],
            ip=row[9],
            user_agent=row[10],
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
