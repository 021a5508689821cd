"""Blinker signals report the life of a session, never with its token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_keepsake import signals

from .conftest import AppFactory


@pytest.fixture
def events(app: Flask) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every signal sent for ``app``, in order, with its keyword arguments."""
    seen: list[tuple[str, dict[str, Any]]] = []
    receivers = []
    for name in signals.__all__:
        signal = getattr(signals, name)

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            assert sender is app
            seen.append((_name, kwargs))

        signal.connect(receiver, sender=app)
        receivers.append((signal, receiver))
    yield seen
    for signal, receiver in receivers:
        signal.disconnect(receiver, sender=app)


def test_created_and_regenerated_and_destroyed(
    app: Flask, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """A session's creation, login, regeneration and logout each send their signal."""
    client = app.test_client()
    client.post("/set/a", data="1")
    client.post("/login/5")
    client.post("/regenerate")
    client.post("/logout")
    names = [name for name, _ in events]
    assert names == [
        "session_created",
        "session_regenerated",
        "session_regenerated",
        "session_destroyed",
    ]
    created, login, regen, logout = (kwargs for _, kwargs in events)
    assert created["user_id"] is None
    assert login["reason"] == "login"
    assert login["old_handle"] == created["handle"]
    assert login["user_id"] == "5"
    assert regen["reason"] == "regenerate"
    assert regen["handle"] == login["handle"]
    assert logout == {"handle": login["handle"], "user_id": "5", "reason": "logout"}


def test_emptied_session_sends_destroyed(
    app: Flask, events: list[tuple[str, dict[str, Any]]]
) -> None:
    """Emptying a stored session ends it with reason 'emptied'."""
    client = app.test_client()
    client.post("/set/a", data="1")
    client.post("/del/a")
    assert events[-1][0] == "session_destroyed"
    assert events[-1][1]["reason"] == "emptied"


def test_revoked(make_app: AppFactory) -> None:
    """revoke and revoke_all send session_revoked with a count."""
    app = make_app()
    keepsake = app.config["TEST_KEEPSAKE"]
    seen: list[dict[str, Any]] = []

    @signals.session_revoked.connect_via(app)
    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    @app.post("/revoke-all")
    def revoke_all() -> str:
        return str(keepsake.revoke_all())

    try:
        a, b = app.test_client(), app.test_client()
        a.post("/login/1")
        b.post("/login/1")
        assert a.post("/revoke-all").data == b"1"
        assert seen == [{"handle": None, "user_id": "1", "count": 1}]
    finally:
        signals.session_revoked.disconnect(receiver, sender=app)
