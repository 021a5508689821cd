"""Scale benchmark: Keepsake with 1,000, 100,000 and 1,000,000 stored sessions, SQLite and Redis.

Run from the repository root (Redis rows need ``redis-server`` on PATH and redis-py)::

    python benchmarks/bench_scale.py            # full run, about 12 minutes
    python benchmarks/bench_scale.py --quick    # 1,000 and 10,000 sessions, under a minute
    python benchmarks/bench_scale.py --tiny     # a few hundred sessions, a few seconds (tests)

What it measures, per store and per size:

- **Latency**: ``load`` and ``apply`` (one changed key) through the store API, and a ``read``
  and a ``write`` request through the engine (an in-process WSGI request, ``harness``). Every
  size has its own store (one SQLite file, one private ``redis-server``) filled up front, so
  every size is timed in the *same* interleaved repetitions and the ratio largest / smallest
  is taken per repetition: noise on a shared machine hits every size alike. Requests and store
  calls cycle through a few hundred *probe* sessions spread over the whole key space, so a
  lookup does not always hit the same cached page. Target (issue 7): at 1,000,000 sessions
  within 1.3 x of 1,000.
- **Bytes per session**: the SQLite file size over the row count after a checkpoint; Redis's
  ``used_memory`` growth over the count, and ``MEMORY USAGE`` of one session with its handle
  and user index entries.
- **Purge** (SQLite): as many expired sessions as the largest size are added to the largest
  store, and another process deletes them the way ``flask keepsake cleanup`` does (its default
  batch size and pause). Meanwhile the engine serves ``read`` and ``write`` requests; the purge
  is switched on and off in alternate windows, so latency with and without the purge is sampled
  interleaved.
- **Native expiry** (Redis has no purge: keys expire by their TTL): as many sessions as the
  largest size are stored with a deadline a few seconds ahead; the benchmark measures how long
  Redis takes to reclaim them and the read latency before, during and after.
- **Store calls per request** through ``harness.CountingStore`` with a fake clock: untouched 0,
  read 1, write at most 2, and at most one touch per ``KEEPSAKE_TOUCH_INTERVAL`` over ten
  minutes of simulated reads; on the memory, SQLite and Redis stores.

Sessions are filled in bulk, not through the engine: copies of a real record (five keys, bound
to a user, created by a login request) with their own key, handle and user id, by
``executemany`` in large SQLite transactions and by a Lua loop in Redis.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flask import Flask, session

import harness as h
from flask_keepsake import Keepsake
from flask_keepsake.cli import CLEANUP_BATCH_SIZE, cleanup_pause
from flask_keepsake.interface import engine_of
from flask_keepsake.stores import MemoryStore, SessionRecord, SQLiteStore, Store
from flask_keepsake.tokens import storage_key
from harness import BASELINE, Case, Summary

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

#: The two stores this benchmark scales.
SQLITE: Final = "SQLite"
REDIS: Final = "Redis"
#: What is timed at every size: two store calls and two engine requests.
OPS: Final = ("load", "apply", "read", "write")
#: Issue 7's target: latency at the largest size over latency at the smallest.
TARGET_RATIO: Final = 1.3

#: Keepsake's configuration in this benchmark: defaults, except a touch interval long enough
#: that no probe session is touched during the timed phase (a touch is a write, and would turn
#: some ``read`` samples into writes).
CONFIG: Final[Mapping[str, Any]] = {"KEEPSAKE_TOUCH_INTERVAL": 900}
#: Key prefix of the Redis store (the default).
PREFIX: Final = "keepsake:"
#: ``flask keepsake cleanup``'s default batch size.
PURGE_BATCH: Final = CLEANUP_BATCH_SIZE

_INSERT: Final = (
    "INSERT INTO keepsake_sessions (key, handle, data, user_id, created, last_seen, expires_at, "
    "absolute_expires_at, auth_time, ip, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class Options:
    """How big and how long a run is. Presets: :data:`FULL`, :data:`QUICK`, :data:`TINY`."""

    #: Stored sessions per store, smallest first.
    sizes: tuple[int, ...] = (1000, 100_000, 1_000_000)
    #: Sessions whose tokens the timed requests and store calls cycle through.
    probes: int = 500
    #: Samples per case (interleaved repetitions).
    repetitions: int = 60
    #: Target wall time of one batch, in seconds.
    batch_seconds: float = 0.02
    #: Fixed calls per batch instead of calibrating (tiny runs).
    batch_calls: int | None = None
    #: Run the Redis rows (skipped, with a note, without redis-server or redis-py).
    redis: bool = True
    #: Expired SQLite sessions to purge; 0 skips the purge.
    purge: int = 1_000_000
    #: Sessions left to expire natively in Redis; 0 skips it.
    expiry: int = 1_000_000
    #: Length of one on or off window while the purge runs, in seconds.
    window_seconds: float = 0.5
    #: Seconds between the end of the Redis expiry fill and the deadline (latency "before").
    expiry_lead: float = 3.0
    #: How long requests are timed in alternating windows while the purge runs, in seconds.
    window_limit: float = 60.0
    #: Upper bound on the purge and expiry phases, in seconds each.
    phase_limit: float = 600.0
    #: Directory for the SQLite files; ``None`` for a fresh temporary directory.
    data_dir: Path | None = None


FULL: Final = Options()
QUICK: Final = Options(
    sizes=(1000, 10_000),
    probes=200,
    repetitions=15,
    batch_seconds=0.01,
    purge=10_000,
    expiry=10_000,
    window_seconds=0.2,
    window_limit=10,
    phase_limit=30,
)
TINY: Final = Options(
    sizes=(100, 300),
    probes=20,
    repetitions=2,
    batch_seconds=0.001,
    batch_calls=3,
    purge=300,
    expiry=300,
    window_seconds=0.05,
    expiry_lead=0.3,
    window_limit=2,
    phase_limit=15,
)


# ---------------------------------------------------------------------------------------------
# Sessions: a template record, deterministic keys, bulk fill


def token_of(salt: bytes, index: int) -> str:
    """The cookie token of fill session ``index``: well-formed, so the engine accepts it."""
    digest = hashlib.sha256(salt + index.to_bytes(8, "big")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def fill_rows(salt: bytes, start: int, count: int) -> Iterator[tuple[str, str, str]]:
    """``(storage key, handle, user id)`` of fill sessions ``start`` to ``start + count - 1``."""
    sha256 = hashlib.sha256
    b64 = base64.urlsafe_b64encode
    for i in range(start, start + count):
        token = b64(sha256(salt + i.to_bytes(8, "big")).digest()).rstrip(b"=")
        key = sha256(token).hexdigest()
        handle = b64(sha256(b"handle" + token).digest()[:12]).decode()
        yield key, handle, f"user-{i}"


def _template_app(store: Store) -> tuple[Flask, Keepsake]:
    app = Flask("bench_scale")
    app.config.update(CONFIG)
    with _quiet():
        keepsake = Keepsake(app, store=store)
    h.add_routes(app, use_session=True)

    @app.get("/seed-login")
    def seed_login() -> str:
        session.update(h.SESSION_DATA)
        keepsake.login("user-0")
        return "ok"

    return app, keepsake


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Keepsake warns at start-up about the memory store; the benchmark knows.
    import logging

    logger = logging.getLogger("flask_keepsake")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def template_record(store: Store) -> SessionRecord:
    """A real record, made by a request that stores :data:`harness.SESSION_DATA` and logs in.

    The record is deleted from ``store`` again; fill sessions are copies of it.
    """
    app, _ = _template_app(store)
    request = h.WSGIRequest(app, h.make_environ("/seed-login"))
    status, _, _ = request.fetch()
    (cookie,) = request.set_cookies()
    token = h.cookie_pair(cookie).partition("=")[2]
    record = store.load(storage_key(token), time.time())
    if not status.startswith("200") or record is None:
        raise RuntimeError(f"/seed-login answered {status} and stored no record")
    store.delete(record.key)
    return record


def fill_sqlite(
    path: Path,
    template: SessionRecord,
    salt: bytes,
    start: int,
    count: int,
    *,
    expired: bool = False,
    chunk: int = 100_000,
) -> float:
    """Insert ``count`` copies of ``template`` with ``executemany``; return seconds taken.

    Live copies expire 20 to 30 minutes from now (spread, like real traffic); ``expired``
    copies expired up to a day ago. One transaction per ``chunk`` rows.
    """
    started = time.perf_counter()
    now = time.time()
    data = json.dumps(template.data, separators=(",", ":"))
    lifetime = template.expires_at - template.created
    absolute = template.absolute_expires_at - template.created
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # This connection only fills: a big cache and no syncs make it fast; the store's own
        # connections keep their settings.
        conn.execute("PRAGMA cache_size = -262144")
        conn.execute("PRAGMA synchronous = OFF")
        rows = fill_rows(salt, start, count)
        done = 0
        while done < count:
            step = min(chunk, count - done)
            batch = []
            for i, (key, handle, user) in enumerate(itertools.islice(rows, step), start + done):
                if expired:
                    expires = now - 1 - i % 86_400
                    created = expires - lifetime
                else:
                    created = now - i % 600
                    expires = created + lifetime
                batch.append(
                    (
                        # The store keeps the digest as its 32 raw bytes (see SQLiteStore).
                        bytes.fromhex(key),
                        handle,
                        data,
                        user,
                        created,
                        created,
                        expires,
                        created + absolute,
                        created,
                        template.ip,
                        template.user_agent,
                    )
                )
            conn.execute("BEGIN")
            conn.executemany(_INSERT, batch)
            conn.execute("COMMIT")
            done += step
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - started


def sqlite_bytes(path: Path) -> int:
    """Size of the database file after a full checkpoint (the WAL folded in and truncated)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


