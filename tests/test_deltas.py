"""Lazy loading and per-key deltas: no store call when untouched, no lost or resurrected writes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request, session
from werkzeug.serving import make_server

from flask_keepsake import tokens
from flask_keepsake.interface import engine_of

from .conftest import AppFactory, spy

#: What these tests check goes through each store's own code: run them on every store.
pytestmark = pytest.mark.every_store

COOKIE = "__Host-session"


def _key(client: Any) -> str:
    return tokens.storage_key(client.get_cookie(COOKIE).value)


def test_untouched_session_makes_no_store_call(app: Flask) -> None:
    """A view that never uses the session costs no store call, even with a cookie."""
    client = app.test_client()
    client.post("/set/a", data="1")
    spy(app).reset()
    response = client.get("/noop")
    assert sum(spy(app).calls.values()) == 0
    assert "Cookie" not in response.vary
    assert response.headers.getlist("Set-Cookie") == []


def test_read_only_request_makes_one_call_and_no_write(app: Flask) -> None:
    """Reading the session is one load and no write (within the touch interval)."""
    client = app.test_client()
    client.post("/set/a", data="1")
    spy(app).reset()
    response = client.get("/get/a")
    assert response.data == b"'1'"
    assert dict(spy(app).calls) == {"load": 1}
    assert "Cookie" in response.vary


def test_unchanged_session_writes_nothing(app: Flask) -> None:
    """Setting a key to the value it already has writes nothing."""
    client = app.test_client()
    client.post("/set/a", data="1")
    spy(app).reset()
    client.post("/set/a", data="1")
    assert spy(app).writes == 0


def test_delta_holds_only_changed_keys(app: Flask) -> None:
    """Only the key that changed is sent to the store."""
    client = app.test_client()
    client.post("/set/a", data="1")
    client.post("/set/b", data="2")
    spy(app).reset()
    seen: list[Any] = []
    inner_apply = spy(app).inner.apply

    def recording_apply(key, changed, deleted, now, touch=None):  # type: ignore[no-untyped-def]
        seen.append((dict(changed), list(deleted)))
        return inner_apply(key, changed, deleted, now, touch)

    spy(app).inner.apply = recording_apply  # type: ignore[method-assign]
    client.post("/set/b", data="3")
    client.post("/del/a")
    assert seen == [({"b": '"3"'}, []), ({}, ["a"])]


def test_nested_mutation_is_saved(make_app: AppFactory) -> None:
    """Appending to a list in the session is saved without session.modified = True."""
    app = make_app()

    @app.post("/cart/<item>")
    def add(item: str) -> str:
        session.setdefault("cart", [])
        session["cart"].append(item)
        return ",".join(session["cart"])

    @app.post("/cart-inplace/<item>")
    def add_inplace(item: str) -> str:
        cart = session.get("cart")
        assert cart is not None
        cart.append(item)
        session.modified = False
        return ",".join(cart)

    client = app.test_client()
    client.post("/cart/apple")
    client.post("/cart-inplace/pear")
    assert client.post("/cart/plum").data == b"apple,pear,plum"


def test_delta_never_resurrects_deleted_session(make_app: AppFactory) -> None:
    """A write to a session deleted while the request ran is dropped and the cookie removed."""
    app = make_app()

    @app.post("/revoked-meanwhile")
    def revoked_meanwhile() -> str:
        session["b"] = "2"
        # Another request (a logout on another tab, an admin revoke) deletes the record now.
        spy(app).inner.delete(tokens.storage_key(request.cookies[COOKIE]))
        return "ok"

    client = app.test_client()
    client.post("/set/a", data="1")
    key = _key(client)
    response = client.post("/revoked-meanwhile")
    assert response.status_code == 200
    assert spy(app).inner.load(key, engine_of(app).clock()) is None
    assert spy(app).inner.count(engine_of(app).clock()) == 0
    assert client.get_cookie(COOKIE) is None
    assert client.get("/get/b").data == b"None"


def test_overlapping_requests_on_different_keys_keep_both(app: Flask) -> None:
    """Two requests that loaded the same state and change different keys both keep their change."""
    client = app.test_client()
    client.post("/set/base", data="0")
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    other = app.test_client()
    other.set_cookie(COOKIE, cookie.value)
    with app.test_request_context("/", headers={"Cookie": f"{COOKIE}={cookie.value}"}):
        interface = app.session_interface
        first = interface.open_session(app, request)
        assert first is not None
        first["x"] = "from-first"
        other.post("/set/y", data="from-second")
        response = app.response_class()
        interface.save_session(app, first, response)
    assert client.get("/keys").data == b"base,x,y"


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app behind a real threaded WSGI server on a free loopback port."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)
    server.server_close()


def test_eight_threads_on_one_session_keep_eight_of_eight(app: Flask, live_server: str) -> None:
    """Eight overlapping requests, each setting its own key in one session, keep all eight."""
    import http.client
    from urllib.parse import urlsplit

    host = urlsplit(live_server)

    def post(path: str, cookie: str | None = None) -> tuple[int, list[str]]:
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
        conn.request("POST", path, body=b"v", headers=headers)
        response = conn.getresponse()
        response.read()
        result = response.status, response.headers.get_all("Set-Cookie") or []
        conn.close()
        return result

    status, cookies = post("/set/start")
    assert status == 200
    token = cookies[0].split(";")[0].split("=", 1)[1]
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def worker(i: int) -> None:
        barrier.wait()
        statuses.append(post(f"/set/k{i}", token)[0])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert statuses == [200] * 8
    record = spy(app).inner.load(tokens.storage_key(token), engine_of(app).clock())
    assert record is not None
    assert sorted(record.data) == ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "start"]
