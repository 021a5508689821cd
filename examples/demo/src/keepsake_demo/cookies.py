"""Every cookie the demo sets besides the session, declared once with Keepsake.

Each declaration says what the cookie is for and its consent category; Keepsake gives it secure
defaults (Secure, HttpOnly, SameSite=Lax, the ``__Host-`` prefix over HTTPS), signs it when asked,
refuses to set a non-essential one without consent, and lists it in the cookie policy.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from .extensions import keepsake

#: The colour themes the preferences cookie can hold.
THEMES: Final = ("auto", "light", "dark")

theme = keepsake.cookie(
    "theme",
    purpose="Remembers the colour theme you picked on the cookie policy page.",
    category="preferences",
    max_age=timedelta(days=365),
    signed=True,
)

last_visit = keepsake.cookie(
    "last_visit",
    purpose=(
        "Remembers when you last opened the last-visit lesson, to tell you on your next visit "
        "(the tutorial's exercise). Set only on that page."
    ),
    category="essential",
    max_age=timedelta(days=365),
    signed=True,
)

# The tutorial's own cookie keeps the tutorial's name (no prefix). Its lesson pages set it with
# Flask's plain response.set_cookie, as the tutorial does; declaring it puts it in the policy.
flask_tutorial = keepsake.cookie(
    "flask_tutorial",
    purpose=(
        "The tutorial's example cookie (Hello World), set only when you open the set-cookie "
        "lesson and deleted by the delete-cookie lesson."
    ),
    category="essential",
    prefix=False,
)

#: What the security lesson's contrast cookie holds: nothing secret, only something to see.
SCRIPT_VISIBLE_VALUE: Final = "page-script-can-read-me"

# The security lesson's contrast cookie: httponly=False on purpose, so document.cookie shows it
# beside the session cookie that it cannot show. It holds no secret.
script_visible = keepsake.cookie(
    "script_visible",
    purpose=(
        "The security lesson's contrast: a cookie without HttpOnly, so that page script can "
        "read it and you see the difference. Set only on that page; it holds no information."
    ),
    category="essential",
    max_age=timedelta(hours=1),
    httponly=False,
)


def current_theme() -> str:
    """The visitor's theme: the preferences cookie if consented to and valid, else "auto"."""
    value = theme.get("auto")
    return value if value in THEMES else "auto"
