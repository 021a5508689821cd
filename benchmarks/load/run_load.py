"""Load: the demo and Flask-Session under gunicorn, driven by Locust, side by side in one run.

``python benchmarks/load/run_load.py [--duration 60] [--users 64] [--quick]``

For each variant, in a fresh temporary folder: start a private ``redis-server`` if the variant
needs one, start gunicorn (4 sync workers by default) on a free loopback port, warm it up, drive
it with Locust headless for the duration (``locustfile.py``: members and visitors, reads and
writes, sign-out and sign-in), stop everything by pid, and tally the answers. Then print a table
(requests per second, p50, p99, errors by kind) and write everything to
``benchmarks/results/load-<time>.json``.

Variants (``--variants`` picks some, by id):

``demo-sqlite``, ``demo-redis``
    The demo application (``keepsake_demo:create_app()``) on the SQLite default and on Redis.
``keepsake-sqlite``, ``keepsake-redis``
    ``load_app.py`` with Keepsake: the same small app as the Flask-Session variants, so the two
    libraries are compared on equal pages.
``demo-redis-cache``, ``keepsake-redis-cache``
    The same on Redis with the opt-in local cache (``?local_cache=10000``).
``fs-redis``, ``fs-sqlalchemy``
    ``load_app.py`` with Flask-Session 0.8 on Redis, and on SQLAlchemy with a SQLite file.

All traffic goes to 127.0.0.1, each server is stopped by its own pid, and nothing is left
running: every step has a time limit.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parents[1]
RESULTS: Final = ROOT / "benchmarks" / "results"

#: Password hashing of every variant: real hashes without scrypt's deliberate cost, so that
#: sign-ins measure sessions rather than the key-derivation function.
PASSWORD_METHOD: Final = "pbkdf2:sha256:1000"
#: gunicorn worker processes, as in the issue.
WORKERS: Final = 4
#: Requests sent to each server before the measured run (imports, templates, connections).
WARMUP_REQUESTS: Final = 40
#: Seconds to wait for a server to listen.
START_TIMEOUT: Final = 30.0
#: Seconds given to Locust beyond the run time before it is killed.
LOCUST_GRACE: Final = 60.0


@dataclass(frozen=True)
class Variant:
    """One server configuration under load."""

    id: str
    label: str
    app: str  # "demo" or "load_app"
    sessions: str  # "keepsake", "flask-session-redis" or "flask-session-sqlalchemy"
    store: str  # "sqlite" or "redis"
    store_query: str = ""  # appended to Keepsake's Redis URL


VARIANTS: Final = (
    Variant("demo-sqlite", "demo, Keepsake (SQLite)", "demo", "keepsake", "sqlite"),
    Variant("demo-redis", "demo, Keepsake (Redis)", "demo", "keepsake", "redis"),
    Variant("keepsake-sqlite", "Keepsake (SQLite)", "load_app", "keepsake", "sqlite"),
    Variant("keepsake-redis", "Keepsake (Redis)", "load_app", "keepsake", "redis"),
    Variant("demo-redis-cache", "demo, Keepsake (Redis, local cache)", "demo", "keepsake", "redis",
            "?local_cache=10000"),
    Variant("keepsake-redis-cache", "Keepsake (Redis, local cache)", "load_app", "keepsake",
            "redis", "?local_cache=10000"),
    Variant("fs-sqlalchemy", "Flask-Session (SQLAlchemy)", "load_app", "flask-session-sqlalchemy",
            "sqlite"),
    Variant("fs-redis", "Flask-Session (Redis)", "load_app", "flask-session-redis", "redis"),
)  # fmt: skip
_BY_ID: Final = {variant.id: variant for variant in VARIANTS}

#: Which Flask-Session variant each Keepsake variant is compared with, for the req/s target.
PEERS: Final = {
    "demo-sqlite": "fs-sqlalchemy",
    "keepsake-sqlite": "fs-sqlalchemy",
    "demo-redis": "fs-redis",
    "keepsake-redis": "fs-redis",
    "demo-redis-cache": "fs-redis",
    "keepsake-redis-cache": "fs-redis",
}


@dataclass
class Result:
    """What one variant did under load."""

    variant: str
    label: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    server_log: dict[str, int] = field(default_factory=dict)
    round_rps: list[float] = field(default_factory=list)
    skipped: str | None = None

    @property
    def error_count(self) -> int:
        """Every error of every kind."""
        return sum(self.errors.values())


# -- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until ``process`` listens on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process we started, by its pid: ``sig``, then SIGKILL after 15 seconds."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port, without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    with (directory / "redis.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(directory)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_for_port(port, process, START_TIMEOUT)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(process)


def _gunicorn_flags() -> list[str]:
    # gunicorn 27 opens a control socket in ~/.gunicorn by default; a benchmark must not touch
    # anything outside its temporary folder.
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
        return ["--no-control-socket"]
    return []


def app_environment(variant: Variant, directory: Path, redis_url: str | None) -> dict[str, str]:
    """The environment of the variant's server (and of its preparation step)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLASK_", "KEEPSAKE_", "LOAD_", "SESSION_"))
    }
    instance = directory / "instance"
    secret = secrets.token_hex(32)
    if variant.app == "demo":
        env.update(
            KEEPSAKE_DEMO_INSTANCE=str(instance),
            FLASK_SECRET_KEY=secret,
            FLASK_DEMO_PASSWORD_METHOD=PASSWORD_METHOD,
            LOAD_MEMBER_PAGE="/sessions",
        )
        if redis_url is not None:
            env["FLASK_KEEPSAKE_STORE"] = redis_url + variant.store_query
    else:
        env.update(
            LOAD_SESSIONS=variant.sessions,
            LOAD_INSTANCE=str(instance),
            LOAD_SECRET_KEY=secret,
            LOAD_PASSWORD_METHOD=PASSWORD_METHOD,
            LOAD_MEMBER_PAGE="/account",
            PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        )
        if redis_url is not None:
            env["LOAD_REDIS_URL"] = redis_url
            if variant.sessions == "keepsake":
                env["KEEPSAKE_STORE"] = redis_url + variant.store_query
    return env


