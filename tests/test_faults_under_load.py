"""Faults under load: real gunicorn workers, real stores, and a fault while writes are in flight.

Each test starts gunicorn (several sync workers) with the small app of this module on a free
loopback port, seeds sessions with known values, drives reads and writes from a few client
threads for a few seconds, injects one fault in the middle, and then checks what the issue asks:
clear 503s (with ``Retry-After`` and no new cookie) during the fault and never a 500, recovery
without a restart, and every session written before the fault still there and whole.

- Redis paused with SIGSTOP, then resumed with SIGCONT.
- A worker killed with SIGKILL while writes are in flight, and (SQLite) a worker that dies inside
  its own write transaction, after its uncommitted pages reached the WAL file.
- SQLite with another process holding the write lock longer than ``?timeout=``.

Gunicorn imports this module in its workers (``create_fault_app``), so the app and the checks
live side by side.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
from flask import Flask, Response, jsonify, request, session

from flask_keepsake import Keepsake
from flask_keepsake.stores.base import Touch
from flask_keepsake.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

ROOT: Final = Path(__file__).resolve().parents[1]
#: gunicorn worker processes of every test.
WORKERS: Final = 3
#: Client threads driving the load; each owns some sessions, so its writes to them are ordered.
THREADS: Final = 6
#: Sessions seeded before the fault.
SESSIONS: Final = 12
#: The session keys every write sets to the same number (a torn write would show).
KEYS: Final = ("k0", "k1", "k2", "k3", "k4")
#: The header that makes the SQLite store of the fault app die inside its write transaction.
CRASH_HEADER: Final = "X-Crash-In-Write"
#: The Keepsake ``Retry-After`` of the fault app, in seconds.
RETRY_AFTER: Final = "3"


# -- the app gunicorn serves ------------------------------------------------------------------


def _blob(n: int) -> list[int]:
    return [n] * 100


def _note(n: int) -> str:
    return f"value {n}; " * 40


def _file_state(path: Path) -> list[int]:
    """Size and modification time (ns) of a file: they change when anything is written to it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [0, 0]
    return [stat.st_size, stat.st_mtime_ns]


class CrashingSQLiteStore(SQLiteStore):
    """The SQLite store, except that a request carrying :data:`CRASH_HEADER` kills its worker
    with SIGKILL in the middle of its write: inside an open transaction, after the UPDATE has
    pushed uncommitted pages to the WAL file, before COMMIT. The WAL file's size and time before
    and after the UPDATE go to ``FAULT_CRASH_NOTE`` first, so the test can tell the pages reached
    the file."""

    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> bool:
        """Apply the delta; die halfway instead when the request asks for it."""
        if not request.headers.get(CRASH_HEADER):
            return super().apply(key, changed, deleted, now, touch)
        conn = self._conn()
        wal = Path(f"{self.path}-wal")
        # A page cache of a few pages makes SQLite spill the UPDATE's dirty pages into the WAL
        # before COMMIT, so the crash leaves uncommitted frames in the file.
        conn.execute("PRAGMA cache_size = 2")
        conn.execute("BEGIN IMMEDIATE")
        before = _file_state(wal)
        super().apply(key, changed, deleted, now, touch)
        after = _file_state(wal)
        Path(os.environ["FAULT_CRASH_NOTE"]).write_text(json.dumps([before, after]))
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: the worker was killed")


