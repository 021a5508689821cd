"""flask.session behaves as Flask's own session does."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask, flash, get_flashed_messages, session
from markupsafe import Markup

from flask_keepsake import ServerSession, tokens

from .conftest import AppFactory, spy
from .helpers import FakeClock, parse_set_cookie

COOKIE = "__Host-session"


def test_dict_api_across_requests(make_app: AppFactory) -> None:
    """Set, update, setdefault, pop, del and clear work like a dict and persist."""
    app = make_app()

    @app.post("/ops")
    def ops() -> str:
        session["a"] = 1
        session.update({"b": 2, "c": 3})
        session.setdefault("d", 4)
        session.pop("c")
        del session["b"]
        return "ok"

    @app.get("/dump")
    def dump() -> Any:
        return {"items": sorted(session.items()), "len": len(session), "has_a": "a" in session}

    client = app.test_client()
    client.post("/ops")
    assert client.get("/dump").get_json() == {
        "items": [["a", 1], ["d", 4]],
        "len": 2,
        "has_a": True,
    }


def test_modified_and_accessed_flags(make_app: AppFactory) -> None:
    """modified and accessed follow Flask's semantics."""
    app = make_app()
    seen: dict[str, bool] = {}

    @app.get("/flags")
    def flags() -> str:
        _ = session.get("x")
        seen["accessed_after"] = session.accessed
        seen["modified_after_read"] = session.modified
        session["x"] = 1
        seen["modified_after_write"] = session.modified
        return "ok"

    app.test_client().get("/flags")
    assert seen == {
        "accessed_after": True,
        "modified_after_read": False,
        "modified_after_write": True,
    }


def test_session_is_server_session(make_app: AppFactory) -> None:
    """flask.session is a Keepsake ServerSession, a dict."""
    app = make_app()

    @app.get("/type")
    def type_() -> str:
        _ = session.get("x")
        return type(session._get_current_object()).__name__  # type: ignore[attr-defined]

    assert app.test_client().get("/type").data == b"ServerSession"
    assert issubclass(ServerSession, dict)