_PREPARE: Final = {
    "demo": (
        "from keepsake_demo import create_app\n"
        "app = create_app()\n"
        "app.extensions['keepsake'].store.close()\n"
    ),
    "load_app": "import load_app\nload_app.prepare()\n",
}
_APP_SPEC: Final = {"demo": "keepsake_demo:create_app()", "load_app": "load_app:create_app()"}


@contextlib.contextmanager
def gunicorn(
    variant: Variant, env: dict[str, str], directory: Path, threads: int
) -> Iterator[tuple[int, Path]]:
    """The variant's app under gunicorn on a free loopback port; yields the port and its log."""
    # Create the tables once before the workers start, so that they do not race to.
    subprocess.run(
        [sys.executable, "-c", _PREPARE[variant.app]], env=env, check=True, timeout=60, cwd=HERE
    )
    port = free_port()
    log_path = directory / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(WORKERS),
        "--bind", f"127.0.0.1:{port}",
        "--timeout", "30",
        *(["--threads", str(threads)] if threads > 1 else []),
        *_gunicorn_flags(),
        _APP_SPEC[variant.app],
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=HERE)
        try:
            wait_for_port(port, process, START_TIMEOUT)
            yield port, log_path
        finally:
            stop(process)


def warm_up(port: int, count: int = WARMUP_REQUESTS) -> None:
    """Send ``count`` requests to reach every worker once before measuring (not counted)."""
    for i in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/" if i % 2 else "/api/session")
            conn.getresponse().read()
        finally:
            conn.close()


# -- one run -------------------------------------------------------------------------------------


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``ordered`` (nearest rank)."""
    if not ordered:
        return 0.0
    rank = max(1, round(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def scan_server_log(path: Path) -> dict[str, int]:
    """Counts of the lines that matter in a gunicorn log (worker output included)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return {
        "database is locked": text.count("database is locked"),
        "Traceback": text.count("Traceback (most recent call last)"),
        "worker timeout": text.count("WORKER TIMEOUT"),
        "worker booted": text.count("Booting worker"),
        "store unavailable (503)": text.count("answering 503"),
    }


@dataclass
class Round:
    """What Locust's users saw in one run of one variant, and what the server logged."""

    latencies_ms: list[float]
    seconds: float
    errors: dict[str, int]
    examples: dict[str, str]
    statuses: dict[str, int]
    server_log: dict[str, int]


