"""Declared cookies on the wire: secure defaults, values, hostile input, round trips."""

from __future__ import annotations

import gc
import logging
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from flask import Flask, Response, make_response
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup
from werkzeug.http import parse_cookie

from flask_keepsake import CookieValueError, DeclaredCookie, Keepsake, KeepsakeError, serialize
from flask_keepsake.stores.memory import MemoryStore

from .helpers import parse_set_cookie

SECRET = "cookie-test-secret-0123456789abcdef"


def _app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY=SECRET)
    app.config.update(config)
    return app


@pytest.fixture
def app() -> Flask:
    """A test application with a secret key."""
    return _app()


@pytest.fixture
def keepsake(app: Flask) -> Keepsake:
    """Keepsake set up on ``app``."""
    return Keepsake(app, store=MemoryStore())


@pytest.fixture
def theme(keepsake: Keepsake) -> DeclaredCookie:
    """A plain essential cookie with a one-year lifetime."""
    return keepsake.cookie(
        "theme", purpose="Remembers your theme.", category="essential", max_age=365 * 86400
    )


def _set(app: Flask, cookie: DeclaredCookie, value: Any, base_url: str = "http://localhost") -> str:
    """The one Set-Cookie header that ``cookie.set(value)`` produces."""
    with app.test_request_context("/", base_url=base_url):
        response = Response()
        assert cookie.set(response, value) is True
    (header,) = response.headers.getlist("Set-Cookie")
    return header


def _read(
    app: Flask, cookie: DeclaredCookie, header: str, base_url: str = "http://localhost"
) -> Any:
    """What ``cookie.get()`` returns when the browser sends back what ``header`` set."""
    name, value, _ = parse_set_cookie(header)
    with app.test_request_context("/", base_url=base_url, headers={"Cookie": f"{name}={value}"}):
        return cookie.get("<absent>")


def _round_trip(app: Flask, cookie: DeclaredCookie, value: Any) -> Any:
    return _read(app, cookie, _set(app, cookie, value))


# -- attributes -------------------------------------------------------------------------------


def test_set_cookie_has_secure_defaults(app: Flask, theme: DeclaredCookie) -> None:
    """__Host- name, Secure, HttpOnly, SameSite=Lax, Path=/, Max-Age, no Domain."""
    name, value, attrs = parse_set_cookie(_set(app, theme, "dark"))
    assert (name, value) == ("__Host-theme", "dark")
    assert set(attrs) == {"secure", "httponly", "path", "samesite", "max-age", "expires"}
    assert (attrs["path"], attrs["samesite"], attrs["max-age"]) == ("/", "Lax", "31536000")


def test_browser_session_cookie_has_no_expiry(keepsake: Keepsake, app: Flask) -> None:
    """Without max_age the cookie lasts until the browser closes (no Max-Age, no Expires)."""
    cart = keepsake.cookie("cart", purpose="Cart.", category="essential")
    attrs = parse_set_cookie(_set(app, cart, "1"))[2]
    assert "max-age" not in attrs
    assert "expires" not in attrs


def test_script_readable_cookie_has_no_httponly(keepsake: Keepsake, app: Flask) -> None:
    """httponly=False leaves HttpOnly off, for a cookie page script must read."""
    tz = keepsake.cookie("tz", purpose="Time zone.", category="essential", httponly=False)
    assert "httponly" not in parse_set_cookie(_set(app, tz, "UTC"))[2]


def test_declared_attributes_are_sent(keepsake: Keepsake, app: Flask) -> None:
    """samesite, path, domain and partitioned are sent as declared."""
    widget = keepsake.cookie(
        "widget",
        purpose="Embedded widget state.",
        category="essential",
        samesite="None",
        path="/embed",
        domain="example.com",
        partitioned=True,
    )
    name, _, attrs = parse_set_cookie(_set(app, widget, "1"))
    assert name == "__Secure-widget"
    assert (attrs["samesite"], attrs["path"], attrs["domain"]) == ("None", "/embed", "example.com")
    assert {"secure", "partitioned"} <= set(attrs)


