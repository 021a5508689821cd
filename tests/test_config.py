"""Configuration mistakes fail at init_app with a message naming the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_keepsake import ConfigError, Keepsake
from flask_keepsake.interface import engine_of
from flask_keepsake.stores.memory import MemoryStore
from flask_keepsake.stores.sqlite import SQLiteStore

MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"KEEPSAKE_STORE": "mysql://localhost/db"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": "not a url"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": "sqlite://"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": "sqlite://host/file"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": "sqlite:///x.db?timeout=soon"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": "sqlite:///x.db?mode=ro"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": "sqlite:///x.db?cache_mib=lots"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": "sqlite:///x.db?cache_mib=0"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": "sqlite:///x.db?mmap_mib=-1"}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_STORE": 42}, "KEEPSAKE_STORE"),
    ({"KEEPSAKE_IDLE_TIMEOUT": "30 minutes"}, "KEEPSAKE_IDLE_TIMEOUT"),
    ({"KEEPSAKE_IDLE_TIMEOUT": 0}, "KEEPSAKE_IDLE_TIMEOUT"),
    ({"KEEPSAKE_IDLE_TIMEOUT": -5}, "KEEPSAKE_IDLE_TIMEOUT"),
    ({"KEEPSAKE_IDLE_TIMEOUT": timedelta(days=2)}, "KEEPSAKE_IDLE_TIMEOUT"),
    ({"KEEPSAKE_ABSOLUTE_TIMEOUT": True}, "KEEPSAKE_ABSOLUTE_TIMEOUT"),
    ({"KEEPSAKE_TOUCH_INTERVAL": 3600}, "KEEPSAKE_TOUCH_INTERVAL"),
    ({"KEEPSAKE_COOKIE_SECURE": "sometimes"}, "KEEPSAKE_COOKIE_SECURE"),
    ({"KEEPSAKE_MAX_SESSION_BYTES": 10}, "KEEPSAKE_MAX_SESSION_BYTES"),
    ({"KEEPSAKE_MAX_SESSION_BYTES": "big"}, "KEEPSAKE_MAX_SESSION_BYTES"),
    ({"KEEPSAKE_SAVE_ON_ERROR": "maybe"}, "KEEPSAKE_SAVE_ON_ERROR"),
    ({"KEEPSAKE_RETRY_AFTER": 0}, "KEEPSAKE_RETRY_AFTER"),
    ({"SESSION_COOKIE_SAMESITE": "Sometimes"}, "SESSION_COOKIE_SAMESITE"),
    (
        {"SESSION_COOKIE_SAMESITE": "None", "KEEPSAKE_COOKIE_SECURE": False},
        "SESSION_COOKIE_SAMESITE",
    ),
    (
        {"SESSION_COOKIE_PARTITIONED": True, "KEEPSAKE_COOKIE_SECURE": False},
        "SESSION_COOKIE_PARTITIONED",
    ),
    (
        {"SESSION_COOKIE_NAME": "__Host-sid", "SESSION_COOKIE_DOMAIN": "example.com"},
        "SESSION_COOKIE_NAME",
    ),
    ({"SESSION_COOKIE_NAME": "__Host-sid", "SESSION_COOKIE_PATH": "/app"}, "SESSION_COOKIE_NAME"),
    (
        {"SESSION_COOKIE_NAME": "__Secure-sid", "KEEPSAKE_COOKIE_SECURE": False},
        "SESSION_COOKIE_NAME",
    ),
    ({"SESSION_COOKIE_PATH": "app"}, "SESSION_COOKIE_PATH"),
    ({"PERMANENT_SESSION_LIFETIME": "31 days"}, "PERMANENT_SESSION_LIFETIME"),
]


@pytest.mark.parametrize(("config", "key"), MISTAKES, ids=[str(c) for c, _ in MISTAKES])
def test_mistake_names_the_key(config: dict[str, Any], key: str, tmp_path: Path) -> None:
    """Each configuration mistake raises ConfigError whose message starts with the key."""
    app = Flask(__name__, instance_path=str(tmp_path))
    app.testing = True
    app.config.update(config)
    with pytest.raises(ConfigError) as info:
        Keepsake(app)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_default_store_is_sqlite_in_instance_path(tmp_path: Path) -> None:
    """Without KEEPSAKE_STORE, sessions live in keepsake.sqlite3 in the instance folder."""
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    Keepsake(app)
    store = engine_of(app).store
    try:
        assert isinstance(store, SQLiteStore)
        assert store.describe() == f"sqlite:///{tmp_path / 'instance' / 'keepsake.sqlite3'}"
    finally:
        store.close()


def test_relative_sqlite_url_is_under_instance_path(tmp_path: Path) -> None:
    """sqlite:///name.sqlite3 is relative to the instance folder, with its timeout option."""
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["KEEPSAKE_STORE"] = "sqlite:///sub/s.sqlite3?timeout=2.5"
    Keepsake(app)
    store = engine_of(app).store
    try:
        assert store.describe() == f"sqlite:///{tmp_path / 'sub' / 's.sqlite3'}"
    finally:
        store.close()


def test_sqlite_url_sizes(tmp_path: Path) -> None:
    """cache_mib and mmap_mib in the SQLite URL reach the store."""
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["KEEPSAKE_STORE"] = "sqlite:///s.sqlite3?cache_mib=16&mmap_mib=64"
    Keepsake(app)
    store = engine_of(app).store
    try:
        assert (store.cache_mib, store.mmap_mib) == (16, 64)
    finally:
        store.close()


def test_memory_url(tmp_path: Path) -> None:
    """memory:// selects the in-process store."""
    app = Flask(__name__, instance_path=str(tmp_path))
    app.testing = True
    app.config["KEEPSAKE_STORE"] = "memory://"
    Keepsake(app)
    assert isinstance(engine_of(app).store, MemoryStore)


def test_init_app_later_and_several_apps() -> None:
    """One extension object can be set up later, on several apps, each with its own state."""
    keepsake = Keepsake(store=MemoryStore())
    first, second = Flask("first"), Flask("second")
    second.config["KEEPSAKE_IDLE_TIMEOUT"] = 60
    second.config["KEEPSAKE_TOUCH_INTERVAL"] = 10
    keepsake.init_app(first)
    keepsake.init_app(second)
    assert engine_of(first).settings.idle_timeout == 1800
    assert engine_of(second).settings.idle_timeout == 60


def test_used_before_init_app_is_clear() -> None:
    """Calling the API on an app without init_app raises NotInitialized naming the fix."""
    from flask_keepsake import NotInitialized

    keepsake = Keepsake()
    app = Flask(__name__)
    with app.test_request_context("/"), pytest.raises(NotInitialized, match="init_app"):
        keepsake.login(1)


def test_secret_key_not_required(tmp_path: Path) -> None:
    """init_app does not ask for SECRET_KEY."""
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["KEEPSAKE_STORE"] = "memory://"
    app.testing = True
    Keepsake(app)
    assert app.config["SECRET_KEY"] is None
