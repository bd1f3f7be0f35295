"""Fixtures of the portal's browser tests: a live `mss serve` per module, Chromium per module,
and a `browse` factory of browser contexts that screenshot every page they visit.

Everything is real: the deployment is `mss demo` with its demo patients (one active with
"password", one pending with "activation_code"), the server is its own process on
ephemeral ports of 127.0.0.1 (its http listener plain on loopback, as the demo configures),
professionals send over SMTP with STARTTLS and their client certificate and read over IMAP,
and Debian's Chromium (`/usr/bin/chromium`, never `playwright install`) runs the portal's
JavaScript bundle.

Two traps are avoided on purpose:

* The sync Playwright API keeps an asyncio loop marked as running in the main thread while
  it is alive, so `asyncio.run` there fails; every coroutine of these tests (building a
  deployment, reading the database) runs in a worker thread (`in_thread`).
* Playwright lives for one module only (not the session), so that the asyncio tests of the
  rest of the suite never run while its loop is installed.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import http.server
import imaplib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mail import build_message, openssl_decrypt, smtp_submission
from playwright.sync_api import Error as PlaywrightError
from support import ROOT, Deployment, ServerProcess, drop_pg_database, make_deployment, start_server

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "portal"
BUNDLE = ROOT / "web" / "static" / "build" / "portal.js"
#: Key derivations (PBKDF2 at the demo's full cost) run in the page: give them time on 2 cores.
TIMEOUT_MS = 30_000
#: The password the activation test sets (at least 12 characters, as the page asks).
NEW_PASSWORD = "cheval correct pile agrafe 42"

T = TypeVar("T")


# -- threads, for coroutines and blocking helpers while Playwright is alive ------------------


def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn` in a fresh worker thread and return its result (or raise its exception)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def run_async(factory: Callable[[], Any]) -> Any:
    """`asyncio.run(factory())` in a worker thread (Playwright's loop owns this one)."""
    return in_thread(lambda: asyncio.run(factory()))


# -- the live portal ---------------------------------------------------------------------------


def portal_setting_names() -> set[str]:
    """The keys of this tree's [portal] section (PortalSettings); empty when it has none."""
    from mss.config import Settings

    info = Settings.model_fields.get("portal")
    fields = getattr(info.annotation, "model_fields", None) if info else None
    return set(fields or ())


def _with_section(dep: Deployment, section: str, values: dict[str, Any]) -> None:
    """Append (or extend) a TOML section of the deployment's mss.toml."""

    def toml(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    text = dep.config.read_text(encoding="utf-8")
    lines = text.split("\n")
    body = [f"{k} = {toml(v)}" for k, v in values.items()]
    if f"[{section}]" in lines:
        start = lines.index(f"[{section}]")
        lines[start + 1 : start + 1] = body
    else:
        lines += ["", f"[{section}]", *body, ""]
    dep.config.write_text("\n".join(lines), encoding="utf-8")


@dataclass
class LivePortal:
    """A running `mss serve` of a fresh demo deployment with its patients."""

    deployment: Deployment
    server: ServerProcess
    tmp: Path
    #: Whether the [portal] settings the module asked for were written (PortalSettings exists).
    portal_configured: bool = False
    portal_settings: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port('http')}"

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def active(self) -> dict:
        """The demo patient activated with a password (keys: ins, address, name, password)."""
        return next(p for p in self.deployment.doc["patients"] if "password" in p)

    @property
    def pending(self) -> dict:
        """The demo patient still pending (keys: ins, address, name, activation_code)."""
        return next(p for p in self.deployment.doc["patients"] if "activation_code" in p)

    def professional(self, index: int = 0) -> dict:
        return self.deployment.mailbox("PER", index)

    # mail, as the professional's own client does it
    def send_raw(self, sender: dict, to: list[str], raw: bytes) -> dict:
        """Submit over STARTTLS with the sender's client certificate; the refused recipients."""

        def go() -> dict:
            with smtp_submission(self.server, sender) as client:
                return client.sendmail(sender["address"], to, raw)

        return in_thread(go)

    def send(self, sender: dict, to: list[str], subject: str, body: str, *, extra: str = "") -> str:
        """A text/plain message from `sender`, accepted for every recipient; its Message-ID."""
        raw, msgid = build_message(sender["address"], to, subject, body, extra=extra)
        assert self.send_raw(sender, to, raw) == {}
        return msgid

    def send_html(self, sender: dict, to: list[str], subject: str, text: str, html: str) -> str:
        """A multipart/alternative message (text and HTML parts); its Message-ID."""
        raw, msgid = build_alternative(sender["address"], to, subject, text, html)
        assert self.send_raw(sender, to, raw) == {}
        return msgid

    def rcpt(self, sender: dict, address: str) -> tuple[int, bytes]:
        """The server's answer to RCPT TO:<address> in a transaction from `sender`."""

        def go() -> tuple[int, bytes]:
            with smtp_submission(self.server, sender) as client:
                client.mail(sender["address"])
                answer = client.rcpt(address)
                client.rset()
                return answer

        return in_thread(go)

    def imap_messages(self, entry: dict, folder: str = "INBOX") -> list[bytes]:
        """Every message of a folder as IMAP serves it (implicit TLS, client certificate)."""

        def go() -> list[bytes]:
            m = imaplib.IMAP4_SSL(
                self.server.host,
                self.server.port("imaps"),
                ssl_context=self.deployment.client_context(entry),
                timeout=20,
            )
            try:
                m.authenticate("EXTERNAL", lambda _: b"")
                assert m.select(folder)[0] == "OK"
                typ, data = m.uid("SEARCH", None, "ALL")
                assert typ == "OK"
                out = []
                for uid in data[0].split():
                    typ, fetched = m.uid("FETCH", uid, "(BODY.PEEK[])")
                    assert typ == "OK"
                    out.append(fetched[0][1])
                return out
            finally:
                m.logout()

        return in_thread(go)

    def decrypt(self, entry: dict, stored: bytes) -> bytes:
        """`openssl cms -decrypt` with the mailbox's own key."""
        return openssl_decrypt(self.deployment, entry, stored, self.tmp)

    # the database, read only, for ids a browser of the other patient would see
    def conversations_of(self, ins: str) -> list[tuple[int, list[int]]]:
        """(conversation id, its message ids) of a patient's conversations, oldest first."""
        from sqlalchemy import text

        from mss.config import resolve_database_url
        from mss.db.engine import create_engine, sessionmaker

        async def go() -> list[tuple[int, list[int]]]:
            engine = create_engine(resolve_database_url(self.deployment.database_url, self.deployment.directory))
            try:
                async with sessionmaker(engine)() as s:
                    convs = (
                        await s.execute(text("SELECT id FROM conversation WHERE ins = :i ORDER BY id"), {"i": ins})
                    ).all()
                    out = []
                    for (cid,) in convs:
                        mids = (
                            await s.execute(
                                text("SELECT id FROM conversation_message WHERE conversation_id = :c ORDER BY id"),
                                {"c": cid},
                            )
                        ).all()
                        out.append((int(cid), [int(m) for (m,) in mids]))
                    return out
            finally:
                await engine.dispose()

        return run_async(go)

    def session_keys(self) -> list[bytes]:
        """Every session key K_s the server holds (one per live session row)."""
        from sqlalchemy import text

        from mss.config import resolve_database_url
        from mss.db.engine import create_engine, sessionmaker

        async def go() -> list[bytes]:
            engine = create_engine(resolve_database_url(self.deployment.database_url, self.deployment.directory))
            try:
                async with sessionmaker(engine)() as s:
                    rows = (await s.execute(text("SELECT local_key FROM portal_session"))).all()
                    return [bytes(k) for (k,) in rows if k is not None]
            finally:
                await engine.dispose()

        return run_async(go)


#: What the portal keeps in IndexedDB ("mss-portal", store "keys"): each entry by key, with its
#: type, whether it is a CryptoKey (and of which type), and the type of each of its fields.
STORED_KEYS_JS = """() => new Promise((resolve) => {
  const req = indexedDB.open('mss-portal', 1);
  req.onupgradeneeded = () => req.result.createObjectStore('keys');
  req.onerror = () => resolve({error: String(req.error)});
  req.onsuccess = () => {
    const db = req.result;
    const store = db.transaction('keys').objectStore('keys');
    const keys = store.getAllKeys();
    const values = store.getAll();
    values.onerror = () => { db.close(); resolve({error: String(values.error)}); };
    values.onsuccess = () => {
      db.close();
      const kind = (v) => Object.prototype.toString.call(v);
      const out = {};
      keys.result.forEach((k, i) => {
        const v = values.result[i];
        const isKey = typeof CryptoKey !== 'undefined' && v instanceof CryptoKey;
        const fields = {};
        if (v && typeof v === 'object' && !isKey) {
          for (const [name, f] of Object.entries(v)) fields[name] = {type: kind(f),
            cryptoKey: typeof CryptoKey !== 'undefined' && f instanceof CryptoKey, length: f && f.length};
        }
        out[String(k)] = {type: kind(v), cryptoKey: isKey, keyType: isKey ? v.type : null, fields};
      });
      resolve(out);
    };
  };
})"""

#: The status of GET /portal/api/session/key from the page (with its cookies), and the key.
SESSION_KEY_JS = """() => fetch('/portal/api/session/key', {credentials: 'same-origin', cache: 'no-store'})
  .then(async (r) => ({status: r.status, key: r.ok ? (await r.json()).key : null}))"""


def assert_stored_blob_only(stored: Any) -> None:
    """IndexedDB holds one entry, "patient", and it is a blob ({iv, wrapped} bytes), not a
    CryptoKey (of type private or any other)."""
    assert isinstance(stored, dict) and "error" not in stored, stored
    assert list(stored) == ["patient"], stored
    entry = stored["patient"]
    assert entry["cryptoKey"] is False and entry["keyType"] is None, entry
    assert entry["type"] == "[object Object]", entry
    assert set(entry["fields"]) == {"iv", "wrapped"}, entry
    for name, f in entry["fields"].items():
        assert f["type"] == "[object Uint8Array]" and not f["cryptoKey"], (name, f)
    assert entry["fields"]["iv"]["length"] == 12 and entry["fields"]["wrapped"]["length"] > 1000, entry


def build_alternative(sender: str, to: list[str], subject: str, text: str, html: str) -> tuple[bytes, str]:
    """A multipart/alternative message (CRLF line ends, 8bit parts) and its Message-ID."""
    msgid = make_msgid(idstring=uuid.uuid4().hex[:8], domain=sender.rpartition("@")[2])
    boundary = "=_alt_" + uuid.uuid4().hex
    head = (
        f"From: <{sender}>\r\n"
        f"To: {', '.join(f'<{t}>' for t in to)}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {msgid}\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n'
    )
    parts = []
    for ctype, body in (("text/plain", text), ("text/html", html)):
        parts.append(
            f"--{boundary}\r\n"
            f'Content-Type: {ctype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: 8bit\r\n"
            "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n") + "\r\n"
        )
    raw = head + "\r\n" + "".join(parts) + f"--{boundary}--\r\n"
    return raw.encode("utf-8"), msgid


