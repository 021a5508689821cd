"""Redis store benchmark: a session on Redis per request, against Flask-Session and the floors.

Run from the repository root (needs ``redis-server`` on PATH and the ``bench`` extra)::

    python benchmarks/bench_redis.py             # full run, about 3 minutes
    python benchmarks/bench_redis.py --quick     # about 40 seconds, 100,000 stored sessions
    python benchmarks/bench_redis.py --smoke     # a few calls each, no real timing

The script starts its own ``redis-server`` on a free loopback port (no persistence, files in a
temporary directory) and stops it by its pid at the end; every row uses that one server in the
same run. Rows, each a Flask app called in-process through ``app.wsgi_app`` with a prebuilt
environ (``harness``):

- Keepsake on Redis (``RedisStore``), default configuration;
- Keepsake on Redis with the opt-in local cache (``RedisStore(..., local_cache=10_000)``):
  reads served from process memory that Redis invalidates (``CLIENT TRACKING``), a delta in one
  round trip;
- Flask-Session 0.8 with ``SESSION_TYPE="redis"``, default configuration;
- the redis-py floors: one ``GET`` (one round trip, the least a request that reads its session
  can do), and a ``GET`` then a ``SET`` (two round trips, the least a request that reads and then
  changes its session can do), of a string holding the same five serialized keys. Each floor is
  timed right after a baseline request, like the apps (a request between two commands evicts
  redis-py from the CPU caches), and in a tight loop for reference.

Results are medians over interleaved repetitions of time per request minus the no-session
baseline request in the same repetition. Also measured: Redis commands per request (``MONITOR``,
in a separate untimed pass; script-internal commands are not round trips and are listed apart),
``MEMORY USAGE`` of a stored five-key session, and Keepsake's read latency with 1,000 and with
1,000,000 sessions stored (filled server-side by a Lua script in a few seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import redis
from flask import Flask

import harness as h
from flask_keepsake import serialize
from flask_keepsake.stores.base import SessionRecord
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.tokens import storage_key
from harness import BASELINE, WORKLOADS, Case, Summary

KS: Final = "Keepsake (Redis)"
KSC: Final = "Keepsake (Redis, local cache)"
#: The Keepsake rows, each checked against the targets.
KEEPSAKE_ROWS: Final = (KS, KSC)
FS: Final = "Flask-Session (Redis)"
FLOOR: Final = "redis-py floor"
#: Floor operations: after a baseline request (what the targets use), and in a tight loop.
FLOOR_OPS: Final = ("GET", "GET+SET", "GET, tight loop", "GET+SET, tight loop")

#: Issue 3's targets: Keepsake's overhead at most this many times the other row's overhead.
TARGETS: Final = (
    ("read", FLOOR, "GET", 1.25),
    ("read", FS, "read", 0.35),
    ("write", FLOOR, "GET+SET", 1.25),
    ("write", FS, "write", 0.65),
)
#: Keepsake's key prefix in this benchmark (the default).
PREFIX: Final = "keepsake:"


@dataclass(frozen=True)
class Options:
    """How long and how big a run is."""

    repetitions: int = 41
    batch_seconds: float = 0.05
    batch_calls: int | None = None
    fill: int = 1000
    big_fill: int = 1_000_000
    latency_repetitions: int = 21
    invalidations: int = 2000


FULL: Final = Options()
QUICK: Final = Options(
    repetitions=15, batch_seconds=0.03, big_fill=100_000, latency_repetitions=9, invalidations=300
)
SMOKE: Final = Options(
    repetitions=2,
    batch_seconds=0.001,
    batch_calls=3,
    fill=10,
    big_fill=1000,
    latency_repetitions=2,
    invalidations=5,
)


# ---------------------------------------------------------------------------------------------
# The server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """Start a private redis-server on a free loopback port; yield the port; stop it by pid."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH: install Redis 7 to run this benchmark.")
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        port = _free_port()
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
             "--save", "", "--appendonly", "no", "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            with redis.Redis(port=port, socket_timeout=1) as probe:
                while True:
                    try:
                        probe.ping()
                        break
                    except redis.ConnectionError:
                        if time.monotonic() > deadline or process.poll() is not None:
                            raise SystemExit("redis-server did not start") from None
                        time.sleep(0.02)
            yield port
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(10)


# ---------------------------------------------------------------------------------------------
# Rows


