"""The cookie policy, the consent banner, and the theme: a preferences cookie set with consent."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from flask_keepsake import CookiePolicyEntry

from .auth import safe_next
from .cookies import THEMES, current_theme, theme
from .extensions import keepsake

bp = Blueprint("consent", __name__)

#: What each consent category means, for the banner and the policy page.
CATEGORY_NOTES: dict[str, str] = {
    "essential": "Needed for the site to work: your session and your cookie choice. Always on.",
    "preferences": "Remember choices you make, such as your colour theme.",
    "analytics": "Count visits and measure use. This demo has none.",
    "marketing": "Follow you across sites for advertising. This demo has none.",
}


def policy() -> list[CookiePolicyEntry]:
    """Every cookie the demo can set: the session, remember-me, consent and declared cookies."""
    return keepsake.cookie_policy()


def lifetime(entry: CookiePolicyEntry) -> str:
    """How long a cookie lasts, in words."""
    age = entry.max_age
    if age is None:
        return "until you close the browser"
    if age >= timedelta(days=2):
        return f"{age.days} days"
    hours = age.total_seconds() / 3600
    if hours >= 1:
        return f"{hours:g} hours"
    return f"{int(age.total_seconds() // 60)} minutes"


def flags(entry: CookiePolicyEntry) -> list[str]:
    """The attributes and protections of a cookie, as short labels."""
    out = []
    if entry.secure:
        out.append("Secure")
    if entry.httponly:
        out.append("HttpOnly")
    out.append(f"SameSite={entry.samesite}")
    if entry.signed:
        out.append("signed")
    if entry.encrypted:
        out.append("encrypted")
    return out


def _used_categories(entries: list[CookiePolicyEntry]) -> list[str]:
    used = {e.category for e in entries}
    return [c for c in keepsake.consent().categories if c in used]


@bp.get("/cookies")
def cookies() -> str:
    """The cookie policy, generated from the declarations, with the consent and theme forms."""
    entries = policy()
    return render_template(
        "cookies.html",
        entries=entries,
        used=_used_categories(entries),
        lifetime=lifetime,
        flags=flags,
        themes=THEMES,
    )


@bp.post("/consent")
def consent() -> Response:
    """Record the visitor's choice: all, essentials only, or the categories ticked."""
    choice = request.form.get("choice")
    current = keepsake.consent()
    if choice == "all":
        wanted: list[str] = list(current.categories)
    elif choice == "essential":
        wanted = []
    else:
        wanted = request.form.getlist("category")
    response = redirect(safe_next(request.form.get("next")) or url_for("consent.cookies"))
    granted = keepsake.set_consent(response, wanted)
    others = sorted(granted.granted - {"essential"})
    if others:
        flash(f"Saved: essential cookies and {', '.join(others)} cookies.", "success")
    else:
        flash("Saved: essential cookies only.", "success")
    return response


@bp.post("/theme")
def choose_theme() -> Response:
    """Save the colour theme in the preferences cookie, if the visitor allows preferences."""
    value = request.form.get("theme", "")
    response = redirect(safe_next(request.form.get("next")) or url_for("consent.cookies"))
    if value not in THEMES:
        flash("Pick one of the themes offered.", "info")
    elif theme.set(response, value):
        flash(f"Theme saved: {value}. It lives in a signed preferences cookie.", "success")
    else:
        flash(
            "Not saved: your theme would live in a preferences cookie, and you have not "
            "accepted preferences cookies. Accept them below, then pick the theme again.",
            "info",
        )
    return response


def _template_context() -> dict[str, Any]:
    # Read from cookies only, never from the session, so error pages can use it too.
    return {"consent": keepsake.consent(), "theme": current_theme()}


def init_app(app: Flask) -> None:
    """Give every template the visitor's consent and theme."""
    app.context_processor(_template_context)
    app.jinja_env.globals["category_notes"] = CATEGORY_NOTES
