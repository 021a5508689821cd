"""Flask-Login, without extra code: its login and logout drive Keepsake's.

When Flask-Login is installed, ``login_user`` rotates the token and binds the session to the user
(:meth:`Keepsake.login`), a user restored from the remember-me cookie does the same without
counting as a fresh authentication, and ``logout_user`` ends the session (:meth:`Keepsake.logout`).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from flask import session

if TYPE_CHECKING:
    from flask import Flask

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
