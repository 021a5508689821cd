"""The session lesson: remember a name, read it on another page, forget it; Flask's session."""

from __future__ import annotations

import base64
import json

from demo_helpers import api, csrf_token, post_form, session_cookie, sign_in
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from keepsake_demo.lesson import decode_without_key


def _remember(client: FlaskClient, name: str) -> TestResponse:
    return post_form(client, "/session/remember", "/session/remember", name=name)


def _record(html: str, id: str) -> str:
    start = html.index(f'id="{id}"')
    return html[start : html.index("</figure>", start)]


def test_remember_puts_the_name_in_the_session(client: FlaskClient) -> None:
    """POST /session/remember keeps the name in session["name"] and shows before and after."""
    response = _remember(client, "Ada")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<strong>Ada</strong>" in html
    assert "<code>name</code>" not in _record(html, "before")
    assert "<code>name</code></td><td><code>&#34;Ada&#34;</code>" in _record(html, "after")
    assert "name" in api(client)["keys"]


def test_remember_page_shows_the_tutorials_code(client: FlaskClient) -> None:
    """The form page shows session["name"] = ... beside what the server keeps now."""
    html = client.get("/session/remember").get_data(as_text=True)
    assert 'session["name"] = request.form["name"]' in html
    assert 'name="name"' in html
    assert 'id="after"' in html


def test_hello_reads_it_back_in_another_route_and_template(client: FlaskClient) -> None:
    """/session/hello greets by the name another request stored; its template reads session."""
    assert "Hello, stranger!" in client.get("/session/hello").get_data(as_text=True)
    _remember(client, "Ada")
    html = client.get("/session/hello").get_data(as_text=True)
    assert '<h1 id="greeting">Hello, Ada!</h1>' in html
    assert "session.name" in html  # the template's code is on the page


def test_forget_pops_only_that_key_and_the_session_lives_on(client: FlaskClient) -> None:
    """POST /session/forget removes "name" only: same handle, same visit counter."""
    client.get("/")
    _remember(client, "Ada")
    handle = api(client)["handle"]
    token = session_cookie(client)[1]
    response = post_form(client, "/session/hello", "/session/forget")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "removed <strong>Ada</strong>, and only that." in html
    assert "<code>name</code>" in _record(html, "before")
    assert "<code>name</code>" not in _record(html, "after")
    assert "<code>visits</code>" in _record(html, "after")
    body = api(client)
    assert body["handle"] == handle
    assert "name" not in body["keys"]
    assert "visits" in body["keys"]
    assert session_cookie(client)[1] == token


def test_forget_contrasts_with_signing_out(client: FlaskClient) -> None:
    """The forget page says what signing out does that pop does not."""
    sign_in(client)
    html = post_form(client, "/session/forget", "/session/forget").get_data(as_text=True)
    assert "had nothing to remove" in html
    assert "deleted on the server" in html
    assert api(client)["user"] == "demo"  # popping a key did not sign out


def test_forget_needs_csrf(client: FlaskClient) -> None:
    """Forgetting is a form post like any other: without its token, nothing changes."""
    _remember(client, "Ada")
    response = client.post("/session/forget")
    assert response.status_code == 400
    assert "name" in api(client)["keys"]


def test_flask_side_by_side_is_flasks_own_cookie(app: Flask, client: FlaskClient) -> None:
    """The page shows the cookie Flask's own session would send, which Flask itself loads."""
    _remember(client, "Ada")
    html = client.get("/session/flask").get_data(as_text=True)
    start = html.index('id="flask-cookie">Set-Cookie: session=') + len(
        'id="flask-cookie">Set-Cookie: session='
    )
    value = html[start : html.index(";", start)]
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    loaded = serializer.loads(value)
    assert loaded["name"] == "Ada"
    assert loaded["csrf_token"] == "(hidden: a secret)"


def test_flask_side_by_side_decodes_without_the_key(client: FlaskClient) -> None:
    """Anyone can read Flask's cookie: the page decodes it with base64 alone."""
    _remember(client, "Ada")
    html = client.get("/session/flask").get_data(as_text=True)
    decoded = html[
        html.index('id="flask-decoded"') : html.index("</pre>", html.index('id="flask-decoded"'))
    ]
    assert "&#34;name&#34;: &#34;Ada&#34;" in decoded


def test_flask_side_by_side_never_shows_the_token_or_secrets(client: FlaskClient) -> None:
    """Keepsake's token is shown only by its first characters; the CSRF secret never."""
    _remember(client, "Ada")
    with client.session_transaction() as sess:
        secret = sess["csrf_token"]
    _, token = session_cookie(client)
    html = client.get("/session/flask").get_data(as_text=True)
    assert token not in html
    assert token[:8] not in html
    assert f"__Host-session={token[:4]}… (43 random characters)" in html
    assert secret not in html


def test_flask_side_by_side_empty_session(client: FlaskClient) -> None:
    """A visitor with nothing stored is told to put something in first."""
    html = client.get("/session/flask").get_data(as_text=True)
    assert 'id="empty"' in html
    assert "(no session cookie yet)" in html


def test_decode_without_key_compressed_and_garbage() -> None:
    """Compressed payloads (a leading dot) are inflated; garbage says so instead of failing."""
    import zlib

    payload = base64.urlsafe_b64encode(zlib.compress(b'{"a":1}')).rstrip(b"=").decode()
    assert json.loads(decode_without_key("." + payload + ".ts.sig")) == {"a": 1}
    assert decode_without_key("!!!.x.y") == "(could not decode)"


def test_lesson_pages_linked_from_home_and_nav(client: FlaskClient) -> None:
    """Home and the header link to the session lesson and to Flask's session side by side."""
    html = client.get("/").get_data(as_text=True)
    for path in ("/session/remember", "/session/hello", "/session/forget", "/session/flask"):
        assert f'href="{path}"' in html, path


def test_remember_refuses_what_is_not_a_name_and_keeps_nothing(client: FlaskClient) -> None:
    """An empty name is refused with a reason, and the session is left as it was."""
    token = csrf_token(client.get("/session/remember").data)
    response = client.post("/session/remember", data={"csrf_token": token, "name": "   "})
    assert response.status_code == 400
    assert "Type a name first." in response.get_data(as_text=True)
    assert "name" not in api(client)["keys"]
