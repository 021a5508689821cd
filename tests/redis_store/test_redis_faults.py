"""Faults of a real redis-server under a Flask app: pauses, crashes, resets, slowness, full memory.

Each test owns its server (it pauses, kills or fills it) and an app with Keepsake on a store whose
socket timeout is :data:`~tests.redis_store.conftest.TIMEOUT`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, session

from flask_keepsake import tokens
from flask_keepsake.stores.redis import RedisStore
from flask_keepsake.testing.servers import RedisServer

from .conftest import TIMEOUT, AppOnStore

pytestmark = pytest.mark.slow

COOKIE = "__Host-session"
#: How much longer than the socket timeout a failing request may take (Flask, the 503 page).
SLACK = 0.25


@pytest.fixture
def store(own_server: RedisServer) -> Iterator[RedisStore]:
    """A store on this test's own server, with a short socket timeout."""
    instance = RedisStore.from_url(own_server.url, socket_timeout=TIMEOUT)
    yield instance
    instance.close()


@pytest.fixture
def app(store: RedisStore, make_app: AppOnStore) -> Flask:
    """The test app on this test's store."""
    return make_app(store)


def stored_data(server: RedisServer, client: Any) -> dict[bytes, bytes]:
    """The data fields of the client's stored session, read straight from Redis."""
    key = b"keepsake:s:" + tokens.storage_key(client.get_cookie(COOKIE).value).encode()
    fields: dict[Any, Any] = server.admin().hgetall(key)
    return {name: value for name, value in fields.items() if name.startswith(b"d:")}


def assert_unavailable(response: Any, elapsed: float) -> None:
    """A 503 with Retry-After, no cookie, no stack trace, in time."""
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.headers.getlist("Set-Cookie") == []
    assert b"Traceback" not in response.data
    assert elapsed < TIMEOUT + SLACK


def timed(call: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Run ``call`` and return its result and how long it took."""
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


def test_paused_server_answers_503_within_the_socket_timeout(
    app: Flask, own_server: RedisServer
) -> None:
    """SIGSTOP: a request that reads the session gets 503 + Retry-After, fast, no cookie."""
    client = app.test_client()
    client.post("/set/a", data="1")
    own_server.pause()
    try:
        response, elapsed = timed(client.get, "/get/a")
    finally:
        own_server.resume()
    assert_unavailable(response, elapsed)


def test_paused_server_gives_a_new_visitor_no_cookie(app: Flask, own_server: RedisServer) -> None:
    """SIGSTOP: a first write gets 503 and no session cookie."""
    own_server.pause()
    try:
        response, elapsed = timed(app.test_client().post, "/set/a", data="1")
    finally:
        own_server.resume()
    assert_unavailable(response, elapsed)


def test_service_resumes_by_itself_after_sigcont(app: Flask, own_server: RedisServer) -> None:
    """After SIGCONT the next request is served, with the session written before the pause."""
    client = app.test_client()
    client.post("/set/a", data="before")
    own_server.pause()
    try:
        assert client.get("/get/a").status_code == 503
    finally:
        own_server.resume()
    assert client.get("/get/a").data == b"'before'"
    assert client.post("/set/b", data="after").status_code == 200
    assert client.get("/keys").data == b"a,b"


def test_killed_server_restarted_with_aof_keeps_sessions(
    tmp_path: Path, make_app: AppOnStore
) -> None:
    """Kill -9 with AOF on: 503 while down, then every session written before is intact."""
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    server = RedisServer(tmp_path / "aof", *aof).start()
    store = RedisStore.from_url(server.url, socket_timeout=TIMEOUT)
    try:
        app = make_app(store)
        client = app.test_client()
        client.post("/set/cart", data="apple")
        client.post("/login/42")
        server.kill()
        response, elapsed = timed(client.get, "/whoami")
        assert_unavailable(response, elapsed)
        server = RedisServer(tmp_path / "aof", *aof, port=server.port).start()
        assert client.get("/whoami").data == b"42"
        assert client.get("/get/cart").data == b"'apple'"
    finally:
        store.close()
        server.stop()


def test_connection_reset_mid_request_writes_nothing(app: Flask, own_server: RedisServer) -> None:
    """The connection dies while the delta waits on the server: 503, and no key is written."""
    client = app.test_client()
    client.post("/set/first", data="old")
    admin = own_server.admin()
    # Writes wait while reads go on, so the request loads, then blocks on its delta.
    admin.client_pause(5000, all=False)
    killed: list[int] = []

    def kill_blocked_client() -> None:
        deadline = time.monotonic() + 2
        while not killed and time.monotonic() < deadline:
            for entry in admin.client_list():
                if "b" in entry["flags"]:
                    admin.client_kill_filter(_id=entry["id"])
                    killed.append(int(entry["id"]))
            time.sleep(0.01)

    killer = threading.Thread(target=kill_blocked_client)
    killer.start()
    try:
        response = client.post("/set-many", data="k1,k2,k3")
    finally:
        killer.join()
        admin.client_unpause()
    assert killed
    assert response.status_code == 503
    assert response.headers.getlist("Set-Cookie") == []
    assert stored_data(own_server, client) == {b"d:first": b'"old"'}
    assert client.get("/keys").data == b"first"


def test_slow_server_answers_503_and_writes_all_or_nothing(
    store: RedisStore, own_server: RedisServer, make_app: AppOnStore
) -> None:
    """DEBUG SLEEP while a delta is sent: 503 in time; the delta lands whole or not at all."""
    app = make_app(store)
    sleeper = threading.Thread(target=own_server.command, args=("DEBUG", "SLEEP", 1))

    @app.post("/set-three-while-redis-sleeps")
    def set_three_while_redis_sleeps() -> str:
        session.get("first")  # loaded while Redis still answers
        for name in ("k1", "k2", "k3"):
            session[name] = "new"
        sleeper.start()
        time.sleep(0.1)  # DEBUG SLEEP has reached the server: it answers nothing for 1 s
        return "ok"

    client = app.test_client()
    client.post("/set/first", data="old")
    response, elapsed = timed(client.post, "/set-three-while-redis-sleeps")
    sleeper.join()
    assert_unavailable(response, elapsed - 0.1)
    # A timed-out request may still have been applied once Redis woke up, but always whole.
    data = stored_data(own_server, client)
    assert data in (
        {b"d:first": b'"old"'},
        {b"d:first": b'"old"', b"d:k1": b'"new"', b"d:k2": b'"new"', b"d:k3": b'"new"'},
    )


def test_full_server_answers_503_and_keeps_the_session(app: Flask, own_server: RedisServer) -> None:
    """maxmemory reached with noeviction: writes get 503, reads still work, nothing changes."""
    client = app.test_client()
    client.post("/set/first", data="old")
    admin = own_server.admin()
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    try:
        response, elapsed = timed(client.post, "/set-many", data="k1,k2,k3")
        assert_unavailable(response, elapsed)
        new_visitor = app.test_client().post("/set/a", data="1")
        assert new_visitor.status_code == 503
        assert new_visitor.headers.getlist("Set-Cookie") == []
        assert client.get("/get/first").data == b"'old'"
        assert stored_data(own_server, client) == {b"d:first": b'"old"'}
    finally:
        admin.config_set("maxmemory", 0)
    assert client.post("/set-many", data="k1").status_code == 200
    assert client.get("/keys").data == b"first,k1"
