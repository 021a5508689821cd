"""CPU time per route of ``load_app.py``, Keepsake against Flask-Session, in one process.

``python benchmarks/load/route_cost.py [--cycles 300]``

The load test (``run_load.py``) measures requests per second with every core saturated, which
folds the session library, Flask, the test client (Locust) and Redis into one number. This
script takes the server side apart: it builds ``load_app`` once per variant in this process (all
on one private ``redis-server`` that it starts on a free loopback port and stops by its pid),
signs a user in through the real forms, and then runs the members' loop of the load test
(visit, API read, account page, sign out, sign-in form, sign in) through Flask's test client,
interleaving the variants. For every route it prints the median CPU time of the thread
(``time.thread_time_ns``: Python, Flask, the session library and the system calls of the
round trips, but not the wait for Redis), the commands Redis ran for one request of each
route after a warm-up pass (``INFO commandstats``; commands run inside Lua scripts included),
and the CPU the Redis server itself spent per loop (``INFO cpu``, each variant alone): on a
machine where Redis shares the cores with the app, that is CPU the app does not get.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import redis

HERE: Final = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_load  # noqa: E402  (beside this file, like load_app)

#: Variants: (label, LOAD_SESSIONS, query appended to Keepsake's Redis URL or None).
VARIANTS: Final = (
    ("Keepsake (Redis)", "keepsake", ""),
    ("Keepsake (Redis, local cache)", "keepsake", "?local_cache=10000"),
    ("Flask-Session (Redis)", "flask-session-redis", None),
)
ROUTES: Final = ("visit (write)", "API (read)", "account", "sign out", "sign-in form", "sign in")
_CSRF: Final = re.compile(r'name="csrf_token"(?: type="hidden")?\s+value="([^"]+)"')
PASSWORD: Final = "route-cost-password"


def build(label: str, backend: str, query: str | None, url: str) -> Any:
    """``load_app`` for one variant, with a registered, signed-in user in a test client."""
    os.environ.update(
        LOAD_SESSIONS=backend,
        LOAD_INSTANCE=tempfile.mkdtemp(prefix="route-cost-"),
        LOAD_SECRET_KEY="route-cost-" + "k" * 53,
        LOAD_PASSWORD_METHOD=run_load.PASSWORD_METHOD,
        LOAD_REDIS_URL=url,
    )
    if query is None:
        os.environ.pop("KEEPSAKE_STORE", None)
    else:
        os.environ["KEEPSAKE_STORE"] = url + query
    import load_app

    app = importlib.reload(load_app).create_app()
    client = app.test_client()
    token = _token(client.get("/register"))
    name = re.sub(r"\W", "", label.lower())
    form = {"username": name, "password": PASSWORD, "confirm": PASSWORD, "csrf_token": token}
    response = client.post("/register", data=form)
    if response.status_code != 302:
        raise RuntimeError(f"{label}: registering answered {response.status_code}")
    client.username = name  # type: ignore[attr-defined]
    return client


def _token(response: Any) -> str:
    match = _CSRF.search(response.get_data(as_text=True))
    if match is None:
        raise RuntimeError("no CSRF token in the page")
    return match.group(1)


def cycle(client: Any, measure: Callable[[str, Callable[[], Any]], Any]) -> None:
    """One pass of the members' loop; ``measure(route, call)`` runs and times each request."""
    measure("visit (write)", lambda: client.get("/"))
    measure("API (read)", lambda: client.get("/api/session"))
    measure("account", lambda: client.get("/account"))
    token = _token(client.get("/"))
    measure("sign out", lambda: client.post("/logout", data={"csrf_token": token}))
    token = _token(measure("sign-in form", lambda: client.get("/login")))
    form = {"username": client.username, "password": PASSWORD, "csrf_token": token}
    response = measure("sign in", lambda: client.post("/login", data=form))
    if response.status_code != 302:
        raise RuntimeError(f"signing in answered {response.status_code}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=300, help="loops per variant")
    options = parser.parse_args(argv)
    with run_load.redis_server(Path(tempfile.mkdtemp(prefix="route-cost-redis-"))) as url:
        admin = redis.Redis.from_url(url)
        clients = {label: build(label, b, q, url) for label, b, q in VARIANTS}
        commands: dict[str, dict[str, str]] = {label: {} for label in clients}
        for label, client in clients.items():
            cycle(client, lambda route, call: call())  # warm: scripts loaded, caches filled

            def count(route: str, call: Callable[[], Any], label: str = label) -> Any:
                admin.config_resetstat()
                response = call()
                stats = admin.info("commandstats")
                calls = {
                    name.removeprefix("cmdstat_"): int(value["calls"])
                    for name, value in stats.items()
                    if name not in ("cmdstat_config|resetstat", "cmdstat_info")
                }
                commands[label][route] = ", ".join(f"{n} {c}" for n, c in sorted(calls.items()))
                return response

            cycle(client, count)
        samples: dict[str, dict[str, list[float]]] = {
            label: {route: [] for route in ROUTES} for label in clients
        }
        for number in range(options.cycles):
            order = list(clients) if number % 2 == 0 else list(clients)[::-1]
            for label in order:

                def timed(route: str, call: Callable[[], Any], label: str = label) -> Any:
                    started = time.thread_time_ns()
                    response = call()
                    samples[label][route].append((time.thread_time_ns() - started) / 1000)
                    return response

                cycle(clients[label], timed)
        redis_cpu: dict[str, float] = {}
        for label, client in clients.items():
            before = admin.info("cpu")
            for _ in range(options.cycles):
                cycle(client, lambda route, call: call())
            after = admin.info("cpu")
            used = sum(after[k] - before[k] for k in ("used_cpu_sys", "used_cpu_user"))
            redis_cpu[label] = used * 1e6 / options.cycles
        admin.close()
    labels = list(clients)
    print(f"CPU time of the request's thread, µs, median of {options.cycles} (Flask test client)")
    print("| route | " + " | ".join(labels) + " |")
    print("| --- |" + " ---: |" * len(labels))
    for route in ROUTES:
        cells = [f"{statistics.median(samples[label][route]):.0f}" for label in labels]
        print(f"| {route} | " + " | ".join(cells) + " |")
    print("\nCPU of the Redis server per loop (seven requests), µs")
    print("| " + " | ".join(labels) + " |")
    print("|" + " ---: |" * len(labels))
    print("| " + " | ".join(f"{redis_cpu[label]:.0f}" for label in labels) + " |")
    print("\nRedis commands run by one request of each route")
    print("| route | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for route in ROUTES:
        print(f"| {route} | " + " | ".join(commands[label][route] for label in labels) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
