"""The ``flask_keepsake.security`` logger: one test per event, its level, and never a token."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from flask import Flask

from flask_keepsake import tokens
from flask_keepsake.interface import engine_of
from flask_keepsake.testing import login_client

from .conftest import AppFactory, spy
from .helpers import FakeClock

COOKIE = "__Host-session"
LOGGER = "flask_keepsake.security"


@pytest.fixture
def security_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture the security logger from INFO up."""
    with caplog.at_level(logging.INFO, logger=LOGGER):
        yield caplog


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """(level, message) of every security-log record so far."""
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def _token(client: object) -> str:
    cookie = client.get_cookie(COOKIE)  # type: ignore[attr-defined]
    assert cookie is not None
    return str(cookie.value)


def test_malformed_cookie_is_a_warning_with_fingerprint(
    app: Flask, security_log: pytest.LogCaptureFixture
) -> None:
    """A malformed session cookie logs a WARNING with a salted fingerprint, not the value."""
    client = app.test_client()
    client.set_cookie(COOKIE, "not-a-token-but-a-secret-value")
    client.get("/get/a")
    [(level, message)] = events(security_log)
    assert level == logging.WARNING
    assert tokens.fingerprint("not-a-token-but-a-secret-value") in message
    assert "secret-value" not in message


def test_duplicated_cookie_is_a_warning(app: Flask, security_log: pytest.LogCaptureFixture) -> None:
    """A session cookie sent twice logs a WARNING."""
    client = app.test_client(use_cookies=False)
    token = tokens.new_token()
    client.get("/get/a", headers={"Cookie": f"{COOKIE}={token}; {COOKIE}={token}"})
    [(level, message)] = events(security_log)
    assert level == logging.WARNING
    assert "sent 2 times" in message
    assert token not in message


def test_unknown_token_is_info_with_fingerprint(
    app: Flask, security_log: pytest.LogCaptureFixture
) -> None:
    """A well-formed token the store does not know logs INFO with its fingerprint."""
    token = tokens.new_token()
    client = app.test_client()
    client.set_cookie(COOKIE, token)
    client.get("/get/a")
    [(level, message)] = events(security_log)
    assert level == logging.INFO
    assert tokens.fingerprint(token) in message
    assert token not in message


def test_timed_out_session_is_logged_like_an_unknown_token(
    make_app: AppFactory, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    """A session past its idle timeout logs the same INFO event as an unknown token.

    The store forgets expired sessions, so a timeout cannot be told from a revoked or forged
    token without a second store call (docs/operations.md).
    """
    app = make_app(KEEPSAKE_IDLE_TIMEOUT=600)
    client = app.test_client()
    login_client(client, 3)
    token = _token(client)
    clock.advance(601)
    assert client.get("/whoami").data == b"anonymous"
    [(level, message)] = events(security_log)
    assert level == logging.INFO
    assert "Unknown, expired or revoked" in message
    assert tokens.fingerprint(token) in message


def test_revocation_is_info_with_handle(app: Flask, security_log: pytest.LogCaptureFixture) -> None:
    """Revoking a session by handle logs INFO with the handle, never the token."""
    client = app.test_client()
    handle = login_client(client, 3)
    with app.app_context():
        app.config["TEST_KEEPSAKE"].revoke(handle)
    [(level, message)] = events(security_log)
    assert level == logging.INFO
    assert handle in message
    assert _token(client) not in message


def test_revoke_all_is_info_with_user_and_count(
    app: Flask, security_log: pytest.LogCaptureFixture
) -> None:
    """Revoking a user's sessions logs INFO with the user and how many ended."""
    login_client(app.test_client(), 3)
    login_client(app.test_client(), 3)
    with app.app_context():
        app.config["TEST_KEEPSAKE"].revoke_all(3)
    [(level, message)] = events(security_log)
    assert level == logging.INFO
    assert message == "2 session(s) of user 3 revoked."


def test_revoke_from_the_command_line_is_logged(
    app: Flask, security_log: pytest.LogCaptureFixture
) -> None:
    """flask keepsake revoke logs like the lifecycle API does."""
    login_client(app.test_client(), 3)
    app.test_cli_runner().invoke(args=["keepsake", "revoke", "--user", "3"])
    assert events(security_log) == [(logging.INFO, "1 session(s) of user 3 revoked.")]


def test_store_outage_while_loading_is_an_error(
    app: Flask, security_log: pytest.LogCaptureFixture
) -> None:
    """A store outage that answers 503 logs an ERROR naming the store."""
    client = app.test_client()
    login_client(client, 3)
    spy(app).down = True
    assert client.get("/whoami").status_code == 503
    [(level, message)] = events(security_log)
    assert level == logging.ERROR
    assert "unavailable" in message
    assert spy(app).describe() in message


def test_store_outage_while_saving_is_an_error(
    app: Flask, security_log: pytest.LogCaptureFixture
) -> None:
    """A store outage while saving the session logs the same ERROR."""
    spy(app).fail_on = {"create"}
    assert app.test_client().post("/set/a", data="1").status_code == 503
    [(level, _)] = events(security_log)
    assert level == logging.ERROR


def test_cleanup_is_info_with_count(
    app: Flask, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    """Purging expired sessions logs INFO with how many were purged."""
    login_client(app.test_client(), 3)
    clock.advance(31 * 60)
    expired = engine_of(app).store.count_expired(clock())
    app.test_cli_runner().invoke(args=["keepsake", "cleanup", "--quiet"])
    expected = [(logging.INFO, f"Cleanup purged {expired} expired session(s).")]
    assert events(security_log) == (expected if expired else [])


def test_no_event_ever_holds_a_token(
    app: Flask, clock: FakeClock, security_log: pytest.LogCaptureFixture
) -> None:
    """Across a login, a revocation, a replay and a timeout, no log line holds a token."""
    client = app.test_client()
    client.post("/login/3")
    first = _token(client)
    with app.app_context():
        app.config["TEST_KEEPSAKE"].revoke_all(3)
    client.get("/whoami")
    client.post("/login/3")
    second = _token(client)
    clock.advance(13 * 3600)
    client.get("/whoami")
    text = "\n".join(message for _, message in events(security_log))
    assert text
    for secret in (first, second, tokens.storage_key(first), tokens.storage_key(second)):
        assert secret not in text
