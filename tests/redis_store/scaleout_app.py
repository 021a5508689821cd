"""A tiny app for the scale-out test, served by a real WSGI server in its own process.

Run as ``python -m tests.redis_store.scaleout_app REDIS_URL``: it serves on a free loopback port and
prints that port on its first line of output.
"""

from __future__ import annotations

import sys

from flask import Flask, request, session
from werkzeug.serving import make_server

from flask_keepsake import Keepsake


def create_app(store_url: str) -> Flask:
    """An app whose sessions live in the Redis at ``store_url``."""
    app = Flask(__name__)
    app.config["KEEPSAKE_STORE"] = store_url
    keepsake = Keepsake(app)

    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        keepsake.login(user_id)
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        keepsake.logout()
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return keepsake.current_user_id or "anonymous"

    @app.post("/set/<key>")
    def set_(key: str) -> str:
        session[key] = request.get_data(as_text=True)
        return "ok"

    @app.get("/get/<key>")
    def get(key: str) -> str:
        return repr(session.get(key))

    return app


def main() -> None:
    """Serve the app until terminated."""
    server = make_server("127.0.0.1", 0, create_app(sys.argv[1]), threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
