"""Accounts: register, sign in, sign out, change password.

Flask-Login's ``login_user`` and ``logout_user`` drive Keepsake: signing in gives the session a
new token (a cookie planted before sign-in is worthless after it), signing out deletes the
session on the server (a copy of the old cookie is worthless too).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.wrappers import Response

from . import accounts
from .extensions import keepsake
from .forms import LoginForm, PasswordForm, RegisterForm

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site, else ``None`` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    """Sign in; the seeded account is shown on the page."""
    if current_user.is_authenticated:
        return redirect(url_for("pages.index"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        user = accounts.authenticate(form.username.data, form.password.data)
        if user is not None:
            # remember=True makes it a persistent Keepsake session: its cookie outlives the
            # browser, and signing the device out on the devices page still ends it at once.
            login_user(user, remember=bool(form.remember.data))
            flash(f"Welcome, {user.username}. Your session has a brand-new token.", "success")
            return redirect(safe_next(request.args.get("next")) or url_for("pages.index"))
        error = "Unknown username or wrong password."
    return render_template(
        "login.html",
        form=form,
        error=error,
        demo_username=accounts.DEMO_USERNAME,
        demo_password=accounts.DEMO_PASSWORD,
    )


@bp.route("/register", methods=["GET", "POST"])
def register() -> str | Response:
    """Create an account and sign in with it."""
    if current_user.is_authenticated:
        return redirect(url_for("pages.index"))
    form = RegisterForm()
    if form.validate_on_submit():
        username = form.username.data
        user = (
            None
            if accounts.username_taken(username)
            else accounts.create_user(username, form.password.data)
        )
        if user is None:
            form.username.errors.append("That username is taken.")
        else:
            login_user(user)
            flash(f"Welcome, {user.username}. Your account is ready.", "success")
            return redirect(url_for("pages.index"))
    return render_template("register.html", form=form)


@bp.post("/logout")
def logout() -> Response:
    """Sign out: the session is deleted on the server and its cookie replaced."""
    if current_user.is_authenticated:
        logout_user()
        # A goodbye message needs somewhere to live: a new, anonymous session.
        flash(
            "You are signed out. The server deleted your session, so even a copy of the old "
            "cookie no longer works.",
            "success",
        )
    return redirect(url_for("pages.index"))


@bp.route("/password", methods=["GET", "POST"])
@login_required  # type: ignore[untyped-decorator]
def password() -> str | Response:
    """Change the password; every other session of the account ends."""
    form = PasswordForm()
    if form.validate_on_submit():
        if not accounts.check_password(current_user, form.current.data):
            form.current.errors.append("That is not your current password.")
        else:
            accounts.set_password(current_user, form.password.data)
            ended = keepsake.revoke_all(keep_current=True)
            # A privilege change: this session gets a new token too.
            keepsake.regenerate()
            others = "session" if ended == 1 else "sessions"
            flash(
                f"Password changed. {ended} other {others} of your account ended.",
                "success",
            )
            return redirect(url_for("devices.sessions"))
    return render_template("password.html", form=form)
