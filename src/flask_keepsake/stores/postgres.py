# Statements are built once from the schema and table names, which the constructor accepts only
# as plain identifiers (letters, digits, _) and quotes; every value is a bound parameter.
# ruff: noqa: S608
"""Sessions in PostgreSQL, the database the application may already run (psycopg 3).

One row per session, in a table of its own (``keepsake_sessions`` unless told otherwise): the key
is the SHA-256 digest of the token as 32 raw bytes (``bytea``), the data a ``jsonb`` object of the
already-serialized per-key texts. Every change is one statement in autocommit mode, so one round
trip: a delta merges and removes keys inside PostgreSQL (``(data || patch) - deleted``) on the row
as it is at that instant, which is what keeps overlapping requests from losing each other's
writes; a rename deletes the old row, inserts the new one and writes the tombstone in one
statement.

Connections come from a :class:`psycopg_pool.ConnectionPool`, opened in each process on first
use, so that no connection crosses a ``fork`` (gunicorn ``--preload``); a child process that
inherits an open pool sets it aside, unused and unclosed, so the parent's sessions go on.
See ``docs/stores.md`` for the schema and the options, ``docs/operations.md`` for cleanup,
autovacuum and backups.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..errors import StoreUnavailable
from .base import MAX_FOLLOW, ROTATED, AdminStore, Outcome, Rotated, SessionRecord, Touch

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

#: What to install for this store.
EXTRA: Final = "flask-keepsake[postgres]"
#: The layout version this code writes and reads; recorded in the ``<table>_version`` table.
SCHEMA_VERSION: Final = 1
#: Defaults, in seconds (timeouts) and connections (pool).
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_STATEMENT_TIMEOUT: Final = 5.0
DEFAULT_POOL_TIMEOUT: Final = 5.0
DEFAULT_MIN_SIZE: Final = 1
DEFAULT_MAX_SIZE: Final = 10

logger = logging.getLogger("flask_keepsake")

#: Identifiers the store accepts for the schema and the table: quoted as they are, never built
#: from anything but configuration.
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
#: The first character of a text stored in escaped form (see :func:`_enc`).
_ESC: Final = "\x01"
#: SQLSTATEs of a server that ended the connection before or while it ran our statement, which
#: it then rolled back: the statement may be sent again on another connection.
_ENDED: Final = frozenset({"57P01", "57P02", "57P03"})
#: The database refuses writes (``default_transaction_read_only``, a standby): the connection
#: keeps that setting for its whole life, so it is replaced rather than reused.
_READ_ONLY: Final = "25006"

T = TypeVar("T")


def require_psycopg() -> Any:
    """Import psycopg and psycopg_pool, or raise ModuleNotFoundError saying what to install."""
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ModuleNotFoundError(
            "The PostgreSQL session store needs psycopg 3 and psycopg_pool: "
            f"pip install '{EXTRA}'.",
            name=exc.name,
        ) from exc
    return psycopg, psycopg_pool


def _enc(text: str) -> str:
    """``text`` as PostgreSQL can store it in ``text`` and ``jsonb``: unchanged, almost always.

    PostgreSQL holds neither NUL characters nor lone surrogates (which are not UTF-8) in a text or
    a JSON string. A text with either, or starting with :data:`_ESC`, is stored as ``_ESC``
    followed by its JSON form with ASCII escapes, which :func:`_dec` reverses exactly.
    """
    if "\x00" not in text and not text.startswith(_ESC):
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return text
    return _ESC + json.dumps(text)


def _dec(text: str) -> str:
    if text.startswith(_ESC):
        value = json.loads(text[1:])
        if type(value) is not str:
            raise TypeError("an escaped text is not a JSON string")
        return value
    return text


def _opt(text: str | None) -> str | None:
    return None if text is None else _enc(text)


def _opt_dec(text: object) -> str | None:
    if text is None:
        return None
    if type(text) is not str:
        raise TypeError(f"a text column holds {type(text).__name__}")
    return _dec(text)


#: The stored form of a key that is not a hex digest (only tests make such keys): never 32 bytes.
_TEXT_KEY: Final = b"\xff" * 33


def _packed(key: str) -> bytes:
    """The stored form of ``key``: the 32 raw bytes of a lowercase hex SHA-256 digest."""
    if len(key) == 64:
        try:
            raw = bytes.fromhex(key)
        except ValueError:
            pass
        else:
            if raw.hex() == key:
                return raw
    return _TEXT_KEY + key.encode("utf-8", "surrogatepass")


def _unpacked(value: bytes) -> str:
    if len(value) == 32:
        return value.hex()
    return value[len(_TEXT_KEY) :].decode("utf-8", "surrogatepass")


def _patch(changed: Mapping[str, str]) -> str:
    return json.dumps({_enc(name): _enc(value) for name, value in changed.items()})


def _names(deleted: Collection[str]) -> list[str]:
    return [_enc(name) for name in deleted]


def _schema_statements(schema: str, table: str) -> list[str]:
    """The DDL of the store, in order; every statement may run again (``IF NOT EXISTS``)."""
    q = f'"{schema}".'
    s, t, m, v = (f'{q}"{table}{suffix}"' for suffix in ("", "_tombstones", "_markers", "_version"))
    # Times are epoch seconds as float8, exactly the floats the engine computes; the key is the
    # digest's 32 raw bytes, which keeps the primary key index half the size of hex text.
    # fillfactor leaves room in each page so that a touch or a delta can be a HOT update (no new
    # index entries) whenever it changes no indexed column: every delta without a touch.
    statements = [] if schema == "public" else [f'CREATE SCHEMA IF NOT EXISTS "{schema}"']
    return [
        *statements,
        f"""CREATE TABLE IF NOT EXISTS {s} (
    key bytea PRIMARY KEY,
    handle text NOT NULL UNIQUE,
    data jsonb NOT NULL,
    user_id text,
    created float8 NOT NULL,
    last_seen float8 NOT NULL,
    expires_at float8 NOT NULL,
    absolute_expires_at float8 NOT NULL,
    auth_time float8,
    ip text,
    user_agent text,
    remembered boolean NOT NULL DEFAULT false
) WITH (fillfactor = 80)""",
        f'CREATE INDEX IF NOT EXISTS "{table}_expires_at" ON {s} (expires_at)',
        f'CREATE INDEX IF NOT EXISTS "{table}_user_created" ON {s} (user_id, created) '
        "WHERE user_id IS NOT NULL",
        f"""CREATE TABLE IF NOT EXISTS {t} (
    key bytea PRIMARY KEY,
    successor bytea NOT NULL,
    expires_at float8 NOT NULL
)""",
        f'CREATE INDEX IF NOT EXISTS "{table}_tombstones_expires_at" ON {t} (expires_at)',
        f"""CREATE TABLE IF NOT EXISTS {m} (
    name text PRIMARY KEY,
    value text NOT NULL,
    expires_at float8 NOT NULL
)""",
        f'CREATE INDEX IF NOT EXISTS "{table}_markers_expires_at" ON {m} (expires_at)',
        f"CREATE TABLE IF NOT EXISTS {v} (version integer PRIMARY KEY)",
        f"INSERT INTO {v} (version) VALUES ({SCHEMA_VERSION}) ON CONFLICT DO NOTHING",
    ]


#: The columns of each table, as :meth:`PostgresStore.check_schema` expects them.
_COLUMNS: Final = {
    "": (
        "key",
        "handle",
        "data",
        "user_id",
        "created",
        "last_seen",
        "expires_at",
        "absolute_expires_at",
        "auth_time",
        "ip",
        "user_agent",
        "remembered",
    ),
    "_tombstones": ("key", "successor", "expires_at"),
    "_markers": ("name", "value", "expires_at"),
    "_version": ("version",),
}


class _Statements:
    """Every statement of the store, built once for its schema and table names."""

    def __init__(self, schema: str, table: str) -> None:
        q = f'"{schema}".'
        s, t, m, v = (
            f'{q}"{table}{suffix}"' for suffix in ("", "_tombstones", "_markers", "_version")
        )
        self.version = v
        cols = (
            "key, handle, data, user_id, created, last_seen, expires_at, absolute_expires_at, "
            "auth_time, ip, user_agent, remembered"
        )
        live = "key = %s AND expires_at > %s"
        # A part of a WITH that nothing reads may run after the main statement: the insert reads
        # what "freed" deleted (expired holders of the key or handle), so the delete comes first.
        freed = (
            f"freed AS (DELETE FROM {s} WHERE (key = %s OR handle = %s) AND expires_at <= %s "
            "RETURNING 1)"
        )
        after_freed = "WHERE (SELECT count(*) FROM freed) >= 0"
        self.insert = (
            f"WITH {freed} INSERT INTO {s} ({cols}) SELECT %s, %s, %s::jsonb, %s, %s, %s, %s, "
            f"%s, %s, %s, %s, %s {after_freed}"
        )
        self.select = f"SELECT {cols} FROM {s} WHERE {live}"
        self.successor = f"SELECT successor FROM {t} WHERE {live}"
        # A JSON null can never be a value (values are strings), but the patch is merged with
        # || and keys removed with -, so none is needed. jsonb_typeof keeps a row whose data is
        # not an object (written by hand) from being changed into something else.
        merged = "(data || %s::jsonb) - %s::text[]"
        guard = "jsonb_typeof(data) = 'object'"
        self.apply = f"UPDATE {s} SET data = {merged} WHERE {live} AND {guard}"
        self.apply_touch = (
            f"UPDATE {s} SET data = {merged}, last_seen = %s, expires_at = %s "
            f"WHERE {live} AND {guard}"
        )
        self.apply_touch_policy = (
            f"UPDATE {s} SET data = {merged}, last_seen = %s, expires_at = %s, "
            "absolute_expires_at = coalesce(%s, absolute_expires_at), "
            f"auth_time = CASE WHEN %s THEN NULL ELSE auth_time END WHERE {live} AND {guard}"
        )
        # The tombstones from the key on, followed in the same statement as the write, so the
        # record they name cannot be renamed between finding it and writing it. Only one record
        # of a chain is live: each rename deleted the one before.
        chain = (
            f"WITH RECURSIVE chain (k, depth) AS ("
            f"SELECT successor, 1 FROM {t} WHERE key = %s AND expires_at > %s "
            f"UNION ALL SELECT t.successor, c.depth + 1 FROM {t} t JOIN chain c ON t.key = c.k "
            f"WHERE t.expires_at > %s AND c.depth < {MAX_FOLLOW}) "
        )
        self.follow = (
            f"{chain}UPDATE {s} SET data = {merged} "
            f"WHERE key IN (SELECT k FROM chain) AND expires_at > %s AND {guard}"
        )
        self.touch = f"UPDATE {s} SET last_seen = %s, expires_at = %s WHERE {live}"
        self.touch_policy = (
            f"UPDATE {s} SET last_seen = %s, expires_at = %s, "
            "absolute_expires_at = coalesce(%s, absolute_expires_at), "
            f"auth_time = CASE WHEN %s THEN NULL ELSE auth_time END WHERE {live}"
        )
        # The whole rename in one statement: every part sees the same snapshot, and the insert
        # sees the deletes of the parts before it, so the new record may keep the old handle.
        self.rename = (
            f"WITH old AS (DELETE FROM {s} WHERE {live} AND {guard} RETURNING data), "
            f"{freed}, "
            f"moved AS (INSERT INTO {s} ({cols}) SELECT %s, %s, {merged}, %s, %s, %s, %s, %s, "
            f"%s, %s, %s, %s FROM old {after_freed} RETURNING 1), "
            f"tomb AS (INSERT INTO {t} (key, successor, expires_at) SELECT %s, %s, %s "
            "FROM moved WHERE %s ON CONFLICT (key) DO UPDATE SET successor = excluded.successor, "
            "expires_at = excluded.expires_at) "
            "SELECT (SELECT count(*) FROM moved)"
        )
        self.delete = f"DELETE FROM {s} WHERE key = %s"
        self.list_user = (
            f"SELECT {cols} FROM {s} WHERE user_id = %s AND expires_at > %s ORDER BY created, key"
        )
        self.delete_user = (
            f"DELETE FROM {s} WHERE user_id = %s AND key IS DISTINCT FROM %s AND expires_at > %s"
        )
        self.delete_handle = (
            f"DELETE FROM {s} WHERE handle = %s AND expires_at > %s "
            "AND (%s::text IS NULL OR user_id = %s::text) RETURNING key, user_id"
        )
        # SKIP LOCKED: several cleanups may run at once, and rows a request is updating right
        # now are left to the next batch instead of making the cleanup wait for them.
        self.purge = [
            f"DELETE FROM {table_} WHERE {column} IN (SELECT {column} FROM {table_} "
            "WHERE expires_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED)"
            for table_, column in ((s, "key"), (t, "key"), (m, "name"))
        ]
        self.put_marker = (
            f"INSERT INTO {m} (name, value, expires_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
            "expires_at = excluded.expires_at"
        )
        # One statement, so of several concurrent claims exactly one changes a row.
        self.claim_marker = f"{self.put_marker} WHERE {m}.expires_at <= %s"
        self.get_marker = f"SELECT value FROM {m} WHERE name = %s AND expires_at > %s"
        self.count = f"SELECT count(*) FROM {s} WHERE expires_at > %s"
        self.count_expired = f"SELECT count(*) FROM {s} WHERE expires_at <= %s"
        self.user_counts = (
            f"SELECT user_id, count(*) AS n FROM {s} WHERE user_id IS NOT NULL AND expires_at > %s "
            "GROUP BY user_id ORDER BY n DESC, user_id LIMIT %s"
        )
        self.delete_all = [f"DELETE FROM {s}", f"DELETE FROM {t}", f"DELETE FROM {m}"]


def _record_params(record: SessionRecord) -> tuple[Any, ...]:
    return (
        _packed(record.key),
        _enc(record.handle),
        _patch(record.data),
        _opt(record.user_id),
        record.created,
        record.last_seen,
        record.expires_at,
        record.absolute_expires_at,
        record.auth_time,
        _opt(record.ip),
        _opt(record.user_agent),
        record.remembered,
    )


#: Every store alive in this process, so that a forked child can give up inherited connections.
_STORES: weakref.WeakSet[PostgresStore] = weakref.WeakSet()
#: Pools inherited from the parent process, kept unused for the life of the child.
_INHERITED: list[object] = []


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._disown()


os.register_at_fork(after_in_child=_after_fork_in_child)


class PostgresStore(AdminStore):
    """Keep session records in a PostgreSQL database, shared by every process and host using it.

    ::

        store = PostgresStore("postgresql://app@db.internal/app", statement_timeout=2)
        store = PostgresStore(pool=my_pool)          # an application's own psycopg_pool

    :param conninfo: a libpq connection string or ``postgresql://`` URL (``sslmode``,
        ``sslrootcert`` and every other libpq parameter work as in libpq).
    :param pool: an existing :class:`psycopg_pool.ConnectionPool` instead of ``conninfo``. The
        store does not close it, does not change its settings, and cannot make it fork-safe:
        open it after the fork. With connections not in autocommit mode each call costs a
        ``BEGIN`` and a ``COMMIT`` more.
    :param schema: the PostgreSQL schema of the tables.
    :param table: the sessions table; tombstones, markers and the schema version live in tables
        named after it (``<table>_tombstones``, ``<table>_markers``, ``<table>_version``).
    :param min_size: connections the pool keeps open (per process).
    :param max_size: connections the pool opens at most (per process).
    :param pool_timeout: seconds a call waits for a free connection before it raises
        :class:`~flask_keepsake.errors.StoreUnavailable` (503).
    :param connect_timeout: seconds to wait for a new connection (libpq ``connect_timeout``,
        whole seconds, at least 2 as libpq requires).
    :param statement_timeout: seconds the server lets one statement run, waiting for locks
        included, before it cancels it (``statement_timeout``, sent at connection start);
        0 leaves the server's setting.
    :param prepare: let psycopg prepare the statements it runs often (the default). Switch it
        off behind PgBouncer in transaction mode (before 1.21), which cannot keep prepared
        statements.
    :param create_schema: create the tables on first use if they are missing (under an advisory
        lock, so that many processes starting at once create them once). With ``False`` the
        store never runs DDL: a DBA applies what ``flask keepsake schema`` prints, and
        :meth:`check_schema` reports what is missing.
    """

    name = "postgres"

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        schema: str = "public",
        table: str = "keepsake_sessions",
        min_size: int = DEFAULT_MIN_SIZE,
        max_size: int = DEFAULT_MAX_SIZE,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        prepare: bool = True,
        create_schema: bool = True,
    ) -> None:
        pg, psycopg_pool = require_psycopg()
        if (conninfo is None) == (pool is None):
            raise ValueError("give PostgresStore either a connection string or pool=, not both")
        for what, name in (("schema", schema), ("table", table)):
            if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
                raise ValueError(
                    f"{what} must be a plain identifier (letters, digits, _; at most 50), "
                    f"not {name!r}"
                )
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError(
                f"pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1, "
                f"not min_size={min_size}, max_size={max_size}"
            )
        for what, seconds in (
            ("pool_timeout", pool_timeout),
            ("connect_timeout", connect_timeout),
            ("statement_timeout", statement_timeout),
        ):
            if not isinstance(seconds, int | float) or seconds < 0 or seconds != seconds:
                raise ValueError(f"{what} must be seconds (0 or more), not {seconds!r}")
        if pool_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("pool_timeout and connect_timeout must be above 0 seconds")
        self.schema = schema
        self.table = table
        self.min_size = min_size
        self.max_size = max_size
        self.pool_timeout = float(pool_timeout)
        self.connect_timeout = float(connect_timeout)
        self.statement_timeout = float(statement_timeout)
        self.prepare = prepare
        self.create_schema = create_schema
        self._psycopg = pg
        self._pool_module = psycopg_pool
        self._sql = _Statements(schema, table)
        self._given_pool = pool
        self._conninfo = conninfo
        self._kwargs: dict[str, Any] = {}
        if conninfo is not None:
            try:
                params = pg.conninfo.conninfo_to_dict(conninfo)
            except pg.ProgrammingError as exc:
                raise ValueError(f"not a PostgreSQL connection string: {exc}") from None
            self._where = params
            # libpq reads whole seconds and treats 1 as 2.
            self._kwargs["connect_timeout"] = max(2, round(connect_timeout))
            if statement_timeout:
                milliseconds = round(statement_timeout * 1000)
                self._kwargs["options"] = (
                    f"{params.get('options', '')} -c statement_timeout={milliseconds}"
                ).strip()
            self._kwargs.setdefault("application_name", params.get("application_name", "keepsake"))
        else:
            assert pool is not None
            self._where = pg.conninfo.conninfo_to_dict(pool.conninfo)
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = pool
        self._pid = os.getpid()
        #: The cursor the store uses on each open connection.
        self._cursors: dict[psycopg.Connection[Any], psycopg.Cursor[Any]] = {}
        #: When each connection of this store's own pool was opened (monotonic seconds).
        self._born: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self._ready = False
        self._closed = False
        self._fault: str | None = None
        _STORES.add(self)

    def __repr__(self) -> str:
        return f"<PostgresStore {self.describe()}>"

    def describe(self) -> str:
        """``postgresql://user@host:port/dbname`` and the table, never the password."""
        p = self._where
        user = f"{p['user']}@" if p.get("user") else ""
        port = f":{p['port']}" if p.get("port") else ""
        return (
            f"postgresql://{user}{p.get('host', '')}{port}/{p.get('dbname', '')} "
            f"({self.schema}.{self.table})"
        )

    @property
    def pool(self) -> ConnectionPool[Any]:
        """This process's connection pool, opened on first use."""
        pool = self._pool
        if pool is not None and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"PostgreSQL session store {self.describe()} is closed")
            if self._pid != os.getpid():
                # A fork without os.register_at_fork's hook (a child of a child made by
                # os.posix_spawn cannot be): disown what the parent opened.
                self._disown()
            if self._pool is None:
                self._pool = self._new_pool()
            return self._pool

    def _new_pool(self) -> ConnectionPool[Any]:
        kwargs: dict[str, Any] = {"autocommit": True, **self._kwargs}
        if not self.prepare:
            kwargs["prepare_threshold"] = None
        born = self._born

        def configure(conn: psycopg.Connection[Any]) -> None:
            born[conn] = time.monotonic()

        pool: ConnectionPool[Any] = self._pool_module.ConnectionPool(
            self._conninfo,
            kwargs=kwargs,
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.pool_timeout,
            configure=configure,
            name=f"keepsake-{self.table}",
            open=False,
        )
        # Not waiting: a server that is down at start-up answers 503 until it is back.
        pool.open(wait=False)
        return pool

    def _disown(self) -> None:
        """In a forked child: give up the parent's pool without touching its connections.

        The pool is kept aside, unused, for the life of the child, and a new one opens on first
        use here. Its connections are never closed from the child: libpq would say goodbye on
        the shared socket and end the parent's session (psycopg itself skips that when a
        connection is garbage-collected in another process than the one that opened it).
        """
        self._pid = os.getpid()
        self._lock = threading.Lock()
        if self._given_pool is not None:
            return
        if self._pool is not None:
            _INHERITED.append(self._pool)
            self._pool = None
        self._born = weakref.WeakKeyDictionary()
        self._cursors = {}
        self._ready = False

    def close(self) -> None:
        """Close this process's pool (a pool given to the store is left open)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None and self._given_pool is None and self._pid == os.getpid():
            pool.close()

    # Running statements.

    def _run(self, work: Callable[[psycopg.Cursor[Any]], T], *, retry: bool) -> T:
        """Run ``work`` on a pooled connection's cursor; wrap driver errors in StoreUnavailable.

        A call is sent again, never more than a few times, only where that cannot apply it
        twice or lose it:

        - once, after the pool checked its idle connections, when the server ended the
          connection itself (``57P01``, a restart or ``pg_terminate_backend``; ``57P02``, a
          crash): the statement was rolled back. With ``retry`` (the call only reads, or writes
          idempotently) also once when the connection was found dead without a word.
        - when the database refused a write as read-only on a connection opened before this
          call: connections keep ``default_transaction_read_only`` from their start, so only a
          new one tells whether the database is still read-only.
        """
        psycopg = self._psycopg
        began = time.monotonic()
        retried = False
        read_only_retries = 0
        while True:
            pool = self.pool
            try:
                conn = pool.getconn(self.pool_timeout)
            except self._pool_module.PoolTimeout as exc:
                raise self._unavailable(
                    "pool",
                    f"no connection within {self.pool_timeout:g} s (the server is unreachable "
                    "or every pooled connection is busy)",
                ) from exc
            except psycopg.Error as exc:
                raise self._unavailable("error", str(exc)) from exc
            try:
                # One cursor per connection, kept for its life: a new cursor for each call
                # cost a quarter of a load's time in psycopg's set-up alone.
                cursor = self._cursors.get(conn)
                if cursor is None:
                    cursor = self._cursor(conn)
                if conn.autocommit:
                    if not self._ready:
                        self._prepare_schema(conn)
                    result = work(cursor)
                else:
                    with conn.transaction():
                        if not self._ready:
                            self._prepare_schema(conn)
                        result = work(cursor)
            except psycopg.Error as exc:
                state = getattr(exc, "sqlstate", None)
                broken = conn.broken or state in _ENDED
                opened_before = self._born.get(conn, 0.0) < began
                if state == _READ_ONLY or broken:
                    conn.close()
                pool.putconn(conn)
                if isinstance(exc, psycopg.errors.UniqueViolation):
                    raise ValueError(
                        "a live session record with this key or handle already exists"
                    ) from exc
                if state == _READ_ONLY and opened_before and read_only_retries <= self.max_size:
                    read_only_retries += 1
                    continue
                if broken and not retried and (state in _ENDED or retry):
                    retried = True
                    if state in _ENDED:
                        # The server is up and ended its sessions: the pool's other idle
                        # connections are most likely ended too. (Not after a silent break: on a
                        # network path that went dark, checking them would wait on each.)
                        pool.check()
                    continue
                raise self._unavailable(state or "error", str(exc).strip()) from exc
            except BaseException:
                if not conn.closed and conn.info.transaction_status != 0:
                    conn.close()
                pool.putconn(conn)
                raise
            pool.putconn(conn)
            if self._fault is not None:
                self._recovered()
            return result

    def _cursor(self, conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
        """A new cursor for ``conn``, kept; those of connections closed since are dropped (a
        cursor holds its connection, which would otherwise never be freed)."""
        with self._lock:
            cursors = {c: cursor for c, cursor in self._cursors.items() if not c.closed}
            cursors[conn] = cursor = conn.cursor()
            self._cursors = cursors
        return cursor

    def _unavailable(self, fault: str, message: str) -> StoreUnavailable:
        text = f"PostgreSQL session store {self.describe()}: {message}"
        new, self._fault = self._fault != fault, fault
        if new:
            logger.error("%s.", text)
        return StoreUnavailable(text)

    def _recovered(self) -> None:
        if self._fault is not None:
            self._fault = None
            logger.warning("PostgreSQL session store %s: usable again.", self.describe())

    # Schema.

    def schema_sql(self) -> str:
        """The DDL this store needs, as a script for a DBA (``flask keepsake schema``)."""
        return ";\n".join(_schema_statements(self.schema, self.table)) + ";\n"

    def grants_sql(self, role: str) -> str:
        """The GRANTs a least-privilege ``role`` needs to run the store (no DDL, no TRUNCATE)."""
        if not _IDENTIFIER.fullmatch(role):
            raise ValueError(f"role must be a plain identifier (letters, digits, _), not {role!r}")
        q = f'"{self.schema}".'
        tables = ", ".join(
            f'{q}"{self.table}{suffix}"' for suffix in ("", "_tombstones", "_markers")
        )
        return (
            f'GRANT USAGE ON SCHEMA "{self.schema}" TO "{role}";\n'
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO "{role}";\n'
            f'GRANT SELECT ON {q}"{self.table}_version" TO "{role}";\n'
        )

    def _prepare_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create the tables on first use (or check them, with ``create_schema`` off)."""
        if self.create_schema:
            missing = self._missing(conn)
            if missing:
                # One creator at a time across every process; the lock ends with the
                # transaction. The key is derived from the table's name.
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        (f"keepsake:{self.schema}.{self.table}",),
                    )
                    for statement in _schema_statements(self.schema, self.table):
                        conn.execute(statement)
                logger.info("PostgreSQL session store %s: created its tables.", self.describe())
        else:
            missing = self._missing(conn)
            if missing:
                raise self._unavailable("schema", self._lacks(missing))
        self._check_version(conn)
        self._ready = True

    def _missing(self, conn: psycopg.Connection[Any]) -> list[str]:
        """What the schema lacks: tables and columns, by name."""
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = ANY(%s)",
            (self.schema, [self.table + suffix for suffix in _COLUMNS]),
        ).fetchall()
        present: dict[str, set[str]] = {}
        for table_name, column in rows:
            present.setdefault(table_name, set()).add(column)
        missing = []
        for suffix, columns in _COLUMNS.items():
            name = self.table + suffix
            if name not in present:
                missing.append(f"table {self.schema}.{name}")
                continue
            missing.extend(
                f"column {self.schema}.{name}.{column}"
                for column in columns
                if column not in present[name]
            )
        return missing

    def missing_message(self, missing: list[str]) -> str:
        """What to tell the operator about ``missing`` (from :meth:`check_schema`)."""
        return f"PostgreSQL session store {self.describe()}: {self._lacks(missing)}"

    def _lacks(self, missing: list[str]) -> str:
        return (
            f"the schema lacks {', '.join(missing)}; apply the DDL that `flask keepsake schema` "
            "prints (or let the store create it: leave create_schema on)"
        )

    def _check_version(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute(f"SELECT max(version) FROM {self._sql.version}").fetchone()
        version = None if row is None else row[0]
        if version is None:
            raise self._unavailable(
                "schema",
                f"no schema version is recorded in {self._sql.version}; apply the DDL that "
                "`flask keepsake schema` prints",
            )
        if version > SCHEMA_VERSION:
            raise self._unavailable(
                "schema",
                f"the schema is version {version}, newer than this Keepsake knows "
                f"({SCHEMA_VERSION}); upgrade flask-keepsake",
            )

    def check_schema(self) -> list[str]:
        """Connect once, outside the pool, and return what the schema lacks (empty: all there).

        Raise :class:`~flask_keepsake.errors.StoreUnavailable` if the server cannot be reached.
        Used at start-up when ``create_schema`` is off.
        """
        psycopg = self._psycopg
        try:
            if self._given_pool is not None:
                with self._given_pool.connection(timeout=self.pool_timeout) as conn:
                    return self._missing(conn)
            # Its own connection, closed before returning: a pool opened here would cross the
            # fork of a server that loads the app before forking (gunicorn --preload).
            with psycopg.connect(self._conninfo, **self._kwargs, autocommit=True) as conn:
                return self._missing(conn)
        except (psycopg.Error, self._pool_module.PoolTimeout) as exc:
            raise StoreUnavailable(
                f"PostgreSQL session store {self.describe()}: {str(exc).strip()}"
            ) from exc

    # The contract.

    def create(self, record: SessionRecord) -> None:
        """Store a new record in one statement; see :meth:`Store.create`.

        An expired record holding the key or handle is deleted by the same statement.
        """
        params = _record_params(record)
        statement = self._sql.insert
        self._run(
            lambda cur: cur.execute(statement, (params[0], params[1], record.created, *params)),
            retry=False,
        )

    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        """Return the live record in one SELECT; see :meth:`Store.load`.

        Only a miss costs a second, small SELECT, to tell a rotation tombstone from nothing.
        """
        packed = _packed(key)
        sql = self._sql

        def work(cur: psycopg.Cursor[Any]) -> tuple[Any, ...] | Rotated | None:
            row: tuple[Any, ...] | None = cur.execute(sql.select, (packed, now)).fetchone()
            if row is None and cur.execute(sql.successor, (packed, now)).fetchone() is not None:
                return ROTATED
            return row

        row = self._run(work, retry=True)
        if row is None or isinstance(row, Rotated):
            return row
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

        Only when no live record matched does a second statement follow the tombstones and
        write the record they name.
        """
        patch = _patch(changed)
        names = _names(deleted)
        target = _packed(key)
        sql = self._sql
        statement: str
        params: tuple[object, ...]
        if touch is None:
            statement, params = sql.apply, (patch, names, target, now)
        elif touch.absolute_expires_at is None and not touch.stale:
            statement = sql.apply_touch
            params = (patch, names, touch.last_seen, touch.expires_at, target, now)
        else:
            statement = sql.apply_touch_policy
            params = (
                patch,
                names,
                touch.last_seen,
                touch.expires_at,
                touch.absolute_expires_at,
                touch.stale,
                target,
                now,
            )

        def work(cur: psycopg.Cursor[Any]) -> Outcome:
            if cur.execute(statement, params).rowcount:
                return Outcome.DONE
            # The touch was for the old key; the new record's expiry is newer than it.
            cursor = cur.execute(sql.follow, (target, now, now, patch, names, now))
            return Outcome.FOLLOWED if cursor.rowcount else Outcome.GONE

        return self._run(work, retry=True)

    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        """Refresh ``last_seen`` and ``expires_at``; see :meth:`Store.touch`."""
        packed = _packed(key)
        sql = self._sql
        statement: str
        params: tuple[object, ...]
        if touch.absolute_expires_at is None and not touch.stale:
            statement, params = sql.touch, (touch.last_seen, touch.expires_at, packed, now)
        else:
            statement = sql.touch_policy
            params = (
                touch.last_seen,
                touch.expires_at,
                touch.absolute_expires_at,
                touch.stale,
                packed,
                now,
            )

        def work(cur: psycopg.Cursor[Any]) -> Outcome:
            if cur.execute(statement, params).rowcount:
                return Outcome.DONE
            followed = cur.execute(sql.successor, (packed, now)).fetchone() is not None
            return Outcome.FOLLOWED if followed else Outcome.GONE

        return self._run(work, retry=True)

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
        """Move the live record under ``old_key`` to ``record.key`` in one statement.

        See :meth:`Store.rename`. The old row is deleted and its data, as it is at that instant,
        merged with the delta into the new row, so a write that reached the old record just
        before is carried over. Raise ``ValueError``, changing nothing, if another live record
        already holds ``record.key`` or ``record.handle``.
        """
        p = _record_params(record)
        old = _packed(old_key)
        patch = _patch(changed or {})
        names = _names(deleted)
        tombstone = grace > 0 and p[0] != old
        params = (
            *(old, now),
            *(p[0], p[1], now),
            *(p[0], p[1], patch, names, *p[3:]),
            *(old, p[0], now + grace, tombstone),
        )
        sql = self._sql

        def work(cur: psycopg.Cursor[Any]) -> Outcome:
            row = cur.execute(sql.rename, params).fetchone()
            if row is not None and row[0]:
                return Outcome.DONE
            # A new snapshot: a rename that committed while this one waited for the row shows.
            rotated = cur.execute(sql.successor, (old, now)).fetchone() is not None
            return Outcome.ROTATED if rotated else Outcome.GONE

        return self._run(work, retry=False)

    def delete(self, key: str) -> bool:
        """Delete the record under ``key``, live or expired; see :meth:`Store.delete`."""
        packed = _packed(key)
        statement = self._sql.delete
        count: int = self._run(lambda cur: cur.execute(statement, (packed,)).rowcount, retry=False)
        return count > 0

    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        """Return the user's live records, oldest first; see :meth:`AdminStore.list_user`."""
        statement = self._sql.list_user
        user = _enc(user_id)
        rows = self._run(lambda cur: cur.execute(statement, (user, now)).fetchall(), retry=True)
        return [record for row in rows if (record := self._record(row)) is not None]

    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        """Delete the user's live records except ``except_key`` in one statement."""
        statement = self._sql.delete_user
        params = (_enc(user_id), None if except_key is None else _packed(except_key), now)
        count: int = self._run(lambda cur: cur.execute(statement, params).rowcount, retry=True)
        return count

    def delete_handle(
        self, handle: str, now: float, *, user_id: str | None = None
    ) -> tuple[str, str | None] | None:
        """Delete the live record named ``handle`` in one statement."""
        statement = self._sql.delete_handle
        user = _opt(user_id)
        params = (_enc(handle), now, user, user)
        row = self._run(lambda cur: cur.execute(statement, params).fetchone(), retry=False)
        if row is None:
            return None
        return _unpacked(row[0]), _opt_dec(row[1])

    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        """Delete up to ``batch_size`` expired records, then tombstones and markers.

        One short statement per table, each skipping rows other transactions hold locked.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        statements = self._sql.purge

        def work(cur: psycopg.Cursor[Any]) -> int:
            purged = 0
            for statement in statements:
                if purged >= batch_size:
                    break
                purged += cur.execute(statement, (now, batch_size - purged)).rowcount
            return purged

        return self._run(work, retry=True)

    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        """Store a marker in one statement; see :meth:`Store.put_marker`."""
        sql = self._sql
        if replace:
            params: tuple[object, ...] = (_enc(name), _enc(value), expires_at)
            self._run(lambda cur: cur.execute(sql.put_marker, params), retry=True)
            return True
        params = (_enc(name), _enc(value), expires_at, now)
        count: int = self._run(
            lambda cur: cur.execute(sql.claim_marker, params).rowcount, retry=False
        )
        return count > 0

    def get_marker(self, name: str, now: float) -> str | None:
        """Return a live marker's value; see :meth:`Store.get_marker`."""
        statement = self._sql.get_marker
        params = (_enc(name), now)
        row = self._run(lambda cur: cur.execute(statement, params).fetchone(), retry=True)
        if row is None:
            return None
        try:
            return _dec(row[0])
        except (ValueError, TypeError):
            return None

    def count(self, now: float) -> int:
        """Return the number of live records."""
        return self._count(self._sql.count, now)

    def count_expired(self, now: float) -> int:
        """Return the number of expired records waiting for :meth:`purge_expired`."""
        return self._count(self._sql.count_expired, now)

    def _count(self, statement: str, now: float) -> int:
        row = self._run(lambda cur: cur.execute(statement, (now,)).fetchone(), retry=True)
        return 0 if row is None else int(row[0])

    def user_counts(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Return the users with the most live records; see :meth:`AdminStore.user_counts`."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        statement = self._sql.user_counts
        rows = self._run(lambda cur: cur.execute(statement, (now, limit)).fetchall(), retry=True)
        counts = []
        for user, n in rows:
            try:
                counts.append((_dec(user), int(n)))
            except (ValueError, TypeError):
                continue
        return counts

    def delete_all(self) -> int:
        """Delete every record, tombstone and marker in one transaction."""
        statements = self._sql.delete_all

        def work(cur: psycopg.Cursor[Any]) -> int:
            with cur.connection.transaction():
                deleted: int = cur.execute(statements[0]).rowcount
                for statement in statements[1:]:
                    cur.execute(statement)
            return deleted

        return self._run(work, retry=True)

    # Rows.

    def _record(self, row: tuple[Any, ...]) -> SessionRecord | None:
        """Build the record of a session row, or log it as unreadable and return None."""
        key = row[0]
        handle = row[1]
        try:
            data = row[2]
            if type(data) is not dict:
                raise TypeError(f"its data is a JSON {type(data).__name__}, not an object")
            decoded: dict[str, str] = {}
            for name, value in data.items():
                if type(value) is not str:
                    raise TypeError("its data holds a value that is not a string")
                if name.startswith(_ESC) or value.startswith(_ESC):
                    decoded[_dec(name)] = _dec(value)
                else:
                    decoded[name] = value
            handle = _dec(handle)
            return SessionRecord(
                _unpacked(key),
                handle,
                decoded,
                _opt_dec(row[3]),
                row[4],
                row[5],
                row[6],
                row[7],
                row[8],
                _opt_dec(row[9]),
                _opt_dec(row[10]),
                row[11] is True,
            )
        except (ValueError, TypeError, RecursionError) as exc:
            self.log_unreadable(
                _unpacked(bytes(key)), exc, handle if isinstance(handle, str) else None
            )
            return None
