"""The tutorial's session lesson: remember a name across requests, read it elsewhere, forget it.

The tutorial: "a session allows you to remember information from one request to another ... across
all the routes and templates", and "delete sensitive data from the session when it is no longer
needed". Each page shows the code beside what the server keeps before and after the request, and
``/session/flask`` shows the cookie Flask's own session would have sent for the same data.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any

from flask import Blueprint, current_app, render_template, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response

from .extensions import keepsake
from .forms import NameForm
from .pages import HIDDEN_KEYS, record_rows

bp = Blueprint("lesson", __name__, url_prefix="/session")

#: What stands in for a secret value on these pages (the CSRF secret).
HIDDEN = "(hidden: a secret)"


def _record() -> dict[str, Any]:
    """What the server keeps for this visitor now: the handle and the keys with their values."""
    info = keepsake.current_session()
    return {"handle": info.handle if info else None, "rows": record_rows()}


def _render(form: NameForm, *, before: dict[str, Any] | None, status: int = 200) -> Response:
    body = render_template(
        "lesson_remember.html",
        form=form,
        name=session.get("name"),
        before=before,
        after=_record(),
    )
    return current_app.make_response((body, status))


@bp.get("/remember")
def remember() -> Response:
    """The form: type your name, and it goes into the session."""
    return _render(NameForm(), before=None)


@bp.post("/remember")
def remember_post() -> Response:
    """Keep the name typed in ``session["name"]``; refuse what is not a name, with the reason."""
    form = NameForm()
    before = _record()
    if not form.validate_on_submit():
        # Flask-WTF's own CSRF failure raises before this; what is left is the name itself.
        return _render(form, before=before, status=400)
    session["name"] = form.name.data
    return _render(form, before=before)


@bp.get("/hello")
def hello() -> str:
    """Another route, and another template, read the name back from the session."""
    return render_template("lesson_hello.html", record=_record())


@bp.get("/forget")
def forget_page() -> str:
    """The forget lesson, before you press the button."""
    return render_template("lesson_forget.html", removed=None, before=None, after=None)


@bp.post("/forget")
def forget() -> str:
    """``session.pop("name")``: that key goes, the session (and the sign-in) lives on."""
    before = _record()
    # A form post without a valid CSRF token never gets here (CSRFProtect refuses it first).
    removed = session.pop("name", None)
    return render_template("lesson_forget.html", removed=removed, before=before, after=_record())


# -- Flask's own session, side by side --------------------------------------------------------


def flask_cookie(data: dict[str, Any]) -> str | None:
    """The value of the ``session`` cookie Flask's built-in session would send for ``data``.

    Made with Flask's own ``SecureCookieSessionInterface`` and its signing serializer (the app's
    ``SECRET_KEY``, the ``cookie-session`` salt), as Flask's ``save_session`` makes it; ``None``
    when the app has no ``SECRET_KEY`` or Flask's serializer cannot hold a value.
    """
    serializer = SecureCookieSessionInterface().get_signing_serializer(current_app)
    if serializer is None:
        return None
    try:
        return serializer.dumps(data)
    except (TypeError, ValueError):
        return None


def decode_without_key(value: str) -> str:
    """What anyone who holds the cookie reads in it, with no key: the payload, base64-decoded.

    itsdangerous writes ``payload.timestamp.signature``; a payload that starts with ``.`` is
    zlib-compressed first. Nothing here needs the ``SECRET_KEY``.
    """
    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".", 1)[0]
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
        if compressed:
            raw = zlib.decompress(raw)
        return raw.decode("utf-8")
    except (binascii.Error, zlib.error, UnicodeDecodeError):
        return "(could not decode)"


def _shown_data() -> dict[str, Any]:
    # The CSRF secret is replaced: this page shows what Flask's cookie would reveal, not the
    # secret itself.
    return {k: (HIDDEN if k in HIDDEN_KEYS else v) for k, v in session.items()}


def masked_token() -> str | None:
    """The first characters of the visitor's own session token, enough to find it in the
    browser's developer tools; the whole token never goes into a page."""
    token = request.cookies.get(keepsake.session_cookie().name)
    if token is None or keepsake.current_session() is None:
        return None
    return token[:4] + "…"


@bp.get("/flask")
def flask_side_by_side() -> str:
    """The cookie Flask's own session would have sent for this very data, decoded here."""
    data = _shown_data()
    value = flask_cookie(data)
    decoded = decode_without_key(value) if value is not None else None
    try:
        pretty = json.dumps(json.loads(decoded), indent=2, ensure_ascii=False) if decoded else None
    except ValueError:
        pretty = decoded
    return render_template(
        "lesson_flask.html",
        flask_value=value,
        decoded=pretty,
        has_data=bool(data),
        cookie_name=keepsake.session_cookie().name,
        token=masked_token(),
        record=_record(),
    )
