"""Each variant of ``bench.py`` under gunicorn, driven by Locust (``locustfile.py``), one table.

For every variant: a fresh scratch folder (and an emptied private ``redis-server``), gunicorn
with ``--workers`` sync workers on a free loopback port, Locust headless for ``--duration``
seconds with ``--users`` users, then gunicorn is stopped by its pid. Printed: requests per
second, median and 99th-percentile latency, and failures (errors, lost sessions, lost writes).

::

    python benchmarks/load/run_load.py                       # 30 s per variant, 32 users
    python benchmarks/load/run_load.py --duration 60 --users 64 --variants sqlite,fs-redis
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from flask import Flask

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import Context, build_app  # noqa: E402
from flask_keepsake.testing.servers import RedisServer, free_port, terminate  # noqa: E402

VARIANTS = "sqlite,redis,redis-cache,flask-cookie,fs-redis,fs-sqlalchemy"


def app() -> Flask:
    """gunicorn's entry point: ``run_load:app()``, the variant named by the environment."""
    args = argparse.Namespace(
        redis_url=os.environ["LOAD_REDIS"], sqlalchemy=os.environ.get("LOAD_SQLALCHEMY")
    )
    # run() empties the stores before gunicorn starts; the workers must not empty them again.
    ctx = Context(args, Path(os.environ["LOAD_DIR"]), flush=False)
    return build_app(os.environ["LOAD_VARIANT"], "read", ctx)


def run(variant: str, args: argparse.Namespace, server: RedisServer, directory: Path) -> str:
    """One variant: start gunicorn, run Locust against it, stop gunicorn; a table row."""
    work = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=directory))
    # Built once here first: it empties Redis and Flask-Session's table and creates the tables,
    # so the workers, which start at the same moment, neither race to create them nor empty
    # what another worker already stored.
    ns = argparse.Namespace(redis_url=server.url, sqlalchemy=args.sqlalchemy)
    build_app(variant, "read", Context(ns, work))
    port = free_port()
    env = dict(os.environ, LOAD_VARIANT=variant, LOAD_DIR=str(work), LOAD_REDIS=server.url)
    if args.sqlalchemy:
        env["LOAD_SQLALCHEMY"] = args.sqlalchemy
    # gunicorn keeps its own copy of the log file descriptor.
    with open(work / "gunicorn.log", "wb") as log:
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(args.workers), "--bind",
             f"127.0.0.1:{port}", "--chdir", str(HERE), "run_load:app()"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/untouched", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or gunicorn.poll() is not None:
                    raise RuntimeError(f"gunicorn did not start; see {work}/gunicorn.log") from None
                time.sleep(0.2)
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
             "--only-summary", "-u", str(args.users), "-r", str(args.users), "-t",
             f"{args.duration}s", "--host", f"http://127.0.0.1:{port}", "--csv", str(work / "l")],
            check=False, timeout=args.duration + 120, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        terminate(gunicorn)
    with open(work / "l_stats.csv", newline="") as stats:
        total = next(row for row in csv.DictReader(stats) if row["Name"] == "Aggregated")
    with open(work / "l_failures.csv", newline="") as failures:
        kinds = [
            f"{r['Occurrences']} x {r['Name']}: {r['Error'][:60]}" for r in csv.DictReader(failures)
        ]
    return (
        f"| {variant} | {float(total['Requests/s']):.0f} | {total['50%']} | {total['99%']} | "
        f"{total['Request Count']} | {' '.join([total['Failure Count'], *kinds[:3]])} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=VARIANTS, help=f"comma-separated ({VARIANTS})")
    parser.add_argument("--duration", type=int, default=30, help="seconds per variant")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--sqlalchemy", help="Flask-Session's database URL (default: SQLite)")
    args = parser.parse_args()
    print(f"{args.users} users, {args.duration} s, gunicorn {args.workers} sync workers\n")
    print("| variant | req/s | p50 ms | p99 ms | requests | failures |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="load-") as name:
        server = RedisServer(Path(name) / "redis").start()
        try:
            for variant in args.variants.split(","):
                print(run(variant, args, server, Path(name)), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
