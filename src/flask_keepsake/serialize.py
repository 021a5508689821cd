"""Strict, typed JSON for session values.

The session stores the value of each session key on its own, as the JSON text that :func:`dumps`
returns, so the engine can tell which keys changed by comparing texts. :func:`loads` is the
inverse. The output is compact (``separators=(",", ":")``), ASCII only (so ``len(text)`` is its
size in bytes) and deterministic: the same value always gives the same text. Dict keys are not
sorted, because insertion order is part of a dict as Python sees it.

Supported types, as exact types (``type(x) is ...``, so subclasses are refused) and round-tripped
with their type: ``str``, ``int``, ``float`` (``nan`` and the infinities too), ``bool``, ``None``,
``list``, ``dict`` with ``str`` keys, ``tuple``, ``bytes``, :class:`datetime.datetime`,
:class:`datetime.date`, :class:`uuid.UUID` and :class:`markupsafe.Markup`. Anything else (a set, a
``Decimal``, an enum member, an ``OrderedDict``, a ``defaultdict``, a namedtuple, a dict with a
non-``str`` key, a value that contains itself, nesting deeper than :data:`MAX_DEPTH`, an ``int``
too long for :func:`str`) makes :func:`dumps` raise :class:`UnsupportedValue`, a ``TypeError``
whose message names the session key and the path inside the value. A value is never converted
silently into something that would come back different.

Format
------
JSON's own types are written as themselves. Every other type becomes a JSON object with exactly
one key, a *tag* that starts with a space, as in Flask's ``TaggedJSONSerializer``:

====================  =================  =================================================
type                  tag                payload
====================  =================  =================================================
``tuple``             ``" t"``           array of the items
``bytes``             ``" b"``           standard base64 with padding
``datetime``          ``" d"``           ``datetime.isoformat()``, microseconds and offset
``date``              ``" D"``           ``date.isoformat()``
``UUID``              ``" u"``           32 lower-case hex digits
``Markup``            ``" m"``           the markup as a string
``dict`` (escaped)    ``" di"``          ``[key, value]``
====================  =================  =================================================

A real dict whose only key starts with a space would look like a tag, so it is written in the
escaped ``" di"`` form; every dict with ``str`` keys therefore round-trips. On the way back, every
one-key object whose key starts with a space is a tag, and an unknown tag is an error. Payloads
must be in exactly the form :func:`dumps` writes (for example a UUID in braces or a date in week
form is refused), so a stored text has one meaning only.

An aware datetime comes back with a fixed-offset :class:`datetime.timezone` holding the offset it
had: a :class:`zoneinfo.ZoneInfo` (or any other ``tzinfo``) is not kept, only its offset at that
moment, and the name of a named ``timezone`` is dropped. The ``fold`` attribute is not kept
either; for an aware datetime the offset already says which of two repeated wall times it was.

Why not pickle
--------------
Unpickling runs code chosen by whoever wrote the bytes. With pickle, anyone who can write to the
session store (a shared Redis, a copied database file, a backup) can run code in every web
process; a store write becomes code execution. JSON can only ever produce data.

Why not Flask's ``TaggedJSONSerializer`` as is
-----------------------------------------------
Its datetime tag goes through an HTTP date: a naive datetime comes back aware (in UTC) and the
microseconds are lost, so a value read back is not the value stored. It also serializes through
the application's JSON provider, which silently turns a ``Decimal``, a ``date`` or a dataclass
into something else (a string, an HTTP date, a dict) instead of refusing it. And it accepts
subclasses (an ``IntEnum`` comes back as a plain ``int``). Here a value either comes back exactly
or is refused at save time with an error that names the key.
"""

from __future__ import annotations

import binascii
import json
import re
import sys
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final

from markupsafe import Markup

from .errors import KeepsakeError

__all__ = [
    "MAX_DEPTH",
    "SUPPORTED_TYPES",
    "SerializationError",
    "UnsupportedValue",
    "dumps",
    "loads",
]

#: The deepest nesting of containers (lists, dicts, tuples) that :func:`dumps` accepts. It keeps
#: reading back independent of the interpreter's recursion limit and turns a value that contains
#: itself into a clear error instead of a ``RecursionError``.
MAX_DEPTH: Final = 100

#: The types :func:`dumps` accepts, for error messages and documentation.
SUPPORTED_TYPES: Final = (
    "str, int, float, bool, None, list, dict with str keys, tuple, bytes, datetime.datetime, "
    "datetime.date, uuid.UUID and markupsafe.Markup, as exact types (not subclasses)"
)


