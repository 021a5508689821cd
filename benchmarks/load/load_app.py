"""A minimal app with the demo's route mix, on Keepsake or on Flask-Session 0.8, for load runs.

The demo (``examples/demo``) is a teaching app with large pages; to compare session libraries
rather than page sizes, this module serves the same routes with the same extensions (Flask-Login,
Flask-WTF's ``CSRFProtect``, accounts in a SQLite file shared by the workers) and small pages,
with the session library chosen by the environment:

``LOAD_SESSIONS``
    ``keepsake`` (store from ``KEEPSAKE_STORE``, by default SQLite in the instance folder),
    ``flask-session-redis`` (``SESSION_TYPE="redis"`` on ``LOAD_REDIS_URL``) or
    ``flask-session-sqlalchemy`` (``SESSION_TYPE="sqlalchemy"`` on a SQLite file in the
    instance folder). Each library keeps its defaults otherwise.
``LOAD_INSTANCE``
    The folder of the SQLite files (created if missing).
``LOAD_SECRET_KEY``
    The ``SECRET_KEY`` every worker shares (CSRF tokens are signed with it).
``LOAD_PASSWORD_METHOD``
    Werkzeug's password hashing method (``run_load.py`` uses a fast one for every variant).

Routes, as in the demo: ``/`` (visit counter: a write), ``/api/session`` (a read, JSON),
``/register``, ``/login``, ``/logout`` (forms with CSRF tokens), ``/account`` (signed-in only).
Run it with ``gunicorn --pythonpath benchmarks/load 'load_app:create_app()'``.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from flask import (
    Flask,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
)
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFProtect
from jinja2 import DictLoader
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response as BaseResponse

from flask_keepsake.interface import engine_of

#: The values ``LOAD_SESSIONS`` accepts.
BACKENDS: Final = ("keepsake", "flask-session-redis", "flask-session-sqlalchemy")

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body>
<header>{% if current_user.is_authenticated %}Signed in as {{ current_user.username }}.
<form method="post" action="/logout"><input type="hidden" name="csrf_token"
 value="{{ csrf_token() }}"><button>Sign out</button></form>
{% else %}<a href="/login">Sign in</a> or <a href="/register">register</a>.{% endif %}</header>
<main><h1>{{ title }}</h1>
{% if visits is defined %}<p>Visits in this session: <strong id="visits">{{ visits }}</strong>
</p>{% endif %}
{% if fields %}<form method="post">
<input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
{% for field in fields %}<label>{{ field }} <input name="{{ field }}"></label>{% endfor %}
<button>Send</button></form>{% endif %}
{% if error %}<p class="error">{{ error }}</p>{% endif %}
</main></body></html>
"""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class User:
    """An account, as Flask-Login's ``current_user``."""

    id: int
    username: str
    is_authenticated: bool = True
    is_active: bool = True
    is_anonymous: bool = False

    def get_id(self) -> str:
        """The id Flask-Login keeps in the session."""
        return str(self.id)


def _db() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = g.get("_load_db")
    if conn is None:
        conn = g._load_db = sqlite3.connect(current_app.config["LOAD_DATABASE"], timeout=5.0)
    return conn


def _close_db(exc: BaseException | None) -> None:
    conn: sqlite3.Connection | None = g.pop("_load_db", None)
    if conn is not None:
        conn.close()


def _load_user(user_id: str) -> User | None:
    row = _db().execute("SELECT id, username FROM users WHERE id = ?", (int(user_id),)).fetchone()
    return None if row is None else User(row[0], row[1])


def _page(title: str, *, status: int = 200, **context: Any) -> tuple[str, int]:
    context.setdefault("fields", ())
    return render_template("page.html", title=title, **context), status


def _init_sessions(app: Flask, backend: str) -> None:
    """Install the session library named by ``backend``, with its defaults."""
    if backend == "keepsake":
        from flask_keepsake import Keepsake

        Keepsake(app)
        return
    from flask_session import Session  # type: ignore[import-untyped]

    if backend == "flask-session-redis":
        import redis

        app.config["SESSION_TYPE"] = "redis"
        app.config["SESSION_REDIS"] = redis.Redis.from_url(os.environ["LOAD_REDIS_URL"])
    else:
        from flask_sqlalchemy import SQLAlchemy

        path = os.path.join(app.instance_path, "flask_session.sqlite3")
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{path}"
        app.config["SESSION_TYPE"] = "sqlalchemy"
        app.config["SESSION_SQLALCHEMY"] = SQLAlchemy(app)
    Session(app)