# KEYS: none (a benchmark fill on one server, not cluster-safe). ARGV: prefix, expires-at field,
# session deadline ms, index deadline ms, created score, n template fields, n field/value
# pairs, then key, handle, user triples. Writes what RedisStore.create writes for each.
_REDIS_FILL: Final = """
local prefix, e, s_at, i_at, score = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local n = tonumber(ARGV[6])
local fields = {}
for i = 7, 6 + n do fields[#fields + 1] = ARGV[i] end
local count = 0
for i = 7 + n, #ARGV, 3 do
  local key, handle, user = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local hkey, ukey, skey = prefix .. 'h:' .. handle, prefix .. 'u:' .. user, prefix .. 's:' .. key
  redis.call('ZADD', hkey, score, key)
  redis.call('PEXPIREAT', hkey, i_at)
  redis.call('ZADD', ukey, score, key)
  redis.call('PEXPIREAT', ukey, i_at)
  redis.call('HSET', skey, 'h', handle, 'u', user, 'e', e, unpack(fields))
  redis.call('PEXPIREAT', skey, s_at)
  count = count + 1
end
return count
"""


def fill_redis(
    client: Any,
    template: SessionRecord,
    salt: bytes,
    start: int,
    count: int,
    *,
    deadline: float | None = None,
    chunk: int = 2000,
) -> float:
    """Store ``count`` copies of ``template`` as ``RedisStore`` would; return seconds taken.

    Each copy is a session hash plus its handle and user index entries. Copies expire like the
    template unless ``deadline`` (epoch seconds) is given: then the session and its indexes
    all expire at that instant.
    """
    started = time.perf_counter()
    from flask_keepsake.stores.redis import RedisStore

    fields = RedisStore(client, prefix=PREFIX)._fields(template)
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    for name in (b"h", b"u", b"e"):
        pairs.pop(name, None)
    flat = [x for pair in pairs.items() for x in pair]
    if deadline is None:
        e_field = repr(float(template.expires_at)).encode()
        s_at = int(template.expires_at * 1000)
        i_at = int(template.absolute_expires_at * 1000)
    else:
        e_field = repr(float(deadline)).encode()
        s_at = i_at = int(deadline * 1000)
    head = [PREFIX, e_field, s_at, i_at, repr(template.created), len(flat), *flat]
    script = client.register_script(_REDIS_FILL)
    rows = fill_rows(salt, start, count)
    while batch := list(itertools.islice(rows, chunk)):
        script(args=[*head, *(x for row in batch for x in row)])
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# One store at one size


