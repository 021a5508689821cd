"""Hostile input on every form: escaped, or refused with a clear message; never a 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from demo_helpers import api, csrf_token, sign_in
from flask.testing import FlaskClient

LONG = "A" * 10_000
MARKUP = '<script>alert("x")</script><b onmouseover=alert(1)>'
NUL = "Ada\x00Lovelace"

#: Every form of the demo: (the page that shows it, its action, the fields of a valid post).
FORMS: list[tuple[str, str, dict[str, str]]] = [
    ("/session/remember", "/session/remember", {"name": "Ada"}),
    ("/set_cookie", "/set_cookie", {"value": "hi", "max_age": "60"}),
    ("/login", "/login", {"username": "demo", "password": "demo-password"}),
    (
        "/register",
        "/register",
        {"username": "eve", "password": "long enough", "confirm": "long enough"},
    ),
    ("/cookies", "/consent", {"choice": "custom", "category": "preferences", "next": "/"}),
    ("/cookies", "/theme", {"theme": "dark", "next": "/"}),
    ("/session/hello", "/session/forget", {}),
]


def _post_raw(client: FlaskClient, page: str, action: str, body: bytes) -> Any:
    token = csrf_token(client.get(page).data)
    return client.post(
        action,
        data=b"csrf_token=" + token.encode() + b"&" + body,
        content_type="application/x-www-form-urlencoded",
    )


@pytest.mark.parametrize(("page", "action", "fields"), FORMS)
@pytest.mark.parametrize("hostile", [LONG, MARKUP, NUL, "\udcff"])
def test_every_form_survives_hostile_values(
    client: FlaskClient, page: str, action: str, fields: dict[str, str], hostile: str
) -> None:
    """Each field of each form, given a hostile value, gets a 2xx, 3xx or 4xx, never a 5xx."""
    for field in fields or {"x": ""}:
        data = dict(fields, **{field: hostile})
        # Percent-encode byte by byte, so a lone surrogate becomes the non-UTF-8 byte 0xFF.
        encoded = "&".join(
            k + "=" + "".join(f"%{b:02X}" for b in v.encode("utf-8", "surrogateescape"))
            for k, v in data.items()
        )
        response = _post_raw(client, page, action, encoded.encode())
        assert response.status_code < 500, (action, field, response.status_code)
        assert MARKUP not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (LONG, "Use at most 64 characters."),
        (NUL, "Control characters (such as NUL, tabs or line breaks) are not allowed here."),
        ("line\nbreak", "Control characters"),
    ],
)
def test_session_name_refused_with_reason(client: FlaskClient, name: str, message: str) -> None:
    """Too long or with control characters: a 400 that says why, and nothing kept."""
    token = csrf_token(client.get("/session/remember").data)
    response = client.post("/session/remember", data={"csrf_token": token, "name": name})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert "name" not in api(client)["keys"]


def test_session_name_markup_is_kept_as_text_and_escaped(client: FlaskClient) -> None:
    """Markup is a legal name: kept as typed, and shown escaped on every page."""
    token = csrf_token(client.get("/session/remember").data)
    name = "<i>Ada</i>"
    response = client.post("/session/remember", data={"csrf_token": token, "name": name})
    assert response.status_code == 200
    for html in (
        response.get_data(as_text=True),
        client.get("/session/hello").get_data(as_text=True),
        client.get("/session").get_data(as_text=True),
        client.get("/session/flask").get_data(as_text=True),
    ):
        assert "<i>Ada</i>" not in html
        assert "&lt;i&gt;Ada&lt;/i&gt;" in html


def test_session_name_not_utf8_multipart_refused(client: FlaskClient) -> None:
    """Bytes that are not UTF-8 (a multipart post) are refused as unreadable, not stored."""
    token = csrf_token(client.get("/session/remember").data)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
        + token.encode()
        + b'\r\n--b\r\nContent-Disposition: form-data; name="name"\r\n\r\n\xff\xfeAda\r\n--b--\r\n'
    )
    response = client.post(
        "/session/remember", data=body, content_type="multipart/form-data; boundary=b"
    )
    assert response.status_code == 400
    assert "not valid UTF-8" in response.get_data(as_text=True)
    assert "name" not in api(client)["keys"]


def test_session_name_not_utf8_urlencoded_never_stored(client: FlaskClient) -> None:
    """Raw non-UTF-8 bytes in a urlencoded body never end up in the session."""
    response = _post_raw(client, "/session/remember", "/session/remember", b"name=\xff\xfeAda")
    assert response.status_code == 400
    assert "name" not in api(client)["keys"]


def test_hostile_input_while_signed_in(client: FlaskClient) -> None:
    """The same hostile name, signed in: refused, and the sign-in untouched."""
    sign_in(client)
    token = csrf_token(client.get("/session/remember").data)
    response = client.post("/session/remember", data={"csrf_token": token, "name": LONG})
    assert response.status_code == 400
    assert api(client)["user"] == "demo"


@pytest.mark.parametrize(
    "path",
    ["/session/remember?name=" + "A" * 10_000, "/set_cookie?value=%00", "/session/hello?x=%FF"],
)
def test_query_strings_are_ignored(client: FlaskClient, path: str) -> None:
    """Lesson pages take their input from forms only: a hostile query string changes nothing."""
    response = client.get(path)
    assert response.status_code == 200
