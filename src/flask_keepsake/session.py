"""The session object that ``flask.session`` is: a dict that remembers what it loaded.

A request starts with an *unloaded* session that holds only the request and the engine. The first
time anything touches it in any way, it loads its record from the store (one call) and turns into
a plain :class:`ServerSession`, whose reads are ordinary ``dict`` reads. A request whose view
never touches the session therefore makes no store call and parses no cookie.

What the engine knows about the session (the token, the record it came from, what it loaded, a
pending rotation) lives in one :class:`SessionState` object, never in the dict, so it never mixes
with session data and one call (:meth:`SessionState.reset`) forgets it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from flask import has_request_context
from flask import request as request_proxy
from flask import session as session_proxy
from flask.sessions import SessionMixin

if TYPE_CHECKING:
    from flask import Request

    from .stores.base import SessionRecord

#: Where :func:`new_unloaded` leaves a weak reference to the request's session.
_ENVIRON_KEY: Final = "flask_keepsake.session"

__all__ = [
    "ServerSession",
    "SessionState",
    "current_session",
    "is_loaded",
    "quiet_from_now",
    "state_of",
]


class SessionState:
    """The engine's knowledge of one request's session (never part of the session data).

    Attributes are set by the engine; applications use :class:`ServerSession`'s properties and
    the :class:`~flask_keepsake.Keepsake` API instead.
    """

    __slots__ = (
        "absolute_until",
        "auth_time",
        "decoded",
        "expires",
        "loaded",
        "lost_freshness",
        "persistent",
        "record",
        "remember",
        "remembered",
        "rotate",
        "rotated",
        "stale_cookie",
        "token",
        "unavailable",
        "user_id",
    )

    def __init__(self) -> None:
        self.reset()
        #: The store failed while loading: the response becomes a 503, whatever produced it.
        self.unavailable = False

    def reset(self) -> None:
        """Forget the stored session: what a logout or revocation leaves behind."""
        #: The cookie value sent by the client, if it had the shape of a token and was adopted.
        self.token: str | None = None
        #: The request carried a session cookie that was not adopted (malformed, unknown,
        #: expired, revoked): remove it from the browser unless a new session replaces it.
        self.stale_cookie = False
        #: The request carried a token that was rotated away less than the grace window ago.
        self.rotated = False
        #: The stored record this session came from, or None.
        self.record: SessionRecord | None = None
        #: Serialized value of every key as loaded, to compute the delta at save.
        self.loaded: dict[str, str] = {}
        #: The values decoded at load and the texts they came from, so that saving can skip
        #: serializing an immutable value that is still the very object loaded.
        self.decoded: tuple[dict[str, Any], dict[str, str]] = ({}, {})
        #: Pending token change: None, "login" or "regenerate".
        self.rotate: str | None = None
        #: The user the session is bound to (from the record, or set by login).
        self.user_id: str | None = None
        self.auth_time: float | None = None
        #: The server-side expiry this request gives the session (epoch seconds), once known.
        self.expires: float | None = None
        #: Remember-me bookkeeping for this response: None, "set" or "clear".
        self.remember: str | None = None
        #: The user asked to be remembered on this device (kept in the record).
        self.remembered = False
        #: Whether the session is persistent (remembered, or ``session.permanent``), once known.
        self.persistent = False
        #: A persistent session came back after a long idle gap: no longer a fresh sign-in.
        self.lost_freshness = False
        #: A login restored from a remember-me grant may not outlive the grant (epoch seconds).
        self.absolute_until: float | None = None


class ServerSession(dict[str, Any], SessionMixin):
    """A loaded server-side session: the ``dict`` API of Flask's session.

    ``modified`` is set by mutating methods like Flask's own session, but Keepsake does not rely
    on it: at the end of the request it compares each key's serialized value with what was loaded,
    so in-place changes such as ``session["cart"].append(x)`` are saved too.
    """

    #: Whether this session has no stored record yet.
    new: bool
    #: Whether a mutating method was called during this request.
    modified: bool
    #: Whether the session was read or written during this request.
    accessed: bool

    _request: Request | None
    _loader: Callable[[ServerSession], None] | None
    _state: SessionState
    #: Flask is handling an exception: a store failure while loading must not raise again.
    _quiet: bool

    # Class-level defaults keep creating a session cheap: it happens on every request, and
    # most attributes keep these values.
    new = True
    modified = False
    accessed = True
    _request = None
    _loader = None
    _quiet = False

    # Mutations mark the session modified, the way Flask's CallbackDict-based session does.
    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        self.modified = True

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, key)
        self.modified = True

    def __ior__(self, other: Any) -> ServerSession:  # type: ignore[override,misc]
        dict.update(self, other)
        self.modified = True
        return self

    def clear(self) -> None:
        dict.clear(self)
        self.modified = True

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self.modified = True
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple[str, Any]:
        item = dict.popitem(self)
        self.modified = True
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self.modified = True
        return dict.setdefault(self, key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        dict.update(self, *args, **kwargs)
        self.modified = True

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to by :meth:`Keepsake.login`, or ``None``."""
        return self._state.user_id

    @property
    def handle(self) -> str | None:
        """The public handle of the stored session, or ``None`` before it is stored."""
        state = self._state
        return state.record.handle if state.record is not None and state.rotate is None else None

    def _loaded_self(self) -> ServerSession:
        # Reached through the flask.session proxy, this is the session object itself, loaded:
        # the one public way to get at it (the request context is Flask's business).
        if type(self) is _UnloadedSession:
            assert self._loader is not None
            self._loader(self)
        return self

    def _handling_error(self) -> None:
        self._quiet = True

    def __reduce__(self) -> Any:
        # A session is bound to one request; copying it elsewhere would copy engine state too.
        return (dict, (dict(self),))


