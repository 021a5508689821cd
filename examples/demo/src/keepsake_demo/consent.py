"""The cookie policy, the consent banner, and the theme: a preferences cookie set with consent."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
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
        return f"{hours:g} hour" + ("" if hours == 1 else "s")
    minutes = int(age.total_seconds() // 60)
    return f"{minutes} minute" + ("" if minutes == 1 else "s")


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


def used_categories(entries: list[CookiePolicyEntry] | None = None) -> list[str]:
    """The consent categories that hold at least one cookie of this demo, in the banner's order.

    Only these are offered, and "Accept all" grants only these: consent to a category with no
    cookie in it would be consent to nothing, or to whatever is added to it later.
    """
    used = {e.category for e in (policy() if entries is None else entries)}
    return [c for c in keepsake.consent().categories if c in used]


def optional_categories() -> list[str]:
    """The used categories that need consent (all but essential)."""
    return [c for c in used_categories() if c != "essential"]


#: The two ways the demo sends cookies, for the policy table's columns.
DEVELOPMENT = "development (plain HTTP on localhost, as keepsake-demo runs)"
PRODUCTION = "production (HTTPS)"
_PREFIXES = ("__Host-", "__Secure-")


@dataclass(frozen=True, slots=True)
class PolicyRow:
    """One cookie of the policy, as this mode sends it and as the other mode does."""

    entry: CookiePolicyEntry
    name: str
    flags: list[str]
    other_name: str
    other_flags: list[str]


def in_development(entry: CookiePolicyEntry) -> tuple[str, list[str]]:
    """A cookie as the development server sends it on plain-HTTP localhost.

    Keepsake's rule (docs/cookies.md): where ``KEEPSAKE_COOKIE_SECURE = "auto"`` drops ``Secure``
    from the session cookie, the remember-me grant, the consent cookie and the declared cookies
    drop ``Secure`` and their ``__Host-``/``__Secure-`` prefix too. The demo sets Flask-Login's
    own remember cookie Secure outside debug mode (``REMEMBER_COOKIE_SECURE``), without a prefix.
    """
    if _is_flask_logins(entry):
        return entry.name, [f for f in flags(entry) if f != "Secure"]
    if not entry.secure:
        return entry.name, flags(entry)
    name = entry.name
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name, [f for f in flags(entry) if f != "Secure"]


def _is_flask_logins(entry: CookiePolicyEntry) -> bool:
    return bool(entry.name == current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token"))


def in_production(entry: CookiePolicyEntry) -> tuple[str, list[str]]:
    """A cookie as it is sent over HTTPS, outside debug mode."""
    if _is_flask_logins(entry) and not entry.secure:
        # This entry was read in debug mode, where the demo leaves REMEMBER_COOKIE_SECURE off.
        return entry.name, flags(dataclasses.replace(entry, secure=True))
    return entry.name, flags(entry)


def development_mode() -> bool:
    """Whether this request gets the development cookies (no Secure, no prefix)."""
    return keepsake.session_cookie() != keepsake.session_cookie(production=True)


def policy_rows(entries: list[CookiePolicyEntry]) -> list[PolicyRow]:
    """The policy's cookies as this mode sends them, each beside the other mode's version."""
    rows = []
    for entry in entries:
        dev_name, dev_flags = in_development(entry)
        prod = in_production(entry)
        here, other = (
            ((dev_name, dev_flags), prod) if development_mode() else (prod, (dev_name, dev_flags))
        )
        rows.append(PolicyRow(entry, here[0], here[1], other[0], other[1]))
    return rows


@bp.get("/cookies")
def cookies() -> str:
    """The cookie policy, generated from the declarations, with the consent and theme forms."""
    entries = policy()
    dev = development_mode()
    return render_template(
        "cookies.html",
        entries=entries,
        rows=policy_rows(entries),
        mode=DEVELOPMENT if dev else PRODUCTION,
        other_mode=PRODUCTION if dev else DEVELOPMENT,
        used=used_categories(entries),
        unused=[c for c in keepsake.consent().categories if c not in used_categories(entries)],
        lifetime=lifetime,
        flags=flags,
        themes=THEMES,
    )


@bp.post("/consent")
def consent() -> Response:
    """Record the visitor's choice: all, essentials only, or the categories ticked."""
    choice = request.form.get("choice")
    offered = used_categories()
    if choice == "all":
        wanted: list[str] = offered
    elif choice == "essential":
        wanted = []
    else:
        # Client input: only the categories offered count, whatever else was posted.
        wanted = [c for c in request.form.getlist("category") if c in offered]
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
    return {
        "consent": keepsake.consent(),
        "theme": current_theme(),
        "optional_categories": optional_categories,
    }


def init_app(app: Flask) -> None:
    """Give every template the visitor's consent and theme."""
    app.context_processor(_template_context)
    app.jinja_env.globals["category_notes"] = CATEGORY_NOTES
