"""Fork safety: gunicorn ``--preload`` forks workers after the master used the store's pool.

No connection may cross the fork: a worker that used the master's connection would interleave
its protocol messages with the master's (or another worker's) on one socket, and a worker that
closed it on exit would end the master's session on the server.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_keepsake.testing.servers import PostgresServer, free_port

from ..store_registry import POSTGRES_DB

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3


def request(port: int, method: str, path: str, cookie: str | None = None) -> tuple[int, str, Any]:
    """One request on its own connection; return status, the session cookie sent, the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(
            method, path, headers={"Connection": "close", **({"Cookie": cookie} if cookie else {})}
        )
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    sent = cookie
    for header in response.headers.get_all("Set-Cookie") or []:
        pair = header.split(";", 1)[0]
        if pair.split("=", 1)[1]:
            sent = pair
    return response.status, sent or "", body


def backend_alive(server: PostgresServer, pid: int) -> bool:
    rows = server.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
    return bool(rows[0][0])


@pytest.fixture
def preloaded(postgres_server: PostgresServer, tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """gunicorn --preload on the app of ``preload_app``; yields its port, its pid, its log."""
    if importlib.util.find_spec("gunicorn") is None:
        message = "NOT RUN: gunicorn is missing (pip install gunicorn)."
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    port = free_port()
    log = tmp_path / "gunicorn.log"
    pid_file = tmp_path / "master-backend"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "KEEPSAKE_"))}
    env.update(
        KEEPSAKE_STORE=postgres_server.url_of(POSTGRES_DB) + "?min_size=1&max_size=1",
        FORK_MASTER_PID_FILE=str(pid_file),
    )
    flags = (
        ["--no-control-socket"]
        if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS)
        else []
    )
    command = [
        sys.executable, "-m", "gunicorn", "--preload",
        "--workers", str(WORKERS), "--bind", f"127.0.0.1:{port}",
        "--timeout", "30", "--graceful-timeout", "5", *flags,
        "tests.postgres_store.preload_app:create_app()",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(port, "GET", "/read")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield port, process.pid, log
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    assert pid_file.exists()


def test_no_connection_crosses_a_fork(
    preloaded: tuple[int, int, Path], postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Workers forked after the master used its pool open their own connections, serve every
    request, and never end the master's session, not even when a worker exits."""
    port, _, log = preloaded
    master_backend = int((tmp_path / "master-backend").read_text())
    assert backend_alive(postgres_server, master_backend)

    workers: set[int] = set()
    backends: set[int] = set()
    for _ in range(30):
        status, _, body = request(port, "GET", "/backend")
        assert status == 200, body
        reply = json.loads(body)
        workers.add(reply["pid"])
        backends.add(reply["backend"])
    assert master_backend not in backends
    assert len(backends) == len(workers)

    cookies = []
    for n in range(1, 13):
        status, cookie, body = request(port, "POST", f"/write/{n}")
        assert status == 200, body
        cookies.append((n, cookie))
    for n, cookie in cookies:
        status, _, body = request(port, "GET", "/read", cookie)
        assert status == 200, body
        assert json.loads(body)["n"] == n

    # A worker that exits (and is replaced by a new fork) leaves the master's session alone.
    victim = next(iter(workers))
    os.kill(victim, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while log.read_text().count("Booting worker") < WORKERS + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().count("Booting worker") >= WORKERS + 1
    assert backend_alive(postgres_server, master_backend)
    for n, cookie in cookies:
        status, _, body = request(port, "GET", "/read", cookie)
        assert status == 200, body
        assert json.loads(body)["n"] == n
    assert "Traceback" not in log.read_text()
