"""The demo's forms. Every one carries Flask-WTF's CSRF token (``csrf_token``)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import EqualTo, InputRequired, Length, Regexp

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