def _make_live(tmp: Path, backend: str, portal: dict[str, Any] | None) -> tuple[LivePortal, str | None]:
    dep, pg_name = in_thread(make_deployment, tmp / "demo", backend, patients=True)
    known = {k: v for k, v in (portal or {}).items() if k in portal_setting_names()}
    if known:
        _with_section(dep, "portal", known)
    configured = bool(portal) and known == portal
    server = in_thread(start_server, dep)
    return LivePortal(dep, server, tmp, configured, known), pg_name


@contextlib.contextmanager
def live_portal(tmp: Path, backend: str = "sqlite", portal: dict[str, Any] | None = None) -> Iterator[LivePortal]:
    """A fresh demo deployment with patients and its `mss serve`, stopped (and its
    PostgreSQL database dropped) on exit; the server's log is printed when it did not stop
    cleanly, to explain a failure."""
    live, pg_name = _make_live(tmp, backend, portal)
    try:
        yield live
    finally:
        rc = live.server.stop()
        if rc not in (0, None):
            print(f"mss serve exited with {rc}:\n{live.server.log_text()[-4000:]}")
        if pg_name:
            in_thread(drop_pg_database, pg_name)


def require_portal() -> None:
    """Fail (in CI) or skip (elsewhere) when Chromium is missing; fail when the bundle is."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: `make deb-test` installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert BUNDLE.exists(), f"{BUNDLE.relative_to(ROOT)} is missing: run `make assets`"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright, headless, for the whole module."""
    require_portal()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[LivePortal]:
    """A live portal on SQLite for the module. A module sets `PORTAL_SETTINGS` (a dict) to
    start it with [portal] settings (when this tree has them)."""
    settings = getattr(request.module, "PORTAL_SETTINGS", None)
    with live_portal(tmp_path_factory.mktemp("portal"), "sqlite", settings) as live:
        yield live


