"""HTTP JSON and FHIR faces of the directory (`web.directory` over `mss.directory`): the
ASGI app driven in memory with httpx, and uvicorn on a real socket (urllib, curl)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass

import httpx
import pytest
from annuaire_support import ACTIVITY_FILE, MAILBOX_FILE, write_variant

from annuaire.fhir import EXT_EMAIL_TYPE, EXT_MAILBOX_META
from annuaire.importer import import_files
from annuaire.local import LocalDirectory
from annuaire.model import LocalMailbox
from mss import metrics
from mss.config import Settings
from mss.directory import CoreDirectory
from web.app import create_app
from web.server import start

RED_NATIONAL = "zoe.richard@chu-toulouse.mssante.fr"  # red-listed in the national file
RED_LOCAL = "loic.lambert@hopital-demo.mssante.test"  # red-listed by this operator


@pytest.fixture
async def directory(engine, session_factory, tmp_path):
    f = write_variant(
        tmp_path / "Extraction_Correspondance_MSSante_rl.txt",
        MAILBOX_FILE,
        add={"Liste rouge": "False"},
        edit=lambda r: dict(r, **{"Liste rouge": "True"}) if r["Adresse BAL"] == RED_NATIONAL else r,
    )
    await import_files(engine, [f, ACTIVITY_FILE])
    async with session_factory() as s:
        await LocalDirectory(s).add_mailbox(RED_LOCAL, "PER", idnat="814948083135")
        (await s.get(LocalMailbox, RED_LOCAL)).red_list = True
        await s.commit()
    return session_factory


@dataclass
class Services:
    """`mss.services.WebServices` over the test database."""

    settings: Settings
    directory: CoreDirectory

    async def metrics_exposition(self) -> bytes:
        return metrics.exposition()


def services(sf) -> Services:
    return Services(Settings(domain="hopital-demo.mssante.test"), CoreDirectory(sf))


async def request(sf, method: str, url: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(services(sf)))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.request(method, url)


async def get(sf, url: str):
    r = await request(sf, "GET", url)
    return r.status_code, r.headers, r.json()


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
    assert {e["address"] for e in doc["results"]} == {
        "eric.richard@chu-nantes.mssante.fr",
        "francois.richard@hopital-demo.mssante.test",
    }
    st, _, doc = await get(sf, "/annuaire/search?name=lambert")
    # The other LAMBERT is listed: the search works, only the red-listed mailbox is hidden.
    assert st == 200 and [e["address"] for e in doc["results"]] == ["jerome.lambert@ch-amiens.mssante.fr"]
    assert (await get(sf, "/annuaire/search"))[0] == 400
    assert (await get(sf, "/annuaire/search?type=XYZ"))[0] == 400
    assert (await get(sf, "/nowhere/at-all"))[0] == 404
    r = await request(sf, "POST", "/annuaire/search")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    assert h["Cache-Control"] == "no-store" and h["X-Content-Type-Options"] == "nosniff"
    st, _, doc = await get(sf, "/openapi.json")
    assert (
        doc["openapi"].startswith("3.") and "/fhir/Practitioner" in doc["paths"] and "/annuaire/resolve" in doc["paths"]
    )


async def test_limits_and_bad_parameters(directory):
    sf = directory
    long = "a" * 321
    st, _, doc = await get(sf, f"/annuaire/resolve?address={long}@x.test")
    assert (st, doc) == (400, {"error": "query too long"})
    assert (await get(sf, f"/annuaire/search?name={'a' * 320}"))[0] == 200  # MAX_PARAM_LEN itself is fine
    many = "&".join(f"name=a{i}" for i in range(33))
    assert (await get(sf, f"/annuaire/search?{many}"))[0] == 400
    st, h, oo = await get(sf, f"/fhir/Practitioner?name={long}")
    assert (
        st == 400 and oo["resourceType"] == "OperationOutcome" and h["Content-Type"].startswith("application/fhir+json")
    )
    st, _, doc = await get(sf, "/annuaire/search?name=richard&limit=ten")
    assert (st, doc) == (400, {"error": "limit must be an integer"})
    st, _, doc = await get(sf, "/annuaire/search?name=richard&limit=1")
    assert st == 200 and doc["count"] == 1
    st, _, oo = await get(sf, "/fhir/Practitioner?name=cote&_count=many")
    assert st == 400 and oo["issue"][0]["code"] == "invalid"
    st, _, oo = await get(sf, "/fhir/Practitioner/a/b")
    assert st == 404 and oo["resourceType"] == "OperationOutcome"
    r = await request(sf, "HEAD", "/annuaire/resolve?address=eric.cote@chu-nantes.mssante.fr")
    assert r.status_code == 200 and r.content == b"" and int(r.headers["Content-Length"]) > 0


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
    for q in (
        f"mailbox-mss:exact={RED_NATIONAL}",
        "mailbox-mss:contains=zoe.richard",
        f"mailbox-mss:exact={RED_LOCAL}",
    ):
        st, _, b = await get(sf, f"/fhir/Practitioner?{q}")
        assert st == 200 and b["total"] == 0, q
    st, _, b = await get(sf, "/fhir/Practitioner?name=richard")
    everything = json.dumps(b)
    assert RED_NATIONAL not in everything
    # Zoé Richard is still found (published), with the other Richards' mailboxes; only hers is withheld.
    found = {e["resource"]["id"]: mailboxes(e["resource"]) for e in b["entry"]}
    assert found == {
        "812104709527": ["eric.richard@chu-nantes.mssante.fr"],
        "817190659403": ["francois.richard@hopital-demo.mssante.test"],
        "819877694539": [],
    }
    st, _, b = await get(sf, "/fhir/Practitioner?identifier=814948083135")
    assert RED_LOCAL not in json.dumps(b) and "loic.lambert" not in json.dumps(b)
    assert (
        st == 200 and b["total"] == 1 and b["entry"][0]["resource"]["id"] == "814948083135"
    )  # found, mailbox withheld
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


async def test_over_a_real_socket(directory):
    """uvicorn on 127.0.0.1 (an ephemeral port), as `mss serve` runs it."""
    listener = await start(services(directory), host="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{listener.port}"

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
        if shutil.which("curl"):
            res = await asyncio.to_thread(
                subprocess.run,
                ["curl", "-sS", "-i", "-X", "DELETE", f"{base}/fhir/Practitioner/815240824001"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            head = res.stdout.split("\n\n", 1)[0].lower()  # text=True: CRLF read as LF
            assert head.startswith("http/1.1 405") and "\nallow: get, head" in head, res.stdout
            assert "content-type: application/fhir+json" in head and "x-content-type-options: nosniff" in head
    finally:
        listener.close()
        await listener.wait_closed()


async def test_the_core_directory_service_publishes_no_red_listed_mailbox(directory):
    """`mss.directory.CoreDirectory`, what the web front end is given (mss.services.Directory)."""
    from mss.services import DirectoryQueryError, DirectorySearch, PublishedMailbox

    d = CoreDirectory(directory)
    found = await d.resolve("ERIC.COTE@chu-nantes.mssante.fr")
    assert isinstance(found, PublishedMailbox) and found.idnat == "815240824001"
    assert "red_list" not in found.to_json() and "members" not in found.to_json()
    assert await d.resolve(RED_NATIONAL) is None and await d.resolve(RED_LOCAL) is None
    assert await d.resolve("nobody@nowhere.test") is None
    assert RED_NATIONAL not in {m.address for m in await d.search(DirectorySearch(name="richard"))}
    assert len(await d.search(DirectorySearch(name="richard"), limit=0)) == 1  # clamped to 1..200
    for bad in (DirectorySearch(), DirectorySearch(type="XYZ")):
        with pytest.raises(DirectoryQueryError):
            await d.search(bad)
    with pytest.raises(DirectoryQueryError):
        await d.fhir_search("Practitioner", {"mailbox-mss:missing": ["x"]}, base="/fhir", self_url="/fhir/Practitioner")
    with pytest.raises(DirectoryQueryError):
        await d.fhir_read("Patient", "1")  # type: ignore[arg-type]
    assert (await d.fhir_read("Practitioner", "815240824001"))["id"] == "815240824001"