@dataclass
class Sized:
    """One filled store of one size, with its app and its probe requests."""

    backend: str
    size: int
    store: Store
    app: Flask
    salt: bytes
    probes: list[str]
    fill_seconds: float
    facts: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def variant(self) -> str:
        """The row name, such as ``"SQLite 1,000"``."""
        return f"{self.backend} {self.size:,}"

    def probe_keys(self) -> list[str]:
        """Storage keys of the probe sessions."""
        return [storage_key(t) for t in self.probes]

    def requests(self, workload: str) -> list[h.WSGIRequest]:
        """One prebuilt request per probe session."""
        name = engine_of(self.app).cookie(self.app, None).name
        return [
            h.WSGIRequest(self.app, h.make_environ(f"/{workload}", cookie=f"{name}={token}"))
            for token in self.probes
        ]


def _probes(salt: bytes, size: int, count: int, seed: int) -> list[str]:
    indexes = random.Random(seed).sample(range(size), min(count, size))
    return [token_of(salt, i) for i in indexes]


def build_sqlite(directory: Path, size: int, template: SessionRecord, options: Options) -> Sized:
    """A SQLite store in ``directory`` filled with ``size`` sessions."""
    path = directory / f"scale-{size}.sqlite3"
    store = SQLiteStore(path)
    store.count(time.time())  # creates the schema
    salt = os.urandom(8)
    seconds = fill_sqlite(path, template, salt, 0, size)
    file_bytes = sqlite_bytes(path)
    app = h.keepsake_app(store, **CONFIG)
    sized = Sized(
        SQLITE, size, store, app, salt, _probes(salt, size, options.probes, size), seconds
    )
    sized.facts = {
        "file_bytes": file_bytes,
        "bytes_per_session": round(file_bytes / size, 1),
        "path": str(path),
    }
    sized.closers.append(store.close)
    return sized


def build_redis(
    stack: contextlib.ExitStack, size: int, template: SessionRecord, options: Options
) -> Sized:
    """A private redis-server filled with ``size`` sessions (stopped when ``stack`` closes)."""
    import redis

    from bench_redis import redis_server
    from flask_keepsake.stores.redis import RedisStore

    port = stack.enter_context(redis_server())
    admin = stack.enter_context(redis.Redis(port=port))
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix=PREFIX)
    stack.callback(store.close)
    store.load("0" * 64, time.time())  # connect first, so the client is in the baseline
    before = int(admin.info("memory")["used_memory"])
    salt = os.urandom(8)
    seconds = fill_redis(admin, template, salt, 0, size)
    after = int(admin.info("memory")["used_memory"])
    app = h.keepsake_app(store, **CONFIG)
    sized = Sized(REDIS, size, store, app, salt, _probes(salt, size, options.probes, size), seconds)
    key, handle, user = next(fill_rows(salt, 0, 1))
    prefix = PREFIX.encode()
    usage = {
        "session_hash": int(admin.memory_usage(prefix + b"s:" + key.encode(), samples=0) or 0),
        "handle_index": int(admin.memory_usage(prefix + b"h:" + handle.encode(), samples=0) or 0),
        "user_index": int(admin.memory_usage(prefix + b"u:" + user.encode(), samples=0) or 0),
    }
    sized.facts = {
        "port": port,
        "keys": int(admin.dbsize()),
        "used_memory_before": before,
        "used_memory_after": after,
        "bytes_per_session": round((after - before) / size, 1),
        "memory_usage_one_session": usage | {"total": sum(usage.values())},
        "admin": admin,
    }
    return sized


