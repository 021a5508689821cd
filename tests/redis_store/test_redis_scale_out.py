"""Scale-out: two application processes, each a real WSGI server, share one Redis."""

from __future__ import annotations

import http.client
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_keepsake.testing.servers import RedisServer

pytestmark = pytest.mark.slow

COOKIE = "__Host-session"
ROOT = Path(__file__).resolve().parents[2]


class AppProcess:
    """One ``tests.redis_store.scaleout_app`` process and the port it serves on."""

    def __init__(self, redis_url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.redis_store.scaleout_app", redis_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the app process did not start (said {line!r})")
        self.port = int(line)

    def request(self, method: str, path: str, token: str | None) -> tuple[int, str, str | None]:
        """Send one request with the session cookie; return status, body and any new token."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Cookie": f"{COOKIE}={token}"} if token else {}
            conn.request(method, path, body=b"v" if method == "POST" else None, headers=headers)
            response = conn.getresponse()
            body = response.read().decode()
            new_token = token
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                if name == COOKIE:
                    new_token = rest.split(";")[0] or None
            return response.status, body, new_token
        finally:
            conn.close()

    def stop(self) -> None:
        """Terminate the process by its pid and wait for it."""
        self.process.terminate()
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture(params=["", "?local_cache=1000"], ids=["no-cache", "local-cache"])
def two_apps(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> Iterator[tuple[AppProcess, AppProcess]]:
    """Two app processes on their own loopback ports, both on the shared Redis.

    Once as configured by default, once with each process keeping a local cache that Redis
    invalidates: the logout must reach the first process's cache too.
    """
    redis_server.admin().flushdb()
    url = redis_server.url + request.param
    first = AppProcess(url)
    try:
        second = AppProcess(url)
    except BaseException:
        first.stop()
        raise
    yield first, second
    first.stop()
    second.stop()


def test_two_processes_share_sessions_and_logout(two_apps: tuple[AppProcess, AppProcess]) -> None:
    """Log in on one process, use the session on the other, log out there: the first sees it."""
    one, two = two_apps
    assert one.port != two.port
    status, _, token = one.request("POST", "/login/alice", None)
    assert status == 200
    assert token is not None
    assert two.request("GET", "/whoami", token)[:2] == (200, "alice")
    assert two.request("POST", "/set/cart", token)[:2] == (200, "ok")
    assert one.request("GET", "/get/cart", token)[:2] == (200, "'v'")
    assert one.request("GET", "/whoami", token)[:2] == (200, "alice")
    status, _, after_logout = two.request("POST", "/logout", token)
    assert (status, after_logout) == (200, None)
    assert one.request("GET", "/whoami", token)[:2] == (200, "anonymous")
