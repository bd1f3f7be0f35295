"""Helpers of the portal tests (tests/web/test_portal_*.py): the real core behind the web
app, httpx over ASGI on https://testserver (so `Secure` cookies flow), fresh patients made
as `mss patient create` makes them, and sign-in done as the browser does it, with the
reference client `crypto.patient_client` (the server only ever sees derived keys)."""

from __future__ import annotations

import asyncio
import base64
import random
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser

import httpx
from mail import build_message

from crypto.ins import ins_key
from crypto.patient_client import PatientClient
from mss.principal import Principal
from web.app import create_app

BASE = "https://testserver"
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; frame-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def client_for(core, *, address: str | None = None) -> httpx.AsyncClient:
    """A browser of its own: a random client address keeps throttling counters apart."""
    host = address or f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    transport = httpx.ASGITransport(app=create_app(core), raise_app_exceptions=False, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url=BASE, headers={"user-agent": UA})


UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
    assert found, "no csrf meta"
    return found.group(1)


class Tree(HTMLParser):
    """Just enough of a DOM: every element's tag, attributes and text, by id."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text_of: dict[int, list[str]] = {}
        self._open: list[int] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in ("meta", "link", "input", "img", "br"):
            self._open.append(len(self.elements) - 1)

    def handle_endtag(self, tag):
        while self._open:
            index = self._open.pop()
            if self.elements[index][0] == tag:
                break

    def handle_data(self, data):
        for index in self._open:
            self.text_of.setdefault(index, []).append(data)

    def by_id(self, ident: str) -> tuple[str, dict[str, str]]:
        found = [e for e in self.elements if e[1].get("id") == ident]
        assert len(found) == 1, f"#{ident}: {len(found)} elements"
        return found[0]

    def text(self, ident: str) -> str:
        index = next(i for i, e in enumerate(self.elements) if e[1].get("id") == ident)
        return " ".join("".join(self.text_of.get(index, [])).split())

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def label_for(self, ident: str) -> str:
        index = next(i for i, (t, a) in enumerate(self.elements) if t == "label" and a.get("for") == ident)
        return " ".join("".join(self.text_of.get(index, [])).split())

    def buttons(self) -> list[str]:
        return [
            " ".join("".join(self.text_of.get(i, [])).split())
            for i, (t, _) in enumerate(self.elements)
            if t == "button"
        ]


@dataclass
class Patient:
    ins: str
    address: str
    password: str = ""
    activation_code: str = ""


def random_ins() -> str:
    body = f"1850675{random.randrange(10**6):06d}"
    return body + ins_key(body)


def reference_client(core) -> PatientClient:
    cost = core.settings.patients.kdf_iterations
    return PatientClient(iterations=cost, min_iterations=min(cost, 100_000))


async def pending_patient(core, name: str = "Patient TEST") -> Patient:
    record, code = await core.patients.create(random_ins(), email="patient@example.org", name=name)
    return Patient(record.ins, record.address, activation_code=code)


async def active_patient(core, name: str = "Patient TEST") -> Patient:
    """Activated as `mss demo` does it (the portal's own activation is tested by the API)."""
    patient = await pending_patient(core, name)
    password = "mot de passe " + uuid.uuid4().hex[:12]
    client = reference_client(core)
    rewrap = await asyncio.to_thread(
        client.activate, patient.activation_code, password, await core.patients.key_record(patient.ins)
    )
    await core.patients.activate(patient.ins, rewrap.old_auth_key, rewrap.new_auth_key, rewrap.wrapped.to_json())
    patient.password = password
    return patient


def professional(deployment, index: int = 0) -> tuple[dict, Principal]:
    entry = deployment.mailbox("PER", index)
    address = entry["address"].lower()
    principal = Principal(
        kind="PS",
        identifier=entry.get("idnat") or "810000000000",
        display_name=entry.get("name") or address,
        mailboxes=frozenset({address}),
        primary=address,
    )
    return entry, principal


async def send_to(
    core, deployment, patient: Patient, subject: str, body: str = "Bonjour.\n", index: int = 0, reply_to: str = ""
) -> str:
    """A professional writes to the patient, through the core as SMTP would; `reply_to`
    threads it into the conversation of that Message-ID. Returns its Message-ID."""
    entry, principal = professional(deployment, index)
    extra = f"In-Reply-To: {reply_to}\r\nReferences: {reply_to}\r\n" if reply_to else ""
    raw, msgid = build_message(entry["address"], [patient.address], subject, body, extra=extra)
    txn = core.submission.begin(principal)
    txn.mail_from(entry["address"])
    await txn.add_recipient(patient.address)
    await txn.deliver(raw)
    return msgid


async def api(http: httpx.AsyncClient, path: str, body: dict, token: str, **headers: str) -> httpx.Response:
    return await http.post(path, json=body, headers={"x-csrf-token": token, **headers})


async def sign_in(http: httpx.AsyncClient, core, login: str, password: str) -> httpx.Response:
    """The connexion page's script: prelogin, derive, login. Returns the login response."""
    page = await http.get("/portal/connexion")
    token = csrf_of(page.text)
    params = (await api(http, "/portal/api/prelogin", {"login": login}, token)).json()
    key = await asyncio.to_thread(reference_client(core).login, password, params)
    return await api(http, "/portal/api/login", {"login": login, "auth_key": b64(key)}, token)


@asynccontextmanager
async def signed_in(core, patient: Patient) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client with a full session, and its page CSRF token."""
    async with client_for(core) as http:
        response = await sign_in(http, core, patient.ins, patient.password)
        assert response.status_code == 200, response.text
        page = await http.get("/portal/messages")
        assert page.status_code == 200
        yield http, csrf_of(page.text)


def conversation_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'href="/portal/conversations/(\d+)"', html)]


def message_urls(html: str) -> list[str]:
    return re.findall(r'data-(?:message|latest)="(/portal/api/messages/\d+)"', html)
