"""flask_keepsake.testing.login_client signs a test client in."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_keepsake import Keepsake
from flask_keepsake.testing import login_client

from .conftest import AppFactory


def test_login_client_binds_user_and_data(app: Flask) -> None:
    """The client is signed in as the user, with the given data in its session."""
    client = app.test_client()
    handle = login_client(client, 42, data={"cart": "apple"})
    assert client.get("/whoami").data == b"42"
    assert client.get("/get/cart").data == b"'apple'"
    assert len(handle) == 16


def test_login_client_with_flask_login(make_app: AppFactory) -> None:
    """With Flask-Login set up, current_user is the signed-in user."""
    flask_login = pytest.importorskip("flask_login")
    app = make_app()

    class User(flask_login.UserMixin):  # type: ignore[misc,name-defined]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    manager = flask_login.LoginManager(app)
    manager.user_loader(User)

    @app.get("/me")
    def me() -> str:
        return str(flask_login.current_user.get_id())

    client = app.test_client()
    login_client(client, 7)
    assert client.get("/me").data == b"7"


def test_login_client_needs_keepsake() -> None:
    """Using the helper on an app without Keepsake is a clear error."""
    with pytest.raises(RuntimeError, match="Keepsake"):
        login_client(Flask(__name__).test_client(), 1)


def test_login_client_in_debug_loopback_mode() -> None:
    """In debug mode the helper uses the loopback cookie name the app expects."""
    from flask_keepsake.stores.memory import MemoryStore

    app = Flask(__name__)
    app.debug = True
    keepsake = Keepsake(app, store=MemoryStore())

    @app.get("/whoami")
    def whoami() -> str:
        return keepsake.current_user_id or "anonymous"

    client = app.test_client()
    login_client(client, 5)
    assert client.get("/whoami").data == b"5"
