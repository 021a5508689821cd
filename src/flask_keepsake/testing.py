"""Helpers for an application's own tests.

::

    from flask_keepsake.testing import login_client

    def test_profile(app):
        client = app.test_client()
        login_client(client, user_id=42)
        assert client.get("/profile").status_code == 200
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import serialize
from .errors import NotInitialized
from .interface import engine_of
from .tokens import new_token, storage_key

if TYPE_CHECKING:
    from flask.testing import FlaskClient


def login_client(
    client: FlaskClient,
    user_id: str | int,
    *,
    data: dict[str, Any] | None = None,
    fresh: bool = True,
) -> str:
    """Sign ``client`` in as ``user_id`` without going through the login form.

    Stores a session bound to the user (with ``data`` in it) and gives the client its cookie. If
    the application uses Flask-Login, the session also holds Flask-Login's ``_user_id`` and
    ``_fresh`` keys, so ``current_user`` is that user. Returns the session's public handle.
    """
    app = client.application
    try:
        engine = engine_of(app)
    except NotInitialized as exc:
        raise RuntimeError(
            f"login_client needs an application set up with Keepsake: {exc}"
        ) from None
    values = dict(data or {})
    if hasattr(app, "login_manager"):
        values.setdefault("_user_id", str(user_id))
        values.setdefault("_fresh", fresh)
    token = new_token()
    now = engine.clock()
    record = engine.new_record(
        app,
        storage_key(token),
        {k: serialize.dumps(v, k) for k, v in values.items()},
        now,
        None,
        str(user_id),
        now if fresh else None,
    )
    record.ip = "127.0.0.1"
    record.user_agent = "flask_keepsake.testing"
    engine.store.create(record)
    with app.test_request_context("/"):
        from flask import request

        cookie = engine.cookie(app, request)
    client.set_cookie(cookie.name, token, path=cookie.path, domain=cookie.domain or "localhost")
    return record.handle