# ---------------------------------------------------------------------------------------------
# Cases


def size_cases(sized: Sized, baseline: Mapping[str, Case]) -> list[Case]:
    """The four :data:`OPS` of one store at one size, each cycling through the probes."""
    store = sized.store
    clock = time.time
    keys = itertools.cycle(sized.probe_keys())
    values = (str(n) for n in itertools.count(10_000))
    load, apply = store.load, store.apply
    field_name = h.WRITE_KEY

    def do_load() -> None:
        load(next(keys), clock())

    def do_apply() -> None:
        apply(next(keys), {field_name: next(values)}, (), clock())

    cases = [
        Case(sized.variant, "load", do_load),
        Case(sized.variant, "apply", do_apply),
    ]
    for workload in ("read", "write"):
        cycle = itertools.cycle(sized.requests(workload))

        def request(cycle: Iterator[h.WSGIRequest] = cycle) -> None:
            next(cycle)()

        cases.append(Case(sized.variant, workload, request, baseline=baseline[workload].key))
    return cases


def baseline_cases() -> dict[str, Case]:
    """The no-session app's ``read`` and ``write``, wrapped like the probe requests."""
    app = h.baseline_app()
    cases = {}
    for workload in ("read", "write"):
        cycle = itertools.cycle([h.WSGIRequest(app, h.make_environ(f"/{workload}"))])

        def request(cycle: Iterator[h.WSGIRequest] = cycle) -> None:
            next(cycle)()

        cases[workload] = Case(BASELINE, workload, request)
    return cases


def verify(sized: Sized) -> None:
    """Check that a probe request reads its seeded value and that the store has every row."""
    request = sized.requests("read")[0]
    status, _, body = request.fetch()
    if not status.startswith("200") or body.decode() != h.SESSION_DATA[h.READ_KEY]:
        raise RuntimeError(f"{sized.variant}: a probe read answered {status} {body!r}")
    if request.set_cookies():
        raise RuntimeError(f"{sized.variant}: a probe read set a cookie")
    if sized.backend == SQLITE:
        live = sized.store.count(time.time())
        if live != sized.size:
            raise RuntimeError(f"{sized.variant}: {live} live sessions, not {sized.size}")


# ---------------------------------------------------------------------------------------------
# Purge (SQLite) and native expiry (Redis)


def _purge_worker(
    path: str,
    now: float,
    batch: int,
    go: Any,
    ready: Any,
    done: Any,
    busy_ns: Synchronized[int],
    deleted: Synchronized[int],
    longest_ns: Synchronized[int],
) -> None:
    """In another process: purge like ``flask keepsake cleanup`` while ``go`` is set."""
    store = SQLiteStore(path)
    store.count(now)
    ready.set()
    try:
        while True:
            go.wait()
            began = time.perf_counter_ns()
            purged = store.purge_expired(now, batch)
            took = time.perf_counter_ns() - began
            busy_ns.value += took
            deleted.value += purged
            longest_ns.value = max(longest_ns.value, took)
            if purged == 0:
                return
            if purged == batch:
                time.sleep(cleanup_pause(took / 1e9, None))
    finally:
        store.close()
        done.set()


def _timed(requests: Sequence[Callable[[], object]], until: float) -> list[list[float]]:
    """Run the requests round-robin until ``until``; µs per request, one list per request."""
    clock = time.perf_counter_ns
    out: list[list[float]] = [[] for _ in requests]
    while time.perf_counter() < until:
        for i, request in enumerate(requests):
            start = clock()
            request()
            out[i].append((clock() - start) / 1000)
    return out


def _dist(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "p99": p99,
        "max": ordered[-1],
    }


def purge_phase(sized: Sized, template: SessionRecord, options: Options) -> dict[str, Any]:
    """Add expired sessions to the largest SQLite store and purge them while serving requests."""
    path = Path(sized.facts["path"])
    # User ids continue after the live sessions' ids, as new users would.
    salt = os.urandom(8)
    fill = fill_sqlite(path, template, salt, sized.size, options.purge, expired=True)
    now = time.time()
    expired_before = sized.store.count_expired(now)
    reads = itertools.cycle(sized.requests("read"))
    writes = itertools.cycle(sized.requests("write"))
    requests = [lambda: next(reads)(), lambda: next(writes)()]
    context = multiprocessing.get_context("spawn")
    go, ready, done = context.Event(), context.Event(), context.Event()
    busy, deleted, longest = context.Value("q", 0), context.Value("q", 0), context.Value("q", 0)
    worker = context.Process(
        target=_purge_worker,
        args=(str(path), now, PURGE_BATCH, go, ready, done, busy, deleted, longest),
        daemon=True,
    )
    worker.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the purge process did not start")
        on: list[list[float]] = [[], []]
        off: list[list[float]] = [[], []]
        windows = 0
        started = time.perf_counter()
        active_seconds = 0.0
        while not done.is_set() and time.perf_counter() - started < options.window_limit:
            purge_on = windows % 2 == 1
            if purge_on:
                go.set()
            window_start = time.perf_counter()
            timed = _timed(requests, window_start + options.window_seconds)
            if purge_on:
                go.clear()
                active_seconds += time.perf_counter() - window_start
            target = on if purge_on else off
            for i in range(2):
                target[i].extend(timed[i])
            windows += 1
        # The rest of the purge runs on its own, still paced like the cleanup command, so the
        # time to purge everything is measured even when the windows ended first.
        go.set()
        rest_started = time.perf_counter()
        finished = done.wait(options.phase_limit)
        active_seconds += time.perf_counter() - rest_started
    finally:
        if worker.is_alive():
            go.set()
            worker.terminate()
        worker.join(10)
    left = sized.store.count_expired(time.time())
    return {
        "expired_added": options.purge,
        "fill_seconds": round(fill, 2),
        "expired_before": expired_before,
        "deleted": deleted.value,
        "expired_left": left,
        "finished": finished,
        "batch_size": PURGE_BATCH,
        "busy_seconds": round(busy.value / 1e9, 2),
        "cleanup_wall_seconds": round(active_seconds, 2),
        "longest_batch_ms": round(longest.value / 1e6, 2),
        "windows": windows,
        "window_limit_seconds": options.window_limit,
        "window_seconds": options.window_seconds,
        "read_us": {"purge_running": _dist(on[0]), "no_purge": _dist(off[0])},
        "write_us": {"purge_running": _dist(on[1]), "no_purge": _dist(off[1])},
        "file_bytes_after": sqlite_bytes(path),
        "live_after": sized.store.count(time.time()),
    }