def create_fault_app() -> Flask:
    """The app of these tests: ``KEEPSAKE_STORE`` from the environment, or, with
    ``FAULT_CRASH_DB``, a :class:`CrashingSQLiteStore` on that file."""
    app = Flask(__name__)
    app.config["KEEPSAKE_RETRY_AFTER"] = int(RETRY_AFTER)
    # Room for the crashing write's large value (the default limit is 64 KiB).
    app.config["KEEPSAKE_MAX_SESSION_BYTES"] = 1_000_000
    crash_db = os.environ.get("FAULT_CRASH_DB")
    if crash_db:
        Keepsake(app, store=CrashingSQLiteStore(crash_db))
    else:
        app.config["KEEPSAKE_STORE"] = os.environ["KEEPSAKE_STORE"]
        Keepsake(app)

    @app.get("/pid")
    def pid() -> str:
        return str(os.getpid())

    @app.post("/write/<int:n>")
    def write(n: int) -> str:
        for key in KEYS:
            session[key] = n
        session["blob"] = _blob(n)
        session["note"] = _note(n)
        if request.headers.get(CRASH_HEADER):
            # Big enough to span many pages, so that the crashing write spills to the WAL.
            session["big"] = "x" * 400_000
        return str(os.getpid())

    @app.get("/read")
    def read() -> Response:
        data = {key: session.get(key) for key in (*KEYS, "blob", "note")}
        return jsonify(pid=os.getpid(), data=data)

    return app


# -- servers ------------------------------------------------------------------------------------


def _require(what: str, ok: bool, hint: str) -> None:
    """Skip loudly when a tool is missing; fail instead when CI=true."""
    if ok:
        return
    message = f"NOT RUN: {what} is missing ({hint}); the faults-under-load tests did not run."
    if os.environ.get("CI") == "true":
        pytest.fail(message + " CI=true, so this is a failure.")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _gunicorn_flags() -> list[str]:
    # gunicorn 27 opens a control socket in ~/.gunicorn unless told not to.
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
        return ["--no-control-socket"]
    return []


class Gunicorn:
    """``gunicorn 'tests.test_faults_under_load:create_fault_app()'`` on a free loopback port."""

    def __init__(self, directory: Path, env: Mapping[str, str]) -> None:
        _require(
            "gunicorn", importlib.util.find_spec("gunicorn") is not None, "pip install gunicorn"
        )
        self.port = _free_port()
        self.log = directory / "gunicorn.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "KEEPSAKE_"))}
        environ.update(env)
        command = [
            sys.executable, "-m", "gunicorn",
            "--workers", str(WORKERS),
            "--bind", f"127.0.0.1:{self.port}",
            "--timeout", "30",
            "--graceful-timeout", "5",
            *_gunicorn_flags(),
            "tests.test_faults_under_load:create_fault_app()",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def log_text(self) -> str:
        """Everything gunicorn and its workers printed so far."""
        return self.log.read_text(errors="replace")

    def boots(self) -> int:
        """How many workers gunicorn has started so far."""
        return self.log_text().count("Booting worker with pid")

    def worker_pid(self) -> int:
        """The pid of a worker (whichever answers), checked to be a child of this gunicorn."""
        reply = call(self.port, "GET", "/pid")
        assert reply.status == 200, reply
        pid = int(reply.body)
        stat = Path(f"/proc/{pid}/stat").read_text()
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        assert parent == self.process.pid, f"{pid} is not a worker of this gunicorn"
        return pid

    def stop(self) -> None:
        """Stop gunicorn by its pid: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


@contextlib.contextmanager
def gunicorn(directory: Path, **env: str) -> Iterator[Gunicorn]:
    """A :class:`Gunicorn` for the block, stopped afterwards."""
    server = Gunicorn(directory, env)
    try:
        yield server
    finally:
        server.stop()


# -- the client ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One request as the client saw it; ``status`` 0 is a connection error."""

    action: str
    started: float
    ended: float
    status: int
    retry_after: str | None = None
    set_cookie: bool = False
    body: str = ""
    cookie: str | None = None


def call(
    port: int,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    headers: Mapping[str, str] | None = None,
    action: str = "",
) -> Reply:
    """Send one request on its own connection (so any worker may take it)."""
    sent = {"Connection": "close", **(headers or {})}
    if cookie is not None:
        sent["Cookie"] = cookie
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, headers=sent)
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
    except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
        return Reply(action, started, time.monotonic(), 0, body=repr(exc))
    finally:
        conn.close()
    set_cookies = response.headers.get_all("Set-Cookie") or []
    new_cookie = None
    for header in set_cookies:
        pair = header.split(";", 1)[0]
        if "session=" in pair and pair.split("=", 1)[1]:
            new_cookie = pair
    return Reply(
        action,
        started,
        time.monotonic(),
        response.status,
        response.headers.get("Retry-After"),
        bool(set_cookies),
        body,
        new_cookie,
    )


