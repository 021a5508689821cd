"""The tutorial's lessons: set, read and delete ``flask_tutorial``, and the last visit."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from keepsake_demo.explain import describe_device, explain_set_cookie


def _set_cookie_headers(response: Any, name: str) -> list[str]:
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]


def test_set_cookie_sends_hardened_tutorial_cookie(client: FlaskClient) -> None:
    """/set_cookie sets flask_tutorial=Hello World with HttpOnly, SameSite and Secure."""
    response = client.get("/set_cookie")
    (header,) = _set_cookie_headers(response, "flask_tutorial")
    assert header == 'flask_tutorial="Hello World"; Secure; HttpOnly; Path=/; SameSite=Lax'


def test_set_cookie_page_shows_the_exact_header(client: FlaskClient) -> None:
    """The page shows the header it sent and explains each attribute."""
    response = client.get("/set_cookie")
    (header,) = _set_cookie_headers(response, "flask_tutorial")
    html = response.get_data(as_text=True)
    assert f"Set-Cookie: {header}".replace('"', "&#34;") in html
    for part in ("HttpOnly", "SameSite=Lax", "Path=/", "Secure"):
        assert f"<dt><code>{part}</code></dt>" in html
    assert "flask_tutorial=&#34;Hello World&#34;; Path=/" in html  # the tutorial's own header


def test_set_cookie_in_development_mode_is_not_secure(make_app: Any) -> None:
    """On plain-HTTP localhost in development mode the cookie goes without Secure (Safari)."""
    client = make_app(KEEPSAKE_COOKIE_SECURE="auto").test_client()
    (header,) = _set_cookie_headers(client.get("/set_cookie"), "flask_tutorial")
    assert "Secure" not in header
    assert "HttpOnly" in header


def test_read_cookie_reads_it_back(client: FlaskClient) -> None:
    """/read_cookie shows the value the browser sent, without the quotes."""
    client.get("/set_cookie")
    html = client.get("/read_cookie").get_data(as_text=True)
    assert '<span id="value">Hello World</span>' in html


def test_read_cookie_without_cookie(client: FlaskClient) -> None:
    """Without the cookie, the tutorial's page says None."""
    html = client.get("/read_cookie").get_data(as_text=True)
    assert '<span id="value">None</span>' in html


def test_read_cookie_escapes_hostile_value(client: FlaskClient) -> None:
    """A cookie is client input: a script in it is shown as text, not run."""
    client.set_cookie("flask_tutorial", "<script>alert(1)</script>")
    html = client.get("/read_cookie").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_read_cookie_never_shows_session_token(client: FlaskClient) -> None:
    """The list of received cookies names the session cookie but hides its value."""
    client.get("/")
    token = client.get_cookie("__Host-session")
    assert token is not None
    html = client.get("/read_cookie").get_data(as_text=True)
    assert "<code>__Host-session</code>" in html
    assert token.value not in html


def test_delete_cookie_expires_it_with_same_attributes(client: FlaskClient) -> None:
    """/delete_cookie sends the cookie again, empty and expired, with the same attributes."""
    client.get("/set_cookie")
    response = client.get("/delete_cookie")
    (header,) = _set_cookie_headers(response, "flask_tutorial")
    assert header.startswith("flask_tutorial=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0")
    for flag in ("Secure", "HttpOnly", "Path=/", "SameSite=Lax"):
        assert flag in header
    assert "Your browser had the cookie" in response.get_data(as_text=True)
    assert client.get_cookie("flask_tutorial") is None
    assert '<span id="value">None</span>' in client.get("/read_cookie").get_data(as_text=True)


