"""The portal's pure helpers: French inbox dates, the short user agent the journal keeps,
CSV cells a spreadsheet will not execute, the static files' resolver, the TOTP QR code,
and the CSRF tokens' shape. No core needed."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from web.portal import csrf, static
from web.portal.pages import csv_cell, inbox_title
from web.portal.qr import svg_data_url
from web.portal.views import full_date, human_date, short_agent

NOW = datetime(2026, 3, 14, 10, 30, tzinfo=UTC)  # 11:30 in Paris


def test_inbox_dates_in_french():
    assert human_date(datetime(2026, 3, 14, 7, 5, tzinfo=UTC), NOW) == "08:05"
    assert human_date(datetime(2026, 3, 13, 22, 15, tzinfo=UTC), NOW) == "Hier 23:15"
    assert human_date(datetime(2026, 3, 13, 23, 15, tzinfo=UTC), NOW) == "00:15"  # already today in Paris
    assert human_date(datetime(2026, 1, 2, 9, 0, tzinfo=UTC), NOW) == "2 janvier"
    assert human_date(datetime(2025, 8, 12, 9, 0, tzinfo=UTC), NOW) == "12/08/25"
    assert full_date(datetime(2026, 7, 1, 12, 0, tzinfo=UTC)) == "1 juillet 2026 à 14:00"  # summer time


def test_inbox_title_counts_unread():
    assert inbox_title(0) == "Messagerie – Portail patient"
    assert inbox_title(1) == "Messagerie (1 non lu) – Portail patient"
    assert inbox_title(3) == "Messagerie (3 non lus) – Portail patient"


def test_short_user_agent():
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
    )
    safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Safari/604.1"
    edge = chrome + " Edg/126.0.2592.87"
    assert short_agent(firefox) == "Firefox 128 (Linux)"
    assert short_agent(chrome) == "Chrome 126 (Windows)"
    assert short_agent(safari) == "Safari 604 (iOS)"
    assert short_agent(edge) == "Edge 126 (Windows)"
    assert short_agent("") == "Navigateur inconnu"
    assert short_agent("curl/8.0\r\nforged") == "Navigateur inconnu"


def test_csv_cells_are_not_formulas():
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("+33") == "'+33" and csv_cell("@x") == "'@x" and csv_cell("-1") == "'-1"
    assert csv_cell("Connexion") == "Connexion"


def test_static_resolver(tmp_path):
    (tmp_path / "a.css").write_text("x")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "portal.js").write_text("y")
    (tmp_path / "secret.txt").write_text("z")
    outside = tmp_path.parent / "outside.css"
    outside.write_text("o")
    (tmp_path / "link.css").symlink_to(outside)
    folders = (tmp_path, tmp_path / "build")
    assert static.find("a.css", folders) == (tmp_path / "a.css").resolve()
    assert static.find("portal.js", folders) == (tmp_path / "build" / "portal.js").resolve()
    for name in ("secret.txt", "../outside.css", "link.css", "build", "", ".a.css", "build/../a.css", "a.css/"):
        assert static.find(name, folders) is None, name


def test_totp_qr_is_a_base64_svg():
    url = svg_data_url("otpauth://totp/MSS:2690575123456?secret=JBSWY3DPEHPK3PXP&issuer=MSS")
    assert url.startswith("data:image/svg+xml;base64,")
    svg = base64.b64decode(url.partition(",")[2])
    assert svg.startswith(b"<svg") and b"<script" not in svg


def test_csrf_tokens():
    secret = b"k" * 32
    a, b = csrf.session_token(secret, "h1"), csrf.session_token(secret, "h2")
    assert a != b and len(a) == 64 and csrf.matches(a, a) and not csrf.matches(b, a)
    assert csrf.anonymous_token(secret, "c") != csrf.session_token(secret, "c")  # domain-separated
    assert not csrf.matches(None, a) and not csrf.matches("", a) and not csrf.matches("é" * 64, a)


#: Positional strings of journal calls that are actor kinds or empty actors, not actions.
_NOT_ACTIONS = {"", "patient", "professional", "operator", "system"}


def _journal_codes() -> set[str]:
    """Every action code the core and the portal write: the string arguments of calls to
    `_journal(...)` and `note(...)` in the modules that journal."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = [root / "mss" / "patients.py", root / "mss" / "portal.py", *sorted((root / "web" / "portal").glob("*.py"))]
    codes: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name not in ("_journal", "note"):
                continue
            for arg in node.args:
                for leaf in ast.walk(arg):
                    value = leaf.value if isinstance(leaf, ast.Constant) else None
                    if isinstance(value, str) and re.fullmatch(r"[a-z_]+", value) and value not in _NOT_ACTIONS:
                        codes.add(value)
    return codes


def test_every_journal_action_has_a_french_name():
    """The journal page and its CSV show French names, never the codes the core writes."""
    from web.portal.pages import ACTIONS

    codes = _journal_codes()
    assert {"login", "message_received", "conversation_read", "activated", "blocked"} <= codes, codes
    assert codes - set(ACTIONS) == set(), codes - set(ACTIONS)


def test_throttling_counts_networks_not_addresses():
    """An IPv6 client counts per /64 (one subscriber's prefix), IPv4 per address, and an
    IPv4-mapped IPv6 address as the IPv4 address it is."""
    from web.portal.throttling import network_of

    assert network_of("192.0.2.7") == "192.0.2.7"
    assert network_of("2001:db8:1:2:aaaa::1") == network_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert network_of("2001:db8:1:3::1") != network_of("2001:db8:1:2::1")
    assert network_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert network_of("testclient") == "testclient"
