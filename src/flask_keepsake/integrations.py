"""Flask-Login, through its public signals: its login and logout drive Keepsake's.

When Flask-Login is installed:

- ``login_user`` rotates the token and binds the session to the user (:meth:`Keepsake.login`);
  ``login_user(user, remember=True)`` makes it a persistent session, and Keepsake gives the
  browser a *remember-me grant*: a signed cookie beside Flask-Login's remember cookie that says
  when this browser was told to remember the user;
- a user restored from Flask-Login's remember cookie is bound the same way, not as a fresh
  sign-in, but only with a valid grant issued after the user's sessions were last logged out
  or revoked. Without one (a forged, foreign or expired grant, one older than a "sign out
  everywhere", or a remember cookie set before Keepsake), Keepsake tells Flask-Login the remember
  cookie is to be cleared, as ``logout_user`` does, so it neither restores the user nor survives
  the response. Revocation therefore reaches remembered devices;
- ``logout_user`` ends the session (:meth:`Keepsake.logout`), and ``confirm_login`` (a
  re-authentication) makes the session fresh again with a new token.

Only public names are used: the signals, ``decode_cookie``, the ``REMEMBER_COOKIE_NAME`` setting,
and the session keys through which Flask-Login's own functions talk to its after-request hook
(``_user_id``, ``_fresh``, ``_remember``). Flask-Login's after-request hook and template context
processor read the session on every request; Keepsake leaves them as they are, so a request that
carries a session cookie costs one store read in a Flask-Login app (``docs/performance.md``).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any

from flask import request

from .headers import cookie_values
from .interface import KeepsakeSessionInterface
from .session import current_session, state_of

if TYPE_CHECKING:
    from flask import Flask, Request

    from .engine import Engine
    from .session import ServerSession, SessionState

security_logger = logging.getLogger("flask_keepsake.security")


def connect_flask_login(app: Flask, engine: Engine) -> None:
    """Connect Keepsake to Flask-Login for ``app``, if Flask-Login is installed."""
    if importlib.util.find_spec("flask_login") is None:
        return
    import flask_login

    # Module-level receivers, connected once for every application (connecting again is a
    # no-op): they find the application's engine from the sender, so nothing here holds an
    # application or an extension, and short-lived apps leave no receiver behind.
    flask_login.user_logged_in.connect(_logged_in)
    flask_login.user_loaded_from_cookie.connect(_loaded_from_cookie)
    flask_login.user_logged_out.connect(_logged_out)
    flask_login.user_login_confirmed.connect(_login_confirmed)
    engine.after_load.append(_guard_remember_cookie)


def _context(sender: Any) -> tuple[Engine, ServerSession] | None:
    interface = getattr(sender, "session_interface", None)
    if not isinstance(interface, KeepsakeSessionInterface):
        return None
    session = current_session()
    if session is None:
        return None
    return interface.engine, session


def _logged_in(sender: Any, user: Any = None, **extra: Any) -> None:
    found = _context(sender)
    if found is None or user is None:
        return
    engine, session = found
    # login_user has just written these keys for its after-request hook.
    remember = session.get("_remember") == "set"
    fresh = session.get("_fresh", True) is not False
    engine.login(session, user.get_id(), fresh=fresh, remember=remember)
    if remember:
        state_of(session).remember = "set"


def _loaded_from_cookie(sender: Any, user: Any = None, **extra: Any) -> None:
    found = _context(sender)
    if found is None or user is None:
        return
    engine, session = found
    # The grant was checked when the session loaded (_guard_remember_cookie); the restored
    # session may not outlive it.
    until = state_of(session).absolute_until
    engine.login(session, user.get_id(), fresh=False, remember=True, absolute_until=until)


def _logged_out(sender: Any, user: Any = None, **extra: Any) -> None:
    found = _context(sender)
    if found is None:
        return
    engine, session = found
    # logout_user leaves "_remember" = "clear" for its after-request hook, which deletes the
    # remember-me cookie; keep it in the new anonymous session so that still happens.
    remember = session.get("_remember")
    engine.logout(engine.app, session)
    if remember is not None:
        session["_remember"] = remember


def _login_confirmed(sender: Any, **extra: Any) -> None:
    found = _context(sender)
    if found is not None:
        engine, session = found
        engine.reauthenticated(session)


def _guard_remember_cookie(
    engine: Engine, session: ServerSession, state: SessionState, req: Request
) -> None:
    """Before Flask-Login can restore a user from its remember cookie, check the grant."""
    app = engine.app
    if getattr(app, "login_manager", None) is None:
        return
    import flask_login

    name = app.config.get("REMEMBER_COOKIE_NAME", flask_login.COOKIE_NAME)
    if not cookie_values(req, name) or "_user_id" in session:
        return
    if session.get("_remember") == "clear":
        return
    user_id = flask_login.decode_cookie(request.cookies.get(name, ""))
    if user_id is None:
        return  # Flask-Login refuses it itself: it does not verify.
    issued = engine.remember_grant(app, req, str(user_id))
    if issued is None:
        security_logger.info(
            "Remember-me cookie of user %s refused: no valid grant newer than the user's last "
            "logout or revocation; clearing it.",
            user_id,
        )
        # What logout_user does: Flask-Login then ignores the cookie and deletes it.
        dict.__setitem__(session, "_remember", "clear")
        state.remember = "clear"
        return
    state.absolute_until = issued + engine.settings.permanent_absolute_timeout
