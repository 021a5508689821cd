"""What only the PostgreSQL store does: its SQL, schema, URL, pool, and input PostgreSQL refuses."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, session
from psycopg_pool import ConnectionPool

from flask_keepsake import ConfigError, Keepsake, StoreUnavailable
from flask_keepsake.stores import MemoryStore, Store, Touch
from flask_keepsake.stores.postgres import SCHEMA_VERSION, PostgresStore
from flask_keepsake.testing.servers import PostgresServer

from ..store_registry import POSTGRES_DB
from ..stores.store_helpers import NOW, TTL, key_for, make_record
from .conftest import COOKIE, SLACK, AppOnStore, stored_rows

# -- statements --------------------------------------------------------------------------------


def test_reads_never_write(
    store: PostgresStore, server: PostgresServer, make_app: AppOnStore
) -> None:
    """Read-only requests within the touch interval leave the row as it was (same xmin)."""
    client = make_app(store).test_client()
    client.post("/set/a", data="1")
    before = stored_rows(server)
    for _ in range(5):
        assert client.get("/get/a").text == "'1'"
    assert stored_rows(server) == before


def test_a_delta_is_one_update_that_merges_keys(
    store: PostgresStore, server: PostgresServer
) -> None:
    """apply writes the row once; keys outside the delta keep what another writer stored."""
    record = make_record(data={"a": "1", "b": "2"})
    store.create(record)
    other = PostgresStore(server.url_of(POSTGRES_DB), max_size=1)
    try:
        assert other.apply(record.key, {"b": "20"}, (), NOW)
        assert store.apply(record.key, {"c": "3"}, ["a"], NOW)
    finally:
        other.close()
    ((_, data, _),) = stored_rows(server)
    assert data == {"b": "20", "c": "3"}


def test_overlapping_requests_keep_every_key(store: PostgresStore, make_app: AppOnStore) -> None:
    """Eight threads writing different keys of one session through the app lose none."""
    app = make_app(store)
    first = app.test_client()
    first.post("/set/seed", data="0")
    cookie = first.get_cookie(COOKIE)
    assert cookie is not None
    errors: list[BaseException] = []

    def write(index: int) -> None:
        client = app.test_client()
        client.set_cookie(COOKIE, cookie.value, domain=cookie.domain or "localhost")
        try:
            for round_ in range(10):
                response = client.post(f"/set/k{index}", data=str(round_))
                assert response.status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert first.get("/keys").text == ",".join(sorted(["seed", *(f"k{i}" for i in range(8))]))
    assert all(first.get(f"/get/k{i}").text == "'9'" for i in range(8))


def test_purge_deletes_in_batches_and_skips_locked_rows(
    store: PostgresStore, server: PostgresServer
) -> None:
    """purge_expired deletes batch by batch and leaves a row another transaction holds."""
    for i in range(25):
        store.create(make_record(f"r{i}", created=NOW - 2 * TTL, expires_at=NOW - 1))
    locked = key_for("r0")
    import psycopg

    with psycopg.connect(server.url_of(POSTGRES_DB)) as holder:
        holder.execute(
            "SELECT 1 FROM keepsake_sessions WHERE key = %s FOR UPDATE", (bytes.fromhex(locked),)
        )
        started = time.monotonic()
        counts = [store.purge_expired(NOW, 10) for _ in range(4)]
        assert time.monotonic() - started < 2
        assert counts == [10, 10, 4, 0]
        holder.rollback()
    assert store.purge_expired(NOW, 10) == 1


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["a\x00b", "\x00", "\ud800", "x\udfffy", "\x01starts with the escape", "\x01", "é\x00\ud83d"],
    ids=["nul", "only-nul", "lone-high", "lone-low", "escape-char", "only-escape", "mixed"],
)
def test_texts_postgresql_cannot_hold_round_trip(store: PostgresStore, text: str) -> None:
    """NUL and lone surrogates, in keys, values and text fields, come back exactly."""
    record = make_record(
        data={text: text, "plain": text}, user_id=text, user_agent=text, ip=text, handle=text
    )
    store.create(record)
    assert store.load(record.key, NOW) == record
    assert store.apply(record.key, {f"{text}2": text}, [text], NOW)
    loaded = store.load(record.key, NOW)
    assert loaded is not None
    assert loaded.data == {"plain": text, f"{text}2": text}
    assert [r.key for r in store.list_user(text, NOW)] == [record.key]
    assert store.user_counts(NOW, 5) == [(text, 1)]
    store.put_marker(text, text, NOW + TTL, NOW)
    assert store.get_marker(text, NOW) == text
    assert store.delete_handle(text, NOW, user_id=text) == (record.key, text)


VALUES: dict[str, Any] = {
    "nul": "a\x00b",
    "lone-surrogate": "\ud800",
    "huge-int": 2**200,
    "too-long-int": 10 ** (sys.get_int_max_str_digits() + 1),
    "one-megabyte": "x" * 1_000_000,
    "nested-nul": {"k\x00": ["\x00", b"\x00"]},
}


def _outcome(app: Flask, value: Any) -> tuple[object, ...]:
    client = app.test_client()
    try:
        status = client.post("/bad").status_code
    except Exception as exc:
        return ("raised", type(exc).__name__)
    return status, client.get("/bad").text


@pytest.mark.parametrize("name", list(VALUES))
def test_bad_values_behave_as_on_the_memory_store(store: PostgresStore, name: str) -> None:
    """Each value round-trips or is refused at save with the same error as on MemoryStore."""
    value = VALUES[name]
    outcomes = []
    for target in (MemoryStore(), store):
        app = Flask(__name__)
        app.config.update(TESTING=True, KEEPSAKE_MAX_SESSION_BYTES=2_000_000)
        Keepsake(app, store=target)

        @app.route("/bad", methods=["GET", "POST"])
        def bad() -> str:
            if "v" not in session:
                session["v"] = value
                return "set"
            return repr(session["v"] == value)

        outcomes.append(_outcome(app, value))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    "cookie",
    [
        "'; DROP TABLE keepsake_sessions; --",
        "x' OR '1'='1",
        "\\x00" * 20,
        "A" * 43,
        "%00%27%22",
        "a" * 4000,
    ],
)
def test_hostile_cookies_reach_no_sql(
    store: PostgresStore, server: PostgresServer, make_app: AppOnStore, cookie: str
) -> None:
    """A hostile cookie gives a fresh session and a 200; the table and its rows are intact."""
    client = make_app(store).test_client()
    client.post("/set/a", data="1")
    before = stored_rows(server)
    other = make_app(store).test_client()
    other.set_cookie(COOKIE, cookie)
    response = other.get("/get/a")
    assert response.status_code == 200
    assert response.text == "None"
    assert stored_rows(server) == before


def test_hostile_handles_and_user_ids_are_bound_parameters(store: PostgresStore) -> None:
    """Quotes and SQL in a handle or user id match nothing and delete nothing."""
    store.create(make_record("a", user_id="u"))
    for text in ("' OR '1'='1", "u' --", "%", "_"):
        assert store.delete_handle(text, NOW) is None
        assert store.delete_user(text, NOW) == 0
        assert store.list_user(text, NOW) == []
    assert store.count(NOW) == 1


# -- schema ------------------------------------------------------------------------------------


def test_schema_version_is_recorded(store: PostgresStore, server: PostgresServer) -> None:
    """First use creates the tables and records the schema version."""
    store.count(NOW)
    rows = server.execute("SELECT version FROM keepsake_sessions_version", dbname=POSTGRES_DB)
    assert rows == [(SCHEMA_VERSION,)]


def test_concurrent_first_use_creates_the_schema_once(server: PostgresServer) -> None:
    """Six stores starting at once on an empty schema all work; one version row."""
    server.execute("DROP SCHEMA IF EXISTS race CASCADE", dbname=POSTGRES_DB)
    stores = [
        PostgresStore(server.url_of(POSTGRES_DB), schema="race", max_size=1) for _ in range(6)
    ]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def first_use(index: int) -> None:
        try:
            barrier.wait()
            stores[index].create(make_record(f"r{index}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors
        assert stores[0].count(NOW) == 6
        assert server.execute(
            "SELECT count(*) FROM race.keepsake_sessions_version", dbname=POSTGRES_DB
        ) == [(1,)]
    finally:
        for store in stores:
            store.close()
        server.execute("DROP SCHEMA race CASCADE", dbname=POSTGRES_DB)


def test_missing_schema_fails_at_start_up_naming_what_is_missing(server: PostgresServer) -> None:
    """With create_schema=false an empty schema is refused at init_app, naming the tables."""
    server.execute("DROP SCHEMA IF EXISTS dba CASCADE", dbname=POSTGRES_DB)
    server.execute("CREATE SCHEMA dba", dbname=POSTGRES_DB)
    try:
        app = Flask(__name__)
        app.config["KEEPSAKE_STORE"] = (
            server.url_of(POSTGRES_DB) + "?schema=dba&create_schema=false"
        )
        with pytest.raises(ConfigError, match="KEEPSAKE_STORE") as caught:
            Keepsake(app)
        assert "table dba.keepsake_sessions" in str(caught.value)
        assert "table dba.keepsake_sessions_markers" in str(caught.value)
        assert "flask keepsake schema" in str(caught.value)
    finally:
        server.execute("DROP SCHEMA dba CASCADE", dbname=POSTGRES_DB)


def test_an_unreachable_database_at_start_up_defers_the_schema_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """create_schema=false with the database down: the app starts, a warning says so."""
    from flask_keepsake.testing.servers import free_port

    app = Flask(__name__)
    app.config["KEEPSAKE_STORE"] = (
        f"postgresql://postgres@127.0.0.1:{free_port()}/app?create_schema=false&connect_timeout=2"
    )
    with caplog.at_level(logging.WARNING, logger="flask_keepsake"):
        keepsake = Keepsake(app)
    assert any("checked on first use" in r.getMessage() for r in caplog.records)
    with app.app_context():
        keepsake.store.close()


def test_the_printed_schema_and_grants_are_enough_for_a_least_privilege_role(
    server: PostgresServer,
) -> None:
    """A DBA applies `flask keepsake schema --grant`; a role with only those rights runs it all."""
    server.execute("DROP SCHEMA IF EXISTS dba CASCADE", dbname=POSTGRES_DB)
    server.execute("DROP ROLE IF EXISTS keepsake_app")
    server.execute("CREATE SCHEMA dba", dbname=POSTGRES_DB)
    server.execute("CREATE ROLE keepsake_app LOGIN")
    try:
        app = Flask(__name__)
        app.config["KEEPSAKE_STORE"] = server.url_of(POSTGRES_DB) + "?schema=dba"
        Keepsake(app)
        result = app.test_cli_runner().invoke(
            args=["keepsake", "schema", "--grant", "keepsake_app"]
        )
        assert result.exit_code == 0, result.output
        assert "CREATE TABLE IF NOT EXISTS" in result.output
        assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON "dba"."keepsake_sessions"' in result.output
        for statement in result.output.split(";\n"):
            if statement.strip() and not statement.strip().startswith("--"):
                server.execute(statement, dbname=POSTGRES_DB)
            elif "\n" in statement.strip():
                server.execute(statement.split("\n", 1)[1], dbname=POSTGRES_DB)
        url = f"postgresql://keepsake_app@127.0.0.1:{server.port}/{POSTGRES_DB}"
        store = PostgresStore(url, schema="dba", create_schema=False)
        try:
            assert store.check_schema() == []
            record = make_record("a", user_id="u")
            store.create(record)
            assert store.apply(record.key, {"x": "1"}, (), NOW)
            renamed = make_record("b", user_id="u", handle=record.handle)
            assert store.rename(record.key, renamed, NOW, grace=5)
            store.put_marker("m", "1", NOW + 1, NOW)
            assert store.purge_expired(NOW + 10) == 2  # the marker and the tombstone
            assert store.delete_user("u", NOW) == 1
            assert store.delete_all() == 0
        finally:
            store.close()
    finally:
        server.execute("DROP SCHEMA dba CASCADE", dbname=POSTGRES_DB)
        server.execute("DROP OWNED BY keepsake_app", dbname=POSTGRES_DB)
        server.execute("DROP ROLE keepsake_app")


def test_schema_command_refuses_other_stores() -> None:
    """`flask keepsake schema` on a non-PostgreSQL store explains itself, exit status 1."""
    app = Flask(__name__)
    Keepsake(app, store=MemoryStore())
    result = app.test_cli_runner().invoke(args=["keepsake", "schema"])
    assert result.exit_code == 1
    assert "postgresql://" in result.output


def test_a_newer_schema_version_is_refused(server: PostgresServer) -> None:
    """A schema recorded by a newer Keepsake answers 503 with a message to upgrade."""
    server.execute("DROP SCHEMA IF EXISTS future CASCADE", dbname=POSTGRES_DB)
    store = PostgresStore(server.url_of(POSTGRES_DB), schema="future")
    try:
        store.count(NOW)
        server.execute(
            "INSERT INTO future.keepsake_sessions_version VALUES (99)", dbname=POSTGRES_DB
        )
        newer = PostgresStore(server.url_of(POSTGRES_DB), schema="future")
        with pytest.raises(StoreUnavailable, match="upgrade flask-keepsake"):
            newer.count(NOW)
        newer.close()
    finally:
        store.close()
        server.execute("DROP SCHEMA future CASCADE", dbname=POSTGRES_DB)


# -- URL, pool, construction ---------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_url_options_reach_the_store(scheme: str) -> None:
    """Both schemes build a PostgresStore with every option read from the URL."""
    app = Flask(__name__)
    app.config["KEEPSAKE_STORE"] = (
        f"{scheme}://app:secret@db.invalid:5433/sessions?min_size=0&max_size=3&pool_timeout=1.5"
        "&connect_timeout=3&statement_timeout=0.25&schema=s1&table=t1&prepare=false"
        "&sslmode=verify-full&sslrootcert=/etc/ca.pem"
    )
    keepsake = Keepsake(app)
    with app.app_context():
        store = keepsake.store
    assert isinstance(store, PostgresStore)
    assert (store.min_size, store.max_size, store.pool_timeout) == (0, 3, 1.5)
    assert (store.connect_timeout, store.statement_timeout) == (3.0, 0.25)
    assert (store.schema, store.table, store.prepare) == ("s1", "t1", False)
    assert "secret" not in store.describe()
    assert store.describe() == "postgresql://app@db.invalid:5433/sessions (s1.t1)"
    store.close()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("pool=3", "unknown PostgreSQL option 'pool'"),
        ("max_size=lots", "max_size='lots'"),
        ("sslmode=maybe", "sslmode must be one of"),
        ("table=a;drop", "plain identifier"),
        ("min_size=5&max_size=2", "pool sizes"),
        ("prepare=perhaps", "prepare must be true or false"),
    ],
)
def test_bad_url_options_fail_at_start_up(query: str, message: str) -> None:
    """Unknown options and bad values raise ConfigError naming KEEPSAKE_STORE at init_app."""
    app = Flask(__name__)
    app.config["KEEPSAKE_STORE"] = f"postgresql://db.invalid/app?{query}"
    with pytest.raises(ConfigError, match="KEEPSAKE_STORE") as caught:
        Keepsake(app)
    assert message in str(caught.value)


def test_given_pool_is_used_and_left_open(server: PostgresServer) -> None:
    """PostgresStore(pool=...) works on an application's pool, autocommit or not, and leaves
    it open."""
    for autocommit in (True, False):
        pool: ConnectionPool[Any] = ConnectionPool(
            server.url_of(POSTGRES_DB),
            kwargs={"autocommit": autocommit},
            min_size=1,
            max_size=2,
            open=True,
        )
        try:
            store: Store = PostgresStore(pool=pool)
            record = make_record(f"pool-{autocommit}")
            store.create(record)
            assert store.apply(record.key, {"x": "1"}, (), NOW)
            loaded = store.load(record.key, NOW)
            assert loaded is not None
            assert loaded.data["x"] == "1"
            store.close()
            with pool.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            pool.close()


def test_pool_exhausted_answers_503_within_the_pool_timeout(
    server: PostgresServer, make_app: AppOnStore
) -> None:
    """Every connection busy: 503 + Retry-After after pool_timeout; served again once freed."""
    store = PostgresStore(server.url_of(POSTGRES_DB), min_size=1, max_size=1, pool_timeout=0.3)
    try:
        client = make_app(store).test_client()
        client.post("/set/a", data="1")
        with store.pool.connection():
            started = time.monotonic()
            response = client.get("/get/a")
            elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        assert 0.3 <= elapsed < 0.3 + SLACK
        assert client.get("/get/a").text == "'1'"
    finally:
        store.close()


def test_the_pool_opens_on_first_use_not_at_construction(server: PostgresServer) -> None:
    """Building a store opens no connection (so none can cross a fork)."""

    def keepsake_backends() -> int:
        rows = server.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'keepsake-lazy'"
        )
        return int(rows[0][0])

    store = PostgresStore(server.url_of(POSTGRES_DB) + "?application_name=keepsake-lazy")
    try:
        assert keepsake_backends() == 0
        store.count(NOW)
        assert keepsake_backends() >= 1
    finally:
        store.close()
    assert keepsake_backends() == 0


def test_flask_keepsake_imports_without_psycopg() -> None:
    """psycopg is optional: flask_keepsake and its stores import without it; the URL says what
    to install."""
    code = (
        "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
        "import flask_keepsake, flask_keepsake.stores\n"
        "from flask import Flask\n"
        "app = Flask(__name__); app.config['KEEPSAKE_STORE'] = 'postgresql://db/app'\n"
        "try:\n"
        "    flask_keepsake.Keepsake(app)\n"
        "except flask_keepsake.ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "KEEPSAKE_STORE" in done.stdout
    assert "flask-keepsake[postgres]" in done.stdout


# -- round trips ---------------------------------------------------------------------------------


class RoundTrips:
    """Count the round trips of a one-connection store: libpq's protocol trace, one ``Sync``
    message from the client per round trip."""

    def __init__(self, store: PostgresStore, path: Any) -> None:
        self.store = store
        self.path = path

    def __call__(self, call: Any, *args: Any, **kwargs: Any) -> int:
        from psycopg import pq

        with self.path.open("w") as trace:
            with self.store.pool.connection() as conn:
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            call(*args, **kwargs)
            with self.store.pool.connection() as conn:
                conn.pgconn.untrace()
        lines = self.path.read_text().splitlines()
        return sum(1 for line in lines if line.startswith("F") and "\tSync" in line)


@pytest.fixture
def round_trips(url: str, tmp_path: Any) -> Iterator[RoundTrips]:
    """A counter of the round trips each call of a one-connection store makes."""
    store = PostgresStore(url, min_size=1, max_size=1)
    store.count(NOW)
    yield RoundTrips(store, tmp_path / "trace.txt")
    store.close()


def test_every_change_is_one_round_trip(round_trips: RoundTrips) -> None:
    """Load, create, delta, touch, rename, delete, revoke by user and by handle, markers: one
    round trip each; only a miss or a tombstone costs a second."""
    store = round_trips.store
    a, b = make_record("a", user_id="u"), make_record("b", user_id="u", handle="h-b")
    touch = Touch(NOW + 1, NOW + TTL)
    assert round_trips(store.create, a) == 1
    assert round_trips(store.load, a.key, NOW) == 1
    assert round_trips(store.load, key_for("absent"), NOW) == 2
    assert round_trips(store.apply, a.key, {"x": "1"}, ["greeting"], NOW) == 1
    assert round_trips(store.apply, a.key, {"x": "2"}, (), NOW, touch) == 1
    assert round_trips(store.touch, a.key, touch, NOW) == 1
    assert round_trips(store.rename, a.key, b, NOW, changed={"y": "1"}, grace=60) == 1
    assert round_trips(store.apply, a.key, {"z": "1"}, (), NOW) == 2  # follows the tombstone
    c = make_record("c", user_id="u")
    store.create(c)
    assert round_trips(store.delete_handle, "h-b", NOW, user_id="u") == 1
    assert round_trips(store.delete_user, "u", NOW) == 1
    assert round_trips(store.delete, c.key) == 1
    assert round_trips(store.put_marker, "m", "1", NOW + 1, NOW) == 1
    assert round_trips(store.put_marker, "n", "1", NOW + 1, NOW, replace=False) == 1
    assert round_trips(store.get_marker, "m", NOW) == 1
