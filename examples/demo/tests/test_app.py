"""The application factory, the secret key, and the ``keepsake-demo`` command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from demo_servers import HttpClient, free_port, wait_for_port

from flask_keepsake.interface import engine_of
from keepsake_demo import create_app
from keepsake_demo.secret import SECRET_FILE, load_or_create_secret


def test_instance_folder_created_with_databases(tmp_path: Path) -> None:
    """A fresh instance folder gets the secret key, the accounts and the sessions databases."""
    instance = tmp_path / "new" / "instance"
    app = create_app(instance_path=str(instance))
    try:
        client = app.test_client()
        client.get("/")
        assert sorted(
            p.name for p in instance.iterdir() if not p.name.endswith(("-wal", "-shm"))
        ) == [
            "demo.sqlite3",
            "keepsake.sqlite3",
            "secret_key",
        ]
        assert (instance / SECRET_FILE).stat().st_mode & 0o777 == 0o600
        with sqlite3.connect(instance / "demo.sqlite3") as db:
            (stored,) = db.execute("SELECT password_hash FROM users").fetchone()
        db.close()
        assert stored.startswith("scrypt:")  # the default, slow on purpose
    finally:
        engine_of(app).store.close()


def test_secret_key_survives_restart(tmp_path: Path) -> None:
    """The generated key is reused by the next app, so CSRF tokens and signed cookies survive."""
    first = create_app(instance_path=str(tmp_path))
    second = create_app(instance_path=str(tmp_path))
    try:
        assert first.secret_key == second.secret_key
        assert len(str(first.secret_key)) >= 64
    finally:
        engine_of(first).store.close()
        engine_of(second).store.close()


def test_secret_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FLASK_SECRET_KEY wins, and then no key file is written."""
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-the-environment-" + "x" * 40)
    app = create_app(instance_path=str(tmp_path))
    try:
        assert app.secret_key == "from-the-environment-" + "x" * 40
        assert not (tmp_path / SECRET_FILE).exists()
    finally:
        engine_of(app).store.close()


def test_secret_key_one_winner_when_processes_race(tmp_path: Path) -> None:
    """Workers starting at once all end up with the same key."""
    with ProcessPoolExecutor(4) as pool:
        keys = list(pool.map(load_or_create_secret, [tmp_path] * 8))
    assert len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]


def test_secret_key_file_empty_is_an_error(tmp_path: Path) -> None:
    """An empty key file is refused with a message that says what to do."""
    (tmp_path / SECRET_FILE).write_text("")
    with pytest.raises(RuntimeError, match="delete it"):
        load_or_create_secret(tmp_path)


def test_environment_configures_keepsake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FLASK_-prefixed variables reach Keepsake: the store and the cookie setting."""
    monkeypatch.setenv("FLASK_KEEPSAKE_STORE", "memory://")
    monkeypatch.setenv("FLASK_KEEPSAKE_COOKIE_SECURE", "true")
    monkeypatch.setenv("FLASK_TESTING", "true")
    app = create_app(instance_path=str(tmp_path))
    engine = engine_of(app)
    assert engine.store.name == "memory"
    assert engine.settings.cookie_secure is True
    assert not (tmp_path / "keepsake.sqlite3").exists()


def test_development_mode_cookie_is_safari_friendly(make_app: Any) -> None:
    """In debug mode, plain-HTTP loopback requests get a cookie without Secure or prefix."""
    app = make_app(DEBUG=True)
    assert engine_of(app).settings.cookie_secure == "auto"
    header = app.test_client().get("/").headers["Set-Cookie"]
    assert header.startswith("session=")
    assert "Secure" not in header


@pytest.mark.slow
def test_keepsake_demo_command(tmp_path: Path) -> None:
    """`keepsake-demo` starts on a fresh instance folder and prints address and credentials."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env["KEEPSAKE_DEMO_INSTANCE"] = str(tmp_path / "instance")
    env["PYTHONUNBUFFERED"] = "1"
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "keepsake_demo", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, 30, process=process)
            client = HttpClient(port)
            status, headers, html = client.get("/")
            assert status == 200
            assert "Visits in this session" in html
            (cookie,) = headers["set-cookie"]
            assert cookie.startswith("session=")  # development mode: works in Safari too
            assert "Secure" not in cookie
        finally:
            process.terminate()
            process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while "Ctrl+C" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    printed = out.read_text()
    assert f"http://localhost:{port}/" in printed
    assert "demo / demo-password" in printed
    assert (tmp_path / "instance" / SECRET_FILE).exists()