# -- browsing: contexts that record what they saw ---------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120] or "page"


class Browsing:
    """One browser context and its page, bound to a live portal. Every page reached through
    `wait_page` is screenshotted (full page) into var/test-artifacts/portal/<test>/; the
    dialogs, JavaScript errors and console messages are kept for the test to assert on."""

    def __init__(self, live: LivePortal, context: Any, shots: Path, counter: list[int]) -> None:
        self.live = live
        self.context = context
        self.page = context.new_page()
        self.shots = shots
        self._counter = counter
        self.dialogs: list[str] = []
        self.page_errors: list[str] = []
        self.console: list[str] = []
        #: The state-changing requests the page sent (method, URL, the headers CSRF checks).
        self.posts: list[tuple[str, str, dict[str, str]]] = []
        self.page.on("dialog", self._on_dialog)
        self.page.on("request", self._on_request)
        self.page.on("pageerror", lambda err: self.page_errors.append(str(err)))
        self.page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))

    def _on_request(self, request: Any) -> None:
        if request.method not in ("GET", "HEAD"):
            headers = request.all_headers()
            kept = {k: v for k, v in headers.items() if k in ("origin", "sec-fetch-site", "referer", "content-type")}
            self.posts.append((request.method, request.url, kept))

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    # navigation
    def goto(self, path: str) -> Any:
        """Load a portal path; the main response."""
        return self.page.goto(self.live.url(path))

    def wait_page(self, name: str) -> None:
        """Wait for `<body data-page=name>` and the page's scripts, then screenshot it."""
        self.page.wait_for_function(
            "(name) => document.body && [name, 'erreur'].includes(document.body.dataset.page)", arg=name
        )
        self.page.wait_for_load_state("load")
        self.shot()
        shown = self.page.evaluate("document.body.dataset.page")
        assert shown == name, f"{self.page.url} is the {shown!r} page, not {name!r}: {self.alert()!r}"

    def shot(self, label: str | None = None) -> Path:
        """A full-page screenshot named <n>-<data-page or label>.png."""
        if label is None:
            try:
                label = self.page.evaluate("document.body ? (document.body.dataset.page || '') : ''") or "page"
            except PlaywrightError:  # a page being replaced has no body to read
                label = "page"
        self._counter[0] += 1
        path = self.shots / f"{self._counter[0]:02d}-{_slug(label)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    # the page's own hooks
    def csrf(self) -> str:
        return self.page.get_attribute("meta[name='csrf-token']", "content") or ""

    def status(self) -> str:
        return self.page.locator("#statut").inner_text().strip()

    def alert(self) -> str:
        return self.page.locator("#alerte").inner_text().strip()

    def login(self, login: str, password: str) -> None:
        """Sign in through the connexion page with the mouse; ends on the inbox."""
        self.goto("/portal/connexion")
        self.wait_page("connexion")
        self.page.get_by_label("Identifiant").fill(login)
        self.page.get_by_label("Mot de passe", exact=True).fill(password)
        self.page.get_by_role("button", name="Se connecter").click()
        self.page.wait_for_url("**/portal/messages*")
        self.wait_page("messages")

    def logout(self) -> None:
        self.page.get_by_role("button", name="Se déconnecter").click()
        self.page.wait_for_url("**/portal/connexion*")
        self.wait_page("connexion")


