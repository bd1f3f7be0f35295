"""Rendering helpers of the portal: the Jinja2 environment, French dates, and what the
journal keeps of a browser (a short user agent; the core truncates the address).

Templates are autoescaped; no template emits a `<script>` body or a `style` attribute: the
page CSP refuses both (PORTAL.md 5.2).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
from starlette.responses import HTMLResponse

from web.security import PAGE_CSP

TEMPLATES = Path(__file__).parent / "templates"
#: Patients read their mail in French time.
PARIS = ZoneInfo("Europe/Paris")
MONTHS = (
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, status: int = 200, **context: object) -> HTMLResponse:
    """A page with the portal's CSP (the middleware adds nosniff, no-store, no-referrer)."""
    body = _env.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers={"Content-Security-Policy": PAGE_CSP})


def local(at: datetime) -> datetime:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(PARIS)


def human_date(at: datetime, now: datetime | None = None) -> str:
    """The inbox's dates, as Mon espace santé shows them: `14:05` today, `Hier 14:05`,
    `12 mars` this year, `12/03/24` before."""
    when, today = local(at), local(now or datetime.now(UTC))
    if when.date() == today.date():
        return when.strftime("%H:%M")
    if when.date() == (today - timedelta(days=1)).date():
        return "Hier " + when.strftime("%H:%M")
    if when.year == today.year:
        return f"{when.day} {MONTHS[when.month - 1]}"
    return when.strftime("%d/%m/%y")


def full_date(at: datetime) -> str:
    """`12 mars 2026 à 14:05`, for message headers and the journal."""
    when = local(at)
    return f"{when.day} {MONTHS[when.month - 1]} {when.year} à {when.strftime('%H:%M')}"


def iso(at: datetime) -> str:
    """The `datetime` attribute of `<time>`: ISO 8601 with its offset."""
    return local(at).isoformat(timespec="seconds")


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("Linux", "Linux"),
)


def short_agent(agent: str) -> str:
    """`Firefox 128 (Linux)`: enough for a patient to recognise a device, not a fingerprint."""
    browser = next((name for mark, name in _BROWSERS if mark in agent), "")
    version = ""
    if browser:
        mark = next(m for m, n in _BROWSERS if n == browser)
        found = re.search(re.escape(mark) + r"(\d{1,4})", agent)
        version = found.group(1) if found else ""
    system = next((name for mark, name in _SYSTEMS if mark in agent), "")
    text = " ".join(p for p in (browser, version) if p) or "Navigateur inconnu"
    return f"{text} ({system})" if system else text
