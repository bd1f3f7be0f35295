"""HTTP JSON and FHIR faces: `handle` called directly, and through a real socket."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from annuaire.fhir import EXT_EMAIL_TYPE, EXT_MAILBOX_META
from annuaire.http import handle
from annuaire.importer import import_files
from annuaire.local import LocalDirectory
from annuaire.model import LocalMailbox
from annuaire_support import ACTIVITY_FILE, MAILBOX_FILE, write_variant

RED_NATIONAL = "zoe.richard@chu-toulouse.mssante.fr"  # red-listed in the national file
RED_LOCAL = "loic.lambert@hopital-demo.mssante.test"  # red-listed by this operator


@pytest.fixture
async def directory(engine, session_factory, tmp_path):
    f = write_variant(tmp_path / "Extraction_Correspondance_MSSante_rl.txt", MAILBOX_FILE, add={"Liste rouge": "False"},
                      edit=lambda r: dict(r, **{"Liste rouge": "True"}) if r["Adresse BAL"] == RED_NATIONAL else r)
    await import_files(engine, [f, ACTIVITY_FILE])
    async with session_factory() as s:
        await LocalDirectory(s).add_mailbox(RED_LOCAL, "PER", idnat="814948083135")
        (await s.get(LocalMailbox, RED_LOCAL)).red_list = True
        await s.commit()
    return session_factory


async def get(sf, url: str):
    u = urlsplit(url)
    res = await handle("GET", u.path, parse_qs(u.query, keep_blank_values=True), sf)
    assert res is not None, url
    status, headers, body = res
    return status, headers, json.loads(body)


def mailboxes(resource: dict) -> list[str]:
    return [t["value"] for t in resource.get("telecom", [])]


async def test_json_api(directory):
    sf = directory
    st, h, doc = await get(sf, "/annuaire/resolve?address=Eric.Cote@chu-nantes.mssante.fr")
    assert st == 200 and h["Content-Type"].startswith("application/json") and doc["last_name"] == "CÔTÉ"
    assert "red_list" not in doc
    assert (await get(sf, f"/annuaire/resolve?address={RED_NATIONAL}"))[0] == 404
    assert (await get(sf, f"/annuaire/resolve?address={RED_LOCAL}"))[0] == 404
    assert (await get(sf, "/annuaire/resolve"))[0] == 400
    st, _, doc = await get(sf, "/annuaire/search?name=richard")
    assert st == 200 and RED_NATIONAL not in {e["address"] for e in doc["results"]} and doc["count"] == 2
    assert {e["address"] for e in doc["results"]} == {"eric.richard@chu-nantes.mssante.fr", "francois.richard@hopital-demo.mssante.test"}
    st, _, doc = await get(sf, "/annuaire/search?name=lambert")
    # The other LAMBERT is listed: the search works, only the red-listed mailbox is hidden.
    assert st == 200 and [e["address"] for e in doc["results"]] == ["jerome.lambert@ch-amiens.mssante.fr"]
    assert (await get(sf, "/annuaire/search"))[0] == 400
    assert (await get(sf, "/annuaire/search?type=XYZ"))[0] == 400
    assert await handle("GET", "/portal/inbox", {}, sf) is None
    st, h, _ = await handle("POST", "/annuaire/search", {}, sf)
    assert st == 405 and h["Allow"] == "GET, HEAD"
    st, _, doc = await get(sf, "/openapi.json")
    assert doc["openapi"].startswith("3.") and "/fhir/Practitioner" in doc["paths"] and "/annuaire/resolve" in doc["paths"]


async def test_fhir(directory):
    sf = directory
    st, h, cap = await get(sf, "/fhir/metadata")
    assert st == 200 and h["Content-Type"].startswith("application/fhir+json") and cap["fhirVersion"] == "4.0.1"

    st, _, b = await get(sf, "/fhir/Practitioner?identifier=urn:oid:1.2.250.1.71.4.2.1|815240824001")
    assert st == 200 and b["resourceType"] == "Bundle" and b["total"] == 1
    p = b["entry"][0]["resource"]
    assert p["id"] == "815240824001" and p["name"][0]["family"] == "CÔTÉ"
    (tel,) = p["telecom"]
    assert tel["system"] == "email" and tel["value"] == "eric.cote@chu-nantes.mssante.fr"
    ext = {e["url"]: e for e in tel["extension"]}
    assert ext[EXT_EMAIL_TYPE]["valueCoding"]["code"] == "MSSANTE"
    meta = {e["url"]: e for e in ext[EXT_MAILBOX_META]["extension"]}
    assert meta["type"]["valueCodeableConcept"]["coding"][0]["code"] == "PER"
    assert meta["listeRouge"]["valueBoolean"] is False

    st, _, b = await get(sf, "/fhir/Practitioner?name=cote")
    assert {e["resource"]["id"] for e in b["entry"]} == {"815240824001", "817115921243", "817484677376", "819117182279"}
    st, _, b = await get(sf, "/fhir/Practitioner?mailbox-mss:exact=ERIC.COTE@chu-nantes.mssante.fr")
    assert [e["resource"]["id"] for e in b["entry"]] == ["815240824001"]
    st, _, b = await get(sf, "/fhir/Practitioner?mailbox-mss:contains=cote@")
    assert len(b["entry"]) == 4
    st, _, b = await get(sf, "/fhir/Practitioner?mailbox-mss=eric.co")
    assert [e["resource"]["id"] for e in b["entry"]] == ["815240824001"]
    assert (await get(sf, "/fhir/Practitioner?mailbox-mss:missing=x"))[0] == 400
    st, _, oo = await get(sf, "/fhir/Practitioner")
    assert st == 400 and oo["resourceType"] == "OperationOutcome"

    # Red-listed mailboxes: never in telecom, never found by mailbox-mss.
    for q in (f"mailbox-mss:exact={RED_NATIONAL}", "mailbox-mss:contains=zoe.richard",
              f"mailbox-mss:exact={RED_LOCAL}"):
        st, _, b = await get(sf, f"/fhir/Practitioner?{q}")
        assert st == 200 and b["total"] == 0, q
    st, _, b = await get(sf, "/fhir/Practitioner?name=richard")
    everything = json.dumps(b)
    assert RED_NATIONAL not in everything
    # Zoé Richard is still found (published), with the other Richards' mailboxes; only hers is withheld.
    found = {e["resource"]["id"]: mailboxes(e["resource"]) for e in b["entry"]}
    assert found == {"812104709527": ["eric.richard@chu-nantes.mssante.fr"],
                     "817190659403": ["francois.richard@hopital-demo.mssante.test"], "819877694539": []}
    st, _, b = await get(sf, "/fhir/Practitioner?identifier=814948083135")
    assert RED_LOCAL not in json.dumps(b) and "loic.lambert" not in json.dumps(b)
    assert st == 200 and b["total"] == 1 and b["entry"][0]["resource"]["id"] == "814948083135"  # found, mailbox withheld
    st, _, p = await get(sf, "/fhir/Practitioner/819877694539")  # Zoé Richard: only a red-listed mailbox
    assert st == 200 and "telecom" not in p  # she is published (activity), her mailbox is not

    st, _, p = await get(sf, "/fhir/Practitioner/815240824001")
    assert st == 200 and p["identifier"][0]["system"] == "urn:oid:1.2.250.1.71.4.2.1"
    assert (await get(sf, "/fhir/Practitioner/899999999999"))[0] == 404

    st, _, b = await get(sf, "/fhir/PractitionerRole?practitioner=Practitioner/812871012261")
    roles = [e["resource"] for e in b["entry"]]
    assert len(roles) == 2 and all(r["practitioner"]["reference"] == "Practitioner/812871012261" for r in roles)
    st, _, r0 = await get(sf, f"/fhir/PractitionerRole/{roles[0]['id']}")
    assert st == 200 and r0["code"][0]["coding"][0]["code"] == "50"
    st, _, b = await get(sf, "/fhir/PractitionerRole?mailbox-mss:exact=ines.robert@chu-nantes.mssante.fr")
    assert len(b["entry"]) == 2 and mailboxes(b["entry"][0]["resource"]) == ["ines.robert@chu-nantes.mssante.fr"]

    st, _, b = await get(sf, "/fhir/Organization?identifier=1206291486")
    (org,) = [e["resource"] for e in b["entry"]]
    assert org["name"] == "CENTRE HOSPITALIER" and mailboxes(org) == ["radiologie.206291486@chu-nantes.mssante.fr"]
    st, _, b = await get(sf, "/fhir/Organization?mailbox-mss:contains=urgences")
    assert len(b["entry"]) == 3
    st, _, b = await get(sf, "/fhir/Organization?name=labo")
    assert {e["resource"]["id"] for e in b["entry"]} == {"1975281684", "1809251929"}


async def _serve(sf):
    """A minimal HTTP/1.1 server around `handle`, as the lead's listener would mount it."""

    async def on_client(reader, writer):
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            u = urlsplit(target)
            res = await handle(method, u.path, parse_qs(u.query, keep_blank_values=True), sf)
            status, headers, body = res if res is not None else (404, {"Content-Type": "text/plain"}, b"not found")
            head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(head.encode("latin-1") + b"\r\n" + (b"" if method == "HEAD" else body))
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(on_client, "127.0.0.1", 0)


async def test_over_a_real_socket(directory):
    server = await _serve(directory)
    port = server.sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"

    def fetch(path):
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.headers.get("Content-Type"), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type"), json.loads(e.read() or b"null")

    try:
        st, ct, doc = await asyncio.to_thread(fetch, "/annuaire/resolve?address=eric.cote%40chu-nantes.mssante.fr")
        assert (st, doc["idnat"]) == (200, "815240824001") and ct.startswith("application/json")
        st, ct, b = await asyncio.to_thread(fetch, "/fhir/Practitioner?mailbox-mss%3Acontains=richard")
        assert st == 200 and ct.startswith("application/fhir+json")
        assert RED_NATIONAL not in json.dumps(b) and b["total"] == 2
        st, _, _ = await asyncio.to_thread(fetch, f"/annuaire/resolve?address={RED_NATIONAL}")
        assert st == 404
        st, _, doc = await asyncio.to_thread(fetch, "/openapi.json")
        assert st == 200 and "paths" in doc
    finally:
        server.close()
        await server.wait_closed()
