"""Helpers shared by the demo's test-client tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_keepsake import StoreUnavailable
from flask_keepsake.interface import engine_of
from flask_keepsake.stores.base import SessionRecord
from flask_keepsake.stores.memory import MemoryStore
from keepsake_demo.accounts import DEMO_PASSWORD, DEMO_USERNAME

_CSRF_RE = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|'
    r'name="csrf_token" value="([^"]+)"'
)


def csrf_token(html: str | bytes) -> str:
    """The first CSRF token in a page."""
    text = html.decode() if isinstance(html, bytes) else html
    match = _CSRF_RE.search(text)
    assert match is not None, "no CSRF token on the page"
    return match.group(1) or match.group(2)


def post_form(client: FlaskClient, page: str, action: str, **data: Any) -> TestResponse:
    """Load ``page``, take its CSRF token, and post ``data`` to ``action``."""
    token = csrf_token(client.get(page).data)
    return client.post(action, data={"csrf_token": token, **data})


def sign_in(
    client: FlaskClient, username: str = DEMO_USERNAME, password: str = DEMO_PASSWORD
) -> TestResponse:
    """Sign in through the login form."""
    return post_form(client, "/login", "/login", username=username, password=password)


def session_cookie(client: FlaskClient) -> tuple[str, str]:
    """The name and value of the client's session cookie."""
    for name in ("__Host-session", "session"):
        cookie = client.get_cookie(name)
        if cookie is not None:
            return name, cookie.value
    raise AssertionError("the client holds no session cookie")


def api(client: FlaskClient) -> dict[str, Any]:
    """The client's ``/api/session``."""
    response = client.get("/api/session")
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


class _DownStore(MemoryStore):
    """A store whose server does not answer."""

    def load(self, key: str, now: float) -> SessionRecord | None:
        raise StoreUnavailable("down for the test")

    def create(self, record: SessionRecord) -> None:
        raise StoreUnavailable("down for the test")


@contextmanager
def store_down(app: Flask) -> Iterator[None]:
    """Make the session store of ``app`` unreachable inside the block."""
    engine = engine_of(app)
    real = engine.store
    engine.store = _DownStore()
    try:
        yield
    finally:
        engine.store = real
