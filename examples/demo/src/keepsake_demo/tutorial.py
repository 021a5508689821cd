"""The tutorial's lessons: set, read and delete a cookie, and remember the last visit.

The tutorial wrote ``resp.set_cookie('flask_tutorial', 'Hello World')``; these pages send the same
cookie the way its own advice says to (HttpOnly, SameSite, Secure where the browser allows it),
and show the exact ``Set-Cookie`` header that went out, attribute by attribute.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, make_response, render_template, request
from werkzeug.http import dump_cookie

from . import cookies, explain
from .extensions import keepsake
from .forms import CookieForm

bp = Blueprint("tutorial", __name__)

TUTORIAL_COOKIE = "flask_tutorial"
TUTORIAL_VALUE = "Hello World"

#: The header the tutorial's own code sends (``resp.set_cookie('flask_tutorial', 'Hello World')``)
TUTORIAL_HEADER = dump_cookie(TUTORIAL_COOKIE, TUTORIAL_VALUE)


def _secure() -> bool:
    """Whether cookies to this request should be Secure: the same rule as the session cookie.

    Production: always. Development on plain-HTTP localhost: not, because Safari refuses Secure
    cookies there.
    """
    return keepsake.session_cookie().secure


def _last_set_cookie(response: Response, name: str) -> str:
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    return headers[-1]


def _set_cookie_page(form: CookieForm, value: str | None, max_age: int | None) -> Response:
    response = make_response()
    header = None
    if value is not None:
        response.set_cookie(
            TUTORIAL_COOKIE,
            value,
            max_age=max_age,
            secure=_secure(),
            httponly=True,
            samesite="Lax",
        )
        header = _last_set_cookie(response, TUTORIAL_COOKIE)
    else:
        response.status_code = 400
    response.set_data(
        render_template(
            "set_cookie.html",
            form=form,
            value=value,
            max_age=max_age,
            custom=request.method == "POST",
            header=header,
            explained=explain.explain_set_cookie(header) if header else [],
            tutorial_header=TUTORIAL_HEADER,
        )
    )
    return response


@bp.get("/set_cookie")
def set_cookie() -> Response:
    """The tutorial's first lesson: set ``flask_tutorial`` = ``Hello World``."""
    form = CookieForm(formdata=None, data={"value": TUTORIAL_VALUE})
    return _set_cookie_page(form, TUTORIAL_VALUE, None)


@bp.post("/set_cookie")
def set_cookie_custom() -> Response:
    """The same lesson with a value and a ``max_age`` of your choice, checked first."""
    form = CookieForm()
    if not form.validate_on_submit():
        # Refused with the reason beside the field; no cookie is sent.
        return _set_cookie_page(form, None, None)
    return _set_cookie_page(form, form.value.data, form.max_age.data)


@bp.get("/read_cookie")
def read_cookie() -> str:
    """The tutorial's second lesson: read the cookie back from the request."""
    value = request.cookies.get(TUTORIAL_COOKIE)
    session_name = keepsake.session_cookie().name
    received = [(name, name == session_name) for name in sorted(request.cookies)]
    return render_template("read_cookie.html", value=value, received=received)


@bp.get("/delete_cookie")
def delete_cookie() -> Response:
    """The tutorial's third lesson: delete the cookie (send it again, already expired)."""
    had = TUTORIAL_COOKIE in request.cookies
    response = make_response()
    # The same attributes it was set with: browsers only replace a cookie with the same name,
    # path and domain, and Secure/SameSite keep the deleting header acceptable to them.
    response.delete_cookie(TUTORIAL_COOKIE, secure=_secure(), httponly=True, samesite="Lax")
    header = _last_set_cookie(response, TUTORIAL_COOKIE)
    response.set_data(
        render_template(
            "delete_cookie.html",
            header=header,
            had=had,
            explained=explain.explain_set_cookie(header),
        )
    )
    return response


@bp.get("/last-visit")
def last_visit() -> Response:
    """The tutorial's exercise: the date and time of this visit kept in a cookie."""
    # A signed cookie holding a datetime: it comes back as a datetime, and a value changed in
    # the browser (or one too old) reads as None.
    previous = cookies.last_visit.get()
    if not isinstance(previous, datetime):
        previous = None
    now = datetime.now(UTC).replace(microsecond=0)
    response = make_response()
    cookies.last_visit.set(response, now)
    names = (cookies.last_visit.secure_name, cookies.last_visit.plain_name)
    header = next(h for h in response.headers.getlist("Set-Cookie") if h.split("=")[0] in names)
    response.set_data(
        render_template(
            "last_visit.html",
            previous=previous,
            now=now,
            header=header,
            explained=explain.explain_set_cookie(header),
        )
    )
    return response
