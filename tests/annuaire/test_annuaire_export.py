"""`export` writes local mailboxes in the national layout; the importer reads it back."""

from __future__ import annotations

import io

from annuaire.export import export_local
from annuaire.importer import import_files
from annuaire.local import LocalDirectory
from annuaire.model import LocalMailbox
from annuaire.national import MAILBOX_FIELDS
from annuaire.search import Directory
from mss.db.engine import create_engine, sessionmaker, upgrade


async def test_export_round_trip(loaded, session_factory, tmp_path):
    async with session_factory() as s:
        local = LocalDirectory(s)
        await local.add_mailbox(
            "loic.lambert@hopital-demo.mssante.test",
            "PER",
            idnat="814948083135",
            structure_id="377701436349576",
            display_name="Loïc Lambert",
        )
        await local.add_mailbox(
            "jeanne.neuve@hopital-demo.mssante.test", "PER", idnat="810001045367", display_name="Jeanne Neuve"
        )
        await local.add_mailbox(
            "cardio@hopital-demo.mssante.test",
            "ORG",
            structure_id="1809296221",
            display_name="Cardiologie",
            members=["loic.lambert@hopital-demo.mssante.test"],
        )
        await local.add_mailbox("lps@hopital-demo.mssante.test", "APP", structure_id="1809296221", display_name="DPI")
        await local.add_mailbox(
            "cache@hopital-demo.mssante.test", "PER", idnat="811043321816", display_name="Red Listed"
        )
        (await s.get(LocalMailbox, "cache@hopital-demo.mssante.test")).red_list = True
        await s.commit()
        buf = io.StringIO()
        n = await export_local(s, buf)
    assert n == 4
    lines = buf.getvalue().split("\n")
    assert lines[0] == "|".join(h for _, h in MAILBOX_FIELDS) + "|"
    assert lines[-1] == "" and len(lines) == 6
    for ln in lines[:-1]:
        assert ln.endswith("|") and ln.count("|") == 31
    assert "cache@" not in buf.getvalue()
    by_addr = {ln.split("|")[1]: ln.split("|") for ln in lines[1:-1]}
    assert by_addr["loic.lambert@hopital-demo.mssante.test"][9:11] == ["LAMBERT", "Loïc"]  # from the national row
    assert by_addr["jeanne.neuve@hopital-demo.mssante.test"][2:5] == ["8", "10001045367", "810001045367"]

    out = tmp_path / "Extraction_Correspondance_MSSante_export.txt"
    out.write_text(buf.getvalue(), encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    await upgrade(url)
    other = create_engine(url)
    try:
        (r,) = await import_files(other, [out])
        assert (r.added, r.rejected_total) == (4, 0)
        async with sessionmaker(other)() as s2:
            d = Directory(s2)
            e = await d.resolve("jeanne.neuve@hopital-demo.mssante.test")
            assert (e.type, e.idnat, e.last_name, e.first_name) == ("PER", "810001045367", "Neuve", "Jeanne")
            org = await d.resolve("cardio@hopital-demo.mssante.test")
            assert (org.type, org.structure_id, org.service) == ("ORG", "1809296221", "Cardiologie")
            assert (await d.resolve("lps@hopital-demo.mssante.test")).type == "APP"
    finally:
        await other.dispose()
