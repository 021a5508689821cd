"""Tests for flask_keepsake.serialize: the strict, typed JSON of session values."""

from __future__ import annotations

import collections
import contextlib
import decimal
import enum
import fractions
import json
import math
import sys
import uuid
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from flask_keepsake.errors import KeepsakeError
from flask_keepsake.serialize import (
    MAX_DEPTH,
    SerializationError,
    UnsupportedValue,
    dumps,
    loads,
)


class Color(enum.IntEnum):
    RED = 1


class Mood(enum.StrEnum):
    CALM = "calm"


class MyStr(str):
    __slots__ = ()


class MyMarkup(Markup):
    __slots__ = ()


class MyDatetime(datetime):
    pass


Point = collections.namedtuple("Point", "x y")

UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def assert_same(expected: Any, actual: Any, path: str = "value") -> None:
    """Assert that two values are equal with exactly the same types, all the way down."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} is not {type(expected)}"
    if type(expected) is float:
        # repr tells nan from nan-free values and -0.0 from 0.0, which == does not.
        assert repr(actual) == repr(expected), path
    elif type(expected) in (list, tuple):
        assert len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_same(e, a, f"{path}[{i}]")
    elif type(expected) is dict:
        assert list(actual) == list(expected), f"{path}: keys or their order differ"
        for k in expected:
            assert_same(expected[k], actual[k], f"{path}[{k!r}]")
    elif type(expected) is datetime:
        assert actual.replace(tzinfo=None) == expected.replace(tzinfo=None), path
        assert actual.utcoffset() == expected.utcoffset(), path
        if expected.utcoffset() is not None:
            assert type(actual.tzinfo) is timezone, path
    else:
        assert actual == expected, path


def round_trip(value: Any) -> Any:
    """Dump a value and load it back."""
    return loads(dumps(value, "k"))


# --- round trips ------------------------------------------------------------------------------

SUPPORTED_EXAMPLES = [
    "",
    "héllo ☃ \U0001f600 \x00 \ud800",
    0,
    -(10**30),
    1.5,
    -0.0,
    1e308,
    True,
    False,
    None,
    [],
    [1, "a", None],
    {},
    {"a": 1, "b": [2]},
    (),
    (1, "a"),
    b"",
    b"\x00\xff binary",
    datetime(2024, 5, 1, 12, 30, 45, 123456),
    datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=UTC),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-23))),
    date(2024, 2, 29),
    date(1, 1, 1),
    UUID,
    Markup("<b>bold</b>"),
]


@pytest.mark.parametrize("value", SUPPORTED_EXAMPLES, ids=repr)
def test_supported_value_round_trips(value: Any) -> None:
    """Each supported type comes back equal and with the same type."""
    assert_same(value, round_trip(value))


def test_nested_combination_round_trips() -> None:
    """Tags nest inside lists, dicts and tuples and the other way round."""
    value = {
        "cart": [(1, "apple", b"\x01"), {"added": datetime(2024, 1, 1, 0, 0, 0, 1)}],
        "ids": (UUID, (date(2024, 1, 2), [Markup("<i>x</i>")])),
        "empty": [(), {}, []],
    }
    assert_same(value, round_trip(value))


@pytest.mark.parametrize(
    "value",
    [
        {" t": 1},
        {" t": [1, 2]},
        {" b": "eA=="},
        {" di": [" t", 1]},
        {" di": {" di": (1,)}},
        {" x": 1},
        {" ": None},
        {" t__": 1},
        {" t": (1,), "other": 2},
        [{" m": "<b>"}],
        ({" u": UUID},),
    ],
    ids=repr,
)
def test_dict_that_looks_like_a_tag_round_trips(value: Any) -> None:
    """A real dict whose key looks like a tag comes back as that dict."""
    assert_same(value, round_trip(value))


def test_one_key_dict_with_space_key_is_escaped() -> None:
    """A one-key dict whose key starts with a space is written in the escaped form."""
    assert dumps({" t": [1]}) == '{" di":[" t",[1]]}'


def test_dict_with_more_keys_is_not_escaped() -> None:
    """Only one-key dicts can look like a tag, so bigger dicts are written as they are."""
    assert dumps({" t": 1, " b": 2}) == '{" t":1," b":2}'


def test_tuple_and_list_are_told_apart() -> None:
    """A tuple comes back a tuple and a list a list, also inside each other."""
    value = [(1, [2, (3,)]), [4]]
    assert_same(value, round_trip(value))
    assert dumps((1, [2])) == '{" t":[1,[2]]}'


def test_markup_and_str_are_told_apart() -> None:
    """Markup comes back as Markup, and a str with the same text as str."""
    result = round_trip([Markup("<b>"), "<b>"])
    assert type(result[0]) is Markup
    assert type(result[1]) is str


def test_bool_and_int_are_told_apart() -> None:
    """True stays True and 1 stays 1."""
    result = round_trip([True, 1, False, 0])
    assert [type(x) for x in result] == [bool, int, bool, int]


def test_naive_datetime_stays_naive_with_microseconds() -> None:
    """A naive datetime comes back naive and keeps its microseconds."""
    value = datetime(2024, 5, 1, 12, 30, 45, 123456)
    result = round_trip(value)
    assert result == value
    assert result.tzinfo is None
    assert result.microsecond == 123456


def test_aware_datetime_keeps_offset_and_microseconds() -> None:
    """An aware datetime comes back with the same fixed offset and microseconds."""
    tz = timezone(timedelta(hours=5, minutes=30))
    value = datetime(2024, 5, 1, 12, 30, 45, 7, tzinfo=tz)
    result = round_trip(value)
    assert result == value
    assert result.tzinfo == tz
    assert result.microsecond == 7


def test_utc_datetime_comes_back_with_utc() -> None:
    """A UTC datetime comes back with timezone.utc itself."""
    assert round_trip(datetime(2024, 1, 1, tzinfo=UTC)).tzinfo is UTC


def test_zoneinfo_datetime_comes_back_as_its_fixed_offset() -> None:
    """A ZoneInfo datetime comes back as the same instant with the offset it had."""
    value = datetime(2024, 7, 1, 12, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    result = round_trip(value)
    assert result == value
    assert result.tzinfo == timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    "offset",
    [timedelta(microseconds=-1), timedelta(seconds=-1, microseconds=-5), timedelta(seconds=30)],
    ids=str,
)
def test_sub_minute_offset_round_trips(offset: timedelta) -> None:
    """Offsets with seconds and microseconds keep their sign and size."""
    value = datetime(2024, 1, 1, tzinfo=timezone(offset))
    assert round_trip(value).utcoffset() == offset


def test_nan_and_infinities_round_trip() -> None:
    """nan, inf and -inf come back as floats of the same kind."""
    result = round_trip([math.nan, math.inf, -math.inf])
    assert math.isnan(result[0])
    assert result[1:] == [math.inf, -math.inf]


def test_negative_zero_keeps_its_sign() -> None:
    """-0.0 comes back as -0.0, not 0.0."""
    assert math.copysign(1.0, round_trip(-0.0)) == -1.0


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (decimal.Decimal("1.5"), "decimal.Decimal"),
        (fractions.Fraction(1, 3), "fractions.Fraction"),
        (Color.RED, "Color"),
        (Mood.CALM, "Mood"),
        (collections.OrderedDict(a=1), "collections.OrderedDict"),
        (collections.defaultdict(list), "collections.defaultdict"),
        (Point(1, 2), "Point"),
        (object(), "object"),
        (1j, "complex"),
        (bytearray(b"x"), "bytearray"),
        (MyStr("x"), "MyStr"),
        (MyMarkup("x"), "MyMarkup"),
        (MyDatetime(2024, 1, 1), "MyDatetime"),
        (time(12, 0), "datetime.time"),
        (timedelta(1), "datetime.timedelta"),
        (memoryview(b"x"), "memoryview"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_unsupported_type_is_refused_with_key_and_path(value: Any, type_name: str) -> None:
    """An unsupported value, alone or nested, raises TypeError naming the key, type and path."""
    with pytest.raises(TypeError, match=r"^Session key 'k' holds a value of type \S*") as info:
        dumps(value, "k")
    assert type_name in str(info.value)
    assert " at k, " in str(info.value)
    with pytest.raises(TypeError, match=r"at k\[1\]\['x'\]\[0\], ") as info:
        dumps([0, {"x": (value,)}], "k")
    assert type_name in str(info.value)


def test_error_message_names_key_path_and_supported_types() -> None:
    """The message reads as documented: key, type, path, then the supported types."""
    cart = [{}, {}, {"tags": {"a"}}]
    with pytest.raises(UnsupportedValue) as info:
        dumps(cart, "cart")
    assert str(info.value).startswith(
        "Session key 'cart' holds a value of type set at cart[2]['tags'], which the session "
        "cannot store. Supported types: str, int, float, bool, None, list, dict with str keys, "
        "tuple, bytes, datetime.datetime, datetime.date, uuid.UUID and markupsafe.Markup"
    )
    assert info.value.key == "cart"
    assert info.value.path == "cart[2]['tags']"


def test_subclass_error_names_the_supported_base() -> None:
    """A subclass of a supported type is refused, and the message says which type it extends."""
    with pytest.raises(TypeError, match=r"of type .*Color \(a subclass of int\)"):
        dumps(Color.RED, "k")


def test_unsupported_value_is_a_keepsake_type_error() -> None:
    """The refusal is both a TypeError and a KeepsakeError."""
    with pytest.raises(UnsupportedValue) as info:
        dumps({1}, "k")
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, KeepsakeError)


@pytest.mark.parametrize("key", [1, None, (1,), True, Mood.CALM, MyStr("a"), b"a"], ids=repr)
def test_non_str_dict_key_is_refused(key: Any) -> None:
    """A dict key that is not exactly str is refused with the path of the dict."""
    with pytest.raises(TypeError, match=r"holds a dict with a key of type \S+ .* at k\[0\], "):
        dumps([{"ok": 1, key: 2}], "k")


def test_list_containing_itself_is_refused() -> None:
    """A list that contains itself raises TypeError, not RecursionError."""
    value: list[Any] = [1]
    value.append(value)
    with pytest.raises(TypeError, match=r"contains itself \(the same object as k\) at k\[1\], "):
        dumps(value, "k")


def test_dict_containing_itself_is_refused() -> None:
    """A cycle through a dict and a tuple is refused with the path where it closes."""
    value: dict[str, Any] = {}
    value["a"] = ([value],)
    with pytest.raises(TypeError, match=r"the same object as k\) at k\['a'\]\[0\]\[0\], "):
        dumps(value, "k")


def test_shared_object_without_a_cycle_is_accepted() -> None:
    """The same list twice in one value is not a cycle."""
    shared = [1]
    assert round_trip([shared, shared]) == [[1], [1]]


def nested(depth: int) -> Any:
    """A list nested ``depth`` levels deep."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_up_to_max_depth_is_accepted() -> None:
    """Containers nested MAX_DEPTH levels deep are stored."""
    assert round_trip(nested(MAX_DEPTH)) == nested(MAX_DEPTH)


