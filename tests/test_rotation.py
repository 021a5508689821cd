"""Login and regenerate keep concurrent writes; the replaced token is known for a grace window.

Overlapping requests are made deterministic by making one request from inside another's view
(the test client supports nested requests): the inner one runs while the outer one is between
loading its session and saving it.
"""

from __future__ import annotations

import pytest
from flask import Flask, session
from flask.testing import FlaskClient

from flask_keepsake import Keepsake

from .conftest import AppFactory, spy
from .helpers import FakeClock, set_cookie_headers

#: What these tests check goes through each store's own code: run them on every store.
pytestmark = pytest.mark.every_store

NAME = "__Host-session"


def _tab(app: Flask, browser: FlaskClient) -> FlaskClient:
    """Another tab of the same browser: a client holding the same session cookie."""
    tab = app.test_client()
    cookie = browser.get_cookie(NAME)
    assert cookie is not None
    tab.set_cookie(NAME, cookie.value)
    return tab


def _keepsake(app: Flask) -> Keepsake:
    keepsake: Keepsake = app.config["TEST_KEEPSAKE"]
    return keepsake


def test_write_landing_during_a_login_survives_it(make_app: AppFactory) -> None:
    """A write from another tab between the login's load and its save is in the new session."""
    app = make_app()
    tabs: dict[str, FlaskClient] = {}

    @app.post("/slow-login")
    def slow_login() -> str:
        session.get("cart")
        assert tabs["other"].post("/set/coupon", data="SAVE10").status_code == 200
        _keepsake(app).login("7")
        return "ok"

    browser = app.test_client()
    browser.post("/set/cart", data="[]")
    tabs["other"] = _tab(app, browser)
    browser.post("/slow-login")
    assert browser.get("/whoami").text == "7"
    assert browser.get("/get/coupon").text == "'SAVE10'"
    assert browser.get("/get/cart").text == "'[]'"


def test_write_landing_during_a_regenerate_survives_it(make_app: AppFactory) -> None:
    """The same holds for regenerate()."""
    app = make_app()
    tabs: dict[str, FlaskClient] = {}

    @app.post("/slow-regenerate")
    def slow_regenerate() -> str:
        session.get("x")
        assert tabs["other"].post("/set/coupon", data="SAVE10").status_code == 200
        _keepsake(app).regenerate()
        return "ok"

    browser = app.test_client()
    browser.post("/login/7")
    tabs["other"] = _tab(app, browser)
    old = browser.get_cookie(NAME)
    browser.post("/slow-regenerate")
    assert browser.get_cookie(NAME) != old
    assert browser.get("/get/coupon").text == "'SAVE10'"


def test_request_in_flight_during_a_login_writes_to_the_new_session(make_app: AppFactory) -> None:
    """A request that loaded before the login and saves after it: its write lands, no cookie."""
    app = make_app()
    tabs: dict[str, FlaskClient] = {}

    @app.post("/slow-write")
    def slow_write() -> str:
        session.get("cart")
        assert tabs["browser"].post("/login/7").status_code == 200
        session["seen"] = "1"
        return "ok"

    browser = tabs["browser"] = app.test_client()
    browser.post("/set/cart", data="[]")
    in_flight = _tab(app, browser)
    response = in_flight.post("/slow-write")
    assert response.status_code == 200
    assert set_cookie_headers(response) == []
    assert browser.get("/whoami").text == "7"
    assert browser.get("/get/seen").text == "'1'"


def test_late_request_with_the_old_token_sees_no_session_and_gets_no_cookie(
    make_app: AppFactory,
) -> None:
    """After a login, the old token loads an empty session, and no Set-Cookie is sent."""
    app = make_app()
    browser = app.test_client()
    browser.post("/set/cart", data="[]")
    late = _tab(app, browser)
    browser.post("/login/7")
    for response in (late.get("/get/cart"), late.get("/whoami"), late.get("/noop")):
        assert response.status_code == 200
        assert set_cookie_headers(response) == []
    assert late.get("/get/cart").text == "None"
    assert late.get("/whoami").text == "anonymous"
    assert browser.get("/whoami").text == "7"


