"""Store outages, oversized sessions, failing views and garbage data: nothing lost, no 500."""

from __future__ import annotations

import logging

import pytest
from flask import Flask, session

from flask_keepsake import SessionTooLarge, tokens
from flask_keepsake.interface import engine_of
from flask_keepsake.stores.base import SessionRecord

from .conftest import AppFactory, spy
from .helpers import FakeClock

#: What these tests check goes through each store's own code: run them on every store.
pytestmark = pytest.mark.every_store

COOKIE = "__Host-session"


def _stored(app: Flask, client: object) -> dict[str, str]:
    cookie = client.get_cookie(COOKIE)  # type: ignore[attr-defined]
    record = spy(app).inner.load(tokens.storage_key(cookie.value), engine_of(app).clock())
    assert record is not None
    return record.data


def test_store_down_on_load_gives_503(app: Flask) -> None:
    """A store outage while loading answers 503 with Retry-After, no cookie, no traceback."""
    client = app.test_client()
    client.post("/set/a", data="1")
    spy(app).down = True
    response = client.get("/get/a")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.headers.getlist("Set-Cookie") == []
    assert b"Traceback" not in response.data


def test_store_down_on_create_issues_no_cookie(app: Flask) -> None:
    """A new session that cannot be stored gets 503 and no cookie."""
    spy(app).down = True
    response = app.test_client().post("/set/a", data="1")
    assert response.status_code == 503
    assert response.headers.getlist("Set-Cookie") == []


def test_store_down_on_save_leaves_session_intact(app: Flask) -> None:
    """A write that fails leaves the stored session as it was, and service resumes by itself."""
    client = app.test_client()
    client.post("/set/a", data="1")
    spy(app).fail_on = {"apply"}
    response = client.post("/set/a", data="2")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.headers.getlist("Set-Cookie") == []
    assert response.data != b"ok"
    spy(app).fail_on = set()
    assert client.get("/get/a").data == b"'1'"
    assert client.post("/set/a", data="3").status_code == 200
    assert client.get("/get/a").data == b"'3'"


def test_store_down_on_rotate_keeps_old_session(app: Flask) -> None:
    """A login whose token rotation fails leaves the old session usable and issues no cookie."""
    client = app.test_client()
    client.post("/set/a", data="1")
    spy(app).fail_on = {"rename"}
    response = client.post("/login/1")
    assert response.status_code == 503
    assert response.headers.getlist("Set-Cookie") == []
    spy(app).fail_on = set()
    assert client.get("/get/a").data == b"'1'"
    assert client.get("/whoami").data == b"anonymous"


def test_app_503_handler_is_used(make_app: AppFactory) -> None:
    """The application's own 503 page is shown during an outage, with Retry-After added."""
    app = make_app()

    @app.errorhandler(503)
    def unavailable(exc: Exception) -> tuple[str, int]:
        return "Please try again shortly.", 503

    client = app.test_client()
    client.post("/set/a", data="1")
    spy(app).down = True
    response = client.get("/get/a")
    assert response.status_code == 503
    assert response.data == b"Please try again shortly."
    assert response.headers["Retry-After"] == "5"


def test_logout_during_outage_is_503(app: Flask) -> None:
    """Logout that cannot reach the store says so (503) rather than pretending."""
    client = app.test_client()
    client.post("/login/1")
    spy(app).down = True
    assert client.post("/logout").status_code == 503
    spy(app).down = False
    assert client.get("/whoami").data == b"1"


def test_oversized_session_raises_and_keeps_stored(make_app: AppFactory) -> None:
    """Data over KEEPSAKE_MAX_SESSION_BYTES raises SessionTooLarge and stores nothing."""
    app = make_app(KEEPSAKE_MAX_SESSION_BYTES=2048)

    @app.post("/big")
    def big() -> str:
        session["a"] = "changed"
        session["blob"] = "x" * 4000
        return "ok"

    client = app.test_client()
    client.post("/set/a", data="1")
    with pytest.raises(SessionTooLarge, match="KEEPSAKE_MAX_SESSION_BYTES") as info:
        client.post("/big")
    assert info.value.limit == 2048
    assert info.value.largest[0][0] == "blob"
    assert _stored(app, client) == {"a": '"1"'}


def test_oversized_session_is_500_page_in_production(make_app: AppFactory) -> None:
    """Outside testing an oversized session is an error page, and the session is unchanged."""
    app = make_app(TESTING=False, KEEPSAKE_MAX_SESSION_BYTES=2048)

    @app.post("/big")
    def big() -> str:
        session["blob"] = "x" * 4000
        return "ok"

    client = app.test_client()
    client.post("/set/a", data="1")
    response = client.post("/big")
    assert response.status_code == 500
    assert b"Traceback" not in response.data
    assert _stored(app, client) == {"a": '"1"'}


def test_5xx_view_saves_nothing(app: Flask) -> None:
    """Changes made by a view that answers 5xx are not saved."""
    client = app.test_client()
    client.post("/set/a", data="1")
    spy(app).reset()
    assert client.post("/fail/a").status_code == 500
    assert spy(app).writes == 0
    assert client.get("/get/a").data == b"'1'"


def test_5xx_view_saves_when_opted_in(make_app: AppFactory) -> None:
    """KEEPSAKE_SAVE_ON_ERROR=True saves changes of a 5xx response."""
    app = make_app(KEEPSAKE_SAVE_ON_ERROR=True)
    client = app.test_client()
    client.post("/set/a", data="1")
    client.post("/fail/a")
    assert client.get("/get/a").data == b"'half-done'"


def test_exception_in_view_saves_nothing(make_app: AppFactory) -> None:
    """A view that raises leaves the stored session as it was."""
    app = make_app(TESTING=False)

    @app.post("/crash")
    def crash() -> str:
        session["a"] = "half-done"
        raise RuntimeError("bug")

    client = app.test_client()
    client.post("/set/a", data="1")
    assert client.post("/crash").status_code == 500
    assert client.get("/get/a").data == b"'1'"


def test_garbage_in_store_gives_fresh_session(
    app: Flask, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored record whose data cannot be read becomes a fresh session and a warning."""
    token = tokens.new_token()
    spy(app).inner.create(
        SessionRecord(
            key=tokens.storage_key(token),
            handle=tokens.new_handle(),
            data={"a": "{not json", "b": '{" zz":1}'},
            created=clock.now,
            last_seen=clock.now,
            expires_at=clock.now + 600,
            absolute_expires_at=clock.now + 600,
        )
    )
    client = app.test_client()
    client.set_cookie(COOKIE, token)
    with caplog.at_level(logging.WARNING, logger="flask_keepsake.security"):
        response = client.get("/get/a")
    assert response.status_code == 200
    assert response.data == b"None"
    assert any("cannot be read" in r.getMessage() for r in caplog.records)
    client.post("/set/c", data="fresh")
    assert client.get_cookie(COOKIE).value != token  # type: ignore[union-attr]
