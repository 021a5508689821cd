"""What the lesson pages say about cookies, devices and times.

Pure functions from headers and strings to explanations, so the pages stay simple and these
rules are easy to test on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup


@dataclass(frozen=True, slots=True)
class Attribute:
    """One part of a ``Set-Cookie`` header and what it does."""

    text: str
    meaning: str


def explain_set_cookie(header: str) -> list[Attribute]:
    """Split a ``Set-Cookie`` header into its parts, each with an explanation.

    Attributes the header leaves out but a reader should know about (no ``Expires``: the cookie
    ends with the browser session; no ``Domain``: only this host) are explained too.
    """
    parts = [p.strip() for p in header.split(";") if p.strip()]
    name, _, value = parts[0].partition("=")
    out = [Attribute(parts[0], _name_value(name, value))]
    seen: set[str] = set()
    for part in parts[1:]:
        key, _, val = part.partition("=")
        key_l = key.lower()
        seen.add(key_l)
        out.append(Attribute(part, _attribute(key_l, val)))
    deleting = "max-age" in seen and any(p.lower() == "max-age=0" for p in parts)
    if not deleting and "expires" not in seen and "max-age" not in seen:
        out.append(
            Attribute(
                "(no Expires, no Max-Age)",
                "A session cookie: the browser forgets it when it is closed.",
            )
        )
    if "domain" not in seen:
        out.append(
            Attribute(
                "(no Domain)",
                "Host-only: sent back only to this exact host, never to its subdomains.",
            )
        )
    if "secure" not in seen and not deleting:
        out.append(
            Attribute(
                "(no Secure)",
                "Sent over plain HTTP too, where anyone on the network can read it. The demo "
                "leaves Secure out only on http://localhost in development mode, because Safari "
                "refuses Secure cookies there; production sends it.",
            )
        )
    if "httponly" not in seen and not deleting:
        out.append(
            Attribute(
                "(no HttpOnly)",
                "Page script can read this cookie with document.cookie; an XSS bug could too.",
            )
        )
    return out


def _name_value(name: str, value: str) -> str:
    if value == "":
        text = f"The cookie {name} with an empty value."
    elif len(value) > 48:
        text = (
            f"The cookie {name}, with a {len(value)}-character value: Keepsake's encoding of "
            "a typed value, signed with the app's SECRET_KEY."
            if value.count(".") >= 2
            else f"The cookie {name}, with a {len(value)}-character value."
        )
    else:
        text = f"The cookie {name} with the value {value}."
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        text += (
            " The value is in double quotes because it contains a space, which a bare cookie "
            "value may not hold; Flask removes the quotes when it reads the cookie back."
        )
    if name.startswith("__Host-"):
        text += (
            " The __Host- prefix makes the browser insist on Secure, Path=/ and no Domain, so "
            "no subdomain and no plain-HTTP page can plant or overwrite it."
        )
    elif name.startswith("__Secure-"):
        text += " The __Secure- prefix makes the browser refuse it unless it is Secure."
    return text


def _attribute(key: str, value: str) -> str:
    if key == "path":
        if value == "/":
            return "Sent with requests to every page of this site, not only the one that set it."
        return f"Sent only with requests under {value}."
    if key == "httponly":
        return (
            "Hidden from page script (document.cookie cannot see it), so an XSS bug cannot "
            "steal it."
        )
    if key == "secure":
        return (
            "Sent only over HTTPS, where no one on the network can read it (browsers make an "
            "exception for http://localhost)."
        )
    if key == "samesite":
        v = value.lower()
        if v == "lax":
            return (
                "SameSite=Lax: sent when you follow a link to this site, but not with requests "
                "that other sites make in the background (forms posted to here, images, frames). "
                "A first defence against cross-site request forgery."
            )
        if v == "strict":
            return "SameSite=Strict: never sent with a request that another site started."
        return "SameSite=None: sent with cross-site requests too; allowed only with Secure."
    if key == "expires":
        if value.strip().endswith("1970 00:00:00 GMT"):
            return (
                "A date in the past: the browser deletes the cookie at once. This is how a "
                "server deletes a cookie: it sends it again, already expired."
            )
        return f"Kept until {value}, even if the browser is closed meanwhile."
    if key == "max-age":
        if value == "0":
            return "Max-Age=0: expired now. Browsers obey Max-Age over Expires."
        days = f" ({int(value) // 86400} days)" if value.isdigit() and int(value) >= 86400 else ""
        return f"Kept for {value} seconds{days}; browsers obey Max-Age over Expires."
    if key == "domain":
        return f"Also sent to every subdomain of {value}."
    if key == "partitioned":
        return "Partitioned (CHIPS): kept separately for each top-level site that embeds this one."
    return "An attribute browsers may not know; they ignore it."


_BROWSERS = (
    (re.compile(r"HeadlessChrome/"), "Headless Chrome"),
    (re.compile(r"Edg[A]?/"), "Edge"),
    (re.compile(r"OPR/"), "Opera"),
    (re.compile(r"Firefox/"), "Firefox"),
    (re.compile(r"Chrom(e|ium)/"), "Chrome"),
    (re.compile(r"Safari/"), "Safari"),
    (re.compile(r"^curl/"), "curl"),
    (re.compile(r"python", re.IGNORECASE), "a Python script"),
    (re.compile(r"Werkzeug/|flask_keepsake\.testing"), "a test client"),
)
_SYSTEMS = (
    (re.compile(r"iPhone"), "iPhone"),
    (re.compile(r"iPad"), "iPad"),
    (re.compile(r"Android"), "Android"),
    (re.compile(r"CrOS"), "ChromeOS"),
    (re.compile(r"Windows"), "Windows"),
    (re.compile(r"Mac OS X|Macintosh"), "macOS"),
    (re.compile(r"Linux"), "Linux"),
)


def describe_device(user_agent: str | None) -> str:
    """A short name for the device behind a ``User-Agent``, such as "Firefox on Linux"."""
    if not user_agent:
        return "Unknown device"
    browser = next((name for rx, name in _BROWSERS if rx.search(user_agent)), None)
    system = next((name for rx, name in _SYSTEMS if rx.search(user_agent)), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown browser"


def utc(dt: datetime | None) -> str:
    """An aware datetime as ISO 8601 in UTC (``2024-05-01T12:00:00Z``), or ``""``."""
    if dt is None:
        return ""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def time_tag(dt: datetime | None) -> Markup:
    """A ``<time>`` element in UTC that the page's script shows in the visitor's time zone."""
    if dt is None:
        return Markup("never")
    dt = dt.astimezone(UTC)
    return Markup('<time datetime="{}" data-local>{}</time>').format(
        utc(dt), dt.strftime("%Y-%m-%d %H:%M:%S UTC")
    )
