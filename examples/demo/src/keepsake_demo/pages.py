"""Home, the session inspector (page and JSON), the security lesson, and the error pages."""

from __future__ import annotations

import functools
import json
import logging
from importlib import resources
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    jsonify,
    make_response,
    render_template,
    request,
    session,
)
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.http import dump_cookie

from flask_keepsake import SessionInfo, StoreUnavailable

from . import cookies, explain
from .extensions import keepsake

bp = Blueprint("pages", __name__)
security_logger = logging.getLogger("flask_keepsake.security")

#: What the session keys the demo (and its extensions) use are for, for the inspector.
KEY_NOTES: dict[str, str] = {
    "visits": "The home page's visit counter.",
    "name": "The session lesson: the name you typed on /session/remember.",
    "_remember": "Flask-Login: a note for its after-request hook to set or clear remember-me.",
    "_permanent": "Flask: whether the session is persistent (session.permanent).",
    "_user_id": "Flask-Login: the id of the signed-in user.",
    "_fresh": "Flask-Login: whether you typed your password in this session (not remember-me).",
    "_id": "Flask-Login: a digest of your IP address and browser, to notice a stolen cookie.",
    "csrf_token": "Flask-WTF: the secret behind the CSRF token of every form on this site.",
    "_flashes": "Messages waiting to be shown on the next page.",
}
#: Keys whose values are secrets: the inspector names them but does not show them.
HIDDEN_KEYS = frozenset({"csrf_token"})

#: A sign-in at most this many seconds ago counts as fresh (keepsake.is_fresh) on the inspector.
FRESH_FOR = 600


def current_session() -> SessionInfo | None:
    """What the store keeps about the session of this request, or ``None`` if nothing yet."""
    return keepsake.current_session()


def _shown_value(key: str, value: Any) -> str:
    if key in HIDDEN_KEYS:
        return "(hidden: a secret)"
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def record_rows() -> list[tuple[str, str, str]]:
    """The keys of this visitor's session with their values (secrets hidden) and what they are."""
    return [
        (key, _shown_value(key, value), KEY_NOTES.get(key, "Set by the application."))
        for key, value in sorted(session.items())
    ]


@bp.get("/")
def index() -> str:
    """Home: who you are, a visit counter kept in the session, and the lessons."""
    session["visits"] = session.get("visits", 0) + 1
    return render_template("index.html", visits=session["visits"])


@bp.get("/session")
def inspector() -> str:
    """The session inspector: what the server keeps for this visitor, never the token."""
    info = current_session()
    rows = record_rows()
    fresh = bool(info and info.auth_time) and keepsake.is_fresh(FRESH_FOR)
    name = keepsake.session_cookie().name
    return render_template(
        "session.html",
        info=info,
        rows=rows,
        fresh=fresh,
        fresh_minutes=FRESH_FOR // 60,
        cookie_name=name,
        has_cookie=name in request.cookies,
        settings=keepsake.settings,
        permanent_idle_days=current_app.permanent_session_lifetime.days,
    )


@bp.get("/api/session")
def api_session() -> Response:
    """The inspector as JSON; ``"user": null`` for an anonymous visitor."""
    info = current_session()
    body = {
        "user": current_user.username if current_user.is_authenticated else None,
        "handle": info.handle if info else None,
        "keys": sorted(session.keys()),
        "created": explain.utc(info.created) if info else None,
        "last_seen": explain.utc(info.last_seen) if info else None,
        "expires": explain.utc(info.expires) if info else None,
        "absolute_expires": explain.utc(info.absolute_expires) if info else None,
        "auth_time": explain.utc(info.auth_time) if info and info.auth_time else None,
    }
    response = jsonify(body)
    response.cache_control.no_store = True
    return response


@functools.cache
def _favicon_bytes() -> bytes:
    return (resources.files(__package__) / "static" / "favicon.ico").read_bytes()


@bp.get("/favicon.ico")
def favicon() -> Response:
    """The icon browsers ask for on their own, so no page load ends in a 404."""
    # From memory, not a file: browsers often drop this request half-way when the page they
    # fetched it for is left, and a small bytes body leaves nothing open behind.
    response = Response(_favicon_bytes(), mimetype="image/vnd.microsoft.icon")
    response.cache_control.public = True
    response.cache_control.max_age = 86400
    return response