def test_late_write_with_the_old_token_is_refused_with_409(make_app: AppFactory) -> None:
    """A write with the replaced token is not acknowledged and dropped: 409, no cookie."""
    app = make_app()
    browser = app.test_client()
    browser.post("/set/cart", data="[]")
    late = _tab(app, browser)
    browser.post("/login/7")
    spy(app).reset()
    response = late.post("/set/coupon", data="SAVE10")
    assert response.status_code == 409
    assert set_cookie_headers(response) == []
    assert spy(app).writes == 0
    assert browser.get("/get/coupon").text == "None"


def test_old_token_after_the_grace_window_is_unknown(
    make_app: AppFactory, clock: FakeClock
) -> None:
    """Once the grace window ends, the old token is like any unknown one: a fresh session."""
    app = make_app(KEEPSAKE_ROTATION_GRACE=30)
    browser = app.test_client()
    browser.post("/set/cart", data="[]")
    late = _tab(app, browser)
    browser.post("/login/7")
    clock.advance(29)
    assert set_cookie_headers(late.get("/get/cart")) == []
    clock.advance(2)
    response = late.post("/set/x", data="1")
    assert response.status_code == 200
    assert len(set_cookie_headers(response)) == 1
    assert late.get("/whoami").text == "anonymous"


def test_grace_zero_leaves_no_tombstone(make_app: AppFactory) -> None:
    """KEEPSAKE_ROTATION_GRACE = 0: the old token is unknown at once."""
    app = make_app(KEEPSAKE_ROTATION_GRACE=0)
    browser = app.test_client()
    browser.post("/set/cart", data="[]")
    late = _tab(app, browser)
    browser.post("/login/7")
    assert late.post("/set/x", data="1").status_code == 200


def test_logout_leaves_no_tombstone(make_app: AppFactory) -> None:
    """A logged-out token is dead at once: the next request with it starts fresh."""
    app = make_app()
    browser = app.test_client()
    browser.post("/login/7")
    copy = _tab(app, browser)
    browser.post("/logout")
    response = copy.post("/set/x", data="1")
    assert response.status_code == 200
    assert copy.get("/whoami").text == "anonymous"


def test_revoked_token_is_dead_at_once(make_app: AppFactory) -> None:
    """Revocation leaves no tombstone either."""
    app = make_app()
    keepsake = _keepsake(app)
    browser = app.test_client()
    browser.post("/login/7")
    with app.test_request_context():
        assert keepsake.revoke_all(7) == 1
    response = browser.post("/set/x", data="1")
    assert response.status_code == 200
    assert browser.get("/whoami").text == "anonymous"


def test_two_logins_at_once_each_keep_a_session(make_app: AppFactory) -> None:
    """Two tabs logging in with the same old token: both end signed in, in sessions of their own."""
    app = make_app()
    tabs: dict[str, FlaskClient] = {}

    @app.post("/slow-login")
    def slow_login() -> str:
        session.get("cart")
        assert tabs["second"].post("/login/7").status_code == 200
        _keepsake(app).login("7")
        return "ok"

    first = app.test_client()
    first.post("/set/cart", data="[]")
    second = tabs["second"] = _tab(app, first)
    first.post("/slow-login")
    assert first.get("/whoami").text == "7"
    assert second.get("/whoami").text == "7"
    assert first.get_cookie(NAME) != second.get_cookie(NAME)


def test_request_in_flight_during_a_logout_does_not_resurrect(make_app: AppFactory) -> None:
    """A request that loaded before a logout and writes after it brings nothing back."""
    app = make_app()
    tabs: dict[str, FlaskClient] = {}

    @app.post("/slow-write")
    def slow_write() -> str:
        session.get("x")
        tabs["browser"].post("/logout")
        session["x"] = "1"
        return "ok"

    browser = tabs["browser"] = app.test_client()
    browser.post("/login/7")
    in_flight = _tab(app, browser)
    in_flight.post("/slow-write")
    assert in_flight.get("/whoami").text == "anonymous"
    assert browser.get("/get/x").text == "None"
