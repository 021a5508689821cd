"""Locust users for ``run_load.py``: signed-in members and anonymous visitors, reads and writes.

Each user keeps its own cookies and checks what it gets back, so a lost session or a lost write
counts as an error like a 500 does:

- **Member** (3 of 4 users): registers its own account at start (a CSRF-protected form), then
  loops over: the home page, whose visit counter is a session write (3); ``/api/session``, a
  read that must name the member (4); a signed-in page (2, ``LOAD_MEMBER_PAGE``); sign out and
  sign in again, a session deleted and a new token (1).
- **Visitor** (1 of 4): anonymous; the home page (3), ``/api/session`` (3), and a new visitor
  who drops the cookie and starts a fresh session (1).

Every request is classified on the way (``LOAD_RESULT_FILE`` receives the tally as JSON when the
run stops): latency, status, and the error kinds ``connection``, ``http-500``, ``http-503``,
``http-<code>``, ``database-locked`` (the text anywhere in a response), ``lost-session`` and
``lost-write``. Run by ``run_load.py``; by hand:
``LOAD_RESULT_FILE=/tmp/r.json locust -f benchmarks/load/locustfile.py --headless -u 8 -t 10s
--host http://127.0.0.1:8000``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections import Counter
from http.cookiejar import DefaultCookiePolicy
from typing import Any, Final

from locust import FastHttpUser, events, task
from locust.contrib.fasthttp import ResponseContextManager

#: The signed-in page members visit (the demo's devices page; ``/account`` in ``load_app``).
MEMBER_PAGE: Final = os.environ.get("LOAD_MEMBER_PAGE", "/account")
#: The password of every account the run registers.
PASSWORD: Final = "load-test-password"

_CSRF: Final = re.compile(r'name="csrf_token"(?: type="hidden")?\s+value="([^"]+)"')
_VISITS: Final = re.compile(r'id="visits">(\d+)<')
_LOCKED: Final = b"database is locked"


class Tally:
    """Every request's latency and classification, written as JSON when the run stops."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.first: float | None = None
        self.last: float = 0.0

    def record(self, latency_ms: float, status: int, started: float) -> None:
        """Count one finished request (successful or not)."""
        self.latencies_ms.append(latency_ms)
        self.statuses[str(status)] += 1
        if self.first is None or started < self.first:
            self.first = started
        self.last = max(self.last, started + latency_ms / 1000)

    def error(self, kind: str, detail: str) -> None:
        """Count one error of ``kind``, keeping the first ``detail`` of each kind."""
        self.errors[kind] += 1
        self.examples.setdefault(kind, detail[:300])

    def dump(self, path: str) -> None:
        """Write the tally to ``path``."""
        body = {
            "latencies_ms": self.latencies_ms,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "examples": self.examples,
            "first": self.first,
            "last": self.last,
        }
        with open(path, "w", encoding="utf-8") as out:
            json.dump(body, out)


TALLY = Tally()


@events.request.add_listener  # type: ignore[untyped-decorator]
def _on_request(
    response_time: float,
    response: Any,
    exception: BaseException | None,
    start_time: float,
    **_: Any,
) -> None:
    status = getattr(response, "status_code", 0) or 0
    TALLY.record(response_time, status, start_time)
    if exception is not None and status == 0:
        TALLY.error("connection", repr(exception))


@events.quitting.add_listener  # type: ignore[untyped-decorator]
def _on_quitting(**_: Any) -> None:
    path = os.environ.get("LOAD_RESULT_FILE")
    if path:
        TALLY.dump(path)