def value_of(data: Mapping[str, Any]) -> int:
    """The number a session holds; ``AssertionError`` if its keys disagree (a torn write)."""
    n = data["k0"]
    assert isinstance(n, int), data
    assert all(data[key] == n for key in KEYS), f"torn session: {data}"
    assert data["blob"] == _blob(n), f"torn blob: {data}"
    assert data["note"] == _note(n), f"torn note: {data}"
    return n


@dataclass
class Tracked:
    """A session the test wrote, and what it may hold now."""

    cookie: str
    acked: int
    #: Values of writes that failed (503 or cut connection) since the last acknowledged one:
    #: such a write may still have landed, whole (a paused Redis runs it when it wakes up).
    pending: set[int] = field(default_factory=set)
    next: int = 0

    def allowed(self) -> set[int]:
        """The values this session may hold."""
        return {self.acked, *self.pending}


def seed(port: int) -> list[Tracked]:
    """Create :data:`SESSIONS` sessions, each holding its own known value."""
    sessions = []
    for i in range(SESSIONS):
        n = 1000 * (i + 1)
        reply = call(port, "POST", f"/write/{n}")
        assert reply.status == 200, reply
        assert reply.cookie is not None, reply
        sessions.append(Tracked(reply.cookie, n, next=n + 1))
    return sessions


class Load:
    """Client threads writing and reading the tracked sessions until stopped.

    Each thread owns every :data:`THREADS`-th session, so writes to one session never overlap
    and the last acknowledged value is known; every fourth step is a new visitor instead.
    """

    def __init__(self, port: int, sessions: list[Tracked], *, max_seconds: float = 20) -> None:
        self.port = port
        self.sessions = sessions
        self.replies: list[Reply] = []
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [
            threading.Thread(target=self._run, args=(sessions[i::THREADS],), daemon=True)
            for i in range(THREADS)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads)

    def _run(self, mine: list[Tracked]) -> None:
        step = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            tracked = mine[step % len(mine)]
            if step % 4 == 3:
                self.replies.append(call(self.port, "POST", "/write/1", action="new"))
            elif step % 2 == 0:
                self._write(tracked)
            else:
                self._read(tracked)
            step += 1

    def _write(self, tracked: Tracked) -> None:
        n = tracked.next
        tracked.next += 1
        reply = call(self.port, "POST", f"/write/{n}", cookie=tracked.cookie, action="write")
        self.replies.append(reply)
        if reply.status == 200:
            tracked.acked = n
            tracked.pending.clear()
        else:
            tracked.pending.add(n)

    def _read(self, tracked: Tracked) -> None:
        reply = call(self.port, "GET", "/read", cookie=tracked.cookie, action="read")
        self.replies.append(reply)
        if reply.status != 200:
            return
        try:
            value = value_of(json.loads(reply.body)["data"])
        except AssertionError as exc:
            self.problems.append(str(exc))
            return
        if value not in tracked.allowed():
            self.problems.append(f"read {value}, expected one of {sorted(tracked.allowed())}")

    def between(self, start: float, end: float, action: str | None = None) -> list[Reply]:
        """The replies to requests sent and answered within [start, end]."""
        return [
            r
            for r in self.replies
            if start <= r.started and r.ended <= end and action in (None, r.action)
        ]


def statuses(replies: list[Reply]) -> dict[int, int]:
    """How many replies had each status."""
    counts: dict[int, int] = {}
    for reply in replies:
        counts[reply.status] = counts.get(reply.status, 0) + 1
    return counts