def _regenerate_after_login(app: Flask) -> None:
    # Keepsake gives the session a new token at login by itself (Flask-Login's signal); with
    # Flask-Session the application must ask for it, as its documentation says.
    if app.config["LOAD_SESSIONS"] != "keepsake":
        app.session_interface.regenerate(session)  # type: ignore[attr-defined]


def create_app() -> Flask:
    """Build the app from the environment (see the module docstring)."""
    backend = os.environ.get("LOAD_SESSIONS", "keepsake")
    if backend not in BACKENDS:
        raise ValueError(f"LOAD_SESSIONS must be one of {', '.join(BACKENDS)}, not {backend!r}")
    instance = os.environ.get("LOAD_INSTANCE") or None
    app = Flask(__name__, instance_path=instance, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    # A loader, not render_template_string, so Jinja compiles the page once per process.
    app.jinja_loader = DictLoader({"page.html": _PAGE})
    app.config.update(
        LOAD_SESSIONS=backend,
        SECRET_KEY=os.environ["LOAD_SECRET_KEY"],
        LOAD_DATABASE=os.path.join(app.instance_path, "accounts.sqlite3"),
        LOAD_PASSWORD_METHOD=os.environ.get("LOAD_PASSWORD_METHOD", "scrypt"),
    )
    if "KEEPSAKE_STORE" in os.environ:
        app.config["KEEPSAKE_STORE"] = os.environ["KEEPSAKE_STORE"]
    _init_sessions(app, backend)
    CSRFProtect(app)
    login_manager = LoginManager(app)
    login_manager.user_loader(_load_user)
    login_manager.login_view = "login"

    conn = sqlite3.connect(app.config["LOAD_DATABASE"], timeout=5.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            conn.execute(_SCHEMA)
    finally:
        conn.close()
    app.teardown_appcontext(_close_db)

    @app.get("/")
    def index() -> tuple[str, int]:
        session["visits"] = session.get("visits", 0) + 1
        return _page("Home", visits=session["visits"])

    @app.get("/api/session")
    def api_session() -> Response:
        user = current_user.username if current_user.is_authenticated else None
        response = jsonify({"user": user, "keys": sorted(session.keys())})
        response.cache_control.no_store = True
        return response

    @app.get("/account")
    @login_required  # type: ignore[untyped-decorator]
    def account() -> tuple[str, int]:
        return _page(f"Account of {current_user.username}", visits=session.get("visits", 0))

    @app.route("/register", methods=["GET", "POST"])
    def register() -> Any:
        if request.method == "GET":
            return _page("Register", fields=("username", "password", "confirm"))
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        if not username or len(password) < 8 or password != request.form.get("confirm"):
            return _page("Register", status=400, error="Check the fields.")
        password_hash = generate_password_hash(password, method=app.config["LOAD_PASSWORD_METHOD"])
        try:
            with _db() as conn:
                cur = conn.execute(
                    "INSERT INTO users (username, password_hash) VALUES (?, ?)",
                    (username, password_hash),
                )
        except sqlite3.IntegrityError:
            return _page("Register", status=400, error="That username is taken.")
        assert cur.lastrowid is not None
        login_user(User(cur.lastrowid, username))
        _regenerate_after_login(app)
        return redirect("/")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "GET":
            return _page("Sign in", fields=("username", "password"))
        row = (
            _db()
            .execute(
                "SELECT id, username, password_hash FROM users WHERE username = ?",
                (request.form.get("username", ""),),
            )
            .fetchone()
        )
        if row is None or not check_password_hash(row[2], request.form.get("password", "")):
            return _page("Sign in", status=400, error="Unknown username or wrong password.")
        login_user(User(row[0], row[1]))
        _regenerate_after_login(app)
        return redirect("/")

    @app.post("/logout")
    def logout() -> BaseResponse:
        if not current_user.is_authenticated:
            abort(400)
        logout_user()
        # Keepsake deletes the session at logout by itself (Flask-Login's signal); with
        # Flask-Session, clearing it deletes the record too.
        session.clear()
        return redirect("/")

    return app


def prepare() -> None:
    """Create the app once, so tables exist before several workers start at the same time."""
    app = create_app()
    extension: Any = engine_of(app)
    if extension is not None:
        extension.store.close()
    sqlalchemy: Any = app.extensions.get("sqlalchemy")
    if sqlalchemy is not None:
        with app.app_context():
            sqlalchemy.engine.dispose()
    client: Any = app.config.get("SESSION_REDIS")
    if client is not None:
        client.close()
