"""Flask's ``SessionInterface`` for Keepsake: the hooks Flask defines, and nothing else.

``open_session`` runs on every request and only wraps the request in an unloaded session; the
cookie is parsed and the store called the first time anything uses the session. ``save_session``
hands the session to the :class:`~flask_keepsake.engine.Engine`, which writes what changed.

The cookie's name and attributes come from Flask's hooks (``get_cookie_name``,
``get_cookie_domain``, ``get_cookie_path``, ``get_cookie_httponly``, ``get_cookie_secure``,
``get_cookie_samesite``, ``get_cookie_partitioned``), read on each request as Flask's own
``SecureCookieSessionInterface`` does, so ``SESSION_COOKIE_*`` set after ``Keepsake(app)`` and a
subclass that overrides a hook both take effect. Keepsake's versions replace only Flask's
insecure defaults: the ``session`` name gets the ``__Host-`` prefix, ``Secure`` is on, and
``SameSite`` is ``Lax`` when unset. To override a hook, subclass this class and pass it to
``Keepsake(app, session_interface=MyInterface)``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from flask import after_this_request
from flask.sessions import SessionInterface, SessionMixin

from .config import FLASK_DEFAULT_NAME, default_cookie_name
from .session import is_loaded, quiet_from_now, state_of

if TYPE_CHECKING:
    from flask import Flask, Request, Response

    from .engine import Engine
    from .session import ServerSession

__all__ = ["KeepsakeSessionInterface", "engine_of"]


def _view_done(response: Response) -> Response:
    quiet_from_now()
    return response


def engine_of(app: Flask) -> Engine:
    """The Keepsake engine of ``app``; :class:`~flask_keepsake.NotInitialized` if it has none."""
    from .errors import NotInitialized

    interface = app.session_interface
    if isinstance(interface, KeepsakeSessionInterface):
        return interface.engine
    if "keepsake" in app.extensions:
        raise NotInitialized(
            f"app.session_interface of {app.name!r} is no longer Keepsake's; to change its "
            "hooks, pass a KeepsakeSessionInterface subclass: Keepsake(app, "
            "session_interface=MyInterface)."
        )
    raise NotInitialized(
        f"Keepsake is not set up on the application {app.name!r}: call Keepsake(app) or "
        "keepsake.init_app(app) first."
    )


class KeepsakeSessionInterface(SessionInterface):
    """Flask's session interface backed by a Keepsake engine. Installed by ``init_app``.

    :param engine: the application's engine (one interface per application).
    """

    pickle_based = False

    def __init__(self, engine: Engine) -> None:
        #: The session engine of the application this interface is installed on.
        self.engine = engine

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        """Return an unloaded session; nothing is parsed or fetched until it is used."""
        # Runs before the application's after-request hooks: a hook that is the first to read
        # the session (Flask-Login's does) while the store is down then sees an empty session,
        # and the response, left whole, becomes the 503 instead of an exception Flask cannot
        # route to Keepsake's error handler.
        after_this_request(_view_done)
        return self.engine.open(request)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save the session if anything used it; an untouched session costs nothing."""
        if is_loaded(session):
            self.engine.save(app, session, response)  # type: ignore[arg-type]

    def get_cookie_name(self, app: Flask) -> str:
        """``SESSION_COOKIE_NAME``; Flask's default ``session`` gets the ``__Host-`` prefix
        (``__Secure-`` with a Domain or a Path other than ``/``) unless cookies are insecure."""
        name = super().get_cookie_name(app)
        if name == FLASK_DEFAULT_NAME and self.engine.settings.cookie_secure is not False:
            return default_cookie_name(self.get_cookie_domain(app), self.get_cookie_path(app))
        return name

    def get_cookie_secure(self, app: Flask) -> bool:
        """True unless ``KEEPSAKE_COOKIE_SECURE`` is False (Flask's default is False)."""
        return super().get_cookie_secure(app) or self.engine.settings.cookie_secure is not False

    def get_cookie_samesite(self, app: Flask) -> str | None:
        """``SESSION_COOKIE_SAMESITE``, or ``"Lax"`` where Flask would send none."""
        samesite = super().get_cookie_samesite(app)
        return "Lax" if samesite is None else samesite

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> datetime | None:
        """When the cookie of a persistent session (``session.permanent``, or remembered at
        sign-in) expires: exactly when the server's record does. ``None`` (a browser-session
        cookie) otherwise."""
        if not is_loaded(session):
            return None
        state = state_of(session)  # type: ignore[arg-type]
        if not state.persistent or state.expires is None:
            return None
        return datetime.fromtimestamp(state.expires, UTC)

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        """Whether to send the unchanged token again, to renew a persistent cookie's expiry.

        The cookie holds a random token, not the data, so it is always sent when the token
        changes; this hook only decides the renewals. As in Flask, a persistent session's cookie
        is renewed on every request that uses the session with ``SESSION_REFRESH_EACH_REQUEST``,
        and only when the session was modified without it; a browser-session cookie has no
        expiry to renew.
        """
        state = state_of(session) if is_loaded(session) else None  # type: ignore[arg-type]
        persistent = session.permanent if state is None else state.persistent
        return bool(persistent and (session.modified or app.config["SESSION_REFRESH_EACH_REQUEST"]))