def test_nesting_beyond_max_depth_is_refused() -> None:
    """One level more than MAX_DEPTH raises TypeError."""
    with pytest.raises(TypeError, match=f"nested more than {MAX_DEPTH} levels deep"):
        dumps(nested(MAX_DEPTH + 1), "k")


@pytest.mark.parametrize("wrap", [lambda n: n, lambda n: {"a": [n]}], ids=["top", "nested"])
def test_int_too_long_for_str_is_refused(wrap: Any) -> None:
    """An int longer than the interpreter's str() limit is refused, not a ValueError."""
    big = 10 ** (sys.get_int_max_str_digits() + 1)
    with pytest.raises(TypeError, match="an int with more than"):
        dumps(wrap(big), "k")


# --- output form ------------------------------------------------------------------------------


def test_output_is_deterministic() -> None:
    """Equal values built separately give the same text."""

    def build() -> Any:
        return {"a": [1, (2, b"3")], "d": datetime(2024, 1, 1, tzinfo=UTC), "u": UUID}

    assert dumps(build()) == dumps(build())


def test_dict_insertion_order_is_kept() -> None:
    """Dict keys are written in insertion order, not sorted."""
    assert dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'
    assert list(round_trip({"b": 1, "a": 2})) == ["b", "a"]


def test_output_is_compact_ascii() -> None:
    """No spaces around separators, and non-ASCII text is escaped so len() is the byte size."""
    text = dumps({"k": ["é", 1]})
    assert text == '{"k":["\\u00e9",1]}'
    assert text.isascii()


