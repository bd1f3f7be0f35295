"""Look-ups: address, national id, structure, search criteria, local precedence."""

from __future__ import annotations

from annuaire.local import LocalDirectory
from annuaire.model import LocalMailbox
from annuaire.search import Directory


async def test_resolve_case_insensitive(loaded, session_factory):
    async with session_factory() as s:
        d = Directory(s)
        e = await d.resolve("  Noel.Francois@CHU-Toulouse.MSSante.fr ")
        assert e is not None and e.address == "noel.francois@chu-toulouse.mssante.fr"
        assert (e.source, e.type, e.display_name) == ("national", "PER", "Noël FRANÇOIS")
        assert await d.resolve("nobody@chu-toulouse.mssante.fr") is None
        assert await d.resolve("not-an-address") is None


async def test_by_idnat_and_structure(loaded, session_factory):
    async with session_factory() as s:
        d = Directory(s)
        assert [e.address for e in await d.by_idnat("811838425137")] == ["eric.lefevre@ch-amiens.mssante.fr"]
        assert [e.address for e in await d.by_structure("1206291486")] == ["radiologie.206291486@chu-nantes.mssante.fr"]
        assert await d.by_idnat("899999999999") == []
        acts = await d.activities("812871012261")
        assert {a.commune_label for a in acts} == {"LYON", "TOULOUSE"}  # two sites, two activities


async def test_search_criteria(loaded, session_factory):
    async with session_factory() as s:
        d = Directory(s)
        names = lambda es: sorted(e.address.split("@")[0] for e in es)
        # accent- and case-insensitive prefix
        assert names(await d.search(name="cote")) == ["anne.cote", "chloe.cote", "eric.cote", "luc.cote"]
        assert names(await d.search(name="CÔTÉ É")) == ["eric.cote"]
        assert names(await d.search(name="lefe")) == ["eric.lefevre", "luc.lefebvre", "luc.lefevre", "sophie.lefevre"]
        assert names(await d.search(name="de la font")) == ["helene.de-la-fontaine"]
        assert names(await d.search(name="urgences", type="ORG")) == [
            "urgences.209270651",
            "urgences.804235737",
            "urgences.809296221",
        ]
        med = await d.search(profession="10", limit=100)
        assert med and all(e.profession_code == "10" for e in med)
        assert {e.address for e in await d.search(profession="Médecin", limit=100)} == {e.address for e in med}
        assert names(await d.search(specialty="sm04")) == [
            "loic.francois",
            "luc.roux",
            "marie.bertrand",
            "marie.martinez",
            "noel.francois",
        ]
        assert all(e.postcode.startswith("75") for e in await d.search(postcode="75"))
        dep = await d.search(department="2A", limit=100)
        assert dep and all(e.department == "2A" for e in dep)
        both = await d.search(profession="10", department="75", limit=100)
        assert both and all(e.profession_code == "10" and e.department == "75" for e in both)
        assert len(await d.search(type="org", limit=100)) == 9
        assert len(await d.search(type="PER", limit=3)) == 3
        assert await d.search() == []  # no criterion: no dump


async def test_local_mailbox_takes_precedence(loaded, session_factory):
    async with session_factory() as s:
        local = LocalDirectory(s)
        await local.add_mailbox(
            "francois.richard@hopital-demo.mssante.test",
            "PER",
            idnat="817190659403",
            display_name="Dr François Richard (local)",
        )
        await local.add_mailbox(
            "secretariat@hopital-demo.mssante.test",
            "ORG",
            structure_id="1809296221",
            display_name="Secrétariat",
            members=["francois.richard@hopital-demo.mssante.test"],
        )
        await s.commit()
    async with session_factory() as s:
        d = Directory(s)
        e = await d.resolve("FRANCOIS.RICHARD@hopital-demo.mssante.test")
        assert (e.source, e.display_name) == ("local", "Dr François Richard (local)")
        assert e.profession_label == "Médecin"  # descriptive fields still from the national row
        mine = await d.by_idnat("817190659403")
        assert [(m.address, m.source) for m in mine] == [
            ("francois.richard@hopital-demo.mssante.test", "local"),
            ("secretariat@hopital-demo.mssante.test", "local"),
        ]
        org = await d.by_structure("1809296221")
        assert [m.address for m in org] == [
            "secretariat@hopital-demo.mssante.test",
            "urgences.809296221@hopital-demo.mssante.test",
        ]
        assert (await d.resolve("secretariat@hopital-demo.mssante.test")).members == (
            "francois.richard@hopital-demo.mssante.test",
        )
        found = await d.search(name="secr")
        assert [f.address for f in found][:1] == ["secretariat@hopital-demo.mssante.test"]
        # A red-listed local mailbox hides the national row of the same address from searches.
        row = await s.get(LocalMailbox, "francois.richard@hopital-demo.mssante.test")
        row.red_list = True
        await s.commit()
    async with session_factory() as s:
        d = Directory(s)
        # The other Richards are still found; only the red-listed address is gone.
        assert {e.address for e in await d.search(name="richard")} == {
            "eric.richard@chu-nantes.mssante.fr",
            "zoe.richard@chu-toulouse.mssante.fr",
        }
        assert (await d.resolve("francois.richard@hopital-demo.mssante.test")).red_list is True