@pytest.fixture
def browse(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., Browsing]]:
    """`browse(live, **context_options)`: a new context and page on `live`, closed at the end
    of the test (its last page screenshotted first, to show where a failure stood)."""
    shots = ARTIFACTS / _slug(request.node.name)
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True, exist_ok=True)
    counter = [0]
    opened: list[Browsing] = []

    def new(live: LivePortal, **options: Any) -> Browsing:
        options.setdefault("locale", "fr-FR")
        context = chromium.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        b = Browsing(live, context, shots, counter)
        opened.append(b)
        return b

    yield new
    for b in opened:
        try:
            b.shot("fin")
        except PlaywrightError as err:  # a closed page has nothing to show
            print("no final screenshot:", err)
        if b.page_errors:
            print("JavaScript errors:", *b.page_errors, sep="\n  ")
        if b.posts:
            print("Requests that change state:", *b.posts, sep="\n  ")
        b.context.close()


# -- what the browser received ------------------------------------------------------------------


@dataclass
class Received:
    url: str
    status: int
    resource_type: str
    body: bytes | None
    error: str = ""


class ResponseRecorder:
    """Every response a page received, body included, read in the browser itself before the
    page gets it (CDP Fetch interception at the response stage: the request is the page's own,
    with its headers and cookies; only its delivery waits for the copy). Every resource type
    is kept: documents, scripts, styles, fetch/XHR, images... A response body cannot vanish
    before it is read, as it can with `page.on("response")` when the page navigates at once."""

    def __init__(self, context: Any, page: Any) -> None:
        self.received: list[Received] = []
        self._cdp = context.new_cdp_session(page)
        self._cdp.on("Fetch.requestPaused", self._on_paused)
        self._cdp.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Response"}]})

    def _on_paused(self, event: dict[str, Any]) -> None:
        rid = event["requestId"]
        url, kind = event["request"]["url"], event.get("resourceType", "").lower()
        status = int(event.get("responseStatusCode") or 0)
        try:
            if 300 <= status < 400:
                self.received.append(Received(url, status, kind, b""))
            else:
                got = self._cdp.send("Fetch.getResponseBody", {"requestId": rid})
                body = base64.b64decode(got["body"]) if got.get("base64Encoded") else got["body"].encode()
                self.received.append(Received(url, status, kind, body))
        except PlaywrightError as err:
            self.received.append(Received(url, status, kind, None, repr(err)))
        finally:
            self._cdp.send("Fetch.continueRequest", {"requestId": rid})