def run_variant(variant: Variant, options: argparse.Namespace, directory: Path) -> Round:
    """Start the variant's servers in ``directory``, drive them with Locust, stop them."""
    directory.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        redis_url = None
        if variant.store == "redis":
            redis_url = stack.enter_context(redis_server(directory))
        env = app_environment(variant, directory, redis_url)
        port, log_path = stack.enter_context(gunicorn(variant, env, directory, options.threads))
        warm_up(port)
        tally_path = directory / "tally.json"
        locust_env = {**env, "LOAD_RESULT_FILE": str(tally_path)}
        command = [
            sys.executable, "-m", "locust",
            "-f", str(HERE / "locustfile.py"),
            "--headless",
            "--users", str(options.users),
            "--spawn-rate", str(options.users),
            "--run-time", f"{options.duration}s",
            "--host", f"http://127.0.0.1:{port}",
            "--only-summary",
            "--loglevel", "WARNING",
            "--exit-code-on-error", "0",
        ]  # fmt: skip
        with (directory / "locust.log").open("wb") as log:
            subprocess.run(
                command,
                env=locust_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=options.duration + LOCUST_GRACE,
                check=True,
            )
    tally = json.loads(tally_path.read_text())
    first = tally["first"]
    return Round(
        latencies_ms=tally["latencies_ms"],
        seconds=0.0 if first is None else tally["last"] - first,
        errors=tally["errors"],
        examples=tally["examples"],
        statuses=tally["statuses"],
        # Read after gunicorn has stopped, so that its last lines are in.
        server_log=scan_server_log(log_path),
    )


def summarize(variant: Variant, rounds: Sequence[Round]) -> Result:
    """One result from every round of a variant: counts added, latencies pooled."""
    result = Result(variant.id, variant.label)
    latencies = sorted(latency for r in rounds for latency in r.latencies_ms)
    result.requests = len(latencies)
    result.seconds = sum(r.seconds for r in rounds)
    result.rps = result.requests / result.seconds if result.seconds else 0.0
    result.round_rps = [len(r.latencies_ms) / r.seconds if r.seconds else 0.0 for r in rounds]
    result.p50_ms = percentile(latencies, 0.50)
    result.p90_ms = percentile(latencies, 0.90)
    result.p99_ms = percentile(latencies, 0.99)
    result.max_ms = latencies[-1] if latencies else 0.0
    for r in rounds:
        for name, target in (
            ("errors", result.errors),
            ("statuses", result.statuses),
            ("server_log", result.server_log),
        ):
            for key, count in getattr(r, name).items():
                target[key] = target.get(key, 0) + count
        for key, example in r.examples.items():
            result.error_examples.setdefault(key, example)
    return result


# -- report --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Facts about the machine and the software of this run."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str | None] = {}
    for name in ("flask", "flask-keepsake", "flask-session", "sqlalchemy", "redis", "gunicorn",
                 "locust", "flask-login", "flask-wtf"):  # fmt: skip
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    versions["sqlite"] = sqlite3.sqlite_version
    binary = shutil.which("redis-server")
    if binary is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            versions["redis-server"] = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": model,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "versions": versions,
    }


def _errors_cell(result: Result) -> str:
    if result.skipped:
        return "skipped"
    return str(result.error_count)


