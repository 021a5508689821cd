"""Writes overlapping a login, on a real threaded server: every acknowledged write is kept.

Each round starts an anonymous session, then sends one login and many writes with the pre-login
cookie at the same moment. A write answered 200 must be in the signed-in session; the others are
answered 409 (they arrived after the login, with the replaced token). No response to a request
with the pre-login cookie may carry a session cookie, or the browser would be signed out.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask, request, session
from werkzeug.serving import BaseWSGIServer, make_server

from flask_keepsake import Keepsake
from flask_keepsake.stores.base import Store

pytestmark = [pytest.mark.slow, pytest.mark.every_store]

COOKIE = "session"
ROUNDS = 8
WRITERS = 6
WRITES = 4


def _app(store: Store) -> Flask:
    app = Flask(__name__)
    # Plain HTTP on loopback in a test: the cookie without Secure, named as Flask's.
    app.config.update(TESTING=True, KEEPSAKE_COOKIE_SECURE=False)
    keepsake = Keepsake(app, store=store)

    @app.post("/set/<key>")
    def set_(key: str) -> str:
        session[key] = request.get_data(as_text=True)
        return "ok"

    @app.post("/login")
    def login() -> str:
        session.get("start")
        keepsake.login("7")
        return "ok"

    @app.get("/state")
    def state() -> str:
        return f"{keepsake.current_user_id}|{','.join(sorted(session))}"

    return app


@pytest.fixture
def server(engine_store: Store) -> Iterator[BaseWSGIServer]:
    """The app on a threaded Werkzeug server on a free loopback port."""
    instance = make_server("127.0.0.1", 0, _app(engine_store), threaded=True)
    thread = threading.Thread(target=instance.serve_forever, daemon=True)
    thread.start()
    yield instance
    instance.shutdown()
    thread.join(10)


@dataclass
class Answer:
    status: int
    set_cookie: list[str]
    body: str


def _send(port: int, method: str, path: str, token: str | None, body: str = "") -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Cookie": f"{COOKIE}={token}"} if token else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    cookies = response.msg.get_all("Set-Cookie") or []
    answer = Answer(response.status, cookies, response.read().decode())
    conn.close()
    return answer


def _token(answer: Answer) -> str:
    [header] = [h for h in answer.set_cookie if h.startswith(f"{COOKIE}=")]
    return header.split(";")[0].split("=", 1)[1]


def _round(port: int) -> tuple[str, dict[str, Answer]]:
    """One login and many writes with the pre-login cookie, released together."""
    old = _token(_send(port, "POST", "/set/start", None, "1"))
    barrier = threading.Barrier(WRITERS + 1)
    results: dict[str, Answer] = {}
    lock = threading.Lock()

    def login() -> None:
        barrier.wait()
        answer = _send(port, "POST", "/login", old)
        with lock:
            results["login"] = answer

    def write(writer: int) -> None:
        barrier.wait()
        for step in range(WRITES):
            key = f"w{writer}s{step}"
            answer = _send(port, "POST", f"/set/{key}", old, "x")
            with lock:
                results[key] = answer

    threads = [threading.Thread(target=login)]
    threads += [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return _token(results.pop("login")), results


def test_every_acknowledged_write_survives_a_concurrent_login(server: BaseWSGIServer) -> None:
    """Rounds of one login and many writes with the pre-login cookie: nothing acknowledged lost."""
    port = server.server_port
    answered = 0
    for round_number in range(ROUNDS):
        signed_in, results = _round(port)
        user, _, keys = _send(port, "GET", "/state", signed_in).body.partition("|")
        assert user == "7", round_number
        stored = set(keys.split(","))
        assert "start" in stored
        for key, answer in results.items():
            assert answer.status in (200, 409), (key, answer)
            assert answer.set_cookie == [], (key, answer)
            if answer.status == 200:
                assert key in stored, (round_number, key)
            answered += 1
    assert answered == ROUNDS * WRITERS * WRITES