def secret_forms(secret: str) -> list[bytes]:
    """The byte forms a leak of `secret` could take: itself, quoted-printable-safe (it is
    ASCII letters, digits and '-', so QP leaves it as is), URL-encoded, and base64 at each of
    the three alignments (the inner characters that do not depend on the neighbours)."""
    raw = secret.encode()
    forms = [raw, raw.hex().encode()]
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + raw)
        inner = enc[4 if shift else 0 : -4]
        forms.append(inner)
    return forms


# -- a remote origin that must never be asked anything ------------------------------------------


class RemoteOrigin:
    """An HTTP server on another loopback port that records every request it receives."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hits.append(f"{self.command} {self.path}")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_HEAD = do_OPTIONS = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def remote_origin() -> Iterator[RemoteOrigin]:
    origin = RemoteOrigin()
    yield origin
    origin.close()


# -- keyboard focus -------------------------------------------------------------------------------

FOCUS_JS = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const s = getComputedStyle(el);
  return {
    tag: el.tagName.toLowerCase(), id: el.id, href: el.getAttribute('href') || '',
    text: (el.innerText || el.value || '').trim().slice(0, 60),
    outlineStyle: s.outlineStyle, outlineWidth: parseFloat(s.outlineWidth) || 0,
    boxShadow: s.boxShadow, focusVisible: el.matches(':focus-visible'),
  };
}"""


def focus_is_visible(info: dict[str, Any]) -> bool:
    """A focused element shows it: an outline (of some width) or a box shadow."""
    outline = info["outlineStyle"] not in ("none", "") and info["outlineWidth"] > 0
    return outline or info["boxShadow"] not in ("none", "")