@pytest.mark.parametrize(
    "value",
    [
        "",
        'é\n"\\',
        0,
        -5,
        2**70,
        0.1,
        -0.0,
        1e300,
        math.inf,
        -math.inf,
        math.nan,
        True,
        False,
        None,
    ],
    ids=repr,
)
def test_scalar_fast_path_matches_json(value: Any) -> None:
    """A top-level scalar is written exactly as json.dumps writes it."""
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


@pytest.mark.parametrize(
    "value",
    [
        datetime(2024, 1, 1, 1, 1, 1, 1, tzinfo=timezone(timedelta(hours=-3))),
        date(2024, 1, 1),
        UUID,
        b"\x00\xfe",
        Markup('<a href="é">'),
    ],
    ids=repr,
)
def test_leaf_fast_path_matches_general_path(value: Any) -> None:
    """A top-level tagged value is written as it would be inside a list."""
    assert "[" + dumps(value) + "]" == dumps([value])


# --- malformed input --------------------------------------------------------------------------

MALFORMED = [
    "",
    "nope",
    "{",
    "[1,]",
    "{'a':1}",
    "1 2",
    " 1",
    "1 ",
    "\ufeff1",
    "1" * 5000,
    "[" * 100_000 + "]" * 100_000,
    '{" x":1}',
    '{" T":[1]}',
    '{" t":"ab"}',
    '{" t":{" t":[1]}}',
    '{" b":"not base64!"}',
    '{" b":"QR=="}',
    '{" b":"QQ"}',
    '{" b":"\u00e9\u00e9=="}',
    '{" b":1}',
    '{" d":"2020-13-01T00:00:00"}',
    '{" d":"2020-01-01"}',
    '{" d":"2020-01-01T00:00:00Z"}',
    '{" d":"2020-01-01 00:00:00"}',
    '{" d":"2020-01-01T00:00:00.000000"}',
    '{" d":"2020-01-01T00:00:00.5"}',
    '{" d":"2020-01-01T00:00:00+24:00"}',
    '{" d":"2020-01-01T00:00:00-00:00"}',
    '{" d":"2020-01-01T00:00:00-00:00:00.000000"}',
    '{" d":"2020-01-01T00:00:00+\u0661\u0662:00"}',
    '{" d":5}',
    '{" D":"2020-02-30"}',
    '{" D":"2020-W01-1"}',
    '{" D":"20200101"}',
    '{" D":null}',
    '{" u":"zz"}',
    '{" u":"{12345678-1234-5678-1234-567812345678}"}',
    '{" u":"12345678-1234-5678-1234-567812345678"}',
    '{" u":"1234567812345678123456781234567A"}',
    '{" u":"0000000000000000000000000000_001"}',
    '{" u":[]}',
    '{" m":1}',
    '{" di":{" t__":1}}',
    '{" di":[" t"]}',
    '{" di":["t",1]}',
    '{" di":[1,2]}',
    '[1,{" t":5}]',
]


