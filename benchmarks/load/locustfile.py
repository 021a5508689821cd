"""Locust users for the apps of ``bench.py`` (``run_load.py`` starts them under gunicorn).

Each user starts a session of five keys (``/seed``) and then, with no think time, reads it
(``/read``, which must still answer the seeded name: anything else is a lost session), writes it
(``/write``, whose visit counter must go up by exactly one per request of this user: anything
else is a lost write), sends a request that never touches it (``/untouched``), or starts over as a
new visitor (``/new``). Weights 4, 3, 2, 1. By hand::

    locust -f benchmarks/load/locustfile.py --headless -u 32 -t 30s --host http://127.0.0.1:8000
"""

from __future__ import annotations

from http.cookiejar import DefaultCookiePolicy

from locust import FastHttpUser, task


class Visitor(FastHttpUser):
    """One browser: its own cookie jar, every answer checked."""

    def on_start(self) -> None:
        # The session cookie is Secure; send it back over plain HTTP to the loopback server, as
        # browsers do for localhost.
        self.client.cookiejar.set_policy(DefaultCookiePolicy(secure_protocols=("http", "https")))
        self.seed()

    def seed(self) -> None:
        self.client.cookiejar.clear()
        self.client.get("/seed")
        self.visits = 0

    def check(self, path: str, expect: str) -> str:
        """GET ``path``; a status other than 200 or an answer other than ``expect`` fails."""
        with self.client.get(path, catch_response=True) as response:
            text = (response.content or b"").decode()
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif text != expect:
                response.failure(f"expected {expect!r}, got {text[:80]!r}")
            return text

    @task(4)
    def read(self) -> None:
        """The session is still there."""
        self.check("/read", "ada")

    @task(3)
    def write(self) -> None:
        """Each write goes up by one: none lost."""
        text = self.check("/write", str(self.visits + 1))
        self.visits = int(text) if text.isdigit() else self.visits + 1

    @task(2)
    def untouched(self) -> None:
        """A request that never uses the session."""
        self.check("/untouched", "ok")

    @task(1)
    def new_visitor(self) -> None:
        """A first visit: no cookie, a new session."""
        self.seed()
