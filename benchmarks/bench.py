"""What a session costs per request: Keepsake on each store against its peers, on pyperf.

Every benchmark times one in-process WSGI request (``app.wsgi_app`` with a prebuilt environ, the
body drained and closed as a server would), and every app has the same routes, so the overhead
of a session is its median minus the median of the same request to an app without a session
(``baseline``). Workloads, on a stored session of five keys:

``read``       the view reads one key
``write``      the view increments one key (a real change on every request)
``new``        no cookie; the view sets one key, so a session is created and a cookie issued
``untouched``  the cookie is sent, the view never touches the session
``login``      ``keepsake.login()`` on the session: a rename to a new token (which the next
               request carries), with the default rotation grace (a tombstone); ``login-grace-0``
               the same with ``KEEPSAKE_ROTATION_GRACE = 0``
``flask-login`` ``untouched`` in an app that also has Flask-Login, whose after-request hook reads
               the session (its overhead is over a baseline app with Flask-Login)

Variants: ``baseline`` (no ``SECRET_KEY``: Flask's ``NullSession``), ``flask-cookie`` (Flask's
signed cookie), ``fs-redis`` and ``fs-sqlalchemy`` (Flask-Session 0.8, defaults), and Keepsake on
``memory``, ``sqlite``, ``redis``, ``redis-cache`` (``?local_cache=10000``) and ``redis-nohiredis``
(redis-py's pure-Python parser). Floors, in a tight loop: SQLite ``SELECT`` by key and ``SELECT``
plus ``UPDATE`` on Keepsake's own file; Redis ``GET`` and ``GET`` then ``SET`` of a string the size
of the session. Redis is a private ``redis-server`` on a free loopback port, started here.

::

    python benchmarks/bench.py -o bench.json                  # full run, about 14 minutes
    python benchmarks/bench.py --fast -o quick.json           # a rough look
    python benchmarks/bench.py --only sqlite/ --fast          # benchmarks whose name matches
    python benchmarks/bench.py --sqlalchemy postgresql+psycopg://postgres@127.0.0.1/keepsake_bench
    python benchmarks/report.py bench.json --plots docs/images   # the tables and plots again

Every worker process builds its own apps and stores (a fresh SQLite file, an emptied Redis
database), so nothing one benchmark leaves behind is seen by the next.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pyperf
from flask import Flask, session
from werkzeug.test import EnvironBuilder

from flask_keepsake import Keepsake

WORKLOADS = ("read", "write", "new", "untouched")
DATA = {"user_id": 4711, "username": "ada", "theme": "dark", "cart": [3, 14, 15], "visits": 0}
SECRET = "bench-secret-key-0123456789abcdef0123456789"
STORES = {
    "memory": "memory://",
    "sqlite": "sqlite:///{dir}/sessions.sqlite3",
    "redis": "{redis}",
    "redis-cache": "{redis}?local_cache=10000",
    "redis-nohiredis": "{redis}",
    "postgres": "{postgres}",
}
PATHS = {"login-grace-0": "/login", "flask-login": "/untouched"}


class Context:
    """What a worker needs: a scratch directory, the Redis URL, the SQLAlchemy URL."""

    def __init__(self, args: argparse.Namespace, directory: Path, flush: bool = True) -> None:
        self.dir, self.flush = directory, flush
        self.redis: str = args.redis_url or ""
        self.sqlalchemy: str = args.sqlalchemy or f"sqlite:///{directory}/flask-session.sqlite3"
        self.postgres: str = args.postgres or ""

    def empty_postgres(self) -> None:
        """Empty Keepsake's tables in the benchmark database (created on first use)."""
        import psycopg

        with psycopg.connect(self.postgres, autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass('keepsake_sessions')").fetchone()
            if exists and exists[0]:
                conn.execute("TRUNCATE keepsake_sessions, keepsake_sessions_tombstones")

    def flush_redis(self) -> None:
        """Empty the Redis database (and, in ``build_app``, Flask-Session's table)."""
        if not self.flush:
            return
        import redis

        with redis.Redis.from_url(self.redis) as client:
            client.flushdb()


def add_routes(app: Flask, keepsake: Keepsake | None, use_session: bool = True) -> None:
    """The same views for every variant; the baseline does the same work without the session."""

    @app.get("/seed")
    def seed() -> str:
        if use_session:
            session.update(DATA)
        return "seeded"

    @app.get("/read")
    def read() -> str:
        return str(session["username"]) if use_session else "ada"

    @app.get("/write")
    def write() -> str:
        # The new count is the answer, so the load test can tell a lost write.
        if not use_session:
            return "1"
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    @app.get("/new")
    def new() -> str:
        if use_session:
            session["visits"] = 1
        return "new"

    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    @app.get("/login")
    def login() -> str:
        if keepsake is not None:
            keepsake.login("7")
        return "ok"


def build_app(variant: str, workload: str, ctx: Context) -> Flask:
    """The app of one variant; with Flask-Login for the ``flask-login`` workload."""
    app = Flask(f"bench-{variant}")
    keepsake = None
    if variant == "flask-cookie":
        app.config["SECRET_KEY"] = SECRET
    elif variant == "fs-redis":
        import redis
        from flask_session import Session  # type: ignore[import-untyped]

        ctx.flush_redis()
        client = redis.Redis.from_url(ctx.redis)
        app.config.update(SECRET_KEY=SECRET, SESSION_TYPE="redis", SESSION_REDIS=client)
        Session(app)
    elif variant == "fs-sqlalchemy":
        from flask_session import Session
        from flask_sqlalchemy import SQLAlchemy
        from sqlalchemy import text

        table = "keepsake_bench_flask_sessions"
        app.config.update(SECRET_KEY=SECRET, SQLALCHEMY_DATABASE_URI=ctx.sqlalchemy)
        db = SQLAlchemy(app)
        app.config.update(
            SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db, SESSION_SQLALCHEMY_TABLE=table
        )
        Session(app)
        if ctx.flush:
            with app.app_context():
                db.session.execute(text(f"DELETE FROM {table}"))
                db.session.commit()
    elif variant != "baseline":
        if variant.startswith("redis"):
            ctx.flush_redis()
        elif variant == "postgres" and ctx.flush:
            ctx.empty_postgres()
        url = STORES[variant].format(dir=ctx.dir, redis=ctx.redis, postgres=ctx.postgres)
        grace = 0 if workload == "login-grace-0" else 60
        app.config.update(KEEPSAKE_STORE=url, KEEPSAKE_ROTATION_GRACE=grace)
        keepsake = Keepsake(app)
    if workload == "flask-login":
        import flask_login

        manager = flask_login.LoginManager(app)
        manager.user_loader(lambda user_id: None)
    add_routes(app, keepsake, use_session=variant != "baseline")
    return app


def environ(path: str, cookie: str | None = None) -> dict[str, Any]:
    headers = [("Cookie", cookie)] if cookie else []
    builder = EnvironBuilder(path=path, base_url="https://bench.example/", headers=headers)
    try:
        return builder.get_environ()
    finally:
        builder.close()


class Caller:
    """Runs requests on one app, keeping the ``Set-Cookie`` headers of the last response."""

    def __init__(self, app: Flask) -> None:
        self.wsgi = app.wsgi_app
        self.status = ""
        self.cookies: list[str] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status = status
        self.cookies = [v for k, v in headers if k == "Set-Cookie"]
        return len

    def __call__(self, env: dict[str, Any]) -> bytes:
        body = self.wsgi(dict(env), self.start_response)
        try:
            return b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


def request_timer(variant: str, workload: str, ctx: Context) -> Callable[[int], float]:
    """A pyperf time function; the app is built (and checked) on the first call, untimed."""
    state: dict[str, Any] = {}

    def setup() -> None:
        call = Caller(build_app(variant, workload, ctx))
        call(environ("/seed"))
        cookie = call.cookies[0].split(";", 1)[0] if call.cookies else None
        env = environ(PATHS.get(workload, f"/{workload}"), None if workload == "new" else cookie)
        body = call(env)
        if not call.status.startswith("200") or (workload == "read" and body != b"ada"):
            raise RuntimeError(f"{variant}/{workload}: {call.status} {body[:200]!r}")
        if workload.startswith("login") and variant != "baseline":
            # The check above signed in once: its old token is a tombstone now, and a request
            # that carries it is not a login. Go on from the new token, and check that every
            # login issues the next one.
            for n in range(3):
                if not call.cookies:
                    raise RuntimeError(f"{variant}/{workload}: a login issued no cookie")
                env["HTTP_COOKIE"] = call.cookies[0].split(";", 1)[0]
                if n < 2:
                    call(env)
        state.update(call=call, env=env)

    def run(loops: int) -> float:
        if not state:
            setup()
        call, env = state["call"], state["env"]
        if workload.startswith("login"):
            return rotating(call, env, loops)
        start = time.perf_counter()
        for _ in range(loops):
            call(env)
        return time.perf_counter() - start

    return run


def rotating(call: Caller, env: dict[str, Any], loops: int) -> float:
    """Each request carries the cookie the previous one set (a login issues a new token)."""
    start = time.perf_counter()
    for _ in range(loops):
        call(env)
        if call.cookies:
            env["HTTP_COOKIE"] = call.cookies[0].split(";", 1)[0]
    return time.perf_counter() - start


def floor_timer(name: str, ctx: Context) -> Callable[[int], float]:
    """The store floors, each a tight loop of what one store call needs at least."""
    state: dict[str, Any] = {}
    text = json.dumps(DATA)

    def setup() -> None:
        if name.startswith("sqlite"):
            call = Caller(build_app("sqlite", "read", ctx))
            call(environ("/seed"))
            conn = sqlite3.connect(ctx.dir / "sessions.sqlite3", isolation_level=None)
            conn.execute("PRAGMA synchronous = NORMAL")
            (key,) = conn.execute("SELECT key FROM keepsake_sessions").fetchone()
            select = "SELECT data FROM keepsake_sessions WHERE key = ? AND expires_at > ?"
            update = "UPDATE keepsake_sessions SET data = ? WHERE key = ?"

            def read() -> None:
                conn.execute(select, (key, time.time())).fetchone()

            def write() -> None:
                read()
                conn.execute(update, (text, key))

        elif name.startswith("postgres"):
            import psycopg

            call = Caller(build_app("postgres", "read", ctx))
            call(environ("/seed"))
            conn = psycopg.connect(ctx.postgres, autocommit=True, prepare_threshold=0)
            (key,) = conn.execute("SELECT key FROM keepsake_sessions LIMIT 1").fetchone() or (b"",)
            pg_select = "SELECT data FROM keepsake_sessions WHERE key = %s AND expires_at > %s"
            pg_update = "UPDATE keepsake_sessions SET data = %s::jsonb WHERE key = %s"

            def read() -> None:
                conn.execute(pg_select, (key, time.time())).fetchone()

            def write() -> None:
                read()
                conn.execute(pg_update, (text, key))

        else:
            import redis

            ctx.flush_redis()
            client = redis.Redis.from_url(ctx.redis)
            client.set("floor", text)

            def read() -> None:
                client.get("floor")

            def write() -> None:
                client.get("floor")
                client.set("floor", text, ex=3600)

        state["op"] = write if name.endswith("write") else read

    def run(loops: int) -> float:
        if not state:
            setup()
        op = state["op"]
        start = time.perf_counter()
        for _ in range(loops):
            op()
        return time.perf_counter() - start

    return run


def benchmarks(postgres: bool) -> Iterator[tuple[str, str, str]]:
    """(name, variant, workload) of every benchmark, in the order they run; the PostgreSQL
    store and floors only with ``--postgres``."""
    stores = [v for v in STORES if postgres or v != "postgres"]
    for variant in ("baseline", "flask-cookie", "fs-redis", "fs-sqlalchemy", *stores):
        workloads: tuple[str, ...] = WORKLOADS
        if variant == "redis-nohiredis":
            workloads = ("read", "write")
        elif variant in STORES:
            workloads = (*WORKLOADS, "login", "login-grace-0", "flask-login")
        elif variant == "baseline":
            workloads = (*WORKLOADS, "login", "flask-login")
        for workload in workloads:
            yield f"{variant}/{workload}", variant, workload
    floors = ["sqlite-read", "sqlite-write", "redis-read", "redis-write"]
    if postgres:
        floors += ["postgres-read", "postgres-write"]
    for floor in floors:
        yield f"floor/{floor}", "floor", floor


def versions() -> dict[str, str]:
    """Versions of what is measured, kept in the JSON's metadata."""
    found = {"sqlite": sqlite3.sqlite_version}
    for name in ("flask", "werkzeug", "flask-session", "sqlalchemy", "redis", "hiredis", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    with contextlib.suppress(OSError):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        found["redis-server"] = out.stdout.split()[2].removeprefix("v=")
    return {f"keepsake_{k}": v for k, v in found.items()}


def rounds(args: argparse.Namespace, redis_url: str) -> Path:
    """Run the whole list ``--rounds`` times, each round with a share of the processes, into one
    JSON file (pyperf's ``--append``): every benchmark then has values from every part of the
    run, so a busy minute on a shared machine does not land on one benchmark only."""
    out = Path(args.output or Path(tempfile.mkdtemp(prefix="bench-")) / "bench.json")
    if out.exists():
        raise SystemExit(f"{out} exists; pyperf appends to it, so choose a new file.")
    own = {"-o", "--output", "--rounds", "--processes", "--values", "--plots"}
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg in own or arg in ("--fast", "--rigorous"):
            skip = arg in own
            continue
        if not any(arg.startswith(f"{o}=") for o in own):
            argv.append(arg)
    per_round = max(1, args.processes // args.rounds)
    for n in range(args.rounds):
        print(f"Round {n + 1} of {args.rounds}: {per_round} processes per benchmark", flush=True)
        subprocess.run(
            [sys.executable, __file__, *argv, "--rounds", "1", "--no-report", "--redis-url",
             redis_url, "--processes", str(per_round), "--values", str(args.values), "--append",
             str(out), *(("--reverse",) if n % 2 else ())],
            check=True,
        )  # fmt: skip
    return out


def main() -> None:
    def worker_args(cmd: list[str], args: argparse.Namespace) -> None:
        # pyperf starts workers with its own options only; ours are passed on.
        cmd.extend(("--redis-url", args.redis_url or "", "--only", args.only))
        if args.sqlalchemy:
            cmd.extend(("--sqlalchemy", args.sqlalchemy))
        if args.postgres:
            cmd.extend(("--postgres", args.postgres))
        if args.reverse:
            cmd.append("--reverse")

    # 12 worker processes instead of pyperf's 20 keep the full run under 15 minutes.
    runner = pyperf.Runner(processes=12, add_cmdline_args=worker_args, metadata=versions())
    add = runner.argparser.add_argument
    add("--only", default="", help="run the benchmarks whose name matches this expression")
    add("--sqlalchemy", help="Flask-Session's database URL (default: a SQLite file)")
    add("--postgres", help="a PostgreSQL URL for Keepsake's PostgreSQL store and floors")
    add("--rounds", type=int, default=4, help="run the list this many times (default 4)")
    add("--plots", type=Path, metavar="DIR", help="draw the plots into DIR at the end")
    for hidden in ("--reverse", "--no-report"):
        add(hidden, action="store_true", help=argparse.SUPPRESS)
    add("--redis-url", help=argparse.SUPPRESS)
    args = runner.parse_args()
    chosen = [b for b in benchmarks(bool(args.postgres)) if re.search(args.only, b[0])]
    if args.reverse:
        chosen.reverse()
    if args.worker and chosen[args.worker_task][1] == "redis-nohiredis":
        sys.modules["hiredis"] = None  # type: ignore[assignment]  # redis-py falls back
    # The memory store warns that it is not for production; a benchmark knows.
    logging.getLogger("flask_keepsake").setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-")))
        if not args.worker and not args.redis_url:
            from flask_keepsake.testing.servers import RedisServer

            server = RedisServer(directory / "redis").start()
            stack.callback(server.stop)
            args.redis_url = server.url
        if not args.worker and args.rounds > 1:
            suite = pyperf.BenchmarkSuite.load(str(rounds(args, args.redis_url)))
        else:
            ctx = Context(args, directory)
            results = []
            for name, variant, workload in chosen:
                timer = floor_timer if variant == "floor" else None
                func = timer(workload, ctx) if timer else request_timer(variant, workload, ctx)
                result = runner.bench_time_func(name, func)
                if result is not None:
                    results.append(result)
            suite = pyperf.BenchmarkSuite(results) if results else None
    if not args.worker and not args.no_report and suite is not None:
        from report import report

        report(suite, args.plots)


if __name__ == "__main__":
    main()