@pytest.mark.parametrize("text", MALFORMED, ids=lambda s: repr(s[:40]))
def test_malformed_text_raises_serialization_error(text: str) -> None:
    """Text that dumps() never writes raises SerializationError, for str and bytes alike."""
    with pytest.raises(SerializationError):
        loads(text)
    with pytest.raises(SerializationError):
        loads(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("data", [b"\xff", b'"\xc3"', b'"\xed\xa0\x80"', b"\xfe\xff\x001"])
def test_bytes_that_are_not_utf8_raise_serialization_error(data: bytes) -> None:
    """Bytes that are not UTF-8 raise SerializationError."""
    with pytest.raises(SerializationError, match="not UTF-8"):
        loads(data)


def test_serialization_error_is_a_keepsake_value_error() -> None:
    """SerializationError is both a ValueError and a KeepsakeError."""
    assert issubclass(SerializationError, ValueError)
    assert issubclass(SerializationError, KeepsakeError)


def test_serialization_error_does_not_quote_the_data() -> None:
    """The message of a bad payload does not repeat the payload, which may be a secret."""
    with pytest.raises(SerializationError) as info:
        loads('{" u":"secret-token-value"}')
    assert "secret" not in str(info.value)


def test_loads_accepts_utf8_bytes() -> None:
    """Bytes as a store returns them read like the text."""
    assert_same({"a": (1,)}, loads(dumps({"a": (1,)}).encode()))


def test_loads_refuses_a_non_text_argument() -> None:
    """Passing something that is not str or bytes is a programming error: TypeError."""
    with pytest.raises(TypeError):
        loads(123)  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------

TAG_LIKE_KEYS = st.sampled_from([" t", " b", " d", " D", " u", " m", " di", " ", " x", " t__", ""])

fixed_offsets = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
    max_value=timedelta(hours=23, minutes=59, seconds=59, microseconds=999999),
).map(timezone)