class _UnloadedSession(ServerSession):
    """A session that has not touched the store yet; any use loads it first."""

    def __init__(self, request: Request, loader: Callable[[ServerSession], None]) -> None:
        self.accessed = False
        self._request = request
        self._loader = loader


def _loading(name: str) -> Callable[..., Any]:
    def method(self: ServerSession, *args: Any, **kwargs: Any) -> Any:
        if type(self) is _UnloadedSession:
            assert self._loader is not None
            self._loader(self)
        return getattr(ServerSession, name)(self, *args, **kwargs)

    method.__name__ = name
    return method


# Every way of looking at or changing the dict, dunder methods included, so that no path reads an
# empty dict before the record is loaded.
for _name in (
    "__getitem__",
    "__setitem__",
    "__delitem__",
    "__contains__",
    "__iter__",
    "__reversed__",
    "__len__",
    "__eq__",
    "__ne__",
    "__repr__",
    "__or__",
    "__ror__",
    "__ior__",
    "get",
    "keys",
    "values",
    "items",
    "copy",
    "clear",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "__reduce__",
):
    setattr(_UnloadedSession, _name, _loading(_name))
del _name


def new_unloaded(request: Request, loader: Callable[[ServerSession], None]) -> ServerSession:
    """An unloaded session for ``request``; ``loader`` fills it on first use."""
    session = _UnloadedSession(request, loader)
    # Weakly: the session refers to the request, and a cycle would wait for the collector.
    request.environ[_ENVIRON_KEY] = weakref.ref(session)
    return session


def mark_loaded(session: ServerSession, state: SessionState) -> None:
    """Turn an unloaded session into a plain :class:`ServerSession` (called by the loader)."""
    session._state = state
    session.__class__ = ServerSession
    session.accessed = True
    session._loader = None


def is_loaded(session: object) -> bool:
    """Whether ``session`` is a loaded :class:`ServerSession` (not an untouched one)."""
    return type(session) is ServerSession


def state_of(session: ServerSession) -> SessionState:
    """The engine state of a loaded session."""
    return session._state


def request_of(session: ServerSession) -> Request | None:
    """The request a session is being loaded for (``None`` once loaded, or for a new one)."""
    return session._request


def is_quiet(session: ServerSession) -> bool:
    """Whether the view is over for ``session`` (see :func:`quiet_from_now`)."""
    return session._quiet


def quiet_from_now() -> None:
    """The view is over (after-request hooks, or Flask's 500 page, run next): from now on, a
    store failure while loading the session leaves it empty instead of raising, and the
    response becomes the 503 when the session is saved.

    It finds the session through the request, not ``flask.session``: reading that proxy marks
    the session accessed (Flask 3.1.3), which this must not do to a session nobody used.
    """
    if has_request_context():
        ref = request_proxy.environ.get(_ENVIRON_KEY)
        session = None if ref is None else ref()
        if session is not None:
            session._handling_error()


def current_session() -> ServerSession | None:
    """The loaded Keepsake session of the current request; ``None`` outside a request or when
    ``flask.session`` is not a Keepsake session."""
    if not has_request_context():
        return None
    loaded = getattr(session_proxy, "_loaded_self", None)
    if loaded is None:
        return None
    result: ServerSession = loaded()
    return result
