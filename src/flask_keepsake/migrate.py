"""Switch to Keepsake without logging everyone out: adopt the sessions of the old system once.

::

    keepsake = Keepsake(app)
    adopt_old_sessions(app)        # Flask's signed "session" cookie; remove after the switch

A request that carries no Keepsake cookie but an old session cookie gets the old session's data
in a new server-side session (bound to the user named by Flask-Login's ``_user_id``), and the old
cookie is deleted. Each old cookie is adopted at most once: a copy replayed later, even after the
user logged out or was revoked, is refused. A cookie that does not verify (tampered, signed with
another key, expired) is ignored and deleted. ``docs/migrating.md`` walks through the switch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import after_this_request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature, SignatureExpired

from . import serialize
from .errors import ConfigError, NotInitialized
from .interface import engine_of
from .session import request_of
from .tokens import fingerprint

if TYPE_CHECKING:
    from flask import Flask, Response

    from .engine import Engine
    from .session import ServerSession, SessionState

__all__ = ["Loader", "adopt_old_sessions", "flask_cookie_loader"]

security_logger = logging.getLogger("flask_keepsake.security")

#: Reads the old session named by a cookie value: its data, or ``None`` when there is no such
#: session. May raise :class:`itsdangerous.BadSignature` (the value does not verify) or
#: :class:`itsdangerous.SignatureExpired` (it is too old); either makes the cookie be ignored.
Loader = Callable[[str], Mapping[str, Any] | None]

# Claims are markers in the session store (never counted as sessions), named by a digest of the
# old cookie value, so the store never holds an old cookie that might still work elsewhere.
_CLAIM_PREFIX = b"keepsake-adopted\x00"


def flask_cookie_loader(app: Flask, *, max_age: float | None = None) -> Loader:
    """A :data:`Loader` for Flask's own signed cookie session.

    It verifies the cookie with Flask's ``SecureCookieSessionInterface`` serializer: the app's
    ``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``), Flask's salt and its tagged JSON, so every
    value Flask stored comes back with its type.

    :param max_age: refuse cookies signed longer ago than this many seconds; default
        ``PERMANENT_SESSION_LIFETIME``, as Flask does.
    :raises ~flask_keepsake.errors.ConfigError: ``SECRET_KEY`` is not set.
    """
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    if serializer is None:
        raise ConfigError(
            "SECRET_KEY",
            "adopting Flask's cookie sessions needs the SECRET_KEY that signed them; keep it "
            "set until the switch is over.",
        )
    limit = int(app.permanent_session_lifetime.total_seconds() if max_age is None else max_age)

    def load(value: str) -> Mapping[str, Any] | None:
        data = serializer.loads(value, max_age=limit)
        return data if isinstance(data, dict) else None

    return load


def adopt_old_sessions(
    app: Flask,
    *,
    cookie_name: str = "session",
    loader: Loader | None = None,
    user_key: str | None = "_user_id",
    max_age: timedelta | float | None = None,
) -> None:
    """Adopt the sessions of the system Keepsake replaces, once each, for the switch-over.

    Call it after ``Keepsake(app)`` (or ``init_app``), and remove the call once the old cookies
    have expired (``PERMANENT_SESSION_LIFETIME`` after the switch).

    :param cookie_name: the old session cookie's name (Flask's and Flask-Session's default is
        ``"session"``). It must differ from Keepsake's own cookie name.
    :param loader: reads the old session from the cookie value; default: Flask's signed cookie
        session with this app's ``SECRET_KEY`` (:func:`flask_cookie_loader`). For Flask-Session,
        pass a function that reads the session id's record from its store.
    :param user_key: the session key that holds the user id (Flask-Login's ``_user_id``), so an
        adopted session is bound to its user: it shows in :meth:`Keepsake.sessions` and ends
        with :meth:`Keepsake.revoke_all`. ``None`` adopts every session as anonymous.
    :param max_age: how long an old cookie can be adopted, and how long the store remembers that
        it was; default ``PERMANENT_SESSION_LIFETIME``.
    :raises ~flask_keepsake.errors.NotInitialized: Keepsake is not set up on ``app`` yet.
    :raises ~flask_keepsake.errors.ConfigError: the names collide, or ``SECRET_KEY`` is missing
        for the default loader.
    """
    try:
        engine = engine_of(app)
    except NotInitialized:
        raise NotInitialized(
            f"Keepsake is not set up on the application {app.name!r}: call adopt_old_sessions "
            "after Keepsake(app) or keepsake.init_app(app)."
        ) from None
    if cookie_name in (engine.cookie(app, None).name, app.session_interface.get_cookie_name(app)):
        raise ConfigError(
            "SESSION_COOKIE_NAME",
            f"Keepsake's session cookie and the old one are both named {cookie_name!r}, so "
            "old cookies would look like malformed Keepsake tokens. Give Keepsake's cookie a "
            "new name (remove SESSION_COOKIE_NAME for __Host-session) and pass the old name as "
            "cookie_name.",
        )
    if max_age is None:
        lifetime = app.permanent_session_lifetime.total_seconds()
    elif isinstance(max_age, timedelta):
        lifetime = max_age.total_seconds()
    else:
        lifetime = float(max_age)
    if loader is None:
        loader = flask_cookie_loader(app, max_age=lifetime)
    engine.adopt = _Adopter(engine, cookie_name, loader, user_key, lifetime)


class _Adopter:
    """The ``Engine.adopt`` hook: turns an old session cookie into a new server session."""

    def __init__(
        self,
        engine: Engine,
        cookie_name: str,
        loader: Loader,
        user_key: str | None,
        lifetime: float,
    ) -> None:
        self.engine = engine
        self.cookie_name = cookie_name
        self.loader = loader
        self.user_key = user_key
        self.lifetime = lifetime

    def __call__(self, session: ServerSession, state: SessionState) -> None:
        request = request_of(session)
        assert request is not None
        value = request.cookies.get(self.cookie_name)
        if value is not None:
            # Whatever happens next, the old cookie is never looked at again.
            after_this_request(self._delete_old_cookie)
            data = self._load(value)
            if data is not None and self._claim(value):
                dict.update(session, data)
                session.modified = True
                user_id = data.get(self.user_key) if self.user_key is not None else None
                if user_id is not None:
                    state.user_id = str(user_id)
                security_logger.info(
                    "Adopted an old %r session cookie (fingerprint %s) into a new session%s.",
                    self.cookie_name,
                    fingerprint(value),
                    "" if user_id is None else f" of user {user_id}",
                )

    def _load(self, value: str) -> dict[str, Any] | None:
        try:
            loaded = self.loader(value)
        except SignatureExpired:
            security_logger.info(
                "Expired old %r session cookie (fingerprint %s) ignored.",
                self.cookie_name,
                fingerprint(value),
            )
            return None
        except BadSignature:
            security_logger.warning(
                "Old %r session cookie with a bad signature (fingerprint %s) ignored.",
                self.cookie_name,
                fingerprint(value),
            )
            return None
        if loaded is None:
            security_logger.info(
                "Unknown old %r session cookie (fingerprint %s) ignored.",
                self.cookie_name,
                fingerprint(value),
            )
            return None
        data: dict[str, Any] = {}
        for key, item in loaded.items():
            try:
                if not isinstance(key, str):
                    raise TypeError(key)
                serialize.dumps(item, key)
            except TypeError:
                # The old system stored something Keepsake cannot keep; losing one value beats
                # failing the request.
                security_logger.warning(
                    "Old session key %r holds a value Keepsake cannot store; dropped.", key
                )
                continue
            data[key] = item
        return data

    def _claim(self, value: str) -> bool:
        """Record in the store that ``value`` was adopted; False if it already was."""
        now = self.engine.clock()
        name = hashlib.sha256(_CLAIM_PREFIX + value.encode("utf-8", "surrogateescape")).hexdigest()
        if not self.engine.store.put_marker(
            name, "adopted", now + self.lifetime, now, replace=False
        ):
            security_logger.warning(
                "Old %r session cookie (fingerprint %s) was already adopted; a replayed copy "
                "gets a fresh session.",
                self.cookie_name,
                fingerprint(value),
            )
            return False
        return True

    def _delete_old_cookie(self, response: Response) -> Response:
        cookie = self.engine.cookie(self.engine.app, None)
        response.delete_cookie(
            self.cookie_name, path=cookie.path, domain=cookie.domain, httponly=True
        )
        return response