def assert_clear_503s(load: Load) -> None:
    """No 500 anywhere; every 503 says when to retry, sets no cookie, shows no traceback."""
    assert load.problems == []
    assert not [r for r in load.replies if r.status >= 500 and r.status != 503]
    for reply in load.replies:
        if reply.status == 503:
            assert reply.retry_after == RETRY_AFTER, reply
            assert not reply.set_cookie, reply
            assert "Traceback" not in reply.body
            assert "database is locked" not in reply.body


def assert_sessions_whole(port: int, sessions: list[Tracked], *, exact: bool) -> None:
    """Every seeded session still loads, whole, with its last acknowledged value (``exact``)
    or, for writes whose answer was lost, possibly the value of one of those (whole)."""
    for tracked in sessions:
        reply = call(port, "GET", "/read", cookie=tracked.cookie)
        assert reply.status == 200, reply
        value = value_of(json.loads(reply.body)["data"])
        expected = {tracked.acked} if exact else tracked.allowed()
        assert value in expected, (tracked.cookie[-8:], value, expected)


def assert_file_intact(path: Path, sessions: int) -> None:
    """SQLite's own check of the file passes and no session row went missing."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM keepsake_sessions").fetchone()[0] >= sessions
    finally:
        conn.close()


# -- the tests ------------------------------------------------------------------------------------


def test_redis_paused_under_load_gives_503_then_recovers(tmp_path: Path) -> None:
    """SIGSTOP on Redis under load: 503s with Retry-After, never 500; SIGCONT: service
    resumes without a restart, and every session written before holds its values, whole."""
    from flask_keepsake.testing.servers import RedisServer

    redis = RedisServer(tmp_path / "redis").start()
    try:
        with gunicorn(tmp_path, KEEPSAKE_STORE=redis.url) as server:
            sessions = seed(server.port)
            with Load(server.port, sessions) as load:
                time.sleep(1.0)
                paused = time.monotonic()
                redis.pause()
                try:
                    time.sleep(2.5)
                finally:
                    redis.resume()
                resumed = time.monotonic()
                time.sleep(2.0)
                done = time.monotonic()
            assert_clear_503s(load)
            before = load.between(0, paused)
            assert statuses(before) == {200: len(before)}
            # Requests sent and answered while Redis was stopped: each waited for the socket
            # timeout (0.5 s), queued behind others at most, and got a 503.
            during = load.between(paused + 0.05, resumed - 0.05)
            assert len(during) >= WORKERS, "too few requests were answered during the pause"
            assert {r.status for r in during} == {503}
            assert max(r.ended - r.started for r in during) < 3.0
            after = load.between(resumed + 1.0, done)
            assert len(after) > 20
            assert statuses(after) == {200: len(after)}
            assert_sessions_whole(server.port, sessions, exact=False)
            assert server.boots() == WORKERS, "a worker was restarted"
    finally:
        redis.stop()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_worker_killed_mid_write_loses_nothing(tmp_path: Path, store: str) -> None:
    """SIGKILL to workers while writes are in flight (and, on SQLite, to a worker inside its
    own write transaction): the other workers keep serving, nothing written before is lost or
    torn, the killed write left nothing, and the file passes SQLite's integrity check."""
    redis = None
    if store == "redis":
        from flask_keepsake.testing.servers import RedisServer

        redis = RedisServer(tmp_path / "redis").start()
        env = {"KEEPSAKE_STORE": redis.url}
    else:
        database = tmp_path / "keepsake.sqlite3"
        note = tmp_path / "crash.json"
        env = {"FAULT_CRASH_DB": str(database), "FAULT_CRASH_NOTE": str(note)}
    kills: list[float] = []
    crashes = 0
    try:
        with gunicorn(tmp_path, **env) as server:
            sessions = seed(server.port)
            victim = sessions.pop()  # written only by the crashing requests below
            with Load(server.port, sessions) as load:
                for _ in range(2):
                    time.sleep(0.8)
                    os.kill(server.worker_pid(), signal.SIGKILL)
                    kills.append(time.monotonic())
                if store == "sqlite":
                    for _ in range(2):
                        time.sleep(0.8)
                        reply = call(
                            server.port,
                            "POST",
                            f"/write/{victim.next}",
                            cookie=victim.cookie,
                            headers={CRASH_HEADER: "1"},
                        )
                        assert reply.status == 0, reply
                        victim.next += 1
                        crashes += 1
                        kills.append(time.monotonic())
                        before, after = json.loads(note.read_text())
                        assert after != before, "the crashing write put nothing in the WAL file"
                time.sleep(1.5)
                done = time.monotonic()
            assert_clear_503s(load)
            # Only the request a killed worker was serving can be cut off (sync workers).
            cut = [r for r in load.replies if r.status == 0]
            assert len(cut) <= len(kills)
            assert statuses(load.replies).keys() <= {0, 200}
            for killed in kills:
                served = load.between(killed, killed + 0.5)
                assert statuses(served).get(200, 0) > 0, "the other workers stopped serving"
            assert statuses(load.between(done - 1.0, done)) == {
                200: len(load.between(done - 1.0, done))
            }
            assert_sessions_whole(server.port, sessions, exact=False)
            # The crashed writes were never committed: the victim holds its first value.
            assert_sessions_whole(server.port, [victim], exact=True)
            deadline = time.monotonic() + 10
            while server.boots() < WORKERS + len(kills) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert server.boots() == WORKERS + len(kills), "gunicorn did not replace a worker"
        if store == "sqlite":
            assert crashes == 2
            assert_file_intact(database, SESSIONS)
    finally:
        if redis is not None:
            redis.stop()