def expiry_phase(sized: Sized, template: SessionRecord, options: Options) -> dict[str, Any]:
    """Store sessions that expire together in Redis and time how fast Redis reclaims them."""
    admin = sized.facts["admin"]
    base_keys = int(admin.dbsize())
    base_memory = int(admin.info("memory")["used_memory"])
    per_million = sized.fill_seconds * 1_000_000 / max(sized.size, 1)
    deadline = time.time() + options.expiry_lead + 1.5 * per_million * options.expiry / 1_000_000
    # User ids continue after the live sessions' ids, so no live user index gets the deadline.
    salt = os.urandom(8)
    fill = fill_redis(admin, template, salt, sized.size, options.expiry, deadline=deadline)
    peak_keys = int(admin.dbsize())
    peak_memory = int(admin.info("memory")["used_memory"])
    reads = itertools.cycle(sized.requests("read"))
    read = [lambda: next(reads)()]
    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    reclaimed_at: float | None = None
    limit = time.time() + options.phase_limit
    after_windows = 0
    while time.time() < limit:
        window_start = time.perf_counter()
        timed = _timed(read, window_start + options.window_seconds)[0]
        keys = int(admin.dbsize())
        now = time.time()
        if now < deadline:
            phases["before"].extend(timed)
        elif reclaimed_at is None:
            phases["during"].extend(timed)
            if keys <= base_keys:
                reclaimed_at = now
        else:
            phases["after"].extend(timed)
            after_windows += 1
            if after_windows >= 4:
                break
        if reclaimed_at is None and now >= deadline and keys <= base_keys:
            reclaimed_at = now
    return {
        "sessions": options.expiry,
        "keys_added": peak_keys - base_keys,
        "fill_seconds": round(fill, 2),
        "used_memory_added": peak_memory - base_memory,
        "reclaimed": reclaimed_at is not None,
        "reclaim_seconds": None if reclaimed_at is None else round(reclaimed_at - deadline, 2),
        "keys_left": int(admin.dbsize()) - base_keys,
        "window_seconds": options.window_seconds,
        "read_us": {name: _dist(samples) for name, samples in phases.items()},
    }


# ---------------------------------------------------------------------------------------------
# Store calls per request (issue 7, item 2)


