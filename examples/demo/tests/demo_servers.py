"""Real servers for the demo's end-to-end tests: a thread server, free ports, readiness."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from flask_keepsake.interface import engine_of
from keepsake_demo import create_app

#: Chromium's flags for a headless run in a container (no sandbox, no network chatter).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: Password hashing for the tests: real hashes, without scrypt's deliberate slowness.
FAST_HASH = "pbkdf2:sha256:1000"

#: Where the screenshots used by the README and docs/demo.md go (when in a source checkout).
IMAGES = Path(__file__).resolve().parents[3] / "docs" / "images"


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 15.0, *, process: Any = None) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def require(what: str, ok: bool, hint: str) -> None:
    """Skip (fail when CI=true) the test loudly when a tool it needs is missing."""
    if ok:
        return
    message = f"NOT RUN: {what} is missing ({hint})."
    if os.environ.get("CI") == "true":
        pytest.fail(message + " CI=true, so this is a failure.")
    pytest.skip(message)


def require_browser() -> None:
    """Skip (or fail in CI) unless Playwright for Python and Debian's chromium are there."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require("Playwright for Python", False, "pip install playwright")
    require("chromium", shutil.which("chromium") is not None, "apt-get install -y chromium")


class LiveServer:
    """The demo app served by Werkzeug in a background thread on a free loopback port."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket and the session store."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
        engine_of(self.app).store.close()


def live_server(instance: Path, **config: Any) -> LiveServer:
    """Build the demo in ``instance`` with ``config`` and serve it."""
    config.setdefault("DEMO_PASSWORD_METHOD", FAST_HASH)
    return LiveServer(create_app(config, instance_path=str(instance))).start()


class HttpClient:
    """A minimal cookie-keeping HTTP client, one connection per request.

    One connection per request lets every request of a test land on any gunicorn worker. It
    keeps cookies by name and sends them back whatever their flags, as a browser on localhost
    does (Chrome and Firefox accept Secure cookies from http://localhost).
    """

    def __init__(self, port: int, user_agent: str = "keepsake-demo-tests") -> None:
        self.port = port
        self.user_agent = user_agent
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, list[str]], str]:
        """Send one request; return the status, the headers (lists, lower-case) and the body."""
        headers = {"User-Agent": self.user_agent, "Connection": "close"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
            got: dict[str, list[str]] = {}
            for name, value in response.getheaders():
                got.setdefault(name.lower(), []).append(value)
        finally:
            conn.close()
        for header in got.get("set-cookie", []):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in header.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response.status, got, text

    def get(self, path: str) -> tuple[int, dict[str, list[str]], str]:
        """GET ``path``."""
        return self.request("GET", path)

    def post_form(
        self, page: str, action: str, **data: str
    ) -> tuple[int, dict[str, list[str]], str]:
        """Load ``page``, take its CSRF token, post ``data`` to ``action``."""
        html = self.get(page)[2]
        match = re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', html)
        assert match is not None, f"no CSRF token on {page}"
        return self.request("POST", action, {"csrf_token": match.group(1), **data})

    def api(self) -> dict[str, Any]:
        """``/api/session`` as a dict."""
        status, _, text = self.get("/api/session")
        assert status == 200, text
        body: dict[str, Any] = json.loads(text)
        return body