def flask_session_redis_app(client: redis.Redis) -> Flask:
    """Flask-Session 0.8 with ``SESSION_TYPE="redis"`` on ``client``, defaults otherwise."""
    from flask_session import Session  # type: ignore[import-untyped]

    app = Flask("bench_flask_session_redis")
    app.config.update(
        SECRET_KEY="bench-secret-key-0123456789abcdef0123456789",
        SESSION_TYPE="redis",
        SESSION_REDIS=client,
    )
    Session(app)
    h.add_routes(app, use_session=True)
    return app


def floor_cases(client: redis.Redis, after: Case) -> list[Case]:
    """One GET; a GET then a SET; after a baseline request and in a tight loop."""
    texts = [
        json.dumps(
            {k: serialize.dumps(n if k == h.WRITE_KEY else v) for k, v in h.SESSION_DATA.items()},
            separators=(",", ":"),
        )
        for n in (1, 2)
    ]
    client.set("floor:read", texts[0], ex=3600)
    client.set("floor:write", texts[0], ex=3600)
    data = itertools.cycle(texts)
    get, set_ = client.get, client.set

    def read() -> None:
        get("floor:read")

    def write() -> None:
        get("floor:write")
        set_("floor:write", next(data), ex=3600)

    request = after.run

    def request_read() -> None:
        request()
        read()

    def request_write() -> None:
        request()
        write()

    return [
        Case(FLOOR, FLOOR_OPS[0], request_read, baseline=after.key),
        Case(FLOOR, FLOOR_OPS[1], request_write, baseline=after.key),
        Case(FLOOR, FLOOR_OPS[2], read),
        Case(FLOOR, FLOOR_OPS[3], write),
    ]


def fs_cleanup(client: redis.Redis) -> Callable[[list[str]], None]:
    """Delete the sessions a Flask-Session ``new`` batch created (keys ``session:<sid>``)."""

    def cleanup(set_cookies: list[str]) -> None:
        sids = [h.cookie_pair(c).partition("=")[2] for c in set_cookies]
        if sids:
            client.delete(*(f"session:{sid}" for sid in sids))

    return cleanup


def verify(cases: Sequence[Case]) -> None:
    """Run every request once and check its status (and that ``new`` issues a cookie)."""
    for case in cases:
        case.run()
        request = case.request
        if request is not None:
            if not request.status.startswith("200"):
                raise RuntimeError(f"{case.key} answered {request.status}")
            cookies = request.set_cookies()
            if case.workload == "new" and case.variant != BASELINE and not cookies:
                raise RuntimeError(f"{case.key} issued no cookie")
        if case.after_batch is not None:
            case.after_batch()


# ---------------------------------------------------------------------------------------------
# Commands per request, memory, fill