def test_loopback_http_in_debug_drops_secure_and_prefix() -> None:
    """In debug "auto" mode, plain HTTP to localhost gets no Secure, prefix or SameSite=None."""
    app = _app(DEBUG=True)
    keepsake = Keepsake(app, store=MemoryStore())
    widget = keepsake.cookie(
        "widget", purpose="Widget.", category="essential", samesite="None", partitioned=True
    )
    name, _, attrs = parse_set_cookie(_set(app, widget, "1", "http://127.0.0.1:5000"))
    assert name == "widget"
    assert "secure" not in attrs
    assert "partitioned" not in attrs
    assert attrs["samesite"] == "Lax"
    assert _read(app, widget, "widget=1", "http://127.0.0.1:5000") == "1"


def test_https_in_debug_keeps_secure_and_prefix() -> None:
    """In debug "auto" mode, HTTPS requests keep Secure and the prefix."""
    app = _app(DEBUG=True)
    theme = Keepsake(app, store=MemoryStore()).cookie("theme", purpose="T.", category="essential")
    name, _, attrs = parse_set_cookie(_set(app, theme, "1", "https://localhost"))
    assert name == "__Host-theme"
    assert "secure" in attrs


def test_non_loopback_http_in_debug_keeps_secure() -> None:
    """Only loopback hosts get the development exception."""
    app = _app(DEBUG=True)
    theme = Keepsake(app, store=MemoryStore()).cookie("theme", purpose="T.", category="essential")
    name, _, attrs = parse_set_cookie(_set(app, theme, "1", "http://example.com"))
    assert name == "__Host-theme"
    assert "secure" in attrs


def test_production_http_localhost_keeps_secure(app: Flask, theme: DeclaredCookie) -> None:
    """Outside debug mode even localhost gets Secure and the prefix (like the session cookie)."""
    name, _, attrs = parse_set_cookie(_set(app, theme, "1", "http://localhost"))
    assert name == "__Host-theme"
    assert "secure" in attrs


def test_cookie_secure_false_drops_secure_everywhere() -> None:
    """KEEPSAKE_COOKIE_SECURE=False (testing only) drops Secure and the prefix."""
    app = _app(KEEPSAKE_COOKIE_SECURE=False)
    theme = Keepsake(app, store=MemoryStore()).cookie("theme", purpose="T.", category="essential")
    name, _, attrs = parse_set_cookie(_set(app, theme, "1", "https://example.com"))
    assert name == "theme"
    assert "secure" not in attrs


def test_secure_false_cookie_has_no_prefix(keepsake: Keepsake, app: Flask) -> None:
    """A cookie declared secure=False is never Secure and never prefixed."""
    legacy = keepsake.cookie("legacy", purpose="L.", category="essential", secure=False)
    name, _, attrs = parse_set_cookie(_set(app, legacy, "1"))
    assert name == "legacy"
    assert "secure" not in attrs


def test_delete_sends_expired_cookie_with_same_attributes(
    app: Flask, theme: DeclaredCookie
) -> None:
    """delete() expires the cookie with the attributes it was set with."""
    with app.test_request_context("/"):
        response = Response()
        theme.delete(response)
    (header,) = response.headers.getlist("Set-Cookie")
    name, value, attrs = parse_set_cookie(header)
    assert (name, value, attrs["max-age"]) == ("__Host-theme", "", "0")
    assert {"secure", "httponly", "path", "samesite"} <= set(attrs)


def test_set_twice_sends_one_header(app: Flask, theme: DeclaredCookie) -> None:
    """Setting a cookie twice in one response leaves only the last value."""
    with app.test_request_context("/"):
        response = Response()
        response.set_cookie("other", "x")
        theme.set(response, "light")
        theme.set(response, "dark")
    headers = response.headers.getlist("Set-Cookie")
    assert [parse_set_cookie(h)[:2] for h in headers] == [("other", "x"), ("__Host-theme", "dark")]


# -- the tutorial, end to end ---------------------------------------------------------------


def test_tutorial_set_read_delete_through_client(keepsake: Keepsake, app: Flask) -> None:
    """The tutorial's set, read and delete routes work through a browser-like client."""
    tutorial = keepsake.cookie(
        "flask_tutorial", purpose="Shows the tutorial's greeting.", category="essential"
    )

    @app.get("/set_cookie")
    def set_cookie() -> Response:
        resp = make_response("Cookie Setter")
        tutorial.set(resp, "Hello World")
        return resp

    @app.get("/read_cookie")
    def read_cookie() -> str:
        return f"<h1>The cookie value is: {tutorial.get()}</h1>"

    @app.get("/delete_cookie")
    def delete_cookie() -> Response:
        resp = make_response("Cookie Deleted")
        tutorial.delete(resp)
        return resp

    client = app.test_client()
    client.get("/set_cookie")
    assert client.get("/read_cookie").text == "<h1>The cookie value is: Hello World</h1>"
    client.get("/delete_cookie")
    assert client.get_cookie("__Host-flask_tutorial") is None
    assert client.get("/read_cookie").text == "<h1>The cookie value is: None</h1>"


