"""The Keepsake demo: an interactive lesson on sessions and cookies in Flask.

``create_app()`` builds the application: Keepsake for server-side sessions (SQLite in the
instance folder by default), Flask-Login for accounts, Flask-WTF's ``CSRFProtect`` for every form.
It reads ``FLASK_``-prefixed environment variables, so ``FLASK_KEEPSAKE_STORE=redis://...`` or
``FLASK_KEEPSAKE_COOKIE_SECURE=true`` change it without code. ``keepsake-demo`` runs it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from flask import Flask

from . import accounts, cookies
from .extensions import csrf, keepsake, login_manager
from .secret import load_or_create_secret

__all__ = ["cookies", "create_app", "csrf", "keepsake", "login_manager"]

#: The environment variable that names the instance folder (secret key and databases); by
#: default Flask's own choice, ``instance/`` beside the package in a source checkout.
INSTANCE_ENV = "KEEPSAKE_DEMO_INSTANCE"

#: The demo's own configuration defaults; the environment and ``test_config`` override them.
DEFAULTS: dict[str, Any] = {
    # Refuse cross-site form posts by Sec-Fetch-Site / Origin, on top of the CSRF tokens.
    "KEEPSAKE_CHECK_ORIGIN": True,
    # Werkzeug's password hashing; slow on purpose. The tests use a fast one.
    "DEMO_PASSWORD_METHOD": "scrypt",
    # Flask-Login's remember cookie: SameSite like every other cookie here, and no longer-lived
    # than Keepsake's remember-me grant (KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT, 90 days), without
    # which it restores nobody. Secure outside debug mode (create_app), off in debug so that
    # development on http://localhost works in Safari, as Keepsake does for its own cookies.
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_DURATION": timedelta(days=90),
}


@login_manager.user_loader  # type: ignore[untyped-decorator]
def _load_user(user_id: str) -> accounts.User | None:
    return accounts.get_user(user_id)


def create_app(
    test_config: dict[str, Any] | None = None, *, instance_path: str | None = None
) -> Flask:
    """Create the demo application.

    :param test_config: configuration applied last, over the environment (tests use it).
    :param instance_path: the instance folder; default ``$KEEPSAKE_DEMO_INSTANCE`` or Flask's.
    """
    instance_path = instance_path or os.environ.get(INSTANCE_ENV) or None
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(DEFAULTS)
    app.config.from_prefixed_env()
    if test_config is not None:
        app.config.update(test_config)
    app.config.setdefault("DEMO_DATABASE", os.path.join(app.instance_path, "demo.sqlite3"))
    # flask keepsake check (KS110) asks for it in production.
    app.config.setdefault("REMEMBER_COOKIE_SECURE", not app.debug)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_or_create_secret(app.instance_path)

    keepsake.init_app(app)
    csrf.init_app(app)
    _init_login(app)
    accounts.init_db(app)

    from . import auth, consent, devices, lesson, pages, tutorial

    app.register_blueprint(pages.bp)
    app.register_blueprint(tutorial.bp)
    app.register_blueprint(lesson.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(devices.bp)
    app.register_blueprint(consent.bp)
    consent.init_app(app)
    pages.init_app(app)
    return app


def _init_login(app: Flask) -> None:
    """Set up Flask-Login. Keepsake keeps it lazy: pages that never use the session do not load
    it, and a store outage still answers 503 (see ``flask_keepsake.integrations``)."""
    login_manager.init_app(app)