class _User(FastHttpUser):
    """A browser-like user: one cookie jar, redirects not followed, every answer checked."""

    abstract = True
    network_timeout = 30.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        """Send cookies back over plain HTTP to the loopback server, as browsers do for
        localhost (the demo's production cookie is ``Secure`` and ``__Host-``)."""
        self.client.cookiejar.set_policy(DefaultCookiePolicy(secure_protocols=("http", "https")))
        self.visits: int | None = None
        self.csrf: str | None = None

    def call(
        self, method: str, path: str, form: dict[str, str] | None = None, *, expect: int = 200
    ) -> str | None:
        """Send one request; return the body if the status is ``expect``, else count an error."""
        ctx: ResponseContextManager
        with self.client.request(
            method, path, data=form, allow_redirects=False, catch_response=True, name=path
        ) as ctx:
            status = ctx.status_code
            content = ctx.content or b""
            if _LOCKED in content:
                TALLY.error("database-locked", f"{method} {path} -> {status}")
                ctx.failure("database is locked")  # type: ignore[no-untyped-call]
                return None
            if status == 0:
                # Counted by the request listener, with the exception.
                ctx.failure("connection error")  # type: ignore[no-untyped-call]
                return None
            if status != expect:
                kind = f"http-{status}" if status >= 400 else "unexpected-status"
                TALLY.error(kind, f"{method} {path} -> {status}")
                ctx.failure(f"HTTP {status}")  # type: ignore[no-untyped-call]
                return None
            ctx.success()  # type: ignore[no-untyped-call]
            text = content.decode("utf-8", "replace")
            match = _CSRF.search(text)
            if match is not None:
                self.csrf = match.group(1)
            return text

    def post_form(self, page: str, action: str, **fields: str) -> bool:
        """Load ``page`` for its CSRF token, then post ``fields`` to ``action`` (expect 302)."""
        match = _CSRF.search(self.call("GET", page) or "")
        if match is None:
            return False
        sent = self.call("POST", action, {"csrf_token": match.group(1), **fields}, expect=302)
        # Signing in rotates the CSRF secret: the token of the form page is spent.
        self.csrf = None
        return sent is not None

    def home(self) -> int | None:
        """The home page: its visit counter goes up by one per visit of this user. Return the
        counter (``None`` on error)."""
        text = self.call("GET", "/")
        if text is None:
            self.visits = None
            return None
        match = _VISITS.search(text)
        if match is None:
            TALLY.error("unexpected-page", "no visit counter on /")
            return None
        visits = int(match.group(1))
        if self.visits is not None and visits != self.visits + 1:
            TALLY.error("lost-write", f"visits {visits} after {self.visits}")
        self.visits = visits
        return visits

    def whoami(self) -> tuple[bool, str | None]:
        """Whether ``/api/session`` answered, and the user it names (``None``: anonymous)."""
        text = self.call("GET", "/api/session")
        if text is None:
            return False, None
        user: str | None = json.loads(text)["user"]
        return True, user


class Member(_User):
    """A user with an account of its own, signed in."""

    weight = 3

    def on_start(self) -> None:
        """Register an account (which signs in)."""
        super().on_start()
        self.username = f"load-{secrets.token_hex(6)}"
        self.signed_in = self.post_form(
            "/register", "/register", username=self.username, password=PASSWORD, confirm=PASSWORD
        )

    @task(3)
    def visit_home(self) -> None:
        """Write: the visit counter."""
        self.home()

    @task(4)
    def read_session(self) -> None:
        """Read: ``/api/session`` must still name this member."""
        answered, user = self.whoami()
        if answered and self.signed_in and user != self.username:
            TALLY.error("lost-session", f"{self.username} is {user}")

    @task(2)
    def member_page(self) -> None:
        """A page for signed-in users only."""
        self.call("GET", MEMBER_PAGE, expect=200 if self.signed_in else 302)

    @task(1)
    def sign_out_and_in(self) -> None:
        """Sign out (the session is deleted), then sign in again (a new token)."""
        if self.signed_in:
            if self.csrf is None:
                self.home()
                if self.csrf is None:
                    return
            if self.call("POST", "/logout", {"csrf_token": self.csrf or ""}, expect=302) is None:
                return
        self.visits = None
        self.signed_in = self.post_form(
            "/login", "/login", username=self.username, password=PASSWORD
        )


class Visitor(_User):
    """An anonymous visitor."""

    weight = 1

    @task(3)
    def visit_home(self) -> None:
        """Write: the visit counter."""
        self.home()

    @task(3)
    def read_session(self) -> None:
        """Read: nobody is signed in."""
        _, user = self.whoami()
        if user is not None:
            TALLY.error("wrong-session", f"an anonymous visitor is {user}")

    @task(1)
    def new_visitor(self) -> None:
        """A first visit: no cookie, so a new session is created."""
        self.client.cookiejar.clear()
        self.visits = None
        visits = self.home()
        if visits not in (None, 1):
            TALLY.error("wrong-session", f"a new visitor has {visits} visits")
