"""The session engine: loading, saving, the two lifetime policies, rotation, and the lifecycle.

One :class:`Engine` per application, owned by its
:class:`~flask_keepsake.interface.KeepsakeSessionInterface`. It knows the validated settings, the
store and the clock; it reads Flask's session keys through the interface's hooks when it needs
them, so a subclass or late configuration is honoured.

Two kinds of session (``docs/configuration.md``):

- a *browser session* (``session.permanent`` false): a cookie without ``Expires``; the server ends
  it after ``KEEPSAKE_IDLE_TIMEOUT`` without use or ``KEEPSAKE_ABSOLUTE_TIMEOUT`` after it began;
- a *persistent session* (``session.permanent`` true, or ``login(..., remember=True)``): a cookie
  whose ``Expires`` is exactly the server's expiry, which slides by
  ``PERMANENT_SESSION_LIFETIME`` with use and never passes ``KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT``
  after it began. The server never loads a session past the expiry its last cookie advertised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import weakref
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from werkzeug.exceptions import Conflict, HTTPException, ServiceUnavailable

from . import serialize, signals
from .config import HOST_PREFIX, SECURE_PREFIX, permanent_lifetime
from .crypto import CookieSigner, InvalidValue, secret_keys
from .errors import NotInitialized, SessionTooLarge, StoreUnavailable
from .headers import cookie_values, is_loopback, no_store, replace_response, vary_on_cookie
from .session import SessionState, is_quiet, mark_loaded, new_unloaded, request_of, state_of
from .stores.base import ROTATED, Outcome, SessionRecord, Touch, admin_store
from .tokens import fingerprint, is_token, new_handle, new_token, storage_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask, Request, Response

    from .config import Settings
    from .cookies import CookieJar
    from .interface import KeepsakeSessionInterface
    from .session import ServerSession
    from .stores.base import Store

logger = logging.getLogger("flask_keepsake")
security_logger = logging.getLogger("flask_keepsake.security")

_MAX_USER_AGENT: Final = 256
#: The serialized form of ``True``: how ``session.permanent`` looks in stored data.
_TRUE: Final = serialize.dumps(True)
_PERMANENT: Final = "_permanent"

# Immutable scalar types: an object of one of these that is the very object decoded from a
# stored text serializes back to that text, so saving need not serialize it again.
_SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
_MISSING: Final = object()

#: Marker name prefix of "sessions of this user were last revoked at".
_REVOKED: Final = "keepsake-revoked:"


@dataclass(frozen=True, slots=True)
class SessionCookie:
    """The session cookie's name and attributes, as one request gets them.

    They come from Flask's ``SessionInterface`` hooks (``get_cookie_name`` and the others), with
    Keepsake's secure defaults, and without ``Secure`` or the name prefix for a plain-HTTP
    request to a loopback host in debug mode (``KEEPSAKE_COOKIE_SECURE = "auto"``).
    """

    name: str
    domain: str | None
    path: str
    secure: bool
    httponly: bool
    samesite: str | None
    partitioned: bool


def is_persistent(record: SessionRecord, data: dict[str, str] | None = None) -> bool:
    """Whether a stored session is persistent: remembered at sign-in, or ``session.permanent``
    (in ``data``, default the record's)."""
    return record.remembered or (record.data if data is None else data).get(_PERMANENT) == _TRUE


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session of a user, as :meth:`Keepsake.sessions` lists it. Never holds the token."""

    #: The public id of the session, for pages and URLs ("revoke this device").
    handle: str
    user_id: str | None
    created: datetime
    last_seen: datetime
    #: When the session ends if nothing happens: the earlier of idle and absolute expiry. For
    #: a persistent session, also when its cookie expires.
    expires: datetime
    #: When the session ends whatever happens (absolute timeout).
    absolute_expires: datetime
    auth_time: datetime | None
    ip: str | None
    user_agent: str | None
    #: Whether this is the session of the current request.
    current: bool
    #: Whether this is a persistent ("remember me") session rather than a browser session.
    persistent: bool = False


def session_info(record: SessionRecord, current: bool) -> SessionInfo:
    """What :meth:`Keepsake.sessions` tells about ``record``: no token, no data."""
    return SessionInfo(
        handle=record.handle,
        user_id=record.user_id,
        created=_dt(record.created),
        last_seen=_dt(record.last_seen),
        expires=_dt(record.expires_at),
        absolute_expires=_dt(record.absolute_expires_at),
        auth_time=None if record.auth_time is None else _dt(record.auth_time),
        ip=record.ip,
        user_agent=record.user_agent,
        current=current,
        persistent=is_persistent(record),
    )


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Engine:
    """The per-application session engine.

    :param settings: the validated ``KEEPSAKE_*`` configuration.
    :param store: where records live.
    :param clock: returns the current time in epoch seconds.
    :param app: the application; held weakly, so the engine never keeps it alive.
    """

    def __init__(
        self, settings: Settings, store: Store, clock: Callable[[], float], app: Flask
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._app = weakref.ref(app)
        #: Flask-WTF's session key for its CSRF secret, when Flask-WTF is installed.
        self.csrf_field: str | None = None
        #: Called instead of starting empty when a request carries no session cookie; set by
        #: :func:`flask_keepsake.migrate.adopt_old_sessions` to take over the old sessions.
        self.adopt: Callable[[ServerSession, SessionState], None] | None = None
        #: Called after a session was loaded from the store or started empty (integrations).
        self.after_load: list[Callable[[Engine, ServerSession, SessionState, Request], None]] = []
        self._remember_signer: tuple[tuple[bytes, ...], CookieSigner] | None = None
        #: The declared cookies of this application (set by ``init_cookies``).
        self.jar: CookieJar | None = None

    @property
    def app(self) -> Flask:
        """The application this engine serves."""
        app = self._app()
        if app is None:  # pragma: no cover - an engine outliving its app is a bug elsewhere
            raise NotInitialized("the application of this Keepsake engine no longer exists")
        return app

    # -- cookies -------------------------------------------------------------------------------

    def interface(self, app: Flask) -> KeepsakeSessionInterface:
        """The application's session interface, whose hooks give the cookie's attributes."""
        from .interface import engine_of

        engine_of(app)  # raises NotInitialized if the interface was replaced
        interface: KeepsakeSessionInterface = app.session_interface  # type: ignore[assignment]
        return interface

    def cookie(self, app: Flask, request: Request | None) -> SessionCookie:
        """The session cookie for ``request`` (``None``: as sent over HTTPS)."""
        hooks = self.interface(app)
        name = hooks.get_cookie_name(app)
        secure = hooks.get_cookie_secure(app)
        samesite = hooks.get_cookie_samesite(app)
        partitioned = hooks.get_cookie_partitioned(app)
        if (
            request is not None
            and self.settings.cookie_secure == "auto"
            and request.scheme == "http"
            and is_loopback(request.host)
        ):
            # Safari refuses Secure cookies from http://localhost (WebKit bug 281149), so in
            # debug mode plain-HTTP loopback requests get a cookie without Secure or prefix.
            name = name.removeprefix(HOST_PREFIX).removeprefix(SECURE_PREFIX)
            secure = partitioned = False
            if samesite is not None and samesite.lower() == "none":
                samesite = "Lax"
        return SessionCookie(
            name=name,
            domain=hooks.get_cookie_domain(app),
            path=hooks.get_cookie_path(app),
            secure=secure,
            httponly=hooks.get_cookie_httponly(app),
            samesite=samesite,
            partitioned=partitioned,
        )

    def _set_cookie(
        self, response: Response, cookie: SessionCookie, value: str, expires: float | None
    ) -> None:
        response.set_cookie(
            cookie.name,
            value,
            expires=None if expires is None else datetime.fromtimestamp(expires, UTC),
            path=cookie.path,
            domain=cookie.domain,
            secure=cookie.secure,
            httponly=cookie.httponly,
            samesite=cookie.samesite,
            partitioned=cookie.partitioned,
        )
        # A response that carries a session token must never be stored by a shared cache.
        no_store(response)

    def _delete_cookie(self, response: Response, cookie: SessionCookie) -> None:
        # The deletion carries the attributes the cookie was set with, or browsers keep it.
        response.delete_cookie(
            cookie.name,
            path=cookie.path,
            domain=cookie.domain,
            secure=cookie.secure,
            httponly=cookie.httponly,
            samesite=cookie.samesite,
            partitioned=cookie.partitioned,
        )
        response.cache_control.no_store = True

    # -- policies ------------------------------------------------------------------------------

    def windows(self, app: Flask, persistent: bool) -> tuple[float, float]:
        """The idle and absolute windows (seconds) of a browser or a persistent session."""
        s = self.settings
        if persistent:
            return permanent_lifetime(app), s.permanent_absolute_timeout
        return s.idle_timeout, s.absolute_timeout

    def touch_interval(self, idle: float) -> float:
        """How often a session in use is touched: ``KEEPSAKE_TOUCH_INTERVAL``, or half its idle
        window if that is shorter (a persistent session may idle out in less than a minute)."""
        return min(self.settings.touch_interval, idle / 2)

    # -- loading -------------------------------------------------------------------------------

    def open(self, request: Request) -> ServerSession:
        """An unloaded session for ``request``: nothing is parsed or fetched until it is used."""
        return new_unloaded(request, self.load)

    def load(self, session: ServerSession) -> None:
        """Load the record named by the request's cookie into ``session`` (one store call)."""
        request = request_of(session)
        assert request is not None
        state = SessionState()
        try:
            self._load(session, state, request)
        except StoreUnavailable:
            # Whatever reads the session next (an error page, an after-request hook) sees an
            # empty one, and save() turns the response into the 503, wherever it came from.
            dict.clear(session)
            state.reset()
            state.unavailable = True
            mark_loaded(session, state)
            if not is_quiet(session):
                raise
            return
        mark_loaded(session, state)
        for hook in self.after_load:
            hook(self, session, state, request)

    def _load(self, session: ServerSession, state: SessionState, request: Request) -> None:
        app = self.app
        name = self.cookie(app, request).name
        values = cookie_values(request, name)
        if not values:
            if self.adopt is not None:
                self.adopt(session, state)
            return
        if len(values) > 1:
            security_logger.warning(
                "Session cookie %r sent %d times; starting a fresh session.", name, len(values)
            )
            state.stale_cookie = True
            return
        raw = values[0]
        if not is_token(raw):
            security_logger.warning(
                "Malformed session cookie (length %d, fingerprint %s); starting a fresh session.",
                len(raw),
                fingerprint(raw),
            )
            state.stale_cookie = True
            return
        now = self.clock()
        record = self.store.load(storage_key(raw), now)
        if record is ROTATED:
            # The same browser's request that left before its login's response arrived: it
            # must neither see the signed-in session nor send a cookie that would replace it.
            security_logger.info(
                "Session token (fingerprint %s) was replaced by a login or regenerate moments "
                "ago; answering without the session and without a cookie.",
                fingerprint(raw),
            )
            state.rotated = True
            return
        if record is None:
            security_logger.info(
                "Unknown, expired or revoked session token (fingerprint %s); starting a fresh "
                "session.",
                fingerprint(raw),
            )
            state.stale_cookie = True
            return
        assert isinstance(record, SessionRecord)
        try:
            values_by_key = {k: serialize.loads(v) for k, v in record.data.items()}
        except ValueError:
            security_logger.warning(
                "Stored session %s holds data that cannot be read; starting a fresh session.",
                record.handle,
            )
            state.stale_cookie = True
            return
        dict.update(session, values_by_key)
        session.new = False
        state.token = raw
        state.record = record
        state.loaded = record.data
        state.decoded = (values_by_key, record.data)
        state.user_id = record.user_id
        state.auth_time = record.auth_time
        state.expires = record.expires_at
        state.remembered = record.remembered
        state.persistent = is_persistent(record)
        if (
            record.auth_time is not None
            and now - record.last_seen > self.settings.idle_timeout
            and state.persistent
        ):
            # Back after longer than a browser session may idle: still signed in, but no
            # longer a fresh sign-in (step-up asks for the password again).
            state.auth_time = None
            state.lost_freshness = True
            if values_by_key.get("_fresh") is True:
                dict.__setitem__(session, "_fresh", False)

    # -- saving --------------------------------------------------------------------------------

    def serialize(self, session: ServerSession, state: SessionState) -> dict[str, str]:
        """Serialize every value of ``session``; raise TypeError or SessionTooLarge."""
        data: dict[str, str] = {}
        size = 0
        dumps = serialize.dumps
        decoded, texts = state.decoded
        for key, value in dict.items(session):
            if type(key) is not str:
                raise TypeError(f"Session keys must be str, not {type(key).__name__}: {key!r}.")
            if type(value) in _SCALARS and decoded.get(key, _MISSING) is value:
                text = texts[key]
            else:
                text = dumps(value, key)
            data[key] = text
            size += len(key) + len(text)
        if size > self.settings.max_session_bytes:
            largest = sorted(((k, len(k) + len(v)) for k, v in data.items()), key=lambda x: -x[1])
            raise SessionTooLarge(size, self.settings.max_session_bytes, largest[:3])
        return data

    def new_record(
        self,
        app: Flask,
        key: str,
        data: dict[str, str],
        now: float,
        request: Request | None,
        user_id: str | None,
        auth_time: float | None,
        *,
        persistent: bool = False,
        remembered: bool = False,
        absolute_until: float | None = None,
    ) -> SessionRecord:
        """A record for a session that starts now, under the policy its kind asks for."""
        idle, window = self.windows(app, persistent)
        absolute = now + window
        if absolute_until is not None:
            absolute = min(absolute, absolute_until)
        user_agent = request.headers.get("User-Agent") if request is not None else None
        return SessionRecord(
            key=key,
            handle=new_handle(),
            data=data,
            user_id=user_id,
            created=now,
            last_seen=now,
            expires_at=min(now + idle, absolute),
            absolute_expires_at=absolute,
            auth_time=auth_time,
            ip=request.remote_addr if request is not None else None,
            user_agent=user_agent[:_MAX_USER_AGENT] if user_agent else None,
            remembered=remembered,
        )

    def save(self, app: Flask, session: ServerSession, response: Response) -> None:
        """Persist what changed in ``session`` and set or delete the cookie."""
        state = state_of(session)
        if state.unavailable:
            # The store failed while loading. In a view, Keepsake's error handler has already
            # answered 503; anywhere else (an error page, an after-request hook) Flask produced
            # something else, which must not reach the client.
            if response.status_code != 503 or "Retry-After" not in response.headers:
                replace_response(response, self.unavailable_response(app))
            return
        vary_on_cookie(response)
        if response.status_code >= 500 and not self.settings.save_on_error:
            return
        # Serialize before any store call: a TypeError or an oversized session must leave the
        # stored record exactly as it was.
        data = self.serialize(session, state)
        request = request_of(session)
        assert request is not None
        try:
            if state.rotated:
                self._save_rotated_away(app, state, response, data)
            else:
                self._write(app, session, state, request, response, data)
        except StoreUnavailable as exc:
            logger.error("Session store unavailable while saving: %s", exc)
            replace_response(response, self.unavailable_response(app))

    def _save_rotated_away(
        self, app: Flask, state: SessionState, response: Response, data: dict[str, str]
    ) -> None:
        # A request with a token that a login replaced moments ago. Its session started empty;
        # a write would go nowhere the browser can see again, so it is refused, not dropped.
        # A login here (a remember-me cookie restoring the user) is already done by the other
        # request, whose cookie the browser now holds: nothing to do.
        if data and state.rotate != "login":
            security_logger.info(
                "Write with a token replaced moments ago refused with 409 Conflict."
            )
            conflict = Conflict(
                "You signed in (or your session was renewed) in another tab or request while "
                "this one was on its way, so its changes were not saved. Reload the page and "
                "try again."
            )
            replace_response(response, self._error_response(app, conflict))

    def _write(
        self,
        app: Flask,
        session: ServerSession,
        state: SessionState,
        request: Request,
        response: Response,
        data: dict[str, str],
    ) -> None:
        record = state.record
        now = self.clock()
        persistent = state.remembered or bool(session.permanent)
        state.persistent = persistent

        if record is None:
            if not data and state.user_id is None:
                if state.stale_cookie:
                    self._delete_cookie(response, self.cookie(app, request))
                self._remember_cookie(app, request, response, state, now)
                return
            self._create(app, session, state, request, response, data, now, persistent)
            return

        if state.rotate is not None:
            self._rotate(app, session, state, request, response, data, record, now, persistent)
            return

        loaded = state.loaded
        if loaded and not data:
            # Emptied during this request (session.clear(), logout by hand): like Flask, which
            # removes the cookie of a session modified to be empty, the session ends.
            if self.store.delete(record.key):
                self._forget(app, state, request, response)
                signals.session_destroyed.send(
                    app, handle=record.handle, user_id=record.user_id, reason="emptied"
                )
            # Otherwise it was renamed away (a login in another request wins) or revoked
            # meanwhile: the browser's cookie is no longer this request's business.
            return

        changed = {k: v for k, v in data.items() if loaded.get(k) != v}
        deleted = [k for k in loaded if k not in data]
        was_persistent = is_persistent(record, loaded)
        interface = self.interface(app)
        send_cookie = interface.should_set_cookie(app, session)
        touch: Touch | None = None
        if persistent != was_persistent:
            # Moved between the two policies: both windows change, and so does the cookie.
            idle, window = self.windows(app, persistent)
            absolute = record.created + window
            touch = Touch(now, min(now + idle, absolute), absolute, state.lost_freshness)
            send_cookie = True
        else:
            idle, _ = self.windows(app, persistent)
            due = now - record.last_seen >= self.touch_interval(idle)
            if due or state.lost_freshness:
                if persistent and not send_cookie:
                    # The cookie's Expires is not renewed on this response, so neither is the
                    # server's expiry: they stay one number.
                    expires = record.expires_at
                else:
                    expires = min(now + idle, record.absolute_expires_at)
                touch = Touch(now, expires, stale=state.lost_freshness)
        if changed or deleted:
            outcome = self.store.apply(record.key, changed, deleted, now, touch)
        elif touch is not None:
            outcome = self.store.touch(record.key, touch, now)
        else:
            outcome = Outcome.DONE
        if outcome is Outcome.GONE:
            # Deleted, revoked or expired meanwhile: never resurrect it.
            self._forget(app, state, request, response)
            return
        if outcome is Outcome.FOLLOWED:
            # A login in another request renamed this session meanwhile; the delta went to the
            # renamed record, and that request's response carries the cookie.
            return
        if touch is not None:
            record.last_seen = touch.last_seen
            record.expires_at = touch.expires_at
            if touch.absolute_expires_at is not None:
                record.absolute_expires_at = touch.absolute_expires_at
        state.loaded = data
        state.expires = record.expires_at
        if send_cookie:
            assert state.token is not None
            self._send(app, interface, session, state, request, response, state.token)
        self._remember_cookie(app, request, response, state, now)

    def _create(
        self,
        app: Flask,
        session: ServerSession,
        state: SessionState,
        request: Request,
        response: Response,
        data: dict[str, str],
        now: float,
        persistent: bool,
    ) -> None:
        token = new_token()
        record = self.new_record(
            app,
            storage_key(token),
            data,
            now,
            request,
            state.user_id,
            state.auth_time,
            persistent=persistent,
            remembered=state.remembered,
            absolute_until=state.absolute_until,
        )
        self.store.create(record)
        self._adopt(state, token, record, data)
        session.new = False
        self._send(app, self.interface(app), session, state, request, response, token)
        self._remember_cookie(app, request, response, state, now)
        if signals.session_created.receivers:
            signals.session_created.send(app, handle=record.handle, user_id=record.user_id)

    def _rotate(
        self,
        app: Flask,
        session: ServerSession,
        state: SessionState,
        request: Request,
        response: Response,
        data: dict[str, str],
        record: SessionRecord,
        now: float,
        persistent: bool,
    ) -> None:
        loaded = state.loaded
        changed = {k: v for k, v in data.items() if loaded.get(k) != v}
        deleted = [k for k in loaded if k not in data]
        reason = state.rotate
        token = new_token()
        key = storage_key(token)
        if reason == "login":
            new = self.new_record(
                app,
                key,
                {},
                now,
                request,
                state.user_id,
                state.auth_time,
                persistent=persistent,
                remembered=state.remembered,
                absolute_until=state.absolute_until,
            )
        else:
            idle, window = self.windows(app, persistent)
            absolute = record.created + window
            new = replace(
                record,
                key=key,
                data={},
                last_seen=now,
                expires_at=min(now + idle, absolute),
                absolute_expires_at=absolute,
                auth_time=state.auth_time,
                remembered=state.remembered,
            )
        outcome = self.store.rename(
            record.key,
            new,
            now,
            changed=changed,
            deleted=deleted,
            grace=self.settings.rotation_grace,
        )
        if outcome is not Outcome.DONE:
            if reason == "login":
                # The old session was renamed by another login, or ended, meanwhile: this login
                # still stands, in a session of its own with what this request saw.
                state.record = None
                self._create(app, session, state, request, response, data, now, persistent)
                return
            if outcome is Outcome.ROTATED:
                # Another request renamed it first (and its response carries the new cookie):
                # this request's changes follow the session there.
                self.store.apply(record.key, changed, deleted, now)
                return
            # Revoked while this request ran: the revocation wins.
            self._forget(app, state, request, response)
            return
        new.data = data
        self._adopt(state, token, new, data)
        self._send(app, self.interface(app), session, state, request, response, token)
        self._remember_cookie(app, request, response, state, now)
        signals.session_regenerated.send(
            app, handle=new.handle, old_handle=record.handle, user_id=new.user_id, reason=reason
        )

    def _send(
        self,
        app: Flask,
        interface: KeepsakeSessionInterface,
        session: ServerSession,
        state: SessionState,
        request: Request,
        response: Response,
        token: str,
    ) -> None:
        """Set the session cookie; a persistent one expires exactly when the server's record."""
        expires = interface.get_expiration_time(app, session)
        self._set_cookie(
            response,
            self.cookie(app, request),
            token,
            None if expires is None else expires.timestamp(),
        )

    def _adopt(
        self, state: SessionState, token: str, record: SessionRecord, data: dict[str, str]
    ) -> None:
        state.token = token
        state.record = record
        state.loaded = data
        state.decoded = ({}, {})
        state.rotate = None
        state.stale_cookie = False
        state.lost_freshness = False
        state.expires = record.expires_at

    def _forget(
        self, app: Flask, state: SessionState, request: Request, response: Response
    ) -> None:
        state.record = None
        state.token = None
        state.loaded = {}
        self._delete_cookie(response, self.cookie(app, request))

    # -- errors --------------------------------------------------------------------------------

    def _error_response(self, app: Flask, exc: HTTPException) -> Response:
        rv: Any = app.handle_http_exception(exc)
        if isinstance(rv, HTTPException):
            rv = rv.get_response()
        response: Response = app.make_response(rv)
        response.cache_control.no_store = True
        return response

    def unavailable_response(self, app: Flask) -> Response:
        """The application's 503 response, with ``Retry-After``."""
        security_logger.error(
            "Session store %s unavailable; answering 503 Service Unavailable.",
            self.store.describe(),
        )
        response = self._error_response(
            app, ServiceUnavailable(retry_after=self.settings.retry_after)
        )
        response.headers["Retry-After"] = str(self.settings.retry_after)
        return response

    # -- the lifecycle ---------------------------------------------------------------------------

    def login(
        self,
        session: ServerSession,
        user_id: str | int,
        *,
        fresh: bool = True,
        remember: bool = False,
        absolute_until: float | None = None,
    ) -> None:
        """Bind ``session`` to ``user_id``; the token rotates at the end of the request."""
        state = state_of(session)
        state.user_id = str(user_id)
        state.auth_time = self.clock() if fresh else None
        state.lost_freshness = False
        state.rotate = "login"
        state.absolute_until = absolute_until
        # Remembered is the record's own flag, not Flask's session.permanent: Flask-Login's
        # strong session protection treats permanent sessions differently, and must not see
        # one here.
        state.remembered = remember
        self.drop_csrf(session)

    def reauthenticated(self, session: ServerSession) -> None:
        """The user proved who they are again: fresh from now, with a new token."""
        state = state_of(session)
        state.auth_time = self.clock()
        state.lost_freshness = False
        if state.rotate is None:
            state.rotate = "regenerate"

    def regenerate(self, session: ServerSession) -> None:
        """Give ``session`` a new token at the end of the request, keeping its data."""
        state = state_of(session)
        if state.rotate is None:
            state.rotate = "regenerate"

    def logout(self, app: Flask, session: ServerSession) -> None:
        """End ``session`` now: delete its record, retire remember-me grants, drop the cookie."""
        state = state_of(session)
        record = state.record
        if record is not None:
            self.store.delete(record.key)
        user_id = record.user_id if record is not None else state.user_id
        if user_id is not None:
            self.mark_revoked(user_id)
        self.reset(session)
        state.remember = "clear"
        if record is not None:
            signals.session_destroyed.send(
                app, handle=record.handle, user_id=record.user_id, reason="logout"
            )

    def reset(self, session: ServerSession) -> None:
        """Forget the stored session in this request: an anonymous, empty one takes its place."""
        state = state_of(session)
        had_cookie = state.token is not None or state.stale_cookie
        dict.clear(session)
        session.modified = True
        session.new = True
        state.reset()
        # The browser still holds the old cookie: remove it unless a new session replaces it.
        state.stale_cookie = had_cookie
        self.drop_csrf(session)

    def drop_csrf(self, session: ServerSession) -> None:
        """Drop Flask-WTF's CSRF secret, so a token seen before a login is useless after it."""
        field = self.csrf_field
        if field is None:
            return
        from flask import g

        # Flask-WTF keeps the raw CSRF secret in the session and the signed token in g; both
        # must go.
        dict.pop(session, field, None)
        g.pop(field, None)

    def is_fresh(self, session: ServerSession, max_age: timedelta | float | None) -> bool:
        """Whether the user of ``session`` signed in during this sitting (and within
        ``max_age``)."""
        auth_time = state_of(session).auth_time
        if auth_time is None:
            return False
        if max_age is None:
            return True
        limit = max_age.total_seconds() if isinstance(max_age, timedelta) else float(max_age)
        return self.clock() - auth_time <= limit

    # -- a user's sessions: list and revoke ----------------------------------------------------

    def sessions(
        self, user_id: str | int | None, session: ServerSession | None
    ) -> list[SessionInfo]:
        """The live sessions of ``user_id`` (default: the user of ``session``), oldest first."""
        uid, current_key = _target(user_id, session)
        if uid is None:
            return []
        records = admin_store(self.store, "keepsake.sessions()").list_user(uid, self.clock())
        return [session_info(r, r.key == current_key) for r in records]

    def revoke(self, handle: str, user_id: str | int | None, session: ServerSession | None) -> bool:
        """End the session whose handle is ``handle`` (of ``user_id`` only, when given)."""
        uid = None if user_id is None else str(user_id)
        store = admin_store(self.store, "keepsake.revoke()")
        deleted = store.delete_handle(handle, self.clock(), user_id=uid)
        if deleted is None:
            return False
        key, owner = deleted
        if owner is not None:
            self.mark_revoked(owner)
        security_logger.info("Session %s revoked.", handle)
        signals.session_revoked.send(self.app, handle=handle, user_id=owner, count=1)
        if session is not None:
            record = state_of(session).record
            if record is not None and record.key == key:
                self.reset(session)
        return True

    def revoke_user(
        self, user_id: str | int | None, session: ServerSession | None, *, keep_current: bool
    ) -> int:
        """End every session of ``user_id`` (default: the user of ``session``)."""
        uid, current_key = _target(user_id, session)
        if uid is None:
            return 0
        except_key = current_key if keep_current else None
        store = admin_store(self.store, "keepsake.revoke_all()")
        count = store.delete_user(uid, self.clock(), except_key=except_key)
        self.mark_revoked(uid)
        security_logger.info("%d session(s) of user %s revoked.", count, uid)
        signals.session_revoked.send(self.app, handle=None, user_id=uid, count=count)
        if session is not None:
            state = state_of(session)
            if state.record is not None and state.record.key == current_key:
                if keep_current:
                    if state.remembered and state.user_id == uid:
                        # This device stays remembered: a grant newer than the revocation.
                        state.remember = "set"
                else:
                    self.reset(session)
        return count

    # -- remember-me grants ----------------------------------------------------------------------

    def mark_revoked(self, user_id: str) -> None:
        """Record that ``user_id``'s sessions were ended now: every remember-me grant issued
        before this moment is refused from now on.

        Grants carry the user's *epoch* current when they were issued, a random value that each
        logout or revocation replaces; comparing epochs rather than times holds even when a
        revocation and a new grant fall in one clock tick.
        """
        now = self.clock()
        until = now + self.settings.permanent_absolute_timeout
        self.store.put_marker(_revoked_marker(user_id), secrets.token_urlsafe(12), until, now)

    def epoch(self, user_id: str) -> str:
        """The remember-me epoch of ``user_id``: empty until their sessions are first revoked."""
        return self.store.get_marker(_revoked_marker(user_id), self.clock()) or ""

    def remember_cookie_name(self, app: Flask, request: Request | None) -> str:
        """The name of the remember-me grant cookie: the session cookie's, plus ``_remember``."""
        return self.cookie(app, request).name + "_remember"

    def _signer(self, app: Flask) -> CookieSigner | None:
        keys = tuple(secret_keys(app))
        if not keys:
            return None
        cached = self._remember_signer
        if cached is None or cached[0] != keys:
            cached = (keys, CookieSigner(list(keys), "keepsake-remember", self.clock))
            self._remember_signer = cached
        return cached[1]

    def remember_grant(self, app: Flask, request: Request, user_id: str) -> float | None:
        """When the request's remember-me grant for ``user_id`` was issued, if it is valid.

        Valid means: signed with a current or fallback ``SECRET_KEY``, for this user, younger
        than ``KEEPSAKE_PERMANENT_ABSOLUTE_TIMEOUT``, and issued since the user's sessions were
        last revoked or logged out (in the user's current epoch).
        """
        signer = self._signer(app)
        values = cookie_values(request, self.remember_cookie_name(app, request))
        if signer is None or len(values) != 1:
            return None
        try:
            payload = signer.unprotect(values[0], int(self.settings.permanent_absolute_timeout))
            owner, epoch, issued = json.loads(payload)
        except (InvalidValue, ValueError, TypeError):
            return None
        if owner != user_id or type(issued) is not float or type(epoch) is not str:
            return None
        if epoch != self.epoch(user_id):
            return None
        return issued

    def _remember_cookie(
        self,
        app: Flask,
        request: Request,
        response: Response,
        state: SessionState,
        now: float,
    ) -> None:
        if state.remember is None:
            return
        cookie = self.cookie(app, request)
        name = cookie.name + "_remember"
        grant = replace(cookie, name=name)
        signer = self._signer(app)
        if state.remember == "set" and state.user_id is not None and signer is not None:
            value = signer.protect(json.dumps([state.user_id, self.epoch(state.user_id), now]))
            until = now + self.settings.permanent_absolute_timeout
            self._set_cookie(response, grant, value, until)
        elif state.remember == "clear" and name in request.environ.get("HTTP_COOKIE", ""):
            self._delete_cookie(response, grant)
        state.remember = None


def _revoked_marker(user_id: str) -> str:
    return _REVOKED + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def _target(
    user_id: str | int | None, session: ServerSession | None
) -> tuple[str | None, str | None]:
    """The user meant (``user_id``, else the session's) and the key of the session's record."""
    record = None if session is None else state_of(session).record
    current_key = None if record is None else record.key
    if user_id is not None:
        return str(user_id), current_key
    return (None if session is None else session.user_id), current_key
