"""The Keepsake demo application."""

from __future__ import annotations

from typing import Any

from flask import Flask, session

from flask_keepsake import Keepsake

keepsake = Keepsake()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create the demo application (SQLite store in the instance folder by default)."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_prefixed_env()
    if test_config is not None:
        app.config.update(test_config)
    keepsake.init_app(app)

    @app.get("/")
    def index() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return f"<h1>Keepsake demo</h1><p>Visits in this session: {session['visits']}</p>"

    return app