supported_leaves = st.one_of(
    st.text(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.binary(),
    st.datetimes(timezones=st.none() | fixed_offsets | st.timezones()),
    st.dates(),
    st.uuids(),
    st.text().map(Markup),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists, tuples and str-keyed dicts of ``children``, tag look-alike keys included."""
    keys = st.text() | TAG_LIKE_KEYS
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
        st.builds(lambda k, v: {k: v}, TAG_LIKE_KEYS, children),
    )


supported_values = st.recursive(supported_leaves, containers, max_leaves=20)

unsupported_leaves = st.one_of(
    st.sets(st.integers(), max_size=2),
    st.frozensets(st.integers(), max_size=2),
    st.decimals(),
    st.fractions(),
    st.complex_numbers(),
    st.sampled_from(Color),
    st.sampled_from(Mood),
    st.builds(object),
    st.binary().map(bytearray),
    st.times(),
    st.timedeltas(),
    st.text().map(MyStr),
    st.text().map(MyMarkup),
    st.integers(min_value=10**4400, max_value=10**4401),
)


def mixed_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Supported containers plus subclasses of them and dicts with non-str keys."""
    return st.one_of(
        containers(children),
        st.dictionaries(st.text(), children, max_size=3).map(collections.OrderedDict),
        st.dictionaries(st.text(), children, max_size=3).map(
            lambda d: collections.defaultdict(list, d)
        ),
        st.builds(Point, children, children),
        st.dictionaries(st.integers() | st.none() | st.sampled_from(Mood), children, max_size=3),
    )


mixed_values = st.recursive(supported_leaves | unsupported_leaves, mixed_containers, max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(supported_values)
def test_any_supported_value_round_trips_exactly(value: Any) -> None:
    """Any value built from supported types comes back equal with the same types."""
    text = dumps(value, "k")
    assert text.isascii()
    assert_same(value, loads(text))
    assert dumps(loads(text), "k") == text


@settings(max_examples=300, deadline=None)
@given(mixed_values)
def test_any_value_round_trips_or_raises_type_error(value: Any) -> None:
    """A value with unsupported parts mixed in either round-trips or raises TypeError."""
    try:
        text = dumps(value, "k")
    except UnsupportedValue as exc:
        refused: UnsupportedValue | None = exc
    else:
        refused = None
        assert_same(value, loads(text))
    if refused is not None:
        assert str(refused).startswith("Session key 'k' holds ")
        assert refused.path.startswith("k")


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text() | TAG_LIKE_KEYS, children, max_size=3)
        | st.builds(lambda k, v: {k: v}, TAG_LIKE_KEYS, children)
        | st.builds(
            lambda k, v: {k: v},
            TAG_LIKE_KEYS,
            st.text(alphabet="0123456789abcdefABCDEF-:T.+Z=/ _{}") | st.uuids().map(str),
        )
    ),
    max_leaves=10,
)


@settings(deadline=None)
@given(json_like)
def test_any_json_loads_or_raises_serialization_error(obj: Any) -> None:
    """Any JSON, with tag-shaped objects and junk payloads, loads or raises SerializationError."""
    text = json.dumps(obj, separators=(",", ":"))
    with contextlib.suppress(SerializationError):
        loads(text)


@settings(deadline=None)
@given(st.text() | st.binary())
def test_any_text_or_bytes_loads_or_raises_serialization_error(data: str | bytes) -> None:
    """Arbitrary text and bytes load or raise SerializationError, never anything else."""
    with contextlib.suppress(SerializationError):
        loads(data)
