"""Flask's ``SessionInterface`` for Keepsake: cookie in and out, token to storage key, deltas.

``open_session`` runs on every request and only wraps the request in an unloaded session; the
cookie is parsed and the store called the first time the view uses the session. ``save_session``
writes what changed: nothing for an untouched or unchanged session, one atomic delta otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from . import serialize, signals
from .errors import SessionTooLarge, StoreUnavailable
from .session import ServerSession, _UnloadedSession, mark_loaded
from .stores.base import SessionRecord, Touch
from .tokens import fingerprint, is_token, new_handle, new_token, storage_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask, Request, Response
    from werkzeug.wrappers import Response as BaseResponse

    from .config import Settings
    from .stores.base import Store

logger = logging.getLogger("flask_keepsake")
security_logger = logging.getLogger("flask_keepsake.security")

_MAX_USER_AGENT = 256

# Immutable scalar types: an object of one of these that is the very object decoded from a
# stored text serializes back to that text, so saving need not serialize it again.
_SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
_MISSING = object()


class Engine:
    """The per-application session engine, kept in ``app.extensions["keepsake"]``.

    It owns the validated settings, the store and the clock; the session interface and the
    :class:`~flask_keepsake.Keepsake` API both work through it.
    """

    def __init__(self, settings: Settings, store: Store, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.csrf_field: str | None = None
        #: Called instead of starting empty when a request carries no session cookie; set by
        #: :func:`flask_keepsake.migrate.adopt_old_sessions` to take over the old sessions.
        self.adopt: Callable[[ServerSession], None] | None = None

    # -- cookies ---------------------------------------------------------------------------

    def cookie_attributes(self, request: Request) -> tuple[str, bool, str | None, bool]:
        """Name, Secure, SameSite and Partitioned of the session cookie for ``request``."""
        s = self.settings
        if s.cookie_secure == "auto" and request.scheme == "http" and _is_loopback(request.host):
            # Safari refuses Secure cookies from http://localhost (WebKit bug 281149), so in
            # debug mode plain-HTTP loopback requests get a cookie without Secure or prefix.
            samesite = "Lax" if s.cookie_samesite == "None" else s.cookie_samesite
            return s.loopback_cookie_name, False, samesite, False
        return s.cookie_name, s.cookie_secure is not False, s.cookie_samesite, s.cookie_partitioned

    def set_cookie(
        self, response: Response, request: Request, token: str, expires: float | None
    ) -> None:
        """Send the session cookie carrying ``token``."""
        name, secure, samesite, partitioned = self.cookie_attributes(request)
        s = self.settings
        response.set_cookie(
            name,
            token,
            expires=None if expires is None else datetime.fromtimestamp(expires, UTC),
            path=s.cookie_path,
            domain=s.cookie_domain,
            secure=secure,
            httponly=s.cookie_httponly,
            samesite=samesite,
            partitioned=partitioned,
        )
        # A response that carries a session token must never be stored by a shared cache.
        _no_store(response)

    def delete_cookie(self, response: Response, request: Request) -> None:
        """Remove the session cookie, with the attributes it was issued with."""
        name, secure, samesite, partitioned = self.cookie_attributes(request)
        s = self.settings
        response.delete_cookie(
            name,
            path=s.cookie_path,
            domain=s.cookie_domain,
            secure=secure,
            httponly=s.cookie_httponly,
            samesite=samesite,
            partitioned=partitioned,
        )
        response.cache_control.no_store = True

    # -- loading ---------------------------------------------------------------------------

    def load(self, session: ServerSession) -> None:
        """Load the record named by the request's cookie into ``session`` (one store call)."""
        request = session._request
        assert request is not None
        name = self.cookie_attributes(request)[0]
        values = _cookie_values(request, name)
        if not values:
            if self.adopt is not None:
                return self.adopt(session)
            mark_loaded(session)
            return
        if len(values) > 1:
            security_logger.warning(
                "Session cookie %r sent %d times; starting a fresh session.", name, len(values)
            )
            return self._start_fresh(session)
        raw = values[0]
        if not is_token(raw):
            security_logger.warning(
                "Malformed session cookie (length %d, fingerprint %s); starting a fresh session.",
                len(raw),
                fingerprint(raw),
            )
            return self._start_fresh(session)
        record = self.store.load(storage_key(raw), self.clock())
        if record is None:
            security_logger.info(
                "Unknown, expired or revoked session token (fingerprint %s); starting a fresh "
                "session.",
                fingerprint(raw),
            )
            return self._start_fresh(session)
        try:
            values_by_key = {k: serialize.loads(v) for k, v in record.data.items()}
        except ValueError:
            security_logger.warning(
                "Stored session %s holds data that cannot be read; starting a fresh session.",
                record.handle,
            )
            return self._start_fresh(session)
        dict.update(session, values_by_key)
        session.new = False
        session._token = raw
        session._record = record
        session._loaded = record.data
        session._decoded = (values_by_key, record.data)
        session._user_id = record.user_id
        session._auth_time = record.auth_time
        mark_loaded(session)

    def _start_fresh(self, session: ServerSession) -> None:
        session._stale_cookie = True
        mark_loaded(session)

    # -- saving ----------------------------------------------------------------------------

    def serialize(self, session: ServerSession) -> dict[str, str]:
        """Serialize every value of ``session``; raise TypeError or SessionTooLarge."""
        data: dict[str, str] = {}
        size = 0
        dumps = serialize.dumps
        decoded, texts = session._decoded
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
        key: str,
        data: dict[str, str],
        now: float,
        request: Request | None,
        user_id: str | None,
        auth_time: float | None,
    ) -> SessionRecord:
        """A record for a session that starts now."""
        absolute = now + self.settings.absolute_timeout
        user_agent = request.headers.get("User-Agent") if request is not None else None
        return SessionRecord(
            key=key,
            handle=new_handle(),
            data=data,
            user_id=user_id,
            created=now,
            last_seen=now,
            expires_at=min(now + self.settings.idle_timeout, absolute),
            absolute_expires_at=absolute,
            auth_time=auth_time,
            ip=request.remote_addr if request is not None else None,
            user_agent=user_agent[:_MAX_USER_AGENT] if user_agent else None,
        )

    def save(self, app: Flask, session: ServerSession, response: Response) -> None:
        """Persist what changed in ``session`` and set or delete the cookie."""
        vary_on_cookie(response)
        if response.status_code >= 500 and not self.settings.save_on_error:
            return
        # Serialize before any store call: a TypeError or an oversized session must leave the
        # stored record exactly as it was.
        data = self.serialize(session)
        try:
            self._write(app, session, response, data)
        except StoreUnavailable as exc:
            logger.error("Session store unavailable while saving: %s", exc)
            replace_response(app, response, self.unavailable_response(app))

    def _write(
        self, app: Flask, session: ServerSession, response: Response, data: dict[str, str]
    ) -> None:
        request = session._request
        assert request is not None
        record = session._record
        now = self.clock()
        permanent = bool(dict.get(session, "_permanent", False))

        if record is None:
            if not data and session._user_id is None:
                if session._stale_cookie:
                    self.delete_cookie(response, request)
                return
            token = new_token()
            record = self.new_record(
                storage_key(token), data, now, request, session._user_id, session._auth_time
            )
            self.store.create(record)
            self._adopt(session, token, record, data)
            self.set_cookie(response, request, token, self._expiry(record, now, permanent))
            if signals.session_created.receivers:
                signals.session_created.send(app, handle=record.handle, user_id=record.user_id)
            return

        if session._rotate is not None:
            token = new_token()
            if session._rotate == "login":
                new = self.new_record(
                    storage_key(token), data, now, request, session._user_id, session._auth_time
                )
            else:
                new = replace(
                    record,
                    key=storage_key(token),
                    data=data,
                    last_seen=now,
                    expires_at=min(now + self.settings.idle_timeout, record.absolute_expires_at),
                )
            if not self.store.rename(record.key, new, now):
                if session._rotate != "login":
                    # Revoked while this request ran: the revocation wins.
                    self._forget(session, response, request)
                    return
                self.store.create(new)
            reason = session._rotate
            self._adopt(session, token, new, data)
            self.set_cookie(response, request, token, self._expiry(new, now, permanent))
            signals.session_regenerated.send(
                app, handle=new.handle, old_handle=record.handle, user_id=new.user_id, reason=reason
            )
            return

        loaded = session._loaded
        if loaded and not data:
            # Emptied during this request (session.clear(), logout by hand): like Flask, which
            # removes the cookie of a session modified to be empty, the session ends.
            self.store.delete(record.key)
            self._forget(session, response, request)
            signals.session_destroyed.send(
                app, handle=record.handle, user_id=record.user_id, reason="emptied"
            )
            return

        changed = {k: v for k, v in data.items() if loaded.get(k) != v}
        deleted = [k for k in loaded if k not in data]
        touch = None
        if now - record.last_seen >= self.settings.touch_interval:
            touch = Touch(now, min(now + self.settings.idle_timeout, record.absolute_expires_at))
        if changed or deleted:
            ok = self.store.apply(record.key, changed, deleted, now, touch)
        elif touch is not None:
            ok = self.store.touch(record.key, touch, now)
        else:
            ok = True
        if not ok:
            # Deleted, revoked or expired meanwhile: never resurrect it.
            self._forget(session, response, request)
            return
        if touch is not None:
            record.last_seen = touch.last_seen
            record.expires_at = touch.expires_at
        session._loaded = data
        if "_permanent" in changed or "_permanent" in deleted:
            refresh = True
        else:
            refresh = permanent and self.settings.refresh_each_request
        if refresh:
            assert session._token is not None
            self.set_cookie(response, request, session._token, self._expiry(record, now, permanent))

    def _expiry(self, record: SessionRecord, now: float, permanent: bool) -> float | None:
        if not permanent:
            return None
        return min(now + self.settings.permanent_lifetime, record.absolute_expires_at)

    def _adopt(
        self, session: ServerSession, token: str, record: SessionRecord, data: dict[str, str]
    ) -> None:
        session._token = token
        session._record = record
        session._loaded = data
        session._rotate = None
        session._stale_cookie = False
        session.new = False

    def _forget(self, session: ServerSession, response: Response, request: Request) -> None:
        session._record = None
        session._token = None
        session._loaded = {}
        self.delete_cookie(response, request)

    # -- errors ----------------------------------------------------------------------------

    def unavailable_response(self, app: Flask) -> Response:
        """The application's 503 response, with ``Retry-After``."""
        security_logger.error(
            "Session store %s unavailable; answering 503 Service Unavailable.",
            self.store.describe(),
        )
        exc = ServiceUnavailable(retry_after=self.settings.retry_after)
        rv: Any = app.handle_http_exception(exc)
        if isinstance(rv, HTTPException):
            rv = rv.get_response()
        response = app.make_response(rv)
        response.headers["Retry-After"] = str(self.settings.retry_after)
        response.cache_control.no_store = True
        return response


