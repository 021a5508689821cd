"""Does a request slow down when the store holds many sessions? SQLite and Redis, by size.

For each store and size, one store (a SQLite file, a private ``redis-server``) is filled with
copies of a real session (five keys, bound to a user, with its IP and user agent), each under a
key of its own; then ``--probes`` more sessions are created through requests, and the timing
cycles through them (not one hot session). Every repetition times every size in turn, so noise
hits all sizes alike, and the ratio largest / smallest is taken per repetition. Timed: the store's
``load`` and ``apply`` (one changed key), and a ``read`` and a ``write`` request (in-process WSGI,
as in ``bench.py``). Also printed: bytes per session (SQLite file size, Redis ``used_memory``),
and with ``--purge`` the time to purge as many expired sessions as the largest size, in batches
of 50 as ``flask keepsake cleanup`` does.

::

    python benchmarks/scale.py                                # 1,000 and 100,000; ~2 minutes
    python benchmarks/scale.py --sizes 1000,1000000 --purge   # a million; ~10 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flask import Flask, session

from bench import DATA, Caller, environ
from flask_keepsake import Keepsake
from flask_keepsake.stores import SessionRecord, SQLiteStore, Store
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing import StoreSpy
from flask_keepsake.testing.servers import RedisServer

OPS = ("load", "apply", "read", "write")


class Recorder(StoreSpy):
    """Keeps every record created through it (the probes' keys, and a record to copy)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.created: list[SessionRecord] = []

    def create(self, record: SessionRecord) -> None:
        self.created.append(record.copy())
        super().create(record)


def app_on(store: Store) -> Flask:
    app = Flask("scale")
    # No touch during the run: a touch is a write, and would turn some reads into writes.
    app.config["KEEPSAKE_TOUCH_INTERVAL"] = 900
    keepsake = Keepsake(app, store=store)

    @app.get("/seed")
    def seed() -> str:
        session.update(DATA)
        keepsake.login(secrets.token_hex(4))
        return "ok"

    @app.get("/read")
    def read() -> str:
        return str(session["username"])

    @app.get("/write")
    def write() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return "ok"

    return app


class Sized:
    """One store holding ``size`` sessions, and its probe sessions."""

    def __init__(
        self, kind: str, size: int, probes: int, directory: Path, server: RedisServer, db: int
    ) -> None:
        self.kind, self.size = kind, size
        self.server: RedisServer | None = None
        if kind == "sqlite":
            self.store: Store = SQLiteStore(directory / f"{size}.sqlite3")
        else:
            # One server, a database per size: the sizes differ in nothing else.
            self.server = server
            self.store = RedisStore.from_url(server.url.removesuffix("/0") + f"/{db}")
        self.before = self.footprint()
        recorder = Recorder(self.store)
        seeder = Caller(app_on(recorder))
        cookies = []
        for _ in range(probes):
            seeder(environ("/seed"))
            cookies.append(seeder.cookies[0].split(";", 1)[0])
        self.keys = [r.key for r in recorder.created]
        self.fill(recorder.created[0], size - probes, expires_at=None)
        self.call = Caller(app_on(self.store))
        self.envs = {op: [environ(f"/{op}", c) for c in cookies] for op in ("read", "write")}
        self.bytes = (self.footprint() - self.before) / size

    def fill(self, model: SessionRecord, count: int, expires_at: float | None) -> None:
        def create(i: int) -> None:
            record = model.copy()
            record.key = hashlib.sha256(f"{self.size}-{i}-{expires_at}".encode()).hexdigest()
            record.handle, record.user_id = secrets.token_urlsafe(12), f"user-{i}"
            if expires_at is not None:
                record.expires_at = expires_at
            self.store.create(record)

        # Redis waits on round trips: a few threads fill it faster. SQLite writes one at a time.
        with ThreadPoolExecutor(8 if self.server else 1) as pool:
            for _ in pool.map(create, range(count), chunksize=1000):
                pass

    def footprint(self) -> float:
        if self.server is not None:
            return float(self.server.admin().info("memory")["used_memory"])
        assert isinstance(self.store, SQLiteStore)
        with contextlib.closing(sqlite3.connect(self.store.path)) as conn:
            (pages,) = conn.execute("PRAGMA page_count").fetchone()
            (page,) = conn.execute("PRAGMA page_size").fetchone()
        return float(pages * page)

    def timers(self) -> dict[str, Callable[[int], None]]:
        store, keys, call, envs = self.store, self.keys, self.call, self.envs

        def load(i: int) -> None:
            store.load(keys[i], time.time())

        def apply(i: int) -> None:
            store.apply(keys[i], {"theme": f'"t{i}"'}, (), time.time())

        def read(i: int) -> None:
            call(envs["read"][i])

        def write(i: int) -> None:
            call(envs["write"][i])

        return {"load": load, "apply": apply, "read": read, "write": write}

    def close(self) -> None:
        self.store.close()


def measure(sized: list[Sized], repetitions: int) -> dict[tuple[str, int, str], list[float]]:
    """µs per call of every op at every size, per repetition, the sizes taken in turn."""
    samples: dict[tuple[str, int, str], list[float]] = {}
    timers = [(s, s.timers()) for s in sized]
    for rep in range(repetitions):
        for s, ops in timers[rep % len(timers) :] + timers[: rep % len(timers)]:
            for op, func in ops.items():
                start = time.perf_counter()
                for i in range(len(s.keys)):
                    func(i)
                elapsed = (time.perf_counter() - start) / len(s.keys) * 1e6
                samples.setdefault((s.kind, s.size, op), []).append(elapsed)
    return samples


def purge(largest: Sized) -> str:
    """Add ``size`` sessions that expire in 1 s; time purging them in batches of 50."""
    now = time.time()
    largest.fill(largest.store.load(largest.keys[0], now), largest.size, expires_at=now + 1)  # type: ignore[arg-type]
    later, deleted, batches, longest = now + 60, 0, 0, 0.0
    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        n = largest.store.purge_expired(later, batch_size=50)
        longest = max(longest, time.perf_counter() - t)
        if n == 0:
            break
        deleted, batches = deleted + n, batches + 1
    took = time.perf_counter() - start
    return (
        f"Purge ({largest.kind}): {deleted:,} expired sessions in {batches:,} batches of 50, "
        f"{took:.1f} s of purge calls ({deleted / took:,.0f} a second), longest batch "
        f"{longest * 1000:.1f} ms (no pause between batches here)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated session counts")
    parser.add_argument("--stores", default="sqlite,redis", help="sqlite, redis or both")
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--purge", action="store_true", help="also time purging (SQLite)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    header = ("store", "sessions", "load µs", "apply µs", "read request µs", "write request µs")
    print(f"| {' | '.join(header)} | bytes/session |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ratios, notes = [], []
    with tempfile.TemporaryDirectory(prefix="scale-") as directory:
        server = RedisServer(Path(directory) / "redis").start()
        for kind in args.stores.split(","):
            start = time.monotonic()
            sized = [
                Sized(kind, n, args.probes, Path(directory), server, db)
                for db, n in enumerate(sizes)
            ]
            notes.append(f"{kind}: filled in {time.monotonic() - start:.0f} s")
            try:
                samples = measure(sized, args.repetitions)
                for s in sized:
                    cells = [f"{statistics.median(samples[kind, s.size, op]):.1f}" for op in OPS]
                    print(f"| {kind} | {s.size:,} | {' | '.join(cells)} | {s.bytes:,.0f} |")
                big, small = max(sizes), min(sizes)
                for op in OPS:
                    pairs = zip(samples[kind, big, op], samples[kind, small, op], strict=True)
                    ratio = statistics.median(a / b for a, b in pairs)
                    ratios.append(f"| {kind} | {op} | {ratio:.2f} |")
                if args.purge and kind == "sqlite":
                    notes.append(purge(sized[-1]))
            finally:
                for s in sized:
                    s.close()
        server.stop()
    print(f"\nLargest over smallest size ({max(sizes):,} / {min(sizes):,}), per repetition:\n")
    print("| store | operation | ratio |\n| --- | --- | ---: |")
    print("\n".join(ratios))
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