def test_reading_a_cookie_adds_vary_cookie(app: Flask, theme: DeclaredCookie) -> None:
    """A response whose view read a declared cookie varies on Cookie."""

    @app.get("/")
    def index() -> str:
        return str(theme.get("light"))

    client = app.test_client()
    client.set_cookie("__Host-theme", "dark")
    response = client.get("/")
    assert response.text == "dark"
    assert "Cookie" in response.vary


def test_missing_cookie_reads_default(app: Flask, theme: DeclaredCookie) -> None:
    """get() returns the default when the browser sent no such cookie."""
    with app.test_request_context("/"):
        assert theme.get() is None
        assert theme.get("light") == "light"


# -- values -----------------------------------------------------------------------------------


def test_cookie_octet_string_sent_as_is(app: Flask, theme: DeclaredCookie) -> None:
    """A str of cookie octets goes on the wire unchanged (script and tools can read it)."""
    assert parse_set_cookie(_set(app, theme, "dark-blue_2/x=y"))[1] == "dark-blue_2/x=y"


@pytest.mark.parametrize(
    "value",
    [
        "Hello World",
        "a;b",
        "evil; Domain=attacker.example",
        "a\r\nSet-Cookie: admin=1",
        "nul\x00byte",
        "thème ☕",
        '"quoted"',
        "back\\slash",
        "comma,separated",
        "~looks-encoded",
        "",
        " leading space",
    ],
)
def test_unsafe_string_is_encoded_and_round_trips(
    app: Flask, theme: DeclaredCookie, value: str
) -> None:
    """Text with spaces, ';', CR/LF, NUL, non-ASCII or quotes is encoded and comes back exact."""
    header = _set(app, theme, value)
    _name, wire, attrs = parse_set_cookie(header)
    assert "\r" not in header
    assert "\n" not in header
    assert "\x00" not in header
    assert set(attrs) == {"secure", "httponly", "path", "samesite", "max-age", "expires"}
    if value:
        assert wire.startswith("~")
    assert _read(app, theme, header) == value


@pytest.mark.parametrize(
    "value",
    [
        42,
        -1.5,
        True,
        None,
        [1, "two", [3]],
        {"a": 1, "b": [True, None]},
        (1, "x"),
        b"\x00\xffbytes",
        datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 30, 0, 123456),
        date(2026, 3, 1),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
    ],
)
def test_typed_value_round_trips(app: Flask, theme: DeclaredCookie, value: Any) -> None:
    """Non-string values go through the session's typed serializer and keep their type."""
    back = _round_trip(app, theme, value)
    assert type(back) is type(value)
    assert back == value


def test_datetime_now_round_trips(app: Flask, theme: DeclaredCookie) -> None:
    """The tutorial's exercise: the current date and time, stored in a cookie, read back."""
    now = datetime.now(UTC)
    assert _round_trip(app, theme, now) == now


def test_unsupported_type_raises_before_any_header(app: Flask, theme: DeclaredCookie) -> None:
    """A set or a Decimal raises CookieValueError and the response is unchanged."""
    with app.test_request_context("/"):
        response = Response()
        with pytest.raises(CookieValueError, match=r"Cookie 'theme' cannot hold .*set"):
            theme.set(response, {1, 2})
    assert response.headers.getlist("Set-Cookie") == []


def test_value_error_is_a_keepsake_error() -> None:
    """CookieValueError shares Keepsake's root and is a ValueError."""
    assert issubclass(CookieValueError, KeepsakeError)
    assert issubclass(CookieValueError, ValueError)


def test_5000_byte_value_refused_before_any_header(app: Flask, theme: DeclaredCookie) -> None:
    """A value that would make name plus value exceed 4096 bytes raises, writing nothing."""
    with app.test_request_context("/"):
        response = Response()
        with pytest.raises(CookieValueError, match="4096 bytes"):
            theme.set(response, "x" * 5000)
    assert response.headers.getlist("Set-Cookie") == []