@bp.get("/security")
def security() -> Response:
    """HttpOnly, Secure and SameSite, shown live: what page script can see, and what it can't."""
    current = keepsake.session_cookie()
    name = current.name
    placeholder = "<43-character random token>"
    here, production = (
        dump_cookie(
            cookie.name,
            "TOKEN",
            path=cookie.path,
            domain=cookie.domain,
            secure=cookie.secure,
            httponly=cookie.httponly,
            samesite=cookie.samesite,
            partitioned=cookie.partitioned,
        ).replace("TOKEN", placeholder)
        for cookie in (current, keepsake.session_cookie(production=True))
    )
    received = sorted(request.cookies)
    response = make_response()
    # The contrast: a cookie made readable to script on purpose, beside the HttpOnly session.
    cookies.script_visible.set(response, cookies.SCRIPT_VISIBLE_VALUE)
    contrast = next(
        h
        for h in response.headers.getlist("Set-Cookie")
        if h.split("=", 1)[0]
        in (cookies.script_visible.secure_name, cookies.script_visible.plain_name)
    )
    response.set_data(
        render_template(
            "security.html",
            cookie_name=name,
            here=here,
            here_explained=explain.explain_set_cookie(here),
            production=production,
            same_as_production=here == production,
            mode=keepsake.settings.cookie_secure,
            received=received,
            scheme=request.scheme,
            contrast=contrast,
            contrast_explained=explain.explain_set_cookie(contrast),
            contrast_name=contrast.split("=", 1)[0],
            contrast_value=cookies.SCRIPT_VISIBLE_VALUE,
        )
    )
    return response


# -- errors and headers ----------------------------------------------------------------------


def _error_page(code: int, title: str, message: str, *, bare: bool = False) -> Response:
    body = render_template("error.html", code=code, title=title, message=message, bare=bare)
    response = current_app.make_response((body, code))
    return response


_STALE_FORM = (
    "If you were sending a form from this site, go back, reload the page, and send it again: a "
    "form left open across a sign-in or sign-out carries an outdated token."
)


def _forbidden(exc: HTTPException) -> Response:
    # Keepsake's origin check (KEEPSAKE_CHECK_ORIGIN) refuses a cross-site form post with a 403
    # whose description says what was wrong.
    return _error_page(403, "Request refused", f"{exc.description} {_STALE_FORM}")


def _csrf_failed(exc: CSRFError) -> Response:
    # Flask-WTF's answer to a failed CSRF check is a 400; the demo keeps it, with its own page,
    # and logs the refusal beside Keepsake's other security events (as docs/cookies.md shows).
    security_logger.warning(
        "CSRF check failed for %s %r: %s", request.method, request.path[:200], exc.description
    )
    return _error_page(400, "Request refused", f"{exc.description} {_STALE_FORM}")


def _not_found(exc: HTTPException) -> Response:
    return _error_page(404, "Page not found", "There is no page at this address.")


def _method_not_allowed(exc: HTTPException) -> Response:
    return _error_page(405, "Method not allowed", "This page cannot be used that way.")


def _unavailable(exc: HTTPException | StoreUnavailable) -> Response:
    # bare: the session store is what failed, so this page must not touch the session
    # (no user name, no forms with CSRF tokens).
    response = _error_page(
        503,
        "Back in a moment",
        "The session store is not answering right now. Nothing you saved is lost; "
        "try again in a few seconds.",
        bare=True,
    )
    return response


def _server_error(exc: Exception) -> Response:
    return _error_page(500, "Something went wrong", "The demo hit an unexpected error.", bare=True)


_SECURITY_HEADERS = {
    # Only this site's own files: an injected <script> or style attribute would not run.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _security_headers(response: Response) -> Response:
    for key, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    if request.endpoint not in ("static", "pages.favicon"):
        # Pages show private data: never keep them in a cache (nor in the back-forward cache,
        # so "back" after signing out does not show the signed-in page again).
        response.cache_control.no_store = True
    return response


def init_app(app: Flask) -> None:
    """Register the error pages and the security headers on ``app``."""
    app.register_error_handler(403, _forbidden)
    app.register_error_handler(CSRFError, _csrf_failed)
    app.register_error_handler(404, _not_found)
    app.register_error_handler(405, _method_not_allowed)
    app.register_error_handler(503, _unavailable)
    app.register_error_handler(500, _server_error)
    app.after_request(_security_headers)
    app.jinja_env.globals["time_tag"] = explain.time_tag
    app.jinja_env.globals["describe_device"] = explain.describe_device
    app.context_processor(_store_name)


def _store_name() -> dict[str, str]:
    # Read from the engine, not the session: the 503 page uses it too.
    names = {"sqlite": "SQLite", "redis": "Redis", "memory": "this process's memory"}
    name = keepsake.store.name
    return {"store_name": names.get(name, name)}