class SerializationError(KeepsakeError, ValueError):
    """Stored session data could not be read: it is not what :func:`dumps` writes.

    Callers treat it as tampered or corrupted data (a fresh session and a security-log warning).
    The message never quotes the data, which may hold secrets.
    """


class UnsupportedValue(KeepsakeError, TypeError):
    """A session value cannot be stored: its type or shape is not supported.

    :param key: the session key holding the value.
    :param path: where inside the value the problem is, such as ``cart[2]['tags']``.
    :param reason: what was found there, such as ``a value of type set``.
    :param hint: how to fix it.
    """

    def __init__(self, key: str, path: str, reason: str, hint: str) -> None:
        self.key = key
        self.path = path
        self.reason = reason
        super().__init__(
            f"Session key {key!r} holds {reason} at {path}, which the session cannot store. {hint}"
        )


_TYPES_HINT: Final = (
    f"Supported types: {SUPPORTED_TYPES}. Convert the value first, for example a set to a "
    "sorted list or an enum member to its value."
)

# JSON's own scalar types; they need neither a check nor a tag.
_NATIVE: Final[frozenset[type]] = frozenset({str, int, float, bool, type(None)})

# Checked in this order, so the most specific base is named.
_SUPPORTED_BASES: Final = (
    Markup,
    str,
    bool,
    int,
    float,
    list,
    dict,
    tuple,
    bytes,
    datetime,
    date,
    uuid.UUID,
)

_encode_str: Final = json.encoder.encode_basestring_ascii

# check_circular is off: _scan has already refused cycles (they exceed MAX_DEPTH).
_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=True, check_circular=False, allow_nan=True, separators=(",", ":")
)


# How json writes the non-finite floats (not strict JSON, but what json.loads reads back).
_INFINITIES: Final = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


def _b64(value: bytes) -> str:
    return binascii.b2a_base64(value, newline=False).decode("ascii")


# ---------------------------------------------------------------------------------------------
# dumps


def dumps(value: Any, key: str = "value") -> str:
    """Serialize one session value to compact, ASCII-only, deterministic JSON text.

    :param value: the value of one session key; see the module documentation for the types.
    :param key: the session key, used in error messages only.
    :return: JSON text; ``len()`` of it is its size in bytes.
    :raise UnsupportedValue: (a ``TypeError``) if the value, or anything inside it, cannot be
        stored; the message names ``key`` and the path to the offending part.
    """
    t = type(value)
    # Fast paths: most session values are a single scalar.
    if t is str:
        return _encode_str(value)
    if t is int:
        try:
            return int.__repr__(value)
        except ValueError:
            raise _huge_int_error(key, key) from None
    if t is bool:
        return "true" if value else "false"
    if value is None:
        return "null"
    if t is float:
        if value != value:
            return "NaN"
        if value in _INFINITIES:
            return _INFINITIES[value]
        return float.__repr__(value)
    if t is datetime:
        return f'{{" d":"{value.isoformat()}"}}'
    if t is date:
        return f'{{" D":"{value.isoformat()}"}}'
    if t is uuid.UUID:
        return f'{{" u":"{value.hex}"}}'
    if t is bytes:
        return '{" b":"' + _b64(value) + '"}'
    if t is Markup:
        return '{" m":' + _encode_str(value) + "}"

    try:
        needs_tags = _scan(value, 0)
    except _Refused as refused:
        raise refused.error(key) from None
    try:
        return _ENCODER.encode(_tag(value) if needs_tags else value)
    except ValueError:
        # The scan checked every type; the only thing left that the encoder refuses is an int
        # longer than sys.get_int_max_str_digits(), which loads() could not read back either.
        path = _find_huge_int(value, key)
        if path is None:  # pragma: no cover - defensive: no other ValueError is known
            raise
        raise _huge_int_error(key, path) from None


