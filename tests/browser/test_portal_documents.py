"""Documents in the browser: a PNG previewed, an IHE_XDM.zip's document titles, a file name
that tries to disguise its type, the download journaled, and "download my data" as a zip
of `.eml` files decrypted in the page, while no response the browser received holds the
clear text."""

from __future__ import annotations

import io
import struct
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import Browsing, LivePortal, ResponseRecorder, secret_forms
from .test_portal_security import with_attachments

XDM_TITLE = "Compte rendu d'hospitalisation du 12 mars"


def png_1x1() -> bytes:
    """A valid 1×1 PNG (RFC 2083), built here rather than committed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def xdm_zip(title: str) -> bytes:
    """An IHE XDM package (ITI TF-3 3.32): METADATA.XML with one document named `title`."""
    metadata = f"""<?xml version="1.0" encoding="UTF-8"?>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <rim:RegistryObjectList>
    <rim:ExtrinsicObject id="doc1" mimeType="text/xml">
      <rim:Name><rim:LocalizedString value="{title}"/></rim:Name>
    </rim:ExtrinsicObject>
  </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>"""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata)
        z.writestr("IHE_XDM/SUBSET01/DOC0001.XML", "<ClinicalDocument/>")
        z.writestr("INDEX.HTM", "<html></html>")
    return out.getvalue()


@pytest.mark.browser
def test_previews_xdm_titles_disguised_names_and_the_data_export(portal: LivePortal, browse: Any) -> None:
    live = portal
    patient = live.active
    marker = f"DOCS-{uuid.uuid4().hex[:12]}"
    sender = live.professional(0)
    raw, _ = with_attachments(
        sender["address"],
        patient["address"],
        f"Résultats {marker}",
        [
            ("radio.png", "image/png", png_1x1()),
            ("IHE_XDM.zip", "application/zip", xdm_zip(XDM_TITLE)),
            ("facture\u202efdp.exe", "application/octet-stream", b"MZ not a program"),
        ],
    )
    assert live.send_raw(sender, [patient["address"]], raw) == {}
    b: Browsing = browse(live, accept_downloads=True)
    page = b.page
    received = ResponseRecorder(b.context, page)
    b.login(patient["ins"], patient["password"])
    page.locator("li.conversation").filter(has_text=marker).locator("a[href*='/portal/conversations/']").first.click()
    b.wait_page("conversation")
    items = page.get_by_role("list", name="Pièces jointes").locator("li.piece-jointe")
    expect(items).to_have_count(3)

    # The PNG is previewed from a blob: URL typed from its bytes.
    png = items.filter(has_text="radio.png")
    png.get_by_role("button", name="Aperçu").click()
    image = png.locator("img.apercu-image")
    expect(image).to_be_visible()
    assert (image.get_attribute("src") or "").startswith("blob:")
    assert image.evaluate("img => img.complete && img.naturalWidth") == 1

    # The XDM package shows its documents' titles.
    xdm = items.filter(has_text="IHE_XDM.zip")
    expect(xdm.get_by_role("list", name="Documents de IHE_XDM.zip")).to_contain_text(XDM_TITLE)

    # A right-to-left override cannot make an .exe look like a PDF, on screen or on disk.
    disguised = items.nth(2)
    expect(disguised.locator(".nom-fichier")).to_have_text("facturefdp.exe")
    with page.expect_download() as info:
        disguised.get_by_role("link", name="Télécharger").click()
    assert info.value.suggested_filename == "facturefdp.exe"
    b.shot("documents")

    # The download is in the journal (without the file's name).
    page.wait_for_timeout(300)
    page.goto(f"{live.base}/portal/journal?onglet=moi")
    b.wait_page("journal")
    expect(page.locator("main")).to_contain_text("Téléchargement d'une pièce jointe")
    expect(page.locator("main")).not_to_contain_text("facture")

    # "Download my data": a zip of .eml files decrypted in the page.
    page.goto(f"{live.base}/portal/donnees")
    b.wait_page("donnees")
    with page.expect_download(timeout=60_000) as info:
        page.get_by_role("button", name="Télécharger mes données").click()
    download = info.value
    assert download.suggested_filename == "mes-donnees.zip"
    with zipfile.ZipFile(Path(download.path())) as z:
        names = z.namelist()
        assert names and all(n.endswith(".eml") for n in names), names
        emls = b"".join(z.read(n) for n in names)
    assert marker.encode() in emls and b"IHE_XDM.zip" in emls
    expect(page.locator("#statut")).not_to_be_empty()
    b.shot("donnees")

    # Meanwhile the server handed out ciphertext only.
    leaks = [r.url for r in received.received if r.body and any(f in r.body for f in secret_forms(marker))]
    assert not leaks, leaks