def test_limit_counts_the_prefixed_name(app: Flask, theme: DeclaredCookie) -> None:
    """The 4096-byte limit is checked with the name browsers get over HTTPS."""
    fits = "x" * (4096 - len("__Host-theme"))
    assert parse_set_cookie(_set(app, theme, fits))[1] == fits
    with app.test_request_context("/"), pytest.raises(CookieValueError):
        theme.set(Response(), fits + "x")


def test_limit_counts_the_encoded_value(app: Flask, theme: DeclaredCookie) -> None:
    """Text that fits raw but not once encoded is refused."""
    with app.test_request_context("/"), pytest.raises(CookieValueError):
        theme.set(Response(), "é" * 2000)


def test_markup_refused_in_plain_cookie(app: Flask, theme: DeclaredCookie) -> None:
    """Markup is refused in a cookie the browser could change (it renders unescaped)."""
    with app.test_request_context("/"), pytest.raises(CookieValueError, match="Markup"):
        theme.set(Response(), {"note": Markup("<b>hi</b>")})


def test_forged_markup_in_plain_cookie_reads_absent(
    app: Flask, theme: DeclaredCookie, caplog: pytest.LogCaptureFixture
) -> None:
    """A client-made value that decodes to Markup is rejected, not rendered."""
    forged = "~" + _b64(serialize.dumps(Markup("<script>alert(1)</script>")))
    with caplog.at_level(logging.WARNING, "flask_keepsake.security"):
        assert _read(app, theme, f"__Host-theme={forged}") == "<absent>"
    assert "Markup" in caplog.text


