"""The session object that ``flask.session`` is: a dict that remembers what it loaded.

A request starts with an *unloaded* session that holds only the request. The first time the view
touches it in any way, it loads its record from the store (one call) and turns into a plain
:class:`ServerSession`, whose reads are ordinary ``dict`` reads. A request whose view never touches
the session therefore makes no store call and parses no cookie.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask.sessions import SessionMixin

if TYPE_CHECKING:
    from flask import Request

    from .stores.base import SessionRecord


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

    # Engine state, kept in attributes (not keys) so it never mixes with session data.
    _request: Request | None
    _loader: Callable[[ServerSession], None] | None
    #: The cookie value sent by the client, if it had the shape of a token.
    _token: str | None
    #: The request carried a session cookie that was not adopted (malformed, unknown, expired).
    _stale_cookie: bool
    #: The stored record this session came from, or None.
    _record: SessionRecord | None
    #: Serialized value of every key as loaded, to compute the delta at save.
    _loaded: dict[str, str]
    #: The values decoded at load and the texts they came from, so that saving can skip
    #: serializing an immutable value that is still the very object loaded.
    _decoded: tuple[dict[str, Any], dict[str, str]]
    #: Pending token change: None, "login" or "regenerate".
    _rotate: str | None
    #: The user the session is bound to (from the record, or set by login).
    _user_id: str | None
    _auth_time: float | None

    # Class-level defaults keep creating a session cheap: it happens on every request, and
    # most attributes keep these values. They are only ever replaced, never mutated in place.
    new = True
    modified = False
    accessed = True
    _request = None
    _loader = None
    _token = None
    _stale_cookie = False
    _record = None
    _loaded = {}
    _decoded = ({}, {})
    _rotate = None
    _user_id = None
    _auth_time = None

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
        return self._user_id

    @property
    def handle(self) -> str | None:
        """The public handle of the stored session, or ``None`` before it is stored."""
        return self._record.handle if self._record is not None and self._rotate is None else None

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


def mark_loaded(session: ServerSession) -> None:
    """Turn an unloaded session into a plain :class:`ServerSession` (called by the loader)."""
    session.__class__ = ServerSession
    session.accessed = True
    session._loader = None


def is_loaded(session: object) -> bool:
    """Whether ``session`` is a loaded :class:`ServerSession` (not an untouched one)."""
    return type(session) is ServerSession


__all__ = ["ServerSession"]