class _Refused(Exception):
    """Raised inside :func:`_scan`; collects the path while the recursion unwinds."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        self.segments: list[str] = []  # innermost first
        self.containers: list[object] = []  # innermost first, parallel to segments

    def enter(self, container: object, segment: str) -> None:
        self.containers.append(container)
        self.segments.append(segment)

    def error(self, key: str) -> UnsupportedValue:
        containers = [*reversed(self.containers), self.value]  # outermost first
        segments = list(reversed(self.segments))
        paths = [key + "".join(segments[:i]) for i in range(len(containers))]
        if self.reason != _TOO_DEEP:
            return UnsupportedValue(key, paths[-1], self.reason, _TYPES_HINT)
        seen: dict[int, int] = {}
        for i, container in enumerate(containers):
            first = seen.setdefault(id(container), i)
            if first != i:
                return UnsupportedValue(
                    key,
                    paths[i],
                    f"a value that contains itself (the same object as {paths[first]})",
                    "Store a copy without the cycle, or ids that refer to each other.",
                )
        return UnsupportedValue(
            key,
            paths[-1],
            f"a value nested more than {MAX_DEPTH} levels deep",
            "Flatten the value or keep it in your database and only its id in the session.",
        )


_TOO_DEEP: Final = "too deep"


def _describe(value: object) -> str:
    t = type(value)
    name = _type_name(t)
    for base in _SUPPORTED_BASES:
        if isinstance(value, base):
            return f"a value of type {name} (a subclass of {_type_name(base)})"
    return f"a value of type {name}"


def _type_name(t: type) -> str:
    if t.__module__ == "builtins":
        return t.__qualname__
    if t is Markup:
        return "markupsafe.Markup"
    return f"{t.__module__}.{t.__qualname__}"


def _index_of(container: list[Any] | tuple[Any, ...], item: object) -> str:
    # Called only on the error path; the first occurrence of the same object fails the same way.
    for i, candidate in enumerate(container):
        if candidate is item:
            return f"[{i}]"
    return "[?]"  # pragma: no cover - the item came from the container


def _scan(value: Any, depth: int) -> bool:
    """Check a non-native value; return whether it needs tags (a transform before encoding).

    :raise _Refused: at the first unsupported part; the path is collected while unwinding.
    """
    t = type(value)
    if t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise _Refused(value, _TOO_DEEP)
        tags = t is tuple
        for item in value:
            if type(item) not in _NATIVE:
                try:
                    if _scan(item, depth + 1):
                        tags = True
                except _Refused as refused:
                    refused.enter(value, _index_of(value, item))
                    raise
        return tags
    if t is dict:
        if depth >= MAX_DEPTH:
            raise _Refused(value, _TOO_DEEP)
        tags = False
        for k, v in value.items():
            if type(k) is not str:
                raise _Refused(
                    value, f"a dict with a key of type {_type_name(type(k))} (keys must be str)"
                )
            if type(v) not in _NATIVE:
                try:
                    if _scan(v, depth + 1):
                        tags = True
                except _Refused as refused:
                    refused.enter(value, f"[{k!r}]")
                    raise
        if len(value) == 1 and next(iter(value))[:1] == " ":
            return True  # looks like a tag: needs the " di" escape
        return tags
    if t in _LEAF_TAGGERS:
        return True
    raise _Refused(value, _describe(value))


def _tag(value: Any) -> Any:
    """Turn a value that :func:`_scan` accepted into JSON-native objects with tags."""
    t = type(value)
    if t is list:
        return [x if type(x) in _NATIVE else _tag(x) for x in value]
    if t is dict:
        if len(value) == 1:
            ((k, v),) = value.items()
            v = v if type(v) in _NATIVE else _tag(v)
            return {" di": [k, v]} if k[:1] == " " else {k: v}
        return {k: v if type(v) in _NATIVE else _tag(v) for k, v in value.items()}
    if t is tuple:
        return {" t": [x if type(x) in _NATIVE else _tag(x) for x in value]}
    if t in _NATIVE:
        return value
    return _LEAF_TAGGERS[t](value)


_LEAF_TAGGERS: Final[dict[type, Callable[[Any], dict[str, str]]]] = {
    bytes: lambda v: {" b": _b64(v)},
    datetime: lambda v: {" d": v.isoformat()},
    date: lambda v: {" D": v.isoformat()},
    uuid.UUID: lambda v: {" u": v.hex},
    Markup: lambda v: {" m": str(v)},
}


def _huge_int_error(key: str, path: str) -> UnsupportedValue:
    limit = sys.get_int_max_str_digits()
    return UnsupportedValue(
        key,
        path,
        f"an int with more than {limit} digits",
        "Store it as a str, or keep it in your database.",
    )


def _find_huge_int(value: Any, path: str) -> str | None:
    t = type(value)
    if t is int:
        try:
            int.__repr__(value)
        except ValueError:
            return path
        return None
    if t is list or t is tuple:
        for i, item in enumerate(value):
            found = _find_huge_int(item, f"{path}[{i}]")
            if found is not None:
                return found
    elif t is dict:
        for k, v in value.items():
            found = _find_huge_int(v, f"{path}[{k!r}]")
            if found is not None:
                return found
    return None


# ---------------------------------------------------------------------------------------------
# loads


def loads(text: str | bytes) -> Any:
    """Read a value back from the text :func:`dumps` wrote.

    :param text: JSON text, or UTF-8 bytes of it.
    :return: the value, with its types as they were when it was stored.
    :raise SerializationError: (a ``ValueError``) if the text is not what :func:`dumps` writes:
        not UTF-8, not JSON (whitespace around the value included, which dumps() never
        writes), an unknown tag, or a tag whose payload is not in the form dumps() writes.
    :raise TypeError: if ``text`` is neither ``str`` nor ``bytes`` (a programming error).
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SerializationError("Session data is not UTF-8 text.") from None
    elif not isinstance(text, str):
        raise TypeError(f"loads() takes str or bytes, not {type(text).__name__}")
    try:
        # raw_decode skips the whitespace handling of decode(): dumps() writes none.
        value, end = _DECODER.raw_decode(text)
    except SerializationError:
        raise
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError, an int too long to parse, or nesting too deep for the parser; none of
        # these messages quotes the data.
        raise SerializationError(f"Session data is not valid JSON: {exc}") from None
    if end != len(text):
        raise SerializationError(f"Session data has extra text after the value at char {end}.")
    return value


