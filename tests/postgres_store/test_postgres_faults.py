"""Faults of a real PostgreSQL server under a Flask app, with requests in flight.

The tests share one server of this module (``module_server``), which they stop, restart, lock,
make read-only and whose connections they terminate; the app's store has pool and statement
timeouts of :data:`~tests.postgres_store.conftest.TIMEOUT`. Every failure must be a 503 with
``Retry-After`` and no cookie, in time; never a 500 or a hang; the store recovers by itself, and
every write that was acknowledged is still there afterwards.
"""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_keepsake import tokens
from flask_keepsake.stores.postgres import PostgresStore
from flask_keepsake.testing.servers import PostgresServer, free_port

from .conftest import COOKIE, SLACK, TIMEOUT, AppOnStore

pytestmark = pytest.mark.slow

DB = "faults"


def make_store(url: str) -> PostgresStore:
    """A store with short pool and statement timeouts, as the fault tests need."""
    return PostgresStore(
        url, min_size=2, max_size=4, pool_timeout=TIMEOUT, statement_timeout=TIMEOUT
    )


@pytest.fixture
def store(own_server: PostgresServer) -> Iterator[PostgresStore]:
    """A store on the module's own server."""
    instance = make_store(own_server.url_of(DB))
    yield instance
    instance.close()


@pytest.fixture
def app(store: PostgresStore, make_app: AppOnStore) -> Flask:
    """The test app on this test's store."""
    return make_app(store)


def assert_unavailable(response: Any, elapsed: float, limit: float = TIMEOUT) -> None:
    """A 503 with Retry-After, no cookie, no stack trace, in time."""
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "7"
    assert response.headers.getlist("Set-Cookie") == []
    assert b"Traceback" not in response.data
    assert elapsed < limit + SLACK


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Run ``call`` and return its result and how long it took."""
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


def terminate_store_backends(server: PostgresServer) -> int:
    """``pg_terminate_backend`` every connection of the store (application_name keepsake)."""
    rows = server.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'keepsake' AND pid <> pg_backend_pid()"
    )
    return int(rows[0][0])


def eventually(check: Any, seconds: float = 10.0) -> Any:
    """Call ``check`` until it returns something true, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# -- one fault, one request ----------------------------------------------------------------------


def test_unreachable_server_answers_503_within_the_pool_timeout(make_app: AppOnStore) -> None:
    """Nothing listens at the URL: reads and new sessions get 503 + Retry-After, fast."""
    store = make_store(f"postgresql://postgres@127.0.0.1:{free_port()}/{DB}")
    try:
        client = make_app(store).test_client()
        response, elapsed = timed(client.post, "/set/a", data="1")
        assert_unavailable(response, elapsed)
        client.set_cookie(COOKIE, tokens.new_token())
        response, elapsed = timed(client.get, "/get/a")
        assert_unavailable(response, elapsed)
        assert client.get("/noop").status_code == 200
    finally:
        store.close()


def test_terminated_connections_are_replaced_without_an_error(
    app: Flask, own_server: PostgresServer
) -> None:
    """pg_terminate_backend on every pooled connection: the next reads and writes succeed."""
    client = app.test_client()
    assert client.post("/set/a", data="1").status_code == 200
    assert terminate_store_backends(own_server) >= 1
    assert client.get("/get/a").text == "'1'"
    assert terminate_store_backends(own_server) >= 1
    assert client.post("/set/b", data="2").status_code == 200
    assert client.get("/keys").text == "a,b"


def test_restarted_server_is_used_again_at_once(app: Flask, own_server: PostgresServer) -> None:
    """A fast restart between two requests: the write before it is there, the next read works."""
    client = app.test_client()
    assert client.post("/set/a", data="1").status_code == 200
    own_server.restart()
    assert client.get("/get/a").text == "'1'"
    assert client.post("/set/a", data="2").status_code == 200
    assert client.get("/get/a").text == "'2'"


def test_stopped_server_answers_503_then_recovers(app: Flask, own_server: PostgresServer) -> None:
    """While the server is down: 503 in time; once it is back, served again by itself."""
    client = app.test_client()
    assert client.post("/set/a", data="1").status_code == 200
    own_server.stop()
    try:
        for path in ("/get/a", "/get/a"):
            response, elapsed = timed(client.get, path)
            assert_unavailable(response, elapsed)
        response, elapsed = timed(client.post, "/set/a", data="2")
        assert_unavailable(response, elapsed)
    finally:
        own_server.start()
    assert eventually(lambda: client.get("/get/a").status_code == 200)
    assert client.get("/get/a").text == "'1'"