VALUES: list[Any] = [
    "text",
    "",
    42,
    -(2**70),
    3.25,
    True,
    False,
    None,
    [1, "a", [2]],
    {"nested": {"k": [1, 2]}},
    (1, "two", (3,)),
    b"\x00\xffbytes",
    datetime(2026, 11, 26, 6, 30, 15, 123456),
    datetime(2026, 11, 26, 6, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5))),
    date(2026, 11, 26),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Markup("<b>bold</b>"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_value_round_trips_with_exact_type(make_app: AppFactory, value: Any) -> None:
    """Each supported value comes back equal and of the same type on the next request."""
    app = make_app()

    @app.post("/store")
    def store() -> str:
        session["v"] = value
        return "ok"

    @app.get("/check")
    def check() -> str:
        got = session["v"]
        return str(type(got) is type(value) and got == value)

    client = app.test_client()
    client.post("/store")
    assert client.get("/check").data == b"True"


def test_unsupported_value_raises_type_error_naming_key(make_app: AppFactory) -> None:
    """An unsupported value raises TypeError naming the key, and the stored session is intact."""
    app = make_app()

    @app.post("/bad")
    def bad() -> str:
        session["ok"] = "changed"
        session["tags"] = {"a", "b"}
        return "ok"

    client = app.test_client()
    client.post("/set/ok", data="original")
    with pytest.raises(TypeError, match="'tags'"):
        client.post("/bad")
    assert client.get("/get/ok").data == b"'original'"


def test_unsupported_value_gives_500_in_production(make_app: AppFactory) -> None:
    """Outside testing the same mistake is a plain 500 page, not a stack trace."""
    app = make_app(TESTING=False)

    @app.post("/bad")
    def bad() -> str:
        session["obj"] = object()
        return "ok"

    response = app.test_client().post("/bad")
    assert response.status_code == 500
    assert b"Traceback" not in response.data


def test_flash_with_markup_and_categories(make_app: AppFactory) -> None:
    """Flashed messages, Markup included, survive a redirect with their categories."""
    app = make_app()

    @app.post("/flash")
    def do_flash() -> str:
        flash(Markup("<em>Saved</em>"), "success")
        flash("plain")
        return "ok"

    @app.get("/show")
    def show() -> Any:
        messages = get_flashed_messages(with_categories=True)
        return {"messages": [[c, str(m), type(m).__name__] for c, m in messages]}

    client = app.test_client()
    client.post("/flash")
    assert client.get("/show").get_json() == {
        "messages": [["success", "<em>Saved</em>", "Markup"], ["message", "plain", "str"]]
    }
    assert client.get("/show").get_json() == {"messages": []}


def test_session_transaction(app: Flask) -> None:
    """The test client's session_transaction reads and writes the server-side session."""
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["from_test"] = "hello"
    assert client.get("/get/from_test").data == b"'hello'"
    client.post("/set/from_view", data="world")
    with client.session_transaction() as sess:
        assert sess["from_view"] == "world"
        assert sess["from_test"] == "hello"


def test_browser_session_cookie_by_default(app: Flask) -> None:
    """A session that is not permanent gets a cookie without Expires or Max-Age."""
    response = app.test_client().post("/set/a", data="1")
    _, _, attrs = parse_set_cookie(response.headers["Set-Cookie"])
    assert "expires" not in attrs
    assert "max-age" not in attrs


def test_permanent_session_cookie_expires(make_app: AppFactory, clock: FakeClock) -> None:
    """A permanent session's cookie expires after PERMANENT_SESSION_LIFETIME."""
    app = make_app(PERMANENT_SESSION_LIFETIME=timedelta(hours=2))

    @app.post("/remember")
    def remember() -> str:
        session.permanent = True
        session["a"] = 1
        return "ok"

    response = app.test_client().post("/remember")
    _, _, attrs = parse_set_cookie(response.headers["Set-Cookie"])
    expires = datetime.strptime(attrs["expires"], "%a, %d %b %Y %H:%M:%S GMT")
    expected = datetime.fromtimestamp(clock.now + 7200, UTC).replace(tzinfo=None)
    assert abs((expires - expected).total_seconds()) <= 1


@pytest.mark.parametrize(("refresh", "expected"), [(True, 1), (False, 0)])
def test_refresh_each_request(make_app: AppFactory, refresh: bool, expected: int) -> None:
    """SESSION_REFRESH_EACH_REQUEST re-sends a permanent session's cookie on each use."""
    app = make_app(SESSION_REFRESH_EACH_REQUEST=refresh)

    @app.post("/remember")
    def remember() -> str:
        session.permanent = True
        return "ok"

    client = app.test_client()
    client.post("/remember")
    response = client.get("/get/a")
    assert len(response.headers.getlist("Set-Cookie")) == expected


def test_existing_session_change_sends_no_new_cookie(app: Flask) -> None:
    """Changing an existing browser-session needs no Set-Cookie (the token is unchanged)."""
    client = app.test_client()
    client.post("/set/a", data="1")
    response = client.post("/set/a", data="2")
    assert response.headers.getlist("Set-Cookie") == []


def test_vary_cookie_only_when_used(app: Flask) -> None:
    """Vary: Cookie is added when the session was used, and not otherwise."""
    client = app.test_client()
    assert "Cookie" in client.get("/get/a").vary
    assert "Cookie" not in client.get("/noop").vary


def test_clearing_session_ends_it(app: Flask) -> None:
    """session.clear() on a stored session deletes it and its cookie, as Flask removes it."""
    client = app.test_client()
    client.post("/set/a", data="1")
    key = tokens.storage_key(client.get_cookie(COOKIE).value)  # type: ignore[union-attr]
    client.post("/del/a")
    assert client.get_cookie(COOKIE) is None
    assert spy(app).inner.load(key, 0.0) is None


@pytest.mark.parametrize("existing", ["Set-Cookie", "X-Cookie-Consent", "Accept-Encoding"])
def test_vary_cookie_added_beside_lookalikes(make_app: AppFactory, existing: str) -> None:
    """Vary: Cookie is added even when Vary already names a header that contains 'cookie'."""
    app = make_app()

    @app.get("/varied")
    def varied() -> Any:
        _ = session.get("a")
        return "ok", 200, {"Vary": existing}

    response = app.test_client().get("/varied")
    tokens = {t.strip().lower() for v in response.headers.getlist("Vary") for t in v.split(",")}
    assert tokens == {existing.lower(), "cookie"}


def test_scalar_unchanged_after_reassignment_writes_nothing(make_app: AppFactory) -> None:
    """Re-reading and re-assigning scalars writes nothing; a new equal value is not a change."""
    app = make_app()

    @app.post("/same")
    def same() -> str:
        session["n"] = session["n"]
        session["s"] = "".join(["a", "b"])
        return "ok"

    client = app.test_client()
    with client.session_transaction() as sess:
        sess["n"] = 5
        sess["s"] = "ab"
    spy(app).reset()
    client.post("/same")
    assert spy(app).writes == 0
