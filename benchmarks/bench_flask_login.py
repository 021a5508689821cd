"""What Flask-Login's after-request hook costs a request that never uses the session.

Flask-Login's ``_update_remember_cookie`` runs after every request and looks for ``_remember`` in
the session, so with Flask-Login a request that carries a session cookie loads its session, even
when the view never touches it; Keepsake no longer patches Flask-Login to avoid that. This
measures an ``untouched`` view (it returns a constant) with a signed-in session cookie, in an
app with and without a ``LoginManager``, on the memory and SQLite stores and on Redis when
``--redis URL`` names a server; and the same with no cookie at all, which costs no store call
either way. In-process WSGI requests; pyperf calibrates the loops and runs each benchmark in its
own worker processes.

::

    python benchmarks/bench_flask_login.py --redis redis://127.0.0.1:PORT/0 -o flask_login.json
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import flask_login
import pyperf
from flask import Flask

from bench_rotation import _call, _environ, _stores, _worker_args
from flask_keepsake import Keepsake
from flask_keepsake.stores import Store

VARIANTS = ("plain", "flask-login")


class _User(flask_login.UserMixin):  # type: ignore[misc]
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def _app(store: Store, variant: str) -> Flask:
    app = Flask("bench_flask_login")
    app.config.update(SECRET_KEY="bench-secret-0123456789abcdef0123", KEEPSAKE_TOUCH_INTERVAL=600)
    keepsake = Keepsake(app, store=store)
    if variant == "flask-login":
        manager = flask_login.LoginManager(app)
        manager.user_loader(_User)

    @app.post("/seed")
    def seed() -> str:
        keepsake.login("7")
        return "ok"

    @app.get("/untouched")
    def untouched() -> str:
        return "plain"

    return app


def _timer(app: Flask, with_cookie: bool) -> Callable[[int], float]:
    token = _call(app, _environ("/seed", "POST", None)) if with_cookie else None
    environ = _environ("/untouched", "GET", token)

    def run(loops: int) -> float:
        start = time.perf_counter()
        for _ in range(loops):
            _call(app, environ)
        return time.perf_counter() - start

    return run


def _table(results: dict[str, pyperf.Benchmark]) -> None:
    print()
    print("| store | cookie | without Flask-Login (µs) | with Flask-Login (µs) | difference (µs) |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in results:
        store, cookie, variant = name.split("/")
        if variant != "plain":
            continue
        plain = results[name].median() * 1e6
        login = results[f"{store}/{cookie}/flask-login"].median() * 1e6
        print(f"| {store} | {cookie} | {plain:.1f} | {login:.1f} | {login - plain:+.1f} |")


def main() -> None:
    logging.getLogger("flask_keepsake").setLevel(logging.ERROR)
    runner = pyperf.Runner(add_cmdline_args=_worker_args)
    runner.argparser.add_argument("--redis", metavar="URL", help="also run on this Redis server")
    args: argparse.Namespace = runner.parse_args()
    results: dict[str, pyperf.Benchmark] = {}
    for store_name, make_store in _stores(args.redis):
        for with_cookie in (True, False):
            for variant in VARIANTS:
                cookie = "cookie" if with_cookie else "no-cookie"
                name = f"{store_name}/{cookie}/{variant}"
                store = make_store()
                bench = runner.bench_time_func(name, _timer(_app(store, variant), with_cookie))
                store.close()
                if bench is not None:
                    results[name] = bench
    if results and not args.worker:
        _table(results)


if __name__ == "__main__":
    main()
