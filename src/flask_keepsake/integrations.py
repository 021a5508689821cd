"""Flask-Login, without extra code: its login and logout drive Keepsake's.

When Flask-Login is installed, ``login_user`` rotates the token and binds the session to the user
(:meth:`Keepsake.login`), a user restored from the remember-me cookie does the same without
counting as a fresh authentication, and ``logout_user`` ends the session (:meth:`Keepsake.logout`).

Flask-Login also reads the session on *every* request: its after-request hook looks for a
"_remember" key, and its template context processor looks the user up for every template. That
would cost a store call on requests that never use the session, and turn the 503 answer given
during a store outage into a 500. On the first request of each app, Keepsake therefore wraps the
hook so it runs only when the request used the session (a request that did not cannot have set
or cleared the remember-me cookie), and gives templates Flask-Login's lazy ``current_user`` proxy.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, session

from .session import is_loaded

if TYPE_CHECKING:
    from .extension import Keepsake


def connect_flask_login(app: Flask, keepsake: Keepsake) -> None:
    """Connect Keepsake to Flask-Login's signals for ``app``, if Flask-Login is installed."""
    if importlib.util.find_spec("flask_login") is None:
        return
    import flask_login

    def logged_in(sender: Any, user: Any = None, **extra: Any) -> None:
        keepsake.login(user.get_id())

    def loaded_from_cookie(sender: Any, user: Any = None, **extra: Any) -> None:
        # A remember-me cookie is not a fresh authentication: bind, rotate, no auth time.
        keepsake.login(user.get_id(), fresh=False)

    def logged_out(sender: Any, user: Any = None, **extra: Any) -> None:
        # logout_user leaves "_remember" = "clear" for its after_request hook, which deletes the
        # remember-me cookie; keep it in the new anonymous session so that still happens.
        remember = session.get("_remember")
        keepsake.logout()
        if remember is not None:
            session["_remember"] = remember

    # weak=False: these closures have no other reference and must live as long as the app.
    flask_login.user_logged_in.connect(logged_in, sender=app, weak=False)
    flask_login.user_loaded_from_cookie.connect(loaded_from_cookie, sender=app, weak=False)
    flask_login.user_logged_out.connect(logged_out, sender=app, weak=False)

    state = {"done": False}

    def make_flask_login_lazy() -> None:
        # LoginManager.init_app may run before or after Keepsake's, so patch at first request.
        if not state["done"]:
            state["done"] = True
            _lazy_flask_login(app, flask_login)

    app.before_request_funcs.setdefault(None, []).insert(0, make_flask_login_lazy)


def _lazy_flask_login(app: Flask, flask_login: Any) -> None:
    manager = getattr(app, "login_manager", None)
    if manager is None:
        return
    hook = manager._update_remember_cookie
    refresh_each_request = bool(app.config.get("REMEMBER_COOKIE_REFRESH_EACH_REQUEST"))

    def update_remember_cookie(response: Response) -> Response:
        if refresh_each_request or is_loaded(session._get_current_object()):  # type: ignore[attr-defined]
            response = hook(response)
        return response

    for funcs in app.after_request_funcs.values():
        funcs[:] = [update_remember_cookie if f == hook else f for f in funcs]

    eager = flask_login.utils._user_context_processor

    def lazy_user() -> dict[str, Any]:
        return {"current_user": flask_login.current_user}

    for processors in app.template_context_processors.values():
        processors[:] = [lazy_user if p is eager else p for p in processors]
