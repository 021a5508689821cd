"""Tokens: shape, storage key, handle, strict checks, never adopted, never stored or logged."""

from __future__ import annotations

import hashlib
import logging

import pytest
from flask import Flask

from flask_keepsake import tokens
from flask_keepsake.interface import engine_of

from .conftest import spy
from .helpers import parse_set_cookie, set_cookie_headers

COOKIE = "__Host-session"


def _token(client) -> str:  # type: ignore[no-untyped-def]
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return str(cookie.value)


def test_new_token_shape() -> None:
    """A token is 43 base64url characters and passes the strict check."""
    for _ in range(200):
        token = tokens.new_token()
        assert len(token) == 43
        assert tokens.is_token(token)


def test_non_canonical_token_rejected() -> None:
    """A 43-character value whose last character carries non-zero padding bits is refused."""
    token = tokens.new_token()
    assert not tokens.is_token(token[:42] + "B")


def test_cookie_carries_token_and_store_key_is_its_digest(app: Flask) -> None:
    """The cookie holds the token; the store knows it only by its SHA-256 digest."""
    client = app.test_client()
    client.post("/set/a", data="1")
    token = _token(client)
    assert tokens.is_token(token)
    key = hashlib.sha256(token.encode()).hexdigest()
    record = spy(app).inner.load(key, engine_of(app).clock())
    assert record is not None
    assert record.key == key
    assert token not in repr(record)
    assert record.handle
    assert record.handle not in token


def test_handle_is_not_derived_from_token(app: Flask) -> None:
    """Two sessions get unrelated handles, neither part of its token."""
    handles = set()
    for _ in range(3):
        client = app.test_client()
        client.post("/set/a", data="1")
        key = tokens.storage_key(_token(client))
        record = spy(app).inner.load(key, engine_of(app).clock())
        assert record is not None
        handles.add(record.handle)
    assert len(handles) == 3


BAD_COOKIES = [
    "",
    "short",
    "x" * 42,
    "x" * 44,
    "A" * 42 + "B",
    "!" * 43,
    "é" * 43,
    "a\x00" + "b" * 41,
    "a" * 5000,
    '"' + "A" * 41 + '"',
]


@pytest.mark.parametrize("value", BAD_COOKIES)
def test_malformed_cookie_gives_fresh_session_without_store_call(
    app: Flask, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cookie that is not a token is ignored before any store call, with a security warning."""
    client = app.test_client(use_cookies=False)
    spy(app).reset()
    with caplog.at_level(logging.INFO, logger="flask_keepsake.security"):
        response = client.get("/get/a", headers={"Cookie": f"{COOKIE}={value}"})
    assert response.status_code == 200
    assert response.data == b"None"
    assert spy(app).calls["load"] == 0
    if value:
        assert any(r.name == "flask_keepsake.security" for r in caplog.records)
    for record in caplog.records:
        assert value[:20] not in record.getMessage() or len(value) < 8


def test_duplicated_cookie_gives_fresh_session(app: Flask) -> None:
    """Two session cookies in one request are treated as none at all."""
    client = app.test_client()
    client.post("/set/a", data="1")
    token = _token(client)
    response = app.test_client(use_cookies=False).get(
        "/get/a", headers={"Cookie": f"{COOKIE}={token}; {COOKIE}={tokens.new_token()}"}
    )
    assert response.status_code == 200
    assert response.data == b"None"


def test_raw_non_ascii_cookie_header_is_harmless(app: Flask) -> None:
    """Non-ASCII, NUL and garbage in the Cookie header never cause an error."""
    client = app.test_client(use_cookies=False)
    for header in [f"{COOKIE}=\xff\xfe", f"{COOKIE}=a\x00b", f"{COOKIE}", "=;;;=", f"{COOKIE}=;"]:
        response = client.get("/get/a", headers={"Cookie": header})
        assert response.status_code == 200


def test_unknown_token_is_never_adopted(app: Flask) -> None:
    """A well-formed token the server did not issue yields a new token, not the client's."""
    client = app.test_client()
    planted = tokens.new_token()
    client.set_cookie(COOKIE, planted)
    client.post("/set/a", data="1")
    assert _token(client) != planted
    assert spy(app).inner.load(tokens.storage_key(planted), 0.0) is None


def test_no_record_until_session_holds_data(app: Flask) -> None:
    """Reading an empty session stores nothing and sets no cookie."""
    client = app.test_client()
    response = client.get("/get/a")
    assert set_cookie_headers(response) == []
    assert spy(app).writes == 0


def test_stale_cookie_is_deleted(app: Flask) -> None:
    """A cookie naming no live session is removed from the browser."""
    client = app.test_client()
    client.set_cookie(COOKIE, tokens.new_token())
    response = client.get("/get/a")
    headers = set_cookie_headers(response)
    assert len(headers) == 1
    name, value, attrs = parse_set_cookie(headers[0])
    assert (name, value) == (COOKIE, "")
    assert attrs["max-age"] == "0"


def test_token_never_logged(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """Neither the token nor its storage key appears in any log line of a session's life."""
    client = app.test_client()
    with caplog.at_level(logging.DEBUG):
        client.post("/set/a", data="1")
        token = _token(client)
        client.post("/login/7")
        client.post("/logout")
        client.set_cookie(COOKIE, token)
        client.get("/get/a")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in text
    assert tokens.storage_key(token) not in text