LOCKER: Final = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


def test_sqlite_write_lock_held_elsewhere_gives_503_then_recovers(tmp_path: Path) -> None:
    """Another process holds the SQLite write lock longer than ``?timeout=0.2``: writes get
    503 with Retry-After (never "database is locked" in a 500), reads keep working (WAL), and
    once the lock is released writes succeed again without a restart, nothing lost or torn."""
    database = tmp_path / "keepsake.sqlite3"
    with gunicorn(tmp_path, KEEPSAKE_STORE=f"sqlite:///{database}?timeout=0.2") as server:
        sessions = seed(server.port)
        with Load(server.port, sessions) as load:
            time.sleep(1.0)
            locker = subprocess.Popen(
                [sys.executable, "-c", LOCKER, str(database)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert locker.stdin is not None
            assert locker.stdout is not None
            try:
                assert locker.stdout.readline().strip() == "locked"
                locked = time.monotonic()
                time.sleep(1.5)
            finally:
                # Taken before the locker is told to let go: nothing is released before it.
                released = time.monotonic()
                locker.stdin.write("\n")
                locker.stdin.close()
                locker.wait(timeout=10)
                locker.stdout.close()
            time.sleep(1.5)
            done = time.monotonic()
        assert locker.returncode == 0
        assert_clear_503s(load)
        during = load.between(locked, released)
        writes = [r for r in during if r.action in ("write", "new")]
        assert writes, "no write was answered during the lock"
        assert {r.status for r in writes} == {503}
        reads = [r for r in during if r.action == "read"]
        assert reads, "no read was answered during the lock"
        assert {r.status for r in reads} == {200}
        after = load.between(released + 0.5, done)
        assert len(after) > 20
        assert statuses(after) == {200: len(after)}
        # On SQLite a write that answered 503 was rolled back: values are exactly the last
        # acknowledged ones.
        assert_sessions_whole(server.port, sessions, exact=True)
        assert server.boots() == WORKERS, "a worker was restarted"
    assert_file_intact(database, SESSIONS)