def table(results: Sequence[Result]) -> str:
    """The results as a plain-text table."""
    header = ("variant", "req/s", "rounds", "p50 ms", "p99 ms", "requests", "errors", "500",
              "db locked", "503", "other errors")  # fmt: skip
    rows: list[tuple[str, ...]] = []
    for r in results:
        if r.skipped:
            rows.append((r.label, "-", "-", "-", "-", "-", "skipped", "", "", "", r.skipped))
            continue
        other = {
            k: v
            for k, v in r.errors.items()
            if k not in ("http-500", "database-locked", "http-503")
        }
        rows.append(
            (
                r.label,
                f"{r.rps:.0f}",
                "/".join(f"{rps:.0f}" for rps in r.round_rps),
                f"{r.p50_ms:.0f}",
                f"{r.p99_ms:.0f}",
                str(r.requests),
                _errors_cell(r),
                str(r.errors.get("http-500", 0)),
                str(r.errors.get("database-locked", 0)),
                str(r.errors.get("http-503", 0)),
                ", ".join(f"{k} {v}" for k, v in sorted(other.items())) or "-",
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i in (0, len(header) - 1) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def checks(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The issue's targets: no errors, and more requests per second than Flask-Session."""
    by_id = {r.variant: r for r in results if not r.skipped}
    found: list[dict[str, Any]] = []
    for r in by_id.values():
        if _BY_ID[r.variant].sessions == "keepsake":
            found.append(
                {"check": f"{r.label}: 0 errors", "ok": r.error_count == 0, "value": r.error_count}
            )
    for mine, peer in PEERS.items():
        if mine in by_id and peer in by_id:
            a, b = by_id[mine], by_id[peer]
            ratio = a.rps / b.rps if b.rps else float("inf")
            found.append(
                {
                    "check": f"{a.label} req/s > {b.label}",
                    "ok": a.rps > b.rps,
                    "value": f"{a.rps:.0f} vs {b.rps:.0f} ({ratio:.2f}x)",
                }
            )
    return found


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, help="seconds of load per variant (default 60)")
    parser.add_argument("--users", type=int, help="concurrent Locust users (default 64)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10 s, 16 users")
    parser.add_argument(
        "--variants",
        default=",".join(v.id for v in VARIANTS),
        help=f"comma-separated ids (default all: {','.join(v.id for v in VARIANTS)})",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="gunicorn threads per worker (default 1: sync)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every variant this many times, interleaved, in alternating order, and pool "
        "the rounds (evens out a machine whose background load drifts; default 1)",
    )
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between variants")
    parser.add_argument("--output", type=Path, help="the JSON file (default benchmarks/results/)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    options = parser.parse_args(argv)
    if options.duration is None:
        options.duration = 10 if options.quick else 60
    if options.users is None:
        options.users = 16 if options.quick else 64
    if options.rounds < 1:
        parser.error("--rounds must be at least 1")
    unknown = set(options.variants.split(",")) - set(_BY_ID)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load test; exit status 0 when every target is met, 1 otherwise."""
    options = parse_args(argv)
    for module in ("locust", "gunicorn"):
        try:
            importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            print(f"{module} is missing: pip install -e '.[bench]'", file=sys.stderr)
            return 2
    chosen = [v for v in VARIANTS if v.id in options.variants.split(",")]
    facts = machine()
    print(
        f"Load: {options.users} users for {options.duration} s per variant, gunicorn "
        f"{WORKERS} workers x {options.threads} thread(s), {options.rounds} round(s), Locust on "
        "the same machine "
        f"({facts['cpus']} CPUs: {facts['cpu'] or 'unknown'}; load average "
        f"{facts['load_average_at_start'][0]:.2f}).",
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="keepsake-load-"))
    rounds: dict[str, list[Round]] = {v.id: [] for v in chosen}
    skipped: dict[str, str] = {}
    for variant in chosen:
        if variant.store == "redis" and shutil.which("redis-server") is None:
            skipped[variant.id] = "redis-server not on PATH"
        elif variant.sessions != "keepsake" and not _has_flask_session():
            skipped[variant.id] = "flask-session not installed"
    started = datetime.now(UTC)
    try:
        first = True
        for number in range(options.rounds):
            # Alternate the order, so that no variant always runs first or last.
            order = chosen if number % 2 == 0 else chosen[::-1]
            for variant in order:
                if variant.id in skipped:
                    continue
                if not first:
                    time.sleep(options.pause)
                first = False
                label = variant.label + (f" (round {number + 1})" if options.rounds > 1 else "")
                print(f"  {label} ...", end=" ", flush=True)
                done = run_variant(variant, options, workdir / f"{variant.id}-{number + 1}")
                rps = len(done.latencies_ms) / done.seconds if done.seconds else 0.0
                print(f"{rps:.0f} req/s, {sum(done.errors.values())} errors", flush=True)
                rounds[variant.id].append(done)
    finally:
        if options.keep:
            print(f"Logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results = [
        Result(v.id, v.label, skipped=skipped[v.id])
        if v.id in skipped
        else summarize(v, rounds[v.id])
        for v in chosen
    ]
    print()
    print(table(results))
    found = checks(results)
    print()
    for check in found:
        print(f"  [{'ok' if check['ok'] else 'MISSED'}] {check['check']}: {check['value']}")
    output = options.output or RESULTS / f"load-{started:%Y%m%d-%H%M%S}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "started": started.isoformat(),
        "settings": {
            "duration_s": options.duration,
            "users": options.users,
            "workers": WORKERS,
            "threads": options.threads,
            "rounds": options.rounds,
            "password_method": PASSWORD_METHOD,
        },
        "machine": facts,
        "load_average_at_end": os.getloadavg(),
        "results": [asdict(r) | {"error_count": r.error_count} for r in results],
        "checks": found,
    }
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {output}")
    load_now = os.getloadavg()[0]
    if load_now > (facts["cpus"] or 1):
        print(f"Note: the load average ({load_now:.1f}) exceeds the CPU count after the run.")
    return 0 if all(check["ok"] for check in found) else 1


def _has_flask_session() -> bool:
    try:
        importlib.metadata.version("flask-session")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
