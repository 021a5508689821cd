"""What the rotation tombstone costs: requests with KEEPSAKE_ROTATION_GRACE on and off.

In-process WSGI requests (``app.wsgi_app``, a prebuilt environ) on the memory and SQLite stores,
and on Redis when ``--redis URL`` names a server (never a default one). For each store, the same
three requests with a grace window of 60 seconds (the default: a login leaves a tombstone) and
of 0 (no tombstone): ``read`` (one key of a five-key session), ``write`` (one key changed) and
``login`` (``keepsake.login()`` on a signed-in session: one rename per request, each leaving a
tombstone). pyperf calibrates the loops and runs each benchmark in its own worker processes;
the table gives medians and the ratio grace 60 / grace 0, which should be 1.00 for read and write
(the tombstone is only looked at when a token is unknown) and shows what it adds to a login.

::

    python benchmarks/bench_rotation.py --fast             # a quick look
    python benchmarks/bench_rotation.py -o rotation.json   # the full run, kept for pyperf compare
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyperf
from flask import Flask, session
from werkzeug.test import EnvironBuilder

from flask_keepsake import Keepsake
from flask_keepsake.stores import MemoryStore, SQLiteStore, Store

GRACES = (60, 0)
WORKLOADS = ("read", "write", "login")
COOKIE = "__Host-session"
DATA = {"user_id": 4711, "username": "ada", "theme": "dark", "cart": [3, 14, 15], "visits": 0}


def _app(store: Store, grace: int) -> tuple[Flask, Keepsake]:
    app = Flask("bench_rotation")
    app.config.update(KEEPSAKE_ROTATION_GRACE=grace, KEEPSAKE_TOUCH_INTERVAL=600)
    keepsake = Keepsake(app, store=store)

    @app.post("/seed")
    def seed() -> str:
        session.update(DATA)
        keepsake.login("7")
        return "ok"

    @app.get("/read")
    def read() -> str:
        return str(session["username"])

    @app.post("/write")
    def write() -> str:
        session["visits"] += 1
        return "ok"

    @app.post("/login")
    def login() -> str:
        keepsake.login("7")
        return "ok"

    return app, keepsake


def _environ(path: str, method: str, token: str | None) -> dict[str, Any]:
    headers = {"Cookie": f"{COOKIE}={token}"} if token else {}
    builder = EnvironBuilder(
        path=path, method=method, base_url="https://bench.example/", headers=headers
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _call(app: Flask, environ: dict[str, Any]) -> str | None:
    """Run one request; return the session token it set, if any."""
    found: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], *args: Any) -> None:
        for name, value in headers:
            if name == "Set-Cookie" and value.startswith(COOKIE + "="):
                found.append(value.split(";", 1)[0].split("=", 1)[1])

    body = app.wsgi_app(dict(environ), start_response)
    for _ in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()
    return found[-1] if found else None


def _timer(app: Flask, workload: str) -> Callable[[int], float]:
    token = _call(app, _environ("/seed", "POST", None))
    assert token is not None
    if workload in ("read", "write"):
        environ = _environ(f"/{workload}", "GET" if workload == "read" else "POST", token)

        def run(loops: int) -> float:
            start = time.perf_counter()
            for _ in range(loops):
                _call(app, environ)
            return time.perf_counter() - start

        return run

    state = {"token": token}

    def login(loops: int) -> float:
        # Each login renames the session to a new token, which the next request carries; the
        # environ is built outside the timed part.
        total = 0.0
        for _ in range(loops):
            environ = _environ("/login", "POST", state["token"])
            start = time.perf_counter()
            new = _call(app, environ)
            total += time.perf_counter() - start
            assert new is not None
            state["token"] = new
        return total

    return login


def _stores(redis_url: str | None) -> Iterator[tuple[str, Callable[[], Store]]]:
    directory = Path(tempfile.mkdtemp(prefix="bench-rotation-"))
    yield "memory", MemoryStore
    yield "sqlite", lambda: SQLiteStore(directory / "sessions.sqlite3")
    if redis_url:
        from flask_keepsake.stores.redis import RedisStore

        yield "redis", lambda: RedisStore.from_url(redis_url, prefix="bench-rotation:")


def _table(results: dict[str, pyperf.Benchmark]) -> None:
    print()
    print("| store | workload | grace 60 s (µs) | grace 0 (µs) | ratio |")
    print("| --- | --- | ---: | ---: | ---: |")
    stores = dict.fromkeys(name.split("/")[0] for name in results)
    for store in stores:
        for workload in WORKLOADS:
            on = results.get(f"{store}/{workload}/grace-60")
            off = results.get(f"{store}/{workload}/grace-0")
            if on is None or off is None:
                continue
            a, b = on.median() * 1e6, off.median() * 1e6
            print(f"| {store} | {workload} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    spreads = [
        statistics.stdev(bench.get_values()) / bench.median()
        for bench in results.values()
        if len(bench.get_values()) > 1
    ]
    if spreads:
        print(f"\nMedian relative standard deviation: {statistics.median(spreads):.1%}")


def _worker_args(cmd: list[str], args: argparse.Namespace) -> None:
    # pyperf starts worker processes with its own options only; ours must be passed on.
    if args.redis:
        cmd.extend(("--redis", args.redis))


def main() -> None:
    # The memory store warns that it is not for production; a benchmark knows.
    logging.getLogger("flask_keepsake").setLevel(logging.ERROR)
    runner = pyperf.Runner(add_cmdline_args=_worker_args)
    runner.argparser.add_argument("--redis", metavar="URL", help="also run on this Redis server")
    args: argparse.Namespace = runner.parse_args()
    results: dict[str, pyperf.Benchmark] = {}
    for store_name, make_store in _stores(args.redis):
        for workload in WORKLOADS:
            for grace in GRACES:
                name = f"{store_name}/{workload}/grace-{grace}"
                store = make_store()
                app, _ = _app(store, grace)
                bench = runner.bench_time_func(name, _timer(app, workload))
                store.close()
                if bench is not None:
                    results[name] = bench
    if results and not args.worker:
        _table(results)


if __name__ == "__main__":
    main()
