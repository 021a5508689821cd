"""Fixtures of the demo's tests: an app in a temporary instance folder, clients, sign-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_servers import FAST_HASH
from flask import Flask
from flask.testing import FlaskClient

from flask_keepsake.interface import engine_of
from keepsake_demo import create_app


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    """Build demo apps in a fresh instance folder; their stores are closed after the test."""
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        config = {"TESTING": True, "DEMO_PASSWORD_METHOD": FAST_HASH, **config}
        app = create_app(config, instance_path=str(tmp_path / "instance"))
        apps.append(app)
        return app

    yield factory
    for app in apps:
        engine_of(app).store.close()


@pytest.fixture
def app(make_app: Any) -> Flask:
    """The demo with its default configuration (SQLite store in the instance folder)."""
    app: Flask = make_app()
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the demo."""
    return app.test_client()
