"""Hostile input, generated: arbitrary Cookie headers and session values never cause a 500."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_keepsake import tokens

from .conftest import AppFactory

COOKIE = "__Host-session"
SECRET = "victim-secret-value"

NAMES = st.sampled_from(
    [
        COOKIE,
        "__host-session",
        "__Host-Session",
        "__Host-session ",
        " __Host-session",
        "session",
        "__Secure-session",
        "__Host-session\x00",
        "__Host-",
        "a",
        "",
    ]
)
VALUES = st.one_of(
    st.text(max_size=60),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        min_size=42,
        max_size=44,
    ),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    st.just("A" * 6000),
    st.builds(lambda: tokens.new_token()),
)


PAIRS = st.lists(st.tuples(NAMES, VALUES), max_size=5)
SEPARATORS = st.sampled_from(["; ", ";", ", ", " ;", ";;", "\t;"])


def _victim(app: Flask) -> str:
    client = app.test_client()

    @app.post("/victim")
    def victim() -> str:
        session["secret"] = SECRET
        return "ok"

    client.post("/victim")
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    return str(cookie.value)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(pairs=PAIRS, separator=SEPARATORS, extra=st.text(max_size=30))
def test_arbitrary_cookie_headers_never_500(
    make_app: AppFactory, pairs: list[tuple[str, str]], separator: str, extra: str
) -> None:
    """Any Cookie header gives a normal answer and never another visitor's session."""
    app = make_app()
    victim = _victim(app)
    header = separator.join(f"{n}={v}" for n, v in pairs) + extra
    client = app.test_client(use_cookies=False)
    response = client.get("/get/secret", environ_overrides={"HTTP_COOKIE": header})
    assert response.status_code == 200
    exact = [v for n, v in pairs if n == COOKIE]
    if exact != [victim]:
        assert SECRET.encode() not in response.data


@pytest.mark.every_store  # a store's key encoding must not let a near miss match
@FUZZ
@given(mutation=st.integers(min_value=0, max_value=42), char=st.sampled_from("AQgw09-_"))
def test_near_miss_tokens_never_match(make_app: AppFactory, mutation: int, char: str) -> None:
    """A token that differs from a real one in one character is a stranger."""
    app = make_app()
    victim = _victim(app)
    forged = victim[:mutation] + char + victim[mutation + 1 :]
    client = app.test_client(use_cookies=False)
    response = client.get("/get/secret", headers={"Cookie": f"{COOKIE}={forged}"})
    assert response.status_code == 200
    if forged != victim:
        assert SECRET.encode() not in response.data


@FUZZ
@given(headers=st.lists(st.text(max_size=80), min_size=2, max_size=4))
def test_split_cookie_headers_never_500(make_app: AppFactory, headers: list[str]) -> None:
    """Several Cookie header lines (joined by the server) never cause an error."""
    app = make_app()
    client = app.test_client(use_cookies=False)
    joined = "; ".join(headers)
    response = client.get("/get/secret", environ_overrides={"HTTP_COOKIE": joined})
    assert response.status_code == 200


JSONISH: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
HOSTILE = st.one_of(JSONISH, st.sets(st.integers(), max_size=3), st.builds(object))


@pytest.mark.every_store  # each store encodes values its own way (JSON patch, hash, JSONB)
@FUZZ
@given(value=HOSTILE)
def test_any_session_value_round_trips_or_raises_type_error(
    make_app: AppFactory, value: Any
) -> None:
    """A value put in the session comes back equal and same-typed, or saving raises TypeError."""
    app = make_app()

    @app.post("/put")
    def put() -> str:
        session["v"] = value
        return "ok"

    @app.get("/check")
    def check() -> str:
        return str(session.get("v") == value and type(session.get("v")) is type(value))

    client = app.test_client()
    try:
        client.post("/put")
    except TypeError:
        return
    assert client.get("/check").data == b"True"
