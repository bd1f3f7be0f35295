"""Trust-space whitelist: XML, IDNA, diff on re-import."""

from __future__ import annotations

import pytest
from annuaire_support import WHITELIST_FILE

from annuaire.whitelist import (
    WhitelistError,
    import_whitelist,
    in_trust_space,
    is_local,
    parse_whitelist,
    trust_domains,
)


async def test_whitelist(engine, session_factory, tmp_path):
    r = await import_whitelist(engine, WHITELIST_FILE)
    assert (r.domains, r.added, r.removed, r.rejected) == (9, 9, 0, [])
    async with session_factory() as s:
        assert await in_trust_space(s, "medecin.mssante.fr")
        assert await in_trust_space(s, "Medecin.MSSante.fr.")
        assert await in_trust_space(s, "someone@chu-nantes.mssante.fr")
        # The Unicode name is stored in IDNA form; both spellings match.
        assert await in_trust_space(s, "clinique-sainte-hélène.mssante.fr")
        assert await in_trust_space(s, "xn--clinique-sainte-hlne-61bu.mssante.fr")
        assert "xn--clinique-sainte-hlne-61bu.mssante.fr" in await trust_domains(s)
        assert not await in_trust_space(s, "gmail.com")
        assert not await in_trust_space(s, "evil.medecin.mssante.fr")  # no implicit subdomains
        assert not await in_trust_space(s, "")

    smaller = tmp_path / "wl.xml"
    smaller.write_text(
        WHITELIST_FILE.read_text(encoding="utf-8")
        .replace(
            "<Domaine><Nom>chu-nantes.mssante.fr</Nom></Domaine>", "<Domaine><Nom>nouveau.mssante.fr</Nom></Domaine>"
        )
        .replace("<Domaine><Nom>patient.mssante.fr</Nom></Domaine>", "<Domaine><Nom>bad domain!</Nom></Domaine>"),
        encoding="utf-8",
    )
    r2 = await import_whitelist(engine, smaller)
    assert (r2.added, r2.removed, r2.rejected) == (1, 2, ["bad domain!"])
    async with session_factory() as s:
        assert not await in_trust_space(s, "chu-nantes.mssante.fr")
        assert await in_trust_space(s, "nouveau.mssante.fr")


def test_is_local_and_parse_errors():
    assert is_local("x@Hopital-Demo.MSSante.test", ["hopital-demo.mssante.test"])
    assert is_local("clinique-sainte-hélène.mssante.fr", ["xn--clinique-sainte-hlne-61bu.mssante.fr"])
    assert not is_local("medecin.mssante.fr", ["hopital-demo.mssante.test"])
    with pytest.raises(WhitelistError):
        parse_whitelist(b"not xml")
    with pytest.raises(WhitelistError):
        parse_whitelist(b'<!DOCTYPE x [<!ENTITY a "b">]><ListeBlanche/>')
    with pytest.raises(WhitelistError):
        parse_whitelist(b"<ListeBlanche xmlns='https://listeblanche.mssante.fr/schema'/>")


def test_utf16_document_with_a_dtd_is_refused():
    """A byte search for '<!DOCTYPE' misses UTF-16; the parser must refuse the DTD itself."""
    from annuaire.whitelist import WhitelistError, parse_whitelist

    doc = (
        '<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE l [<!ENTITY a "medecin.mssante.fr">]>\n'
        '<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema"><Domaine><Nom>&a;</Nom></Domaine></ListeBlanche>'
    ).encode("utf-16")
    assert b"<!DOCTYPE" not in doc
    with pytest.raises(WhitelistError, match="DTD"):
        parse_whitelist(doc)