def _b64(text: str) -> str:
    import base64

    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "raw",
    ["~", "~!!!", "~" + _b64("{not json"), "~" + _b64('{" x":1}'), "~" + _b64("1") + "="],
)
def test_malformed_encoded_value_reads_absent(
    app: Flask, theme: DeclaredCookie, raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A '~' value that is not base64url of serialized JSON reads as absent, with a warning."""
    with caplog.at_level(logging.WARNING, "flask_keepsake.security"):
        assert _read(app, theme, f"__Host-theme={raw}") == "<absent>"
    assert "__Host-theme" in caplog.text


def test_oversized_incoming_value_reads_absent(app: Flask, theme: DeclaredCookie) -> None:
    """A value longer than 4096 bytes is not decoded."""
    assert _read(app, theme, "__Host-theme=~" + "A" * 5000) == "<absent>"


def test_cookie_sent_twice_reads_absent(
    app: Flask, theme: DeclaredCookie, caplog: pytest.LogCaptureFixture
) -> None:
    """Two cookies of one name (cookie tossing) read as absent, with a warning."""
    cookie = "__Host-theme=dark; __Host-theme=light"
    with (
        caplog.at_level(logging.WARNING, "flask_keepsake.security"),
        app.test_request_context("/", headers={"Cookie": cookie}),
    ):
        assert theme.get() is None
    assert "sent 2 times" in caplog.text


# -- properties -------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.binary(max_size=40),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
    st.uuids(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
    ),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    return serialize.dumps(a) == serialize.dumps(b)


@given(value=VALUES)
@settings(max_examples=300, deadline=None)
def test_any_value_round_trips_or_raises(value: Any) -> None:
    """Any supported value comes back exactly (type included), or set() raises CookieValueError."""
    app = _app()
    theme = Keepsake(app, store=MemoryStore()).cookie("theme", purpose="T.", category="essential")
    try:
        header = _set(app, theme, value)
    except CookieValueError:
        return
    assert _same(_read(app, theme, header), value)


@given(value=st.text(max_size=5000))
@settings(max_examples=200, deadline=None)
def test_any_text_round_trips_or_raises_and_header_is_clean(value: str) -> None:
    """Any text round-trips or raises; the header value is plain cookie octets, never quoted."""
    app = _app()
    theme = Keepsake(app, store=MemoryStore()).cookie("theme", purpose="T.", category="essential")
    try:
        header = _set(app, theme, value)
    except CookieValueError:
        assert len(value) >= 255  # 16 bytes per character at worst: 4096 / 16
        return
    wire = header.split(";", 1)[0].split("=", 1)[1]
    assert all(0x21 <= ord(c) <= 0x7E and c not in '",;\\' for c in wire)
    assert len("__Host-theme") + len(wire) <= 4096
    assert parse_cookie(f"__Host-theme={wire}")["__Host-theme"] == wire
    assert _read(app, theme, header) == value


@given(raw=st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_any_incoming_value_reads_without_raising(raw: str) -> None:
    """Whatever the browser sends, get() returns a value or the default; it never raises."""
    app = _app()
    theme = Keepsake(app, store=MemoryStore()).cookie("theme", purpose="T.", category="essential")
    # Straight into the WSGI environ: a real server passes on bytes a test client would refuse.
    environ = {"HTTP_COOKIE": ("__Host-theme=" + raw).encode().decode("latin-1")}
    with app.test_request_context("/", environ_base=environ):
        theme.get()


# -- debug warning ----------------------------------------------------------------------------


def _debug_app() -> tuple[Flask, Keepsake]:
    app = _app(DEBUG=True)
    keepsake = Keepsake(app, store=MemoryStore())
    return app, keepsake


def test_debug_warns_about_undeclared_cookie(caplog: pytest.LogCaptureFixture) -> None:
    """In debug mode, response.set_cookie with an undeclared name logs a warning naming it."""
    app, _ = _debug_app()

    @app.get("/")
    def index() -> Response:
        resp = make_response("Cookie Setter")
        resp.set_cookie("flask_tutorial", "Hello World")
        return resp

    with caplog.at_level(logging.WARNING, "flask_keepsake"):
        app.test_client().get("/")
    assert "'flask_tutorial'" in caplog.text
    assert "never declared" in caplog.text


def test_debug_warns_once_per_name(caplog: pytest.LogCaptureFixture) -> None:
    """The warning is logged once per cookie name, not on every request."""
    app, _ = _debug_app()

    @app.get("/")
    def index() -> Response:
        resp = make_response("x")
        resp.set_cookie("flask_tutorial", "x")
        return resp

    client = app.test_client()
    with caplog.at_level(logging.WARNING, "flask_keepsake"):
        client.get("/")
        client.get("/")
    assert len([r for r in caplog.records if "never declared" in r.getMessage()]) == 1


def test_debug_does_not_warn_about_declared_cookie(caplog: pytest.LogCaptureFixture) -> None:
    """Declared cookies, the session and the consent cookie are not warned about."""
    app, keepsake = _debug_app()
    theme = keepsake.cookie("theme", purpose="T.", category="essential")

    @app.get("/")
    def index() -> Response:
        resp = make_response("x")
        theme.set(resp, "dark")
        resp.set_cookie("theme", "raw")  # declared name, even when set by hand
        keepsake.set_consent(resp, ["analytics"])
        return resp

    with caplog.at_level(logging.WARNING, "flask_keepsake"):
        app.test_client().get("/", base_url="http://localhost")
    assert "never declared" not in caplog.text


def test_debug_does_not_warn_about_deletion(caplog: pytest.LogCaptureFixture) -> None:
    """Deleting an undeclared cookie (cleaning up) is not warned about."""
    app, _ = _debug_app()

    @app.get("/")
    def index() -> Response:
        resp = make_response("Cookie Deleted")
        resp.delete_cookie("flask_tutorial")
        return resp

    with caplog.at_level(logging.WARNING, "flask_keepsake"):
        app.test_client().get("/")
    assert "never declared" not in caplog.text


def test_no_warning_outside_debug(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """Outside debug mode undeclared cookies are not checked."""
    Keepsake(app, store=MemoryStore())

    @app.get("/")
    def index() -> Response:
        resp = make_response("x")
        resp.set_cookie("flask_tutorial", "x")
        return resp

    with caplog.at_level(logging.WARNING, "flask_keepsake"):
        app.test_client().get("/")
    assert "never declared" not in caplog.text


def test_registry_does_not_keep_apps_alive() -> None:
    """A declaration made after an app is gone is not checked against it (no leak)."""
    keepsake = Keepsake(store=MemoryStore())
    keepsake.init_app(_app(KEEPSAKE_CONSENT_CATEGORIES=["social"]))
    gc.collect()
    assert keepsake.cookie("pins", purpose="P.", category="essential").name == "pins"
    assert len(keepsake._cookie_registry()._jars) == 0