def _untag(obj: dict[str, Any]) -> Any:
    # Called by the C scanner for every JSON object, innermost first.
    if len(obj) != 1:
        return obj
    tag = next(iter(obj))
    if tag[:1] != " ":
        return obj
    untag = _UNTAGGERS.get(tag)
    if untag is None:
        raise SerializationError(f"Session data holds an unknown tag {tag[:16]!r}.")
    return untag(obj[tag])


def _malformed(tag: str, expected: str) -> SerializationError:
    return SerializationError(f"Session data holds a {tag!r} tag whose payload is not {expected}.")


def _untag_tuple(payload: Any) -> tuple[Any, ...]:
    if type(payload) is not list:
        raise _malformed(" t", "an array")
    return tuple(payload)


def _untag_bytes(payload: Any) -> bytes:
    if type(payload) is str:
        try:
            raw = binascii.a2b_base64(payload, strict_mode=True)
        except ValueError:
            pass
        else:
            if _b64(raw) == payload:
                return raw
    raise _malformed(" b", "base64")


# CPython 3.11's fromisoformat reads "-00:00:00.000001" as UTC, losing the sign of an offset
# under one second; texts it gets wrong take this slower path, which reads the offset itself.
_DATETIME_RE: Final = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?)"
    r"([+-])(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{6}))?)?",
    re.ASCII,
)


def _untag_datetime(payload: Any) -> datetime:
    if type(payload) is str:
        try:
            value = datetime.fromisoformat(payload)
        except ValueError:
            pass
        else:
            if value.isoformat() == payload:
                return value
            match = _DATETIME_RE.fullmatch(payload)
            if match is not None:
                naive, sign, hours, minutes, seconds, micros = match.groups()
                offset = timedelta(
                    hours=int(hours),
                    minutes=int(minutes),
                    seconds=int(seconds or 0),
                    microseconds=int(micros or 0),
                )
                try:
                    tz = timezone(-offset if sign == "-" else offset)
                    value = datetime.fromisoformat(naive).replace(tzinfo=tz)
                except ValueError:
                    pass
                else:
                    if value.isoformat() == payload:
                        return value
    raise _malformed(" d", "an ISO 8601 datetime")


def _untag_date(payload: Any) -> date:
    if type(payload) is str:
        try:
            value = date.fromisoformat(payload)
        except ValueError:
            pass
        else:
            if value.isoformat() == payload:
                return value
    raise _malformed(" D", "an ISO 8601 date")


def _untag_uuid(payload: Any) -> uuid.UUID:
    if type(payload) is str and len(payload) == 32:
        try:
            value = uuid.UUID(hex=payload)
        except ValueError:
            pass
        else:
            if value.hex == payload:
                return value
    raise _malformed(" u", "32 lower-case hex digits")


def _untag_markup(payload: Any) -> Markup:
    if type(payload) is not str:
        raise _malformed(" m", "a string")
    # The payload was a Markup when it was stored, and only the server writes the store: the same
    # trust Flask's own session gives its " m" tag.
    return Markup(payload)  # noqa: S704


def _untag_dict(payload: Any) -> dict[str, Any]:
    if (
        type(payload) is not list
        or len(payload) != 2
        or type(payload[0]) is not str
        or payload[0][:1] != " "
    ):
        raise _malformed(" di", "a [key, value] pair whose key starts with a space")
    return {payload[0]: payload[1]}


_UNTAGGERS: Final[dict[str, Callable[[Any], Any]]] = {
    " t": _untag_tuple,
    " b": _untag_bytes,
    " d": _untag_datetime,
    " D": _untag_date,
    " u": _untag_uuid,
    " m": _untag_markup,
    " di": _untag_dict,
}

_DECODER: Final = json.JSONDecoder(object_hook=_untag)
