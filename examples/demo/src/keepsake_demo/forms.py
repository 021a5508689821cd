"""The demo's forms. Every one carries Flask-WTF's CSRF token (``csrf_token``)."""

from __future__ import annotations

import unicodedata
from typing import Any, Final

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, PasswordField, StringField
from wtforms.validators import (
    DataRequired,
    EqualTo,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from .accounts import PASSWORD_MIN_LENGTH, USERNAME_RE

_LENGTH = Length(
    min=PASSWORD_MIN_LENGTH,
    max=1024,
    message=f"Use at least {PASSWORD_MIN_LENGTH} characters (at most 1024).",
)


class LoginForm(FlaskForm):  # type: ignore[misc]
    """Sign in with a username and a password."""

    username = StringField(
        "Username", validators=[InputRequired()], render_kw={"autocomplete": "username"}
    )
    password = PasswordField(
        "Password",
        validators=[InputRequired()],
        render_kw={"autocomplete": "current-password"},
    )
    remember = BooleanField("Keep me signed in on this device")


class RegisterForm(FlaskForm):  # type: ignore[misc]
    """Create an account."""

    username = StringField(
        "Username",
        validators=[
            InputRequired(),
            Regexp(
                USERNAME_RE.pattern + r"\Z",
                message="3 to 32 letters, digits, dots, dashes or underscores.",
            ),
        ],
        render_kw={"autocomplete": "username"},
    )
    password = PasswordField(
        "Password",
        validators=[InputRequired(), _LENGTH],
        render_kw={"autocomplete": "new-password"},
    )
    confirm = PasswordField(
        "Repeat the password",
        validators=[InputRequired(), EqualTo("password", message="The passwords differ.")],
        render_kw={"autocomplete": "new-password"},
    )


class PasswordForm(FlaskForm):  # type: ignore[misc]
    """Change the password of the signed-in user."""

    current = PasswordField(
        "Current password",
        validators=[InputRequired()],
        render_kw={"autocomplete": "current-password"},
    )
    password = PasswordField(
        "New password",
        validators=[InputRequired(), _LENGTH],
        render_kw={"autocomplete": "new-password"},
    )
    confirm = PasswordField(
        "Repeat the new password",
        validators=[InputRequired(), EqualTo("password", message="The passwords differ.")],
        render_kw={"autocomplete": "new-password"},
    )


#: The longest name the session lesson keeps, and the longest value the set-cookie lesson sends.
NAME_MAX: Final = 64
COOKIE_VALUE_MAX: Final = 100
#: Browsers cap cookie lifetimes at 400 days (RFC 6265bis).
MAX_AGE_MAX: Final = 400 * 24 * 3600


def plain_text(form: Any, field: Any) -> None:
    """Refuse text a person did not type: control characters (NUL included), and the
    replacement character that stands for bytes that were not UTF-8."""
    value = field.data or ""
    if "\ufffd" in value:
        raise ValidationError(
            "Part of that text was not valid UTF-8, so it could not be read. Type it again."
        )
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValidationError(
            "Control characters (such as NUL, tabs or line breaks) are not allowed here."
        )


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class NameForm(FlaskForm):  # type: ignore[misc]
    """The session lesson: a name to keep in ``session["name"]``."""

    name = StringField(
        "Your name",
        filters=[_strip],
        validators=[
            DataRequired(message="Type a name first."),
            Length(max=NAME_MAX, message=f"Use at most {NAME_MAX} characters."),
            plain_text,
        ],
        render_kw={"autocomplete": "given-name", "maxlength": NAME_MAX},
    )


class CookieForm(FlaskForm):  # type: ignore[misc]
    """The set-cookie lesson: a value of your own, and how long the browser should keep it."""

    value = StringField(
        "Value",
        validators=[
            InputRequired(message="Type a value for the cookie."),
            Length(max=COOKIE_VALUE_MAX, message=f"Use at most {COOKIE_VALUE_MAX} characters."),
            plain_text,
        ],
        render_kw={"maxlength": COOKIE_VALUE_MAX},
    )
    max_age = IntegerField(
        "Max-Age in seconds (empty: until the browser closes)",
        validators=[
            Optional(),
            NumberRange(
                min=1,
                max=MAX_AGE_MAX,
                message=f"Use a whole number of seconds from 1 to {MAX_AGE_MAX} (400 days).",
            ),
        ],
        render_kw={"inputmode": "numeric"},
    )