def test_a_lock_held_past_the_statement_timeout_answers_503(
    app: Flask, own_server: PostgresServer
) -> None:
    """Another transaction holds the row: the write gives up after statement_timeout with a
    503, reads still work, and the write goes through once the lock is gone."""
    client = app.test_client()
    assert client.post("/set/a", data="1").status_code == 200
    with psycopg.connect(own_server.url_of(DB)) as holder:
        holder.execute("SELECT 1 FROM keepsake_sessions FOR UPDATE")
        response, elapsed = timed(client.post, "/set/a", data="2")
        assert_unavailable(response, elapsed, TIMEOUT * 2)
        assert client.get("/get/a").text == "'1'"
        holder.rollback()
    assert client.post("/set/a", data="3").status_code == 200
    assert client.get("/get/a").text == "'3'"


def test_read_only_database_refuses_writes_with_503_and_serves_reads(
    app: Flask, own_server: PostgresServer
) -> None:
    """default_transaction_read_only: writes 503, reads 200; writable again, writes work at
    once (connections opened while it was read-only are replaced)."""
    client = app.test_client()
    assert client.post("/set/a", data="1").status_code == 200
    own_server.execute(f"ALTER DATABASE {DB} SET default_transaction_read_only = on")
    terminate_store_backends(own_server)
    response, elapsed = timed(client.post, "/set/a", data="2")
    assert_unavailable(response, elapsed)
    assert client.get("/get/a").text == "'1'"
    fresh = app.test_client()
    response, elapsed = timed(fresh.post, "/set/b", data="1")
    assert_unavailable(response, elapsed)
    own_server.execute(f"ALTER DATABASE {DB} RESET default_transaction_read_only")
    assert client.post("/set/a", data="3").status_code == 200
    assert client.get("/get/a").text == "'3'"


# -- faults under load ---------------------------------------------------------------------------


@dataclass
class Load:
    """Client threads writing increasing numbers to sessions of their own, and reading them."""

    app: Flask
    sessions: int = 6
    statuses: list[int] = field(default_factory=list)
    slow: list[float] = field(default_factory=list)
    acknowledged: dict[int, int] = field(default_factory=dict)
    attempted: dict[int, int] = field(default_factory=dict)
    clients: dict[int, FlaskClient] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for index in range(self.sessions):
            client = self.app.test_client()
            assert client.post("/set/n", data="0").status_code == 200
            self.clients[index] = client
            self.acknowledged[index] = 0
            thread = threading.Thread(target=self._drive, args=(index,), daemon=True)
            self.threads.append(thread)
            thread.start()
        return self

    def _drive(self, index: int) -> None:
        client = self.clients[index]
        value = 0
        while not self.stop.is_set():
            value += 1
            self.attempted[index] = value
            for method, path, data in (("post", "/set/n", str(value)), ("get", "/get/n", None)):
                started = time.monotonic()
                response = getattr(client, method)(path, data=data)
                took = time.monotonic() - started
                with self.lock:
                    self.statuses.append(response.status_code)
                    if took > TIMEOUT * 2 + SLACK:
                        self.slow.append(took)
                if response.status_code == 503:
                    assert response.headers["Retry-After"] == "7"
                if method == "post" and response.status_code == 200:
                    self.acknowledged[index] = value
            time.sleep(0.005)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def check(self) -> None:
        """No 500, no hang, and every acknowledged write (or a later attempt) is stored."""
        assert set(self.statuses) <= {200, 503}, sorted(set(self.statuses))
        assert self.slow == []
        for index, client in self.clients.items():
            stored = int(ast.literal_eval(client.get("/get/n").text))
            assert self.acknowledged[index] <= stored <= self.attempted[index]


@pytest.mark.parametrize("fault", ["stop", "restart", "terminate", "read-only"])
def test_faults_under_load_lose_no_acknowledged_write(
    app: Flask, own_server: PostgresServer, fault: str
) -> None:
    """Six clients write and read while the fault happens: only 200s and 503s, none slow, every
    acknowledged write survives, and all requests succeed again afterwards."""
    load = Load(app).start()
    try:
        time.sleep(0.4)
        if fault == "stop":
            own_server.stop()
            time.sleep(1.0)
            own_server.start()
        elif fault == "restart":
            own_server.restart()
        elif fault == "terminate":
            for _ in range(3):
                terminate_store_backends(own_server)
                time.sleep(0.2)
        else:
            own_server.execute(f"ALTER DATABASE {DB} SET default_transaction_read_only = on")
            terminate_store_backends(own_server)
            time.sleep(0.8)
            own_server.execute(f"ALTER DATABASE {DB} RESET default_transaction_read_only")
        mark = len(load.statuses)
        # Recovered: within a few seconds, a full second of nothing but 200s.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            mark = len(load.statuses)
            time.sleep(1.0)
            if set(load.statuses[mark:]) == {200}:
                break
        assert set(load.statuses[mark:]) == {200}
    finally:
        load.finish()
    load.check()
    if fault in ("stop", "read-only"):
        assert 503 in load.statuses, "the fault did not reach the requests"