def replace_response(app: Flask, response: Response, new: Response) -> None:
    """Make ``response`` into ``new`` in place.

    ``save_session`` cannot return a different response object, and by then the view's response
    (and any cookie it set) must not reach the client.
    """
    response.status = new.status
    response.headers = Headers(new.headers)
    response.response = new.response
    response.direct_passthrough = new.direct_passthrough


@lru_cache(maxsize=16)
def _cookie_pattern(name: str) -> re.Pattern[str]:
    # Whitespace around the name is ignored, as Werkzeug's parser does.
    return re.compile(r"(?:^|;)[ \t]*" + re.escape(name) + r"[ \t]*=([^;]*)")


def _cookie_values(request: Request, name: str) -> list[str]:
    """Every value the Cookie header gives ``name``, without parsing the other cookies.

    Werkzeug parses the whole header into a MultiDict on first use of ``request.cookies``; the
    session only needs its own cookie, and anything unusual about it (quotes, odd characters)
    fails the strict token check either way.
    """
    header: str = request.environ.get("HTTP_COOKIE", "")
    if name not in header:
        return []
    return [value.strip(" \t") for value in _cookie_pattern(name).findall(header)]


def _no_store(response: Response) -> None:
    # As vary_on_cookie: response.cache_control re-serializes the header on every change, and
    # a response without Cache-Control, the usual case, needs one plain header.
    if "Cache-Control" in response.headers:
        response.cache_control.no_store = True
        response.cache_control.public = False
    else:
        response.headers["Cache-Control"] = "no-store"


