"""Reusable pieces for Keepsake's benchmarks: apps, in-process WSGI calls, interleaved timing.

Every benchmark in this folder follows the same recipe, and this module holds all of it so that
new rows (another store, another peer library) reuse it unchanged:

1. Build one Flask app per *variant* (:func:`baseline_app`, :func:`flask_cookie_app`,
   :func:`keepsake_app`, :func:`flask_session_sqlalchemy_app`). Every app has the same routes
   (:func:`add_routes`): one per *workload* in :data:`WORKLOADS`, plus ``/seed``, which stores
   :data:`SESSION_DATA` in a new session.
2. Seed a session with :func:`seed_cookie` and build the four requests of a variant with
   :func:`workload_cases`: a prebuilt WSGI environ (:func:`make_environ`) with that cookie in its
   ``Cookie`` header, sent by :class:`WSGIRequest` straight to ``app.wsgi_app`` (no server, no
   socket, no test client), the response body drained as a server would.
3. Time every :class:`Case` with :func:`run_interleaved`: each repetition runs one batch of
   every case, round-robin, with ``time.perf_counter_ns``; the batch size is calibrated so that
   each case gets the same wall time. Noise on a shared machine then hits all variants alike,
   and the medians over many repetitions (:func:`summarize`) are stable.
4. Report overheads over the no-session baseline (:func:`paired_overheads`, the difference to
   the baseline batch of the *same repetition*), print them with :func:`format_table`, and save
   everything with :func:`write_results` under ``benchmarks/results/`` (gitignored).

A Redis row, for example, is four lines on top of this::

    store = RedisStore(...)
    app = keepsake_app(store)
    cleanup = keepsake_cleanup(store)
    cases = workload_cases("Keepsake (Redis)", app, seed_cookie(app), cleanup=cleanup)

:class:`CountingStore` wraps any store and counts calls per method, to report how many store
calls a request makes (run it in a separate, untimed pass: the proxy itself costs time).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import itertools
import json
import logging
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

from flask import Flask, session

from flask_keepsake import Keepsake
from flask_keepsake.interface import engine_of
from flask_keepsake.stores.base import Outcome, Rotated, SessionRecord, Store, Touch
from flask_keepsake.tokens import is_token, storage_key

__all__ = [
    "BASELINE",
    "HOST",
    "READ_KEY",
    "READ_METHODS",
    "RESULTS_DIR",
    "SESSION_DATA",
    "WORKLOADS",
    "WRITE_KEY",
    "Case",
    "CountingStore",
    "Summary",
    "TableStyle",
    "WSGIRequest",
    "add_routes",
    "baseline_app",
    "calibrate",
    "cookie_pair",
    "fill_sessions",
    "flask_cookie_app",
    "flask_session_sqlalchemy_app",
    "format_table",
    "keepsake_app",
    "keepsake_cleanup",
    "keepsake_store",
    "machine_facts",
    "make_environ",
    "paired_overheads",
    "ratio_samples",
    "run_interleaved",
    "seed_cookie",
    "source_revision",
    "summarize",
    "workload_cases",
    "write_results",
]

#: The workloads every app serves, one route each (``/read``, ``/write``, ...):
#:
#: ``read``
#:     the request carries the cookie of a seeded session; the view reads :data:`READ_KEY`.
#: ``write``
#:     the same, and the view sets :data:`WRITE_KEY` to a value that differs from the last
#:     request's, so every request is a real change.
#: ``new``
#:     no cookie; the view sets one key, so a session is created and a cookie issued.
#: ``untouched``
#:     the cookie is sent but the view never touches the session.
WORKLOADS: Final = ("read", "write", "new", "untouched")

#: The name of the no-session variant that overheads are measured against.
BASELINE: Final = "baseline"

#: What ``/seed`` stores: five keys of the kinds a real session holds.
SESSION_DATA: Final[Mapping[str, Any]] = {
    "user_id": 4711,
    "username": "ada.lovelace",
    "theme": "dark",
    "cart": [3, 14, 15, 92],
    "visits": 0,
}
#: The key the ``read`` view reads.
READ_KEY: Final = "username"
#: The key the ``write`` view changes (``new`` sets it too).
WRITE_KEY: Final = "visits"

#: Host of every request. The scheme is https, so Keepsake's default ``__Host-`` cookie, which
#: is ``Secure``, is sent and accepted exactly as in production.
HOST: Final = "bench.example"

_REPO: Final = Path(__file__).resolve().parent.parent

#: Where :func:`write_results` puts JSON files (gitignored).
RESULTS_DIR: Final = _REPO / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------------
# Requests


def make_environ(
    path: str,
    *,
    cookie: str | None = None,
    method: str = "GET",
    host: str = HOST,
    scheme: str = "https",
) -> dict[str, Any]:
    """Return a complete WSGI environ for one request, as a front-end server would build it.

    :param path: the path, such as ``"/read"``.
    :param cookie: the whole ``Cookie`` header (``"name=value"``), or ``None`` for no header.
    :param method: the HTTP method; requests have no body.
    :param host: the ``Host`` header and server name.
    :param scheme: ``"https"`` (the default) or ``"http"``.
    """
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": host,
        "SERVER_PORT": "443" if scheme == "https" else "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "REMOTE_PORT": "51234",
        "HTTP_HOST": host,
        "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "HTTP_ACCEPT": "text/html,application/xhtml+xml,*/*;q=0.8",
        "HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.5",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate, br",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        # Requests have no body, so one empty stream can be shared by every call.
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = cookie
    return environ


class WSGIRequest:
    """One prebuilt request to one app; calling it runs the request in-process.

    Each call passes a shallow copy of the environ (apps may add keys to it) to
    ``app.wsgi_app``, drains and closes the response iterable as a WSGI server does, and keeps
    the status and headers of the last response in :attr:`status` and :attr:`headers`.

    :param app: the Flask application.
    :param environ: from :func:`make_environ`; it is not modified.
    """

    __slots__ = ("_environ", "_wsgi", "headers", "status")

    def __init__(self, app: Flask, environ: dict[str, Any]) -> None:
        self._wsgi = app.wsgi_app
        self._environ = environ
        #: Status line of the last response, such as ``"200 OK"``.
        self.status = ""
        #: Headers of the last response, as ``(name, value)`` pairs.
        self.headers: list[tuple[str, str]] = []

    @property
    def environ(self) -> dict[str, Any]:
        """The prebuilt environ (each call gets a copy; do not modify it)."""
        return self._environ

    def _start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status = status
        self.headers = headers
        return _discard

    def __call__(self) -> None:
        """Run the request once and drain the body."""
        body = self._wsgi(self._environ.copy(), self._start_response)
        try:
            for _chunk in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def fetch(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """Run the request once and return status, headers and body (for checks, not timing)."""
        chunks: list[bytes] = []
        body = self._wsgi(self._environ.copy(), self._start_response)
        try:
            chunks.extend(body)
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return self.status, self.headers, b"".join(chunks)

    def set_cookies(self) -> list[str]:
        """The ``Set-Cookie`` values of the last response."""
        return [v for k, v in self.headers if k.lower() == "set-cookie"]


def _discard(data: bytes) -> None:
    return None


def cookie_pair(set_cookie: str) -> str:
    """The ``name=value`` part of a ``Set-Cookie`` header value, ready for a ``Cookie`` header."""
    return set_cookie.split(";", 1)[0].strip()


# ---------------------------------------------------------------------------------------------
# Apps


def add_routes(app: Flask, *, use_session: bool) -> None:
    """Add the workload routes and ``/seed`` to ``app``.

    :param use_session: ``False`` for the baseline: the same views do the same work except the
        session access, so the difference to the baseline is the cost of the session.
    """
    counter = itertools.count(1)

    @app.get("/read")
    def read() -> str:
        return str(session.get(READ_KEY)) if use_session else "-"

    @app.get("/write")
    def write() -> str:
        # A new value on every call, so the write is a real change for every variant.
        n = next(counter)
        if use_session:
            session[WRITE_KEY] = n
        return str(n)

    @app.get("/new")
    def new() -> str:
        if use_session:
            session[WRITE_KEY] = 1
        return "new"

    @app.get("/untouched")
    def untouched() -> str:
        return "ok"

    @app.get("/seed")
    def seed() -> str:
        if use_session:
            session.update(SESSION_DATA)
        return "seeded"


def baseline_app() -> Flask:
    """A Flask app with the same routes and no session: no ``SECRET_KEY``, so Flask opens a
    ``NullSession`` and never saves it (Flask's cheapest session path)."""
    app = Flask("bench_baseline")
    add_routes(app, use_session=False)
    return app


def flask_cookie_app() -> Flask:
    """Flask's built-in signed-cookie session, default configuration."""
    app = Flask("bench_flask_cookie")
    app.config["SECRET_KEY"] = "bench-secret-key-0123456789abcdef0123456789"
    add_routes(app, use_session=True)
    return app


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    # Keepsake warns at start-up when the memory store is used outside debug and testing; a
    # benchmark knows, and the warning would land in the middle of its table.
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def keepsake_app(store: Store | None = None, **config: Any) -> Flask:
    """A Flask app with Keepsake, default configuration plus ``config``.

    :param store: the store to use; ``None`` builds it from ``KEEPSAKE_STORE`` in ``config``
        as an application would (see :func:`keepsake_store` to get it back).
    """
    app = Flask("bench_keepsake")
    app.config.update(config)
    with _quiet("flask_keepsake"):
        Keepsake(app, store=store)
    add_routes(app, use_session=True)
    return app


def keepsake_store(app: Flask) -> Store:
    """The store Keepsake uses in ``app``."""
    store: Store = engine_of(app).store
    return store


def flask_session_sqlalchemy_app(database: Path) -> Flask:
    """Flask-Session 0.8 with ``SESSION_TYPE="sqlalchemy"`` on a SQLite file, defaults otherwise.

    Needs ``flask-session`` and ``flask-sqlalchemy`` (the ``bench`` extra); raises
    ``ImportError`` without them.
    """
    from flask_session import Session  # type: ignore[import-untyped]
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("bench_flask_session")
    app.config["SECRET_KEY"] = "bench-secret-key-0123456789abcdef0123456789"
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{database}"
    db = SQLAlchemy(app)
    app.config["SESSION_TYPE"] = "sqlalchemy"
    app.config["SESSION_SQLALCHEMY"] = db
    Session(app)
    add_routes(app, use_session=True)
    return app


def seed_cookie(app: Flask) -> str:
    """Create a session holding :data:`SESSION_DATA` and return its ``Cookie`` header value.

    :raise RuntimeError: if ``/seed`` did not set exactly one cookie.
    """
    request = WSGIRequest(app, make_environ("/seed"))
    status, _, _ = request.fetch()
    cookies = request.set_cookies()
    if not status.startswith("200") or len(cookies) != 1:
        raise RuntimeError(f"/seed answered {status} with Set-Cookie {cookies!r}")
    return cookie_pair(cookies[0])


def fill_sessions(app: Flask, count: int) -> None:
    """Create ``count`` more seeded sessions, so the store is not trivially small."""
    request = WSGIRequest(app, make_environ("/seed"))
    for _ in range(count):
        request()


def keepsake_cleanup(store: Store) -> Callable[[list[str]], None]:
    """A ``cleanup`` for :func:`workload_cases`: delete the sessions a ``new`` batch created.

    It reads the tokens from the batch's ``Set-Cookie`` values and deletes their records
    through the public store API, so the store stays the same size across the run.
    """

    def cleanup(set_cookies: list[str]) -> None:
        for header in set_cookies:
            token = cookie_pair(header).partition("=")[2]
            if is_token(token):
                store.delete(storage_key(token))

    return cleanup


# ---------------------------------------------------------------------------------------------
# Cases and timing


@dataclass
class Case:
    """One thing to time: ``run()`` performs one operation (usually one request).

    :param variant: the row of the result table, such as ``"Keepsake (SQLite)"``.
    :param workload: the column, such as ``"read"``.
    :param run: performs one operation; its return value is ignored.
    :param after_batch: called after every timed batch, untimed (cleanup of created records).
    :param baseline: key of the case whose same-repetition batch is subtracted to get the
        overhead, or ``None`` for cases timed on their own (the SQLite floor).
    :param request: the request behind ``run``, when there is one (for checks, not timing).
    """

    variant: str
    workload: str
    run: Callable[[], object]
    after_batch: Callable[[], None] | None = None
    baseline: str | None = None
    request: WSGIRequest | None = None

    @property
    def key(self) -> str:
        """``variant/workload``, the key of this case in results."""
        return f"{self.variant}/{self.workload}"


def workload_cases(
    variant: str,
    app: Flask,
    cookie: str,
    *,
    cleanup: Callable[[list[str]], None] | None = None,
    baseline: str | None = BASELINE,
) -> list[Case]:
    """The four :data:`WORKLOADS` of one app as cases.

    :param variant: the row name.
    :param app: an app with :func:`add_routes`.
    :param cookie: the ``Cookie`` header of a seeded session (:func:`seed_cookie`); ``new``
        requests carry none.
    :param cleanup: receives the ``Set-Cookie`` values of each ``new`` batch after it ran
        (untimed), to delete the sessions it created; see :func:`keepsake_cleanup`.
    :param baseline: the baseline variant name, or ``None`` if this is the baseline.
    """
    cases: list[Case] = []
    for workload in WORKLOADS:
        request = WSGIRequest(
            app, make_environ(f"/{workload}", cookie=None if workload == "new" else cookie)
        )
        base = None if baseline is None else f"{baseline}/{workload}"
        if workload == "new":
            run, after = _collecting(request, cleanup)
            cases.append(Case(variant, workload, run, after, base, request))
        else:
            cases.append(Case(variant, workload, request, None, base, request))
    return cases


def _collecting(
    request: WSGIRequest, cleanup: Callable[[list[str]], None] | None
) -> tuple[Callable[[], None], Callable[[], None]]:
    # Every variant's "new" case runs this same wrapper (the baseline's too), so the list append
    # costs all of them alike; the Set-Cookie parsing happens after the batch, untimed.
    batch: list[list[tuple[str, str]]] = []
    append = batch.append

    def run() -> None:
        request()
        append(request.headers)

    def after() -> None:
        set_cookies = [v for headers in batch for k, v in headers if k.lower() == "set-cookie"]
        batch.clear()
        if cleanup is not None:
            cleanup(set_cookies)

    return run, after


def _time_batch(run: Callable[[], object], n: int) -> float:
    clock = time.perf_counter_ns
    loop = range(n)
    start = clock()
    for _ in loop:
        run()
    return (clock() - start) / n


def calibrate(case: Case, batch_seconds: float, *, max_calls: int = 100_000) -> int:
    """Return how many calls of ``case`` take about ``batch_seconds`` (at least 1).

    It runs the case for a while (which also warms it up) and then runs ``after_batch``.
    """
    n, elapsed_ns = 1, 0.0
    while True:
        elapsed_ns = _time_batch(case.run, n) * n
        if elapsed_ns >= batch_seconds * 1e9 / 4 or n >= max_calls:
            break
        n *= 2
    if case.after_batch is not None:
        case.after_batch()
    per_call = elapsed_ns / n
    return max(1, min(max_calls, round(batch_seconds * 1e9 / per_call)))


def run_interleaved(
    cases: Sequence[Case],
    *,
    repetitions: int,
    batch_seconds: float,
    batch_calls: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[float]]:
    """Time every case, interleaved, and return nanoseconds per call, one sample per repetition.

    Each repetition runs one batch of every case in round-robin order, starting one case
    later than the previous repetition, so no case always follows the same neighbour.

    :param cases: the cases; their keys must be unique.
    :param repetitions: how many batches of each case (samples per case).
    :param batch_seconds: target wall time of one batch; the number of calls per batch is
        calibrated per case so that every case gets the same share of the run.
    :param batch_calls: use this many calls per batch instead of calibrating (smoke runs).
    :param progress: called with ``(repetition, repetitions)`` after each repetition.
    :return: ``{case.key: [ns per call in repetition 0, 1, ...]}``.
    """
    keys = [case.key for case in cases]
    if len(set(keys)) != len(keys):
        raise ValueError("case keys must be unique")
    if batch_calls is not None:
        calls = dict.fromkeys(keys, batch_calls)
    else:
        calls = {case.key: calibrate(case, batch_seconds) for case in cases}
    samples: dict[str, list[float]] = {key: [] for key in keys}
    count = len(cases)
    for rep in range(repetitions):
        for i in range(count):
            case = cases[(rep + i) % count]
            samples[case.key].append(_time_batch(case.run, calls[case.key]))
            if case.after_batch is not None:
                case.after_batch()
        if progress is not None:
            progress(rep + 1, repetitions)
    return samples


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class Summary:
    """Median and quartiles of a list of samples, in the samples' unit."""

    median: float
    q1: float
    q3: float
    n: int

    def to_json(self) -> dict[str, float]:
        """A plain dict for JSON output."""
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "n": self.n}


