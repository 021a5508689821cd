"""The app that ``test_postgres_fork`` runs under ``gunicorn --preload``.

``create_app`` uses the store in gunicorn's master process before it forks its workers (as an
app that warms up or checks its database at start-up does), and writes the backend pid of the
master's one pooled connection to ``FORK_MASTER_PID_FILE``.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask, jsonify, session
from flask.typing import ResponseReturnValue

from flask_keepsake import Keepsake
from flask_keepsake.stores.postgres import PostgresStore


def create_app() -> Flask:
    """The app: ``KEEPSAKE_STORE`` from the environment, used once before the fork."""
    app = Flask(__name__)
    app.config["KEEPSAKE_STORE"] = os.environ["KEEPSAKE_STORE"]
    keepsake = Keepsake(app)
    with app.app_context():
        store = keepsake.store
    assert isinstance(store, PostgresStore)

    @app.post("/write/<int:n>")
    def write(n: int) -> ResponseReturnValue:
        session["n"] = n
        return str(os.getpid())

    @app.get("/read")
    def read() -> ResponseReturnValue:
        return jsonify(pid=os.getpid(), n=session.get("n"))

    @app.get("/backend")
    def backend() -> ResponseReturnValue:
        with store.pool.connection() as conn:
            return jsonify(pid=os.getpid(), backend=conn.info.backend_pid)

    app.test_client().post("/write/0")
    with store.pool.connection() as conn:
        Path(os.environ["FORK_MASTER_PID_FILE"]).write_text(str(conn.info.backend_pid))
    return app