def vary_on_cookie(response: BaseResponse) -> None:
    """Add ``Cookie`` to the response's ``Vary`` header unless it is already there."""
    # response.vary.add() rebuilds a HeaderSet and the header on every call; this is the same
    # result at a fraction of the per-request cost. Tokens are compared whole: "Set-Cookie" or
    # "X-Cookie-Consent" in Vary does not make a response vary on Cookie.
    headers = response.headers
    existing = headers.getlist("Vary")
    if not existing:
        headers.add("Vary", "Cookie")
        return
    tokens = {token.strip().lower() for value in existing for token in value.split(",")}
    if "cookie" not in tokens and "*" not in tokens:
        headers["Vary"] = ", ".join([*existing, "Cookie"])


@lru_cache(maxsize=256)
def _is_loopback(host: str) -> bool:
    if host.startswith("["):
        name = host[1 : host.find("]")]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    name = name.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class KeepsakeSessionInterface(SessionInterface):
    """Flask's session interface backed by a Keepsake store. Installed by ``init_app``."""

    pickle_based = False

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        """Return an unloaded session; nothing is parsed or fetched until it is used."""
        engine: Engine = app.extensions["keepsake"]
        return _UnloadedSession(request, engine.load)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save the session if the view used it; an untouched session costs nothing."""
        if type(session) is ServerSession:
            engine: Engine = app.extensions["keepsake"]
            engine.save(app, session, response)

    def get_cookie_name(self, app: Flask) -> str:
        """The production session cookie name (``__Host-session`` by default)."""
        engine: Engine = app.extensions["keepsake"]
        return engine.settings.cookie_name