def test_last_visit_first_then_second(client: FlaskClient) -> None:
    """The first visit says so; the next one shows the time stored by the first."""
    first = client.get("/last-visit")
    (header,) = _set_cookie_headers(first, "__Host-last_visit")
    for flag in ("Max-Age=31536000", "Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in header
    html = first.get_data(as_text=True)
    assert "This is your first visit" in html
    stored = re.search(r'This visit: <time datetime="([^"]+)"', html)
    assert stored is not None
    second = client.get("/last-visit").get_data(as_text=True)
    assert "Your last visit was" in second
    assert f'Your last visit was <time datetime="{stored.group(1)}" data-local>' in second


def test_last_visit_is_signed(client: FlaskClient) -> None:
    """A last_visit value changed by the client reads as no visit, never as an error."""
    client.get("/last-visit")
    cookie = client.get_cookie("__Host-last_visit")
    assert cookie is not None
    client.set_cookie("__Host-last_visit", cookie.value[:-2] + "xx")
    response = client.get("/last-visit")
    assert response.status_code == 200
    assert "This is your first visit" in response.get_data(as_text=True)


def test_last_visit_ignores_garbage(client: FlaskClient) -> None:
    """A last_visit cookie that does not parse counts as none."""
    client.set_cookie("__Host-last_visit", "yesterday-ish")
    response = client.get("/last-visit")
    assert response.status_code == 200
    assert "This is your first visit" in response.get_data(as_text=True)


def test_explain_deleting_cookie() -> None:
    """A deleting header is explained as a deletion, without the session-cookie remark."""
    parts = explain_set_cookie("x=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/")
    texts = [p.text for p in parts]
    assert "(no Expires, no Max-Age)" not in texts
    assert "deletes the cookie" in parts[1].meaning


def test_explain_host_prefix_and_missing_flags() -> None:
    """__Host- is explained, and a missing HttpOnly is pointed out."""
    parts = explain_set_cookie("__Host-x=1; Secure; Path=/")
    assert "__Host- prefix" in parts[0].meaning
    assert "(no HttpOnly)" in [p.text for p in parts]


def test_describe_device() -> None:
    """User agents become short device names."""
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    iphone = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
    )
    assert describe_device(firefox) == "Firefox on Linux"
    assert describe_device(iphone) == "Safari on iPhone"
    assert describe_device(None) == "Unknown device"


def _custom(client: FlaskClient, value: str, max_age: str = "") -> Any:
    from demo_helpers import post_form

    return post_form(client, "/set_cookie", "/set_cookie", value=value, max_age=max_age)


def test_set_cookie_with_your_own_value_and_max_age(client: FlaskClient) -> None:
    """POST /set_cookie sends the value chosen, for max_age seconds, and reads back the same."""
    response = _custom(client, "héllo; wörld", "120")
    assert response.status_code == 200
    (header,) = _set_cookie_headers(response, "flask_tutorial")
    assert "Max-Age=120" in header
    assert "Expires=" in header
    for flag in ("Secure", "HttpOnly", "SameSite=Lax"):
        assert flag in header
    html = response.get_data(as_text=True)
    assert "<dt><code>Max-Age=120</code></dt>" in html
    assert "max_age=120" in html
    read = client.get("/read_cookie").get_data(as_text=True)
    assert '<span id="value">héllo; wörld</span>' in read


def test_set_cookie_without_max_age_is_a_session_cookie(client: FlaskClient) -> None:
    """An empty max_age gives a cookie that ends with the browser."""
    (header,) = _set_cookie_headers(_custom(client, "plain"), "flask_tutorial")
    assert header.startswith("flask_tutorial=plain;")
    assert "Max-Age" not in header
    assert "Expires" not in header


@pytest.mark.parametrize(
    ("value", "max_age", "message"),
    [
        ("", "", "Type a value for the cookie."),
        ("x" * 101, "", "Use at most 100 characters."),
        ("a\x00b", "", "Control characters"),
        ("ok", "0", "from 1 to 34560000"),
        ("ok", "-5", "from 1 to 34560000"),
        ("ok", "34560001", "from 1 to 34560000"),
        ("ok", "soon", "Not a valid integer value."),
        ("ok", "9" * 10_000, "Not a valid integer value."),
    ],
)
def test_set_cookie_refuses_bad_values(
    client: FlaskClient, value: str, max_age: str, message: str
) -> None:
    """A bad value or lifetime is refused with the reason, and no cookie is sent."""
    response = _custom(client, value, max_age)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert not _set_cookie_headers(response, "flask_tutorial")


def test_set_cookie_custom_value_is_escaped(client: FlaskClient) -> None:
    """Markup in the chosen value is shown as text on the page."""
    html = _custom(client, "<b>x</b>").get_data(as_text=True)
    assert "<b>x</b>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