class FakeClock:
    """A clock the benchmark moves by hand, so ten minutes of traffic take no time."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        """The current fake time, in epoch seconds."""
        return self.now


def count_store_calls(store: Store, requests: int = 20, span: int = 600) -> dict[str, Any]:
    """Store calls per request of every workload, and touches over ``span`` simulated seconds.

    Runs an app on :class:`harness.CountingStore` with a :class:`FakeClock` and Keepsake's
    default configuration (touch interval 60 s). ``touch``: one read per simulated second for
    ``span`` seconds; at most one touch per interval is allowed.
    """
    clock = FakeClock(time.time())
    counting = h.CountingStore(store)
    app = Flask("bench_scale_calls")
    with _quiet():
        keepsake = Keepsake(app, store=counting, clock=clock)
    h.add_routes(app, use_session=True)

    @app.get("/login")
    def login_view() -> str:
        keepsake.login("user-1")
        return "ok"

    interval = float(engine_of(app).settings.touch_interval)
    counting.reset()
    cookie = h.seed_cookie(app)
    per_request: dict[str, dict[str, float]] = {"seed (new)": dict(counting.calls)}
    cleanup = h.keepsake_cleanup(store)
    for case in h.workload_cases("calls", app, cookie, cleanup=cleanup):
        counting.reset()
        for _ in range(requests):
            case.run()
        if case.after_batch is not None:
            case.after_batch()
        per_request[case.workload] = {m: n / requests for m, n in sorted(counting.calls.items())}

    login = h.WSGIRequest(app, h.make_environ("/login", cookie=cookie))
    counting.reset()
    login()
    per_request["login"] = dict(sorted(counting.calls.items()))

    fresh = h.seed_cookie(app)
    read = h.WSGIRequest(app, h.make_environ("/read", cookie=fresh))
    counting.reset()
    for _ in range(span):
        clock.now += 1
        read()
    touches = counting.calls["touch"] + counting.calls["apply"]
    loads = counting.calls["load"]
    allowed = math.floor(span / interval)
    write_methods = {"create", "apply", "touch", "rename", "delete"}

    def total(workload: str) -> float:
        return sum(per_request[workload].values())

    def writes(workload: str) -> float:
        return sum(n for m, n in per_request[workload].items() if m in write_methods)

    checks = [
        ("untouched: 0 calls", total("untouched") == 0),
        ("read: 1 load, no write", per_request["read"] == {"load": 1.0}),
        ("write: at most 2 calls", 0 < total("write") <= 2 and writes("write") >= 1),
        (
            f"touch: at most once per {interval:g} s ({touches} in {span} reads over {span} s)",
            0 < touches <= allowed,
        ),
    ]
    return {
        "per_request": per_request,
        "touch": {
            "reads": span,
            "simulated_seconds": span,
            "interval_seconds": interval,
            "touches": touches,
            "loads": loads,
            "allowed": allowed,
        },
        "checks": [{"what": w, "pass": ok} for w, ok in checks],
    }


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Result:
    """Everything one run measured."""

    options: Options
    facts: dict[str, Any]
    sized: list[Sized]
    cases: dict[str, Case]
    samples: dict[str, list[float]]
    purge: dict[str, Any] | None
    expiry: dict[str, Any] | None
    store_calls: dict[str, Any]
    notes: list[str]
    seconds: float = 0.0

    def backends(self) -> list[str]:
        """The stores that ran, in order."""
        return list(dict.fromkeys(s.backend for s in self.sized))

    def sizes(self, backend: str) -> list[Sized]:
        """The filled stores of ``backend``, smallest first."""
        return sorted((s for s in self.sized if s.backend == backend), key=lambda s: s.size)

    def latency(self, sized: Sized, op: str, *, overhead: bool = False) -> Summary:
        """µs per call (or, with ``overhead``, per request minus the baseline request)."""
        case = self.cases[f"{sized.variant}/{op}"]
        ns = h.paired_overheads(self.samples, case) if overhead else self.samples[case.key]
        return h.summarize([x / 1000 for x in ns])

    def ratio(self, backend: str, op: str) -> Summary | None:
        """Per repetition, latency at the largest size over latency at the smallest."""
        sizes = self.sizes(backend)
        if len(sizes) < 2:
            return None
        big = self.samples[f"{sizes[-1].variant}/{op}"]
        small = self.samples[f"{sizes[0].variant}/{op}"]
        return h.summarize([a / b for a, b in zip(big, small, strict=True) if b > 0])

    def to_json(self) -> dict[str, Any]:
        """Every figure and the raw samples, for ``benchmarks/results/``."""
        backends: dict[str, Any] = {}
        for backend in self.backends():
            rows = {}
            for sized in self.sizes(backend):
                facts = {k: v for k, v in sized.facts.items() if k != "admin"}
                rows[str(sized.size)] = {
                    "fill_seconds": round(sized.fill_seconds, 2),
                    **facts,
                    "latency_us": {op: self.latency(sized, op).to_json() for op in OPS},
                    "overhead_us": {
                        op: self.latency(sized, op, overhead=True).to_json()
                        for op in ("read", "write")
                    },
                }
            ratios = {}
            for op in OPS:
                found = self.ratio(backend, op)
                if found is not None:
                    ratios[op] = found.to_json() | {
                        "target": TARGET_RATIO,
                        "met": found.median <= TARGET_RATIO,
                    }
            backends[backend] = {"sizes": rows, "ratio_largest_to_smallest": ratios}
        options = dataclasses.asdict(self.options)
        options["data_dir"] = None if self.options.data_dir is None else str(self.options.data_dir)
        return {
            "benchmark": "scale",
            "command": " ".join(sys.argv),
            "seconds": round(self.seconds, 1),
            "machine": self.facts,
            "options": options,
            "notes": self.notes,
            "target_ratio": TARGET_RATIO,
            "backends": backends,
            "purge_sqlite": self.purge,
            "expiry_redis": self.expiry,
            "store_calls": self.store_calls,
            "samples_ns": {k: [round(x, 1) for x in v] for k, v in self.samples.items()},
        }


def redis_available() -> str | None:
    """``None`` if the Redis rows can run, else why not."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH: the Redis rows did NOT run"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed: the Redis rows did NOT run"
    return None


@contextlib.contextmanager
def _data_dir(options: Options) -> Iterator[Path]:
    if options.data_dir is not None:
        options.data_dir.mkdir(parents=True, exist_ok=True)
        yield options.data_dir
        return
    with tempfile.TemporaryDirectory(prefix="keepsake-scale-") as tmp:
        yield Path(tmp)