def summarize(samples: Sequence[float]) -> Summary:
    """Median and first and third quartiles of ``samples`` (at least one)."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) == 1:
        return Summary(samples[0], samples[0], samples[0], 1)
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Summary(median, q1, q3, len(samples))


def paired_overheads(samples: Mapping[str, Sequence[float]], case: Case) -> list[float]:
    """Per repetition, the case's time minus its baseline's time in the same repetition.

    Pairing by repetition cancels slow drifts of the machine (another tenant's load) that hit
    both batches alike. A case without a baseline gets its own samples back.
    """
    own = samples[case.key]
    if case.baseline is None:
        return list(own)
    return [a - b for a, b in zip(own, samples[case.baseline], strict=True)]


def ratio_samples(
    samples: Mapping[str, Sequence[float]], numerator: Case, denominator: Case
) -> list[float]:
    """Per repetition, the ratio of two cases' overheads (both over their baselines)."""
    top = paired_overheads(samples, numerator)
    bottom = paired_overheads(samples, denominator)
    return [a / b for a, b in zip(top, bottom, strict=True) if b > 0]


# ---------------------------------------------------------------------------------------------
# Store call counting


#: Store methods that never write.
READ_METHODS: Final = frozenset(
    {"load", "list_user", "count", "count_expired", "user_counts", "get_marker"}
)


class CountingStore(Store):
    """Wraps a store and counts calls per method; everything else is delegated.

    Use it in a separate, untimed pass: ``keepsake_app(CountingStore(store))``, run some
    requests, then read :attr:`calls` and divide by the number of requests.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.name = inner.name
        #: Calls so far, by method name.
        self.calls: Counter[str] = Counter()

    @property
    def reads(self) -> int:
        """Calls to methods that never write."""
        return sum(n for m, n in self.calls.items() if m in READ_METHODS)

    @property
    def writes(self) -> int:
        """Calls to methods that may write."""
        return sum(n for m, n in self.calls.items() if m not in READ_METHODS)

    def reset(self) -> None:
        """Forget the counts."""
        self.calls.clear()

    def create(self, record: SessionRecord) -> None:
        """Count, then delegate."""
        self.calls["create"] += 1
        self.inner.create(record)

    def load(self, key: str, now: float) -> SessionRecord | Rotated | None:
        """Count, then delegate."""
        self.calls["load"] += 1
        return self.inner.load(key, now)

    def apply(
        self,
        key: str,
        changed: Mapping[str, str],
        deleted: Collection[str],
        now: float,
        touch: Touch | None = None,
    ) -> Outcome:
        """Count, then delegate."""
        self.calls["apply"] += 1
        return self.inner.apply(key, changed, deleted, now, touch)

    def touch(self, key: str, touch: Touch, now: float) -> Outcome:
        """Count, then delegate."""
        self.calls["touch"] += 1
        return self.inner.touch(key, touch, now)

    def rename(
        self,
        old_key: str,
        record: SessionRecord,
        now: float,
        *,
        changed: Mapping[str, str] | None = None,
        deleted: Collection[str] = (),
        grace: float = 0.0,
    ) -> Outcome:
        """Count, then delegate."""
        self.calls["rename"] += 1
        return self.inner.rename(
            old_key, record, now, changed=changed, deleted=deleted, grace=grace
        )

    def put_marker(
        self, name: str, value: str, expires_at: float, now: float, *, replace: bool = True
    ) -> bool:
        """Count, then delegate."""
        self.calls["put_marker"] += 1
        return self.inner.put_marker(name, value, expires_at, now, replace=replace)

    def get_marker(self, name: str, now: float) -> str | None:
        """Count, then delegate."""
        self.calls["get_marker"] += 1
        return self.inner.get_marker(name, now)

    def delete(self, key: str) -> bool:
        """Count, then delegate."""
        self.calls["delete"] += 1
        return self.inner.delete(key)

    def list_user(self, user_id: str, now: float) -> list[SessionRecord]:
        """Count, then delegate."""
        self.calls["list_user"] += 1
        return self.inner.list_user(user_id, now)

    def delete_user(self, user_id: str, now: float, *, except_key: str | None = None) -> int:
        """Count, then delegate."""
        self.calls["delete_user"] += 1
        return self.inner.delete_user(user_id, now, except_key=except_key)

    def delete_handle(
        self, handle: str, now: float, *, user_id: str | None = None
    ) -> tuple[str, str | None] | None:
        """Count, then delegate."""
        self.calls["delete_handle"] += 1
        return self.inner.delete_handle(handle, now, user_id=user_id)

    def purge_expired(self, now: float, batch_size: int = 1000) -> int:
        """Count, then delegate."""
        self.calls["purge_expired"] += 1
        return self.inner.purge_expired(now, batch_size)

    def count(self, now: float) -> int:
        """Count, then delegate."""
        self.calls["count"] += 1
        return self.inner.count(now)

    def count_expired(self, now: float) -> int:
        """Count, then delegate."""
        self.calls["count_expired"] += 1
        return self.inner.count_expired(now)

    def user_counts(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Count, then delegate."""
        self.calls["user_counts"] += 1
        return self.inner.user_counts(now, limit)

    def delete_all(self) -> int:
        """Count, then delegate."""
        self.calls["delete_all"] += 1
        return self.inner.delete_all()

    def close(self) -> None:
        """Close the wrapped store."""
        self.inner.close()

    def describe(self) -> str:
        """The wrapped store's description."""
        return self.inner.describe()


# ---------------------------------------------------------------------------------------------
# Output


#: Output style of :func:`format_table`.
TableStyle = Literal["text", "markdown"]


def format_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    style: TableStyle = "text",
) -> str:
    """Format rows as an aligned text table or a Markdown table.

    The first column is left-aligned, the others right-aligned; cells are ``str()``-ed.
    """
    cells = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            row[i].ljust(widths[i]) if i == 0 else row[i].rjust(widths[i]) for i in range(len(row))
        ]
        return ("| " + " | ".join(parts) + " |") if style == "markdown" else "  ".join(parts)

    if style == "markdown":
        rule = (
            "| "
            + " | ".join(
                "-" * widths[i] if i == 0 else "-" * (widths[i] - 1) + ":"
                for i in range(len(widths))
            )
            + " |"
        )
    else:
        rule = "  ".join("-" * w for w in widths)
    out = [line(cells[0]), rule, *(line(row) for row in cells[1:])]
    return "\n".join(out)


def _filesystem(path: Path) -> str:
    # The file system a database lives on decides what a commit costs (tmpfs never syncs).
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    best, kind = "", "unknown"
    for mount in mounts:
        parts = mount.split()
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def source_revision(root: Path = _REPO) -> str:
    """The git commit of the checkout, with ``+dirty`` when ``src/`` has uncommitted changes.

    Benchmarks import Keepsake from the working tree (an editable install), so a result belongs
    to exactly this state of the code.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def machine_facts(data_dir: Path | None = None) -> dict[str, Any]:
    """What a reader needs to judge a result: CPU, cores, load, versions, file system."""
    facts: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "revision": source_revision(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "flask": _version("flask"),
        "werkzeug": _version("werkzeug"),
        "flask-keepsake": _version("flask-keepsake"),
        "flask-session": _version("flask-session"),
        "sqlalchemy": _version("sqlalchemy"),
    }
    if data_dir is not None:
        facts["data_dir"] = str(data_dir)
        facts["data_filesystem"] = _filesystem(data_dir)
    return facts


def write_results(name: str, payload: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``payload`` as ``<directory>/<name>-<UTC timestamp>.json`` and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path
