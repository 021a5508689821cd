"""Production mode: the demo under gunicorn with several workers, on SQLite and on Redis.

Each test starts its own gunicorn (and, for Redis, its own ``redis-server``) on free loopback
ports, in a fresh instance folder, without FLASK_DEBUG: the production cookie (``__Host-``,
``Secure``) and a ``SECRET_KEY`` generated once and shared by every worker through the file.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from demo_servers import HttpClient, free_port, require, wait_for_port

pytestmark = pytest.mark.slow

WORKERS = 3


def _no_control_socket() -> list[str]:
    # gunicorn 27 opens a control socket in ~/.gunicorn by default, shared by every gunicorn
    # of the user; the tests' servers must not touch anything outside their temporary folder.
    try:
        from gunicorn.config import KNOWN_SETTINGS
    except ImportError:
        return []
    return (
        ["--no-control-socket"]
        if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)
        else []
    )


_NO_CONTROL_SOCKET = _no_control_socket()


class Gunicorn:
    """``gunicorn 'keepsake_demo:create_app()'`` with an access log that names the worker."""

    def __init__(self, instance: Path, env: dict[str, str]) -> None:
        require(
            "gunicorn",
            importlib.util.find_spec("gunicorn") is not None,
            "pip install gunicorn",
        )
        self.port = free_port()
        self.log = instance.parent / f"gunicorn-{self.port}.log"
        self.access = instance.parent / f"access-{self.port}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
        environ.update(env, KEEPSAKE_DEMO_INSTANCE=str(instance))
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(WORKERS),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--access-logfile",
                str(self.access),
                "--access-logformat",
                "%(p)s %(m)s %(U)s %(s)s",
                *_NO_CONTROL_SOCKET,
                "keepsake_demo:create_app()",
            ],
            env=environ,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(self.port, 30, process=self.process)
        except Exception:
            self.stop()
            raise

    def client(self, user_agent: str = "keepsake-demo-tests") -> HttpClient:
        """A new cookie-keeping client of this server."""
        return HttpClient(self.port, user_agent)

    def workers_seen(self) -> set[str]:
        """The worker pids that served a request, from the access log."""
        if not self.access.exists():
            return set()
        return {line.split()[0] for line in self.access.read_text().splitlines() if line}

    def stop(self) -> None:
        """Stop gunicorn (graceful, then forced) and close its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log_file.close()


class RedisServer:
    """A ``redis-server`` of our own on a free loopback port, without persistence."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        require("redis-server", binary is not None, "apt-get install -y redis-server")
        assert binary is not None
        self.port = free_port()
        self._log = (directory / "redis.log").open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, 10, process=self.process)
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server we started, by its pid."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The store the gunicorn under test uses: the SQLite default, or our own Redis."""
    if request.param == "sqlite":
        yield {"env": {}, "redis": None}
        return
    if importlib.util.find_spec("redis") is None:
        require("redis-py", False, "pip install 'flask-keepsake[redis]'")
    try:
        import flask_keepsake.stores.redis  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"NOT RUN: the Redis store is not available yet ({exc}).")
    server = RedisServer(tmp_path)
    try:
        yield {"env": {"FLASK_KEEPSAKE_STORE": server.url}, "redis": server}
    finally:
        server.stop()


@pytest.fixture
def gunicorn(store: dict[str, Any], tmp_path: Path) -> Iterator[Gunicorn]:
    """The demo under gunicorn with several workers, in a fresh instance folder."""
    instance = tmp_path / "instance"
    server = Gunicorn(instance, store["env"])
    try:
        yield server
    finally:
        server.stop()


def _sign_in(client: HttpClient) -> None:
    status, headers, _ = client.post_form(
        "/login", "/login", username="demo", password="demo-password"
    )
    assert status == 302, headers


def test_production_mode_across_workers(gunicorn: Gunicorn, store: dict[str, Any]) -> None:
    """Sign-in, CSRF, revocation and logout hold whichever worker serves each request."""
    first = gunicorn.client("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0")
    status, headers, _ = first.get("/")
    assert status == 200
    (cookie,) = [h for h in headers["set-cookie"] if "session=" in h]
    assert cookie.startswith("__Host-session=")
    assert "; Secure" in cookie
    assert "; HttpOnly" in cookie

    # Several devices sign in at once: the CSRF token of a page served by one worker must
    # verify on another (one SECRET_KEY for all), and the workers share the sessions.
    devices = [gunicorn.client(f"device-{i}") for i in range(4)]
    with ThreadPoolExecutor(len(devices)) as pool:
        list(pool.map(_sign_in, devices))
    for device in devices:
        for _ in range(5):
            assert device.api()["user"] == "demo"
    handles = {device.api()["handle"] for device in devices}
    assert len(handles) == len(devices)

    # One device signs another out; every worker sees it at once.
    laptop, phone = devices[0], devices[1]
    status, _, _ = laptop.post_form("/sessions", f"/sessions/{phone.api()['handle']}/revoke")
    assert status == 302
    for _ in range(5):
        assert phone.api()["user"] is None

    # Sign out, then replay the old cookie: anonymous on every worker.
    old = dict(laptop.cookies)
    status, _, _ = laptop.post_form("/", "/logout")
    assert status == 302
    replay = gunicorn.client()
    replay.cookies = old
    for _ in range(5):
        assert replay.api()["user"] is None
        assert "You are not signed in" in replay.get("/")[2]

    assert len(gunicorn.workers_seen()) >= 2, "the requests never reached a second worker"
    instance = gunicorn.log.parent / "instance"
    assert (instance / "secret_key").exists()
    assert (instance / "demo.sqlite3").exists()
    if store["redis"] is None:
        assert (instance / "keepsake.sqlite3").exists()
    else:
        import redis

        assert not (instance / "keepsake.sqlite3").exists()
        with redis.Redis.from_url(store["redis"].url) as client:
            assert client.dbsize() > 0


def test_visit_counter_survives_worker_hops(gunicorn: Gunicorn) -> None:
    """The visit counter in the session counts every visit, whichever worker serves it."""
    client = gunicorn.client()
    for expected in range(1, 11):
        html = client.get("/")[2]
        match = re.search(r'id="visits">(\d+)<', html)
        assert match is not None
        assert int(match.group(1)) == expected


def test_check_finds_no_warning_in_production(tmp_path: Path) -> None:
    """The demo as gunicorn runs it (not debug) passes flask keepsake check's rules."""
    from flask_keepsake.audit import audit
    from keepsake_demo import create_app

    app = create_app({"DEMO_PASSWORD_METHOD": "pbkdf2:sha256:1000"}, instance_path=str(tmp_path))
    assert not app.debug
    assert app.config["REMEMBER_COOKIE_SECURE"] is True
    findings = audit(app, url="https://demo.example")
    assert [f.id for f in findings if f.severity != "note"] == []