def run(options: Options, progress: Callable[[str], None] = lambda _: None) -> Result:
    """Fill every store at every size, time them interleaved, purge, expire, count calls."""
    started = time.perf_counter()
    notes: list[str] = []
    missing = redis_available() if options.redis else "Redis rows skipped (--no-redis)"
    if missing is not None:
        notes.append(missing)
    with _data_dir(options) as directory, contextlib.ExitStack() as stack:
        template = template_record(MemoryStore())
        sized: list[Sized] = []
        for size in options.sizes:
            progress(f"filling SQLite with {size:,} sessions")
            s = build_sqlite(directory, size, template, options)
            stack.callback(s.store.close)
            progress(f"  {s.fill_seconds:.1f} s, {s.facts['bytes_per_session']} bytes/session")
            sized.append(s)
        if missing is None:
            for size in options.sizes:
                progress(f"filling Redis with {size:,} sessions")
                s = build_redis(stack, size, template, options)
                progress(f"  {s.fill_seconds:.1f} s, {s.facts['bytes_per_session']} bytes/session")
                sized.append(s)
        for s in sized:
            verify(s)

        progress("counting store calls per request")
        store_calls = {"memory": count_store_calls(MemoryStore())}
        calls_store = SQLiteStore(directory / "calls.sqlite3")
        store_calls[SQLITE] = count_store_calls(calls_store)
        calls_store.close()
        if missing is None:
            from flask_keepsake.stores.redis import RedisStore

            port = next(s for s in sized if s.backend == REDIS).facts["port"]
            calls_redis = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", prefix="calls:")
            store_calls[REDIS] = count_store_calls(calls_redis)
            calls_redis.close()

        baseline = baseline_cases()
        cases = list(baseline.values())
        for s in sized:
            cases += size_cases(s, baseline)
        progress(f"timing {len(cases)} cases, {options.repetitions} interleaved repetitions")
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        samples = h.run_interleaved(
            cases,
            repetitions=options.repetitions,
            batch_seconds=options.batch_seconds,
            batch_calls=options.batch_calls,
        )
        wall = time.perf_counter() - wall_before
        facts = h.machine_facts(directory)
        facts["cpu_share_while_timing"] = round((time.process_time() - cpu_before) / wall, 3)

        purge = None
        if options.purge:
            largest = max((s for s in sized if s.backend == SQLITE), key=lambda s: s.size)
            progress(f"purging {options.purge:,} expired sessions beside {largest.size:,} live")
            purge = purge_phase(largest, template, options)
        expiry = None
        if options.expiry and missing is None:
            largest = max((s for s in sized if s.backend == REDIS), key=lambda s: s.size)
            progress(f"letting {options.expiry:,} Redis sessions expire natively")
            expiry = expiry_phase(largest, template, options)
        for s in sized:
            for close in s.closers:
                close()
    return Result(
        options=options,
        facts=facts,
        sized=sized,
        cases={c.key: c for c in cases},
        samples=samples,
        purge=purge,
        expiry=expiry,
        store_calls=store_calls,
        notes=notes,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# Report


def _cell(summary: Summary) -> str:
    return f"{summary.median:.1f} ({summary.q1:.1f}-{summary.q3:.1f})"


def _bytes_cell(sized: Sized) -> str:
    return f"{sized.facts['bytes_per_session']:,.0f}"


def report(result: Result, style: h.TableStyle = "text") -> str:
    """The printed tables of one run."""
    out: list[str] = []
    f = result.facts
    out.append(
        f"Keepsake scale benchmark - {f['date']} - {f['cpu']}, {f['cores']} cores, load "
        f"{' '.join(f'{x:.2f}' for x in f['load_average'] or [])}; Keepsake at {f['revision']}, "
        f"SQLite {f['sqlite']}, data on {f.get('data_filesystem', '?')}; "
        f"run took {result.seconds:.0f} s"
    )
    out.append(
        f"{result.options.repetitions} interleaved repetitions of "
        f"{result.options.batch_seconds * 1000:g} ms batches; CPU share while timing "
        f"{f['cpu_share_while_timing']:.0%}"
    )
    for note in result.notes:
        out.append(f"note: {note}")

    out.append("")
    out.append(
        "Latency by stored sessions, us per call, median (q1-q3): store API load and apply "
        "(one changed key); engine read and write requests (whole in-process request)"
    )
    rows = []
    for backend in result.backends():
        for sized in result.sizes(backend):
            rows.append(
                [
                    backend,
                    f"{sized.size:,}",
                    *(_cell(result.latency(sized, op)) for op in OPS),
                    f"{sized.fill_seconds:.1f}",
                    _bytes_cell(sized),
                ]
            )
    out.append(
        h.format_table(
            ["store", "sessions", "load", "apply", "read request", "write request", "fill s",
             "bytes/session"],
            rows,
            style=style,
        )
    )  # fmt: skip

    out.append("")
    out.append(
        f"Largest over smallest size, per-repetition ratio, median (q1-q3); "
        f"target <= {TARGET_RATIO}"
    )
    rows = []
    for backend in result.backends():
        sizes = result.sizes(backend)
        for op in OPS:
            found = result.ratio(backend, op)
            if found is None:
                continue
            rows.append(
                [
                    f"{backend} {op}",
                    f"{sizes[-1].size:,} / {sizes[0].size:,}",
                    f"{found.median:.2f} ({found.q1:.2f}-{found.q3:.2f})",
                    "PASS" if found.median <= TARGET_RATIO else "MISS",
                ]
            )
    out.append(h.format_table(["what", "sizes", "ratio", ""], rows, style=style))

    redis_rows = [s for s in result.sized if s.backend == REDIS]
    if redis_rows:
        out.append("")
        out.append("Redis memory: used_memory growth per session; MEMORY USAGE of one session")
        rows = []
        for s in redis_rows:
            usage = s.facts["memory_usage_one_session"]
            rows.append(
                [
                    f"{s.size:,}",
                    f"{s.facts['keys']:,}",
                    _bytes_cell(s),
                    usage["session_hash"],
                    usage["handle_index"],
                    usage["user_index"],
                    usage["total"],
                ]
            )
        out.append(
            h.format_table(
                ["sessions", "keys", "used_memory/session", "hash", "handle index",
                 "user index", "one session, total"],
                rows,
                style=style,
            )
        )  # fmt: skip

    if result.purge is not None:
        p = result.purge
        out.append("")
        out.append(
            f"SQLite purge: {p['deleted']:,} of {p['expired_before']:,} expired sessions deleted "
            f"beside {p['live_after']:,} live ones, batches of {p['batch_size']} "
            f"(like `flask keepsake cleanup`), in another process"
            + ("" if p["finished"] else f"; NOT finished, {p['expired_left']:,} left")
        )
        out.append(
            f"time in purge calls {p['busy_seconds']:.1f} s, cleanup wall time (with its pauses) "
            f"{p['cleanup_wall_seconds']:.1f} s, longest batch {p['longest_batch_ms']:.1f} ms; "
            f"file {p['file_bytes_after'] / 2**20:.0f} MiB after (freed pages are reused, not "
            f"returned)"
        )
        out.append(
            f"Engine requests, us, in alternating {p['window_seconds']:g} s windows with the "
            f"purge running and paused (the first {p['window_limit_seconds']:g} s of the purge):"
        )
        rows = []
        for what in ("read", "write"):
            d = p[f"{what}_us"]
            for state in ("no_purge", "purge_running"):
                x = d[state]
                if x["n"]:
                    rows.append(
                        [what, state.replace("_", " "), x["n"], f"{x['median']:.1f}",
                         f"{x['p99']:.1f}", f"{x['max']:.1f}"]
                    )  # fmt: skip
            on, off = d["purge_running"], d["no_purge"]
            if on["n"] and off["n"]:
                rows.append([what, "ratio", "", f"{on['median'] / off['median']:.2f}",
                             f"{on['p99'] / off['p99']:.2f}", ""])  # fmt: skip
        out.append(
            h.format_table(["request", "purge", "n", "median", "p99", "max"], rows, style=style)
        )

    if result.expiry is not None:
        e = result.expiry
        out.append("")
        reclaim = (
            f"reclaimed {e['reclaim_seconds']:.1f} s after the deadline"
            if e["reclaimed"]
            else f"NOT reclaimed within the limit ({e['keys_left']:,} keys left)"
        )
        out.append(
            f"Redis native expiry: {e['sessions']:,} sessions ({e['keys_added']:,} keys, "
            f"{e['used_memory_added'] / 2**20:.0f} MiB) expiring at one instant; {reclaim}"
        )
        rows = [
            [phase, x["n"], f"{x['median']:.1f}", f"{x['p99']:.1f}"]
            for phase, x in e["read_us"].items()
            if x["n"]
        ]
        out.append(h.format_table(["read request", "n", "median us", "p99 us"], rows, style=style))

    out.append("")
    out.append("Store calls per request (CountingStore, fake clock, default touch interval)")
    rows = []
    for backend, calls in result.store_calls.items():
        for workload, methods in calls["per_request"].items():
            text = ", ".join(f"{m} {n:g}" for m, n in methods.items()) or "0"
            rows.append([backend, workload, text])
        t = calls["touch"]
        rows.append(
            [backend, f"{t['reads']} reads over {t['simulated_seconds']} s",
             f"{t['touches']} touches (at most {t['allowed']})"]
        )  # fmt: skip
        failed = [c["what"] for c in calls["checks"] if not c["pass"]]
        rows.append([backend, "checks", "all PASS" if not failed else "MISS: " + "; ".join(failed)])
    out.append(h.format_table(["store", "workload", "calls per request"], rows, style=style))
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see ``--help``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="1,000 and 10,000 sessions")
    preset.add_argument("--tiny", action="store_true", help="a few hundred sessions (tests)")
    parser.add_argument("--sizes", help="comma-separated sizes, such as 1000,100000")
    parser.add_argument("--repetitions", type=int, help="samples per case")
    parser.add_argument("--no-redis", action="store_true", help="SQLite only")
    parser.add_argument("--dir", type=Path, help="where the SQLite files go (default: tmp dir)")
    parser.add_argument("--no-json", action="store_true", help="do not write results/*.json")
    parser.add_argument("--json-dir", type=Path, default=h.RESULTS_DIR, help="where JSON goes")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    options = TINY if args.tiny else QUICK if args.quick else FULL
    if args.sizes:
        options = replace(options, sizes=tuple(int(x) for x in args.sizes.split(",")))
    if args.repetitions:
        options = replace(options, repetitions=args.repetitions)
    if args.no_redis:
        options = replace(options, redis=False)
    if args.dir is not None:
        options = replace(options, data_dir=args.dir)
    result = run(options, progress=lambda step: print(f"... {step}", file=sys.stderr, flush=True))
    print(report(result, "markdown" if args.markdown else "text"))
    if not args.no_json:
        path = h.write_results("scale", result.to_json(), args.json_dir)
        print(f"\nraw results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
