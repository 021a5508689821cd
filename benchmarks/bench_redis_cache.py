"""Keepsake's local cache against redis-py's client-side caching, on one real redis-server.

    python benchmarks/bench_redis_cache.py -o cache.json --fast
    python -m pyperf compare_to --table cache.json   # or read the table this script prints

Three ways to read a session through :class:`~flask_keepsake.stores.redis.RedisStore`:
``none`` (every load is an ``HGETALL``), ``keepsake`` (``local_cache=1000``) and ``redis-py``
(the store on a client built with ``protocol=3, cache_config=CacheConfig(max_size=1000)``).
Workloads, each timing the store calls of one request:

- ``hit``: load a session that nothing changes;
- ``invalidated``: another process (a store of its own, no cache) changes the session and,
  1 ms later, this one loads it (an invalidation, then a miss);
- ``write``: load, apply a one-key delta, load again (the next request reads its own write).

Every load is checked: a load that misses the change just written is counted as stale and
reported on stderr. redis-py's caching needs Redis 7.4 or later; on an older server that
variant is skipped, and the script says so. The server is started here
(:class:`~flask_keepsake.testing.servers.RedisServer`, the first ``redis-server`` on PATH).
"""

from __future__ import annotations

import atexit
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyperf
import redis
from redis.cache import CacheConfig

from flask_keepsake.stores.base import SessionRecord
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import RedisServer

SIZE = 1000
KEY = "a" * 64
VARIANTS = ("none", "keepsake", "redis-py")
WORKLOADS = ("hit", "invalidated", "write")


def record(now: float) -> SessionRecord:
    data = {f"k{i}": f'"value {i}"' for i in range(5)}
    return SessionRecord(
        KEY, "handle", data, "42", now, now, now + 3600, now + 86400, now, "127.0.0.1", "bench"
    )


def make_store(url: str, variant: str) -> RedisStore:
    if variant == "keepsake":
        return RedisStore.from_url(url, local_cache=SIZE)
    if variant == "redis-py":
        client = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig(max_size=SIZE))
        return RedisStore(client)
    return RedisStore.from_url(url)


def supports_redis_py_cache(url: str) -> bool:
    version = str(redis.Redis.from_url(url).info("server")["redis_version"])
    return tuple(int(part) for part in version.split(".")[:2]) >= (7, 4)


class Workload:
    """One variant's store, another process's store, and a counter of stale loads."""

    def __init__(self, url: str, variant: str) -> None:
        self.store = make_store(url, variant)
        self.other = RedisStore.from_url(url)
        self.now = time.time()
        self.other.delete(KEY)
        self.other.create(record(self.now))
        self.n = 0
        self.stale = 0

    def check(self, expected: str | None) -> None:
        loaded = self.store.load(KEY, self.now)
        if loaded is None or (expected is not None and loaded.data.get("n") != expected):
            self.stale += 1

    def hit(self, loops: int) -> float:
        load, now = self.store.load, self.now
        load(KEY, now)
        started = time.perf_counter()
        for _ in range(loops):
            load(KEY, now)
        return time.perf_counter() - started

    def invalidated(self, loops: int) -> float:
        elapsed = 0.0
        for _ in range(loops):
            self.n += 1
            value = str(self.n)
            self.other.apply(KEY, {"n": value}, (), self.now)
            time.sleep(0.001)  # the other process's request ends before this one's begins
            started = time.perf_counter()
            self.check(value)
            elapsed += time.perf_counter() - started
        return elapsed

    def write(self, loops: int) -> float:
        started = time.perf_counter()
        for _ in range(loops):
            self.n += 1
            value = str(self.n)
            self.store.load(KEY, self.now)
            self.store.apply(KEY, {"n": value}, (), self.now)
            self.check(value)
        return time.perf_counter() - started

    def report(self, name: str) -> None:
        if self.stale:
            print(f"{name}: {self.stale} stale loads", file=sys.stderr)


def add_url(cmd: list[str], args: Any) -> None:
    cmd.extend(("--url", args.url))


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=add_url)
    runner.argparser.add_argument("--url", help="a redis:// URL (default: start a server)")
    args = runner.parse_args()
    if args.url is None:
        if args.worker:
            raise SystemExit("workers are given --url by the parent")
        server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-cache-")) / "redis").start()
        atexit.register(server.stop)
        args.url = server.url
    variants = list(VARIANTS)
    if not supports_redis_py_cache(args.url):
        variants.remove("redis-py")
        if not args.worker:
            print("redis-py's client-side caching needs Redis 7.4+: skipped", file=sys.stderr)
    workloads: dict[str, Workload] = {}
    for workload in WORKLOADS:
        for variant in variants:
            name = f"{workload} {variant}"
            state = workloads.setdefault(variant, Workload(args.url, variant))
            runner.bench_time_func(name, getattr(state, workload))
    for variant, state in workloads.items():
        state.report(variant)


if __name__ == "__main__":
    main()
