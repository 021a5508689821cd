"""Your devices: every session of your account, and how to end them."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from werkzeug.wrappers import Response

from .extensions import keepsake

bp = Blueprint("devices", __name__)


@bp.get("/sessions")
@login_required  # type: ignore[untyped-decorator]
def sessions() -> str:
    """List the live sessions of the signed-in user, this one marked."""
    return render_template("sessions.html", sessions=keepsake.sessions())


@bp.post("/sessions/<handle>/revoke")
@login_required  # type: ignore[untyped-decorator]
def revoke(handle: str) -> Response:
    """End one session of the signed-in user, named by its public handle."""
    this_device = handle == keepsake.current_handle
    # user_id: a user can end their own sessions only, whatever handle they send.
    if not keepsake.revoke(handle, user_id=current_user.get_id()):
        flash("That session had already ended.", "info")
        return redirect(url_for("devices.sessions"))
    if this_device:
        flash("You signed out this device.", "success")
        return redirect(url_for("auth.login"))
    flash("That device is signed out. Its next request finds no session.", "success")
    return redirect(url_for("devices.sessions"))


@bp.post("/sessions/revoke-others")
@login_required  # type: ignore[untyped-decorator]
def revoke_others() -> Response:
    """End every session of the signed-in user but this one."""
    ended = keepsake.revoke_all(keep_current=True)
    noun = "session" if ended == 1 else "sessions"
    flash(f"Signed out everywhere else: {ended} {noun} ended.", "success")
    return redirect(url_for("devices.sessions"))