class Monitor:
    """Collect the commands Redis runs (``MONITOR``) until :meth:`stop`."""

    MARK: Final = "bench-monitor-stop"

    def __init__(self, port: int, marker: redis.Redis) -> None:
        self._client = redis.Redis(port=port)
        self._marker = marker
        self.commands: list[tuple[str, bool]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def _run(self) -> None:
        with self._client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            for entry in monitor.listen():
                command = str(entry["command"])
                if self.MARK in command:
                    return
                name = command.split(" ", 1)[0].strip('"').lower()
                self.commands.append((name, entry.get("client_type") == "lua"))

    def stop(self) -> list[tuple[str, bool]]:
        """Stop collecting and return ``(command, from a script)`` pairs."""
        # Through an open connection, so no connection handshake lands in the log.
        self._marker.echo(self.MARK)
        self._thread.join(10)
        self._client.close()
        return self.commands


def commands_per_request(
    port: int, marker: redis.Redis, case: Case, requests: int = 20
) -> dict[str, float]:
    """Commands per request of ``case``: round trips by name, plus ``(in scripts)``."""
    case.run()  # warm: scripts loaded, connections open
    if case.after_batch is not None:
        case.after_batch()
    marker.ping()
    monitor = Monitor(port, marker)
    for _ in range(requests):
        case.run()
    seen = monitor.stop()
    if case.after_batch is not None:
        case.after_batch()
    counts: Counter[str] = Counter()
    for name, in_script in seen:
        counts["(in scripts)" if in_script else name] += 1
    return {name: n / requests for name, n in sorted(counts.items())}


def session_key_of(cookie: str) -> bytes:
    """Keepsake's Redis key for the session of a ``Cookie`` header."""
    return f"{PREFIX}s:{storage_key(cookie.partition('=')[2])}".encode()


# Copies one session hash (and its TTL) under ARGV[2] new random keys, ARGV[3] per call.
_FILL: Final = """
local template = redis.call('HGETALL', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
local prefix, start, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = start, start + count - 1 do
  local key = prefix .. redis.sha1hex(tostring(i))
  redis.call('HSET', key, unpack(template))
  redis.call('PEXPIRE', key, ttl)
end
return count
"""


def fill_to(client: redis.Redis, template: bytes, total: int, done: int) -> float:
    """Store copies of the ``template`` session until ``total`` are stored; return seconds."""
    started = time.monotonic()
    script = client.register_script(_FILL)
    while done < total:
        step = min(20_000, total - done)
        script(keys=[template], args=[f"{PREFIX}s:fill", done, step])
        done += step
    return time.monotonic() - started


def invalidation_delay(cached: RedisStore, other: RedisStore, count: int) -> dict[str, Any]:
    """How long after another connection's change the local cache stops serving the old copy.

    Each round: the cached store loads a session (from memory), the other store changes it and
    gets its reply, then the cached store loads again and again until it sees the change. The
    delay runs from the other store's reply to the start of the first load that sees the change
    (which then reads the session from Redis); the stale loads in between are counted.
    """
    key = "f" * 64
    now = time.time()
    record = SessionRecord(key, "bench-inval", {"n": "0"}, None, now, now, now + 3600, now + 3600)
    other.delete(key)
    other.create(record)
    delays: list[float] = []
    stale = 0
    for n in range(1, count + 1):
        cached.load(key, now)
        other.apply(key, {"n": str(n)}, (), now)
        replied = time.perf_counter()
        while True:
            attempt = time.perf_counter()
            loaded = cached.load(key, now)
            if loaded is not None and loaded.data["n"] == str(n):
                break
            stale += 1
        delays.append((attempt - replied) * 1e6)
    other.delete(key)
    delays.sort()
    return {
        "rounds": count,
        "stale_loads": stale,
        "delay_us": h.summarize(delays).to_json()
        | {"p99": delays[min(len(delays) - 1, int(len(delays) * 0.99))], "max": delays[-1]},
    }


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Result:
    """Everything one run measured."""

    options: Options
    samples: dict[str, list[float]]
    cases: dict[str, Case]
    commands: dict[str, dict[str, dict[str, float]]]
    memory: dict[str, int]
    latency: dict[str, Any]
    invalidation: dict[str, Any]

    def overhead(self, variant: str, workload: str) -> Summary:
        """Median overhead in µs of one cell."""
        case = self.cases[f"{variant}/{workload}"]
        return h.summarize([x / 1000 for x in h.paired_overheads(self.samples, case)])

    def ratio(self, workload: str, variant: str, other: str, keepsake: str = KS) -> Summary:
        """Keepsake's overhead on ``workload`` over ``variant/other``'s, per repetition."""
        return h.summarize(
            h.ratio_samples(
                self.samples,
                self.cases[f"{keepsake}/{workload}"],
                self.cases[f"{variant}/{other}"],
            )
        )

    def checks(self) -> list[tuple[str, float, float, bool]]:
        """``(target, measured ratio, limit, met)`` per target and Keepsake row, plus untouched."""
        rows = []
        for keepsake in KEEPSAKE_ROWS:
            for workload, variant, other, limit in TARGETS:
                value = self.ratio(workload, variant, other, keepsake).median
                name = f"{workload}: {keepsake} / {variant} {other}"
                rows.append((name, value, limit, value <= limit))
            untouched = sum(self.commands[keepsake]["untouched"].values())
            name = f"untouched: {keepsake}, Redis commands per request"
            rows.append((name, untouched, 0.0, untouched == 0))
        return rows

    def to_json(self) -> dict[str, Any]:
        """The raw samples and every figure, for ``benchmarks/results/``."""
        return {
            "benchmark": "redis",
            "options": self.options.__dict__,
            "machine": h.machine_facts() | {"redis-py": redis.__version__},
            "overheads_us": {
                key: self.overhead(case.variant, case.workload).to_json()
                for key, case in self.cases.items()
                if case.variant != BASELINE
            },
            "checks": [
                {"target": t, "measured": m, "limit": lim, "met": ok}
                for t, m, lim, ok in self.checks()
            ],
            "commands_per_request": self.commands,
            "memory_bytes": self.memory,
            "read_latency": self.latency,
            "invalidation": self.invalidation,
            "samples_ns": self.samples,
        }


def run(options: Options, progress: Callable[[str], None] = lambda _: None) -> Result:
    """Start a server, build every row, time them, count commands, measure memory and latency."""
    with redis_server() as port, contextlib.ExitStack() as stack:
        url = f"redis://127.0.0.1:{port}/0"
        admin = stack.enter_context(redis.Redis(port=port))
        fs_client = stack.enter_context(redis.Redis(port=port))
        floor_client = stack.enter_context(redis.Redis(port=port))
        store = RedisStore.from_url(url, prefix=PREFIX)
        stack.callback(store.close)
        cached_store = RedisStore.from_url(url, prefix=PREFIX, local_cache=10_000)
        stack.callback(cached_store.close)

        base = h.baseline_app()
        ks_app = h.keepsake_app(store)
        ksc_app = h.keepsake_app(cached_store)
        fs_app = flask_session_redis_app(fs_client)
        ks_cookie, fs_cookie = h.seed_cookie(ks_app), h.seed_cookie(fs_app)
        ksc_cookie = h.seed_cookie(ksc_app)
        h.fill_sessions(ks_app, options.fill - 2)
        h.fill_sessions(fs_app, options.fill - 1)

        cases = [
            *h.workload_cases(BASELINE, base, ks_cookie, baseline=None),
            *h.workload_cases(KS, ks_app, ks_cookie, cleanup=h.keepsake_cleanup(store)),
            *h.workload_cases(KSC, ksc_app, ksc_cookie, cleanup=h.keepsake_cleanup(cached_store)),
            *h.workload_cases(FS, fs_app, fs_cookie, cleanup=fs_cleanup(fs_client)),
        ]
        by_key = {case.key: case for case in cases}
        cases += floor_cases(floor_client, by_key[f"{BASELINE}/read"])
        by_key = {case.key: case for case in cases}
        verify(cases)

        progress("counting commands per request")
        commands = {
            variant: {
                w: commands_per_request(port, admin, by_key[f"{variant}/{w}"]) for w in WORKLOADS
            }
            for variant in (*KEEPSAKE_ROWS, FS)
        }

        progress("memory")
        ks_key = session_key_of(ks_cookie)
        handle = admin.hget(ks_key, "h")
        assert handle is not None
        memory = {
            "keepsake_session_hash": int(admin.memory_usage(ks_key, samples=0) or 0),
            "keepsake_handle_index": int(admin.memory_usage(PREFIX.encode() + b"h:" + handle) or 0),
            "flask_session_key": int(
                admin.memory_usage(f"session:{fs_cookie.partition('=')[2]}", samples=0) or 0
            ),
            "floor_string": int(admin.memory_usage("floor:read", samples=0) or 0),
        }
        memory["keepsake_per_session"] = (
            memory["keepsake_session_hash"] + memory["keepsake_handle_index"]
        )
        # Redis keeps a hash compact (listpack) only while every value is at most
        # hash-max-listpack-value bytes (64 by default); the user agent is longer.
        admin.config_set("hash-max-listpack-value", 256)
        compact = session_key_of(h.seed_cookie(ks_app))
        memory["keepsake_session_hash_listpack_256"] = int(
            admin.memory_usage(compact, samples=0) or 0
        )
        admin.config_set("hash-max-listpack-value", 64)
        admin.delete(compact)

        progress(f"timing {len(cases)} cases")
        samples = h.run_interleaved(
            cases,
            repetitions=options.repetitions,
            batch_seconds=options.batch_seconds,
            batch_calls=options.batch_calls,
        )

        progress("local cache: invalidation delay")
        invalidation = invalidation_delay(cached_store, store, options.invalidations)

        progress("read latency by number of stored sessions")
        latency_cases = [by_key[f"{BASELINE}/read"], by_key[f"{KS}/read"]]
        latency: dict[str, Any] = {}
        stored = options.fill
        for total in (1000, options.big_fill):
            fill_seconds = fill_to(admin, ks_key, total, stored) if total > stored else 0.0
            stored = max(stored, total)
            timed = h.run_interleaved(
                latency_cases,
                repetitions=options.latency_repetitions,
                batch_seconds=options.batch_seconds,
                batch_calls=options.batch_calls,
            )
            overhead = h.paired_overheads(timed, latency_cases[1])
            latency[str(total)] = {
                "stored_sessions": int(admin.dbsize()),
                "fill_seconds": round(fill_seconds, 2),
                "read_request_us": h.summarize(
                    [x / 1000 for x in timed[latency_cases[1].key]]
                ).to_json(),
                "read_overhead_us": h.summarize([x / 1000 for x in overhead]).to_json(),
                "used_memory_mb": round(int(admin.info("memory")["used_memory"]) / 2**20, 1),
            }
        return Result(options, samples, by_key, commands, memory, latency, invalidation)


# ---------------------------------------------------------------------------------------------
# Report


def _cell(summary: Summary) -> str:
    return f"{summary.median:.1f} ({summary.q1:.1f}-{summary.q3:.1f})"


def report(result: Result, style: h.TableStyle = "text") -> str:
    """The tables of one run."""
    out = []
    rows = [
        [variant, *(_cell(result.overhead(variant, w)) for w in WORKLOADS)]
        for variant in (*KEEPSAKE_ROWS, FS)
    ]
    out.append("Overhead per request over the no-session baseline, µs: median (q1-q3)")
    out.append(h.format_table(["variant", *WORKLOADS], rows, style=style))
    floor_rows = [[FLOOR, op, _cell(result.overhead(FLOOR, op))] for op in FLOOR_OPS]
    out.append("\nredis-py floors, µs (the first two right after a baseline request)")
    out.append(h.format_table(["floor", "operation", "µs"], floor_rows, style=style))

    out.append("\nTargets (ratios of overheads, per repetition, median)")
    out.append(
        h.format_table(
            ["target", "measured", "limit", "met"],
            [
                [t, f"{m:.2f}", f"<= {lim:.2f}", "yes" if ok else "NO"]
                for t, m, lim, ok in result.checks()
            ],
            style=style,
        )
    )  # fmt: skip

    out.append(
        "\nRedis commands per request (MONITOR; '(in scripts)' run inside Lua, no round trip)"
    )
    command_rows = [
        [variant, w, ", ".join(f"{n} {c:g}" for n, c in calls.items()) or "none"]
        for variant, by_workload in result.commands.items()
        for w, calls in by_workload.items()
    ]
    out.append(h.format_table(["variant", "workload", "commands"], command_rows, style=style))

    out.append("\nMEMORY USAGE, bytes (five-key session)")
    out.append(
        h.format_table(["what", "bytes"], [[k, v] for k, v in result.memory.items()], style=style)
    )

    inv = result.invalidation
    delay = inv["delay_us"]
    out.append(
        "\nLocal cache: from another connection's change to the cache seeing it "
        f"({inv['rounds']} rounds), µs"
    )
    out.append(
        h.format_table(
            ["median", "q1-q3", "p99", "max", "stale loads"],
            [
                [
                    f"{delay['median']:.1f}",
                    f"{delay['q1']:.1f}-{delay['q3']:.1f}",
                    f"{delay['p99']:.1f}",
                    f"{delay['max']:.1f}",
                    inv["stale_loads"],
                ]
            ],
            style=style,
        )
    )

    out.append("\nKeepsake read by number of stored sessions")
    latency_rows = [
        [
            n,
            v["stored_sessions"],
            f"{v['read_request_us']['median']:.1f}",
            f"{v['read_overhead_us']['median']:.1f}",
            v["used_memory_mb"],
            v["fill_seconds"],
        ]
        for n, v in result.latency.items()
    ]
    out.append(
        h.format_table(
            ["sessions", "keys in db", "read request µs", "read overhead µs", "used MB", "fill s"],
            latency_rows,
            style=style,
        )
    )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="about 40 s, 100,000 sessions")
    preset.add_argument("--smoke", action="store_true", help="a few calls each, no real timing")
    parser.add_argument("--repetitions", type=int, help="samples per case")
    parser.add_argument("--big-fill", type=int, help="sessions stored for the latency row")
    parser.add_argument("--no-json", action="store_true", help="do not write results/*.json")
    parser.add_argument("--json-dir", type=Path, default=h.RESULTS_DIR, help="where JSON goes")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    args = parser.parse_args(argv)
    options = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.repetitions:
        options = replace(options, repetitions=args.repetitions)
    if args.big_fill:
        options = replace(options, big_fill=args.big_fill)
    result = run(options, progress=lambda step: print(f"... {step}", file=sys.stderr, flush=True))
    print(report(result, "markdown" if args.markdown else "text"))
    if not args.no_json:
        path = h.write_results("redis", result.to_json(), args.json_dir)
        print(f"\nRaw results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
