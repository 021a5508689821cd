"""An app with Keepsake is freed when its last reference goes, without the cycle collector."""

from __future__ import annotations

import gc
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_keepsake import Keepsake
from flask_keepsake.stores.memory import MemoryStore

from .conftest import add_routes

flask_login = pytest.importorskip("flask_login")

#: Declared at module level, as applications do: one extension for every app it is set up on.
SHARED = Keepsake(store=MemoryStore())
SHARED.cookie("leak_theme", purpose="Theme.", category="essential")


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Run the test with the cycle collector off, as Flask's test_app_freed_on_zero_refcount."""
    # Clear what earlier tests left to the collector first. redis-py drops a cluster node's
    # connection on a connection error without closing it, and the socket is only found now:
    # its ResourceWarning belongs to the test that killed the node, not to this one.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _full_app(name: str, keepsake: Keepsake | None = None) -> tuple[Flask, Keepsake]:
    app = Flask(name)
    app.config.update(TESTING=True, SECRET_KEY="leak-secret-0123456789abcdef0123")
    manager = flask_login.LoginManager(app)
    manager.user_loader(lambda user_id: None)
    # No Flask-WTF here: CSRFProtect creates app.jinja_env, and Flask's Jinja environment and
    # the app refer to each other, so any app that renders a template needs the cycle
    # collector, with or without Keepsake (checked in test_jinja_cycle_is_flasks_own).
    if keepsake is None:
        keepsake = Keepsake(app, store=MemoryStore())
    else:
        keepsake.init_app(app)
    add_routes(app, keepsake)
    return app, keepsake


def test_jinja_cycle_is_flasks_own(no_gc: None) -> None:
    """Control: an app without Keepsake whose Jinja environment exists is not freed either."""
    app = Flask("jinja")
    assert app.jinja_env is not None
    weak_app = weakref.ref(app)
    del app
    assert weak_app() is not None
    gc.collect()
    assert weak_app() is None


def test_app_freed_on_zero_refcount(no_gc: None) -> None:
    """Flask's own test, with Keepsake and Flask-Login set up and requests served."""
    app, keepsake = _full_app("freed")
    client = app.test_client()
    client.post("/login/1")
    client.get("/whoami")
    del client
    weak_app, weak_keepsake = weakref.ref(app), weakref.ref(keepsake)
    del app, keepsake
    assert weak_app() is None
    assert weak_keepsake() is None


def test_app_of_a_shared_extension_is_freed(no_gc: None) -> None:
    """An app set up by a module-level Keepsake is freed too; the extension lives on."""
    app, _ = _full_app("shared", SHARED)
    app.test_client().get("/whoami")
    weak_app = weakref.ref(app)
    del app
    assert weak_app() is None


def test_app_on_the_sqlite_default_is_freed(no_gc: None, tmp_path: Path) -> None:
    """With the SQLite default store (its connections, its fork hook), the app is freed."""
    app = Flask("sqlite-default", instance_path=str(tmp_path))
    app.config["TESTING"] = True
    keepsake = Keepsake(app)
    add_routes(app, keepsake)
    client = app.test_client()
    client.post("/set/a", data="1")
    del client
    engine = app.session_interface.engine  # type: ignore[attr-defined]
    weak_app = weakref.ref(app)
    del app, keepsake
    assert weak_app() is None
    engine.store.close()


def test_short_lived_apps_leave_no_receivers_or_extensions(no_gc: None) -> None:
    """Fifty apps made and dropped leave no Flask-Login receiver and no live Keepsake."""
    _full_app("warm-up")
    signals = (
        flask_login.user_logged_in,
        flask_login.user_logged_out,
        flask_login.user_loaded_from_cookie,
        flask_login.user_login_confirmed,
    )
    before = [len(signal.receivers) for signal in signals]
    extensions = []
    for index in range(50):
        app, keepsake = _full_app(f"short-{index}")
        app.test_client().post("/login/1")
        extensions.append(weakref.ref(keepsake))
        del app, keepsake
    assert [len(signal.receivers) for signal in signals] == before
    assert [ref for ref in extensions if ref() is not None] == []
