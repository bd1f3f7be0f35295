"""Import of the national files: layouts, encodings, duplicates, bad rows, diffs, atomicity."""

from __future__ import annotations

import asyncio
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from annuaire_support import ACTIVITY_FILE, MAILBOX_FILE, write_variant
from sqlalchemy import func, select

from annuaire.importer import DirectoryFileError, import_files
from annuaire.national import NationalActivity, NationalMailbox
from annuaire.search import Directory
from mss.db.engine import create_engine


async def _count(session_factory, model) -> int:
    async with session_factory() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def test_fixture_files(engine, session_factory):
    mb, act = await import_files(engine, [MAILBOX_FILE, ACTIVITY_FILE])
    assert (mb.kind, mb.rows_read, mb.added, mb.rejected_total) == ("mailbox", 62, 60, 0)
    # Two addresses appear twice in the sample: reported with both line numbers, merged.
    assert mb.duplicates == {
        "eric.lefevre@ch-amiens.mssante.fr": [2, 31],
        "radiologie.206291486@chu-nantes.mssante.fr": [13, 19],
    }
    assert (act.kind, act.rows_read, act.added, act.rejected_total) == ("activity", 62, 62, 0)
    assert await _count(session_factory, NationalMailbox) == 60
    assert await _count(session_factory, NationalActivity) == 62
    async with session_factory() as s:
        e = await Directory(s).resolve("eric.lefevre@ch-amiens.mssante.fr")
    assert (e.last_name, e.first_name, e.profession_code, e.specialty_code) == ("LEFÈVRE", "Éric", "10", "SM49")
    assert e.structure_id == "384980841241187" and e.idnat == "811838425137"


async def test_latin1_crlf_reordered_extra_and_missing_columns(engine, session_factory, tmp_path):
    header = MAILBOX_FILE.read_text(encoding="utf-8").splitlines()[0].rstrip("|").split("|")
    order = list(reversed(header))  # every column elsewhere
    f = write_variant(
        tmp_path / "Extraction_Correspondance_MSSante_old.txt",
        MAILBOX_FILE,
        encoding="latin-1",
        eol="\r\n",
        order=order,
        drop=("Libellé savoir-faire", "Pays structure BAL"),
        add={"Colonne future": "x"},
    )
    raw = f.read_bytes()
    assert b"\r\n" in raw and "LEFÈVRE".encode("latin-1") in raw
    (r,) = await import_files(engine, [f])
    assert r.encoding == "latin-1"
    assert (r.added, r.rejected_total) == (60, 0)
    assert set(r.missing_columns) == {"Libellé savoir-faire", "Pays structure BAL"}
    assert r.unknown_columns == ["Colonne future"]
    async with session_factory() as s:
        e = await Directory(s).resolve("ERIC.COTE@chu-nantes.mssante.fr")
        n = await s.get(NationalMailbox, "eric.cote@chu-nantes.mssante.fr")
    assert (e.last_name, e.first_name, e.specialty_code, e.specialty_label) == ("CÔTÉ", "Éric", "SM49", "")
    assert n.country == "" and n.postcode == "20000"

    # The same directory in UTF-8/LF and the original order: nothing changes but the two
    # columns that were missing and are now filled.
    (r2,) = await import_files(engine, [MAILBOX_FILE])
    assert (r2.added, r2.removed) == (0, 0) and r2.changed == 60


async def test_activity_variant_keeps_unmapped_columns(engine, session_factory, tmp_path):
    header = ACTIVITY_FILE.read_text(encoding="utf-8").splitlines()[0].rstrip("|").split("|")
    f = write_variant(
        tmp_path / "PS_LibreAcces_Personne_activite_x.txt",
        ACTIVITY_FILE,
        encoding="latin-1",
        eol="\r\n",
        order=header[::-1],
        drop=("Code mode exercice",),
        add={"Nouvelle colonne": "valeur"},
    )
    (r,) = await import_files(engine, [f])
    assert (r.kind, r.encoding, r.rejected_total) == ("activity", "latin-1", 0)
    assert r.missing_columns == ["Code mode exercice"]
    async with session_factory() as s:
        acts = await Directory(s).activities("811043321816")
    assert acts and acts[0].last_name == "BONNET" and '"Nouvelle colonne": "valeur"' in acts[0].extra


async def test_zip(engine, tmp_path):
    z = tmp_path / "Extraction_Correspondance_MSSante_202611200600.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(MAILBOX_FILE, MAILBOX_FILE.name)
    (r,) = await import_files(engine, [z])
    assert r.source.endswith(MAILBOX_FILE.name) and r.added == 60


async def test_bad_rows_counted_with_line_numbers(engine, session_factory, tmp_path):
    def edit(r):
        a = r["Adresse BAL"]
        if a == "jean.fournier@medecin.mssante.fr":  # line 4: RPPS check digit off by one
            r["Identification nationale PP"] = "813431611726"
        elif a == "eric.cote@chu-nantes.mssante.fr":  # line 7: not an address
            r["Adresse BAL"] = "eric.cote chu-nantes.mssante.fr"
        elif a == "zoe.morel@infirmier.mssante.fr":  # line 29: RPPS too short
            r["Identification nationale PP"] = "81990916998"
        return r

    f = write_variant(tmp_path / "bad.txt", MAILBOX_FILE, edit=edit)
    with f.open("a", encoding="utf-8") as fh:  # line 64: a value with a stray pipe
        fh.write("PER|x@medecin.mssante.fr|8|" + "|" * 28 + "oops|extra|\n")
    (r,) = await import_files(engine, [f])
    assert r.rejected == {"bad_rpps_check_digit": 1, "bad_address": 1, "bad_rpps_format": 1, "field_count": 1}
    assert sorted((ln, why) for ln, why, _ in r.rejected_lines) == [
        (4, "bad_rpps_check_digit"),
        (7, "bad_address"),
        (29, "bad_rpps_format"),
        (64, "field_count"),
    ]
    assert r.added == 57  # 60 - 3 bad; the import went on
    async with session_factory() as s:
        d = Directory(s)
        assert await d.resolve("jean.fournier@medecin.mssante.fr") is None
        assert await d.resolve("francois.simon@medecin.mssante.fr") is not None


async def test_a_line_without_end_is_rejected_not_read_whole(engine, tmp_path):
    """A multi-megabyte 'line' (no line end) counts as one rejected row; the rest imports."""
    from annuaire.importer import MAX_LINE

    f = tmp_path / "Extraction_Correspondance_MSSante_202611200601.txt"
    lines = MAILBOX_FILE.read_bytes().splitlines(keepends=True)
    f.write_bytes(b"".join(lines[:3]) + b"A" * (MAX_LINE * 40) + b"\n" + b"".join(lines[3:]))
    (r,) = await import_files(engine, [f])
    assert r.rejected == {"line_too_long": 1}
    assert [(ln, why) for ln, why, _ in r.rejected_lines] == [(4, "line_too_long")]
    assert r.added == 60


async def test_reimport_is_a_diff_and_idempotent(engine, session_factory, tmp_path):
    (r0,) = await import_files(engine, [MAILBOX_FILE])
    (r1,) = await import_files(engine, [MAILBOX_FILE])
    assert (r1.added, r1.changed, r1.removed, r1.unchanged) == (0, 0, 0, 60)

    def edit(r):
        a = r["Adresse BAL"]
        if a == "luc.roux@pharmacien.mssante.fr":
            return None  # removed
        if a == "marie.leroy@pharmacien.mssante.fr":
            r["Code postal structure BAL"] = "44000"  # changed
        if a == "anne.cote@ch-amiens.mssante.fr":
            return [r, dict(r, **{"Adresse BAL": "anne.cote2@ch-amiens.mssante.fr"})]  # added
        return r

    f = write_variant(tmp_path / "next.txt", MAILBOX_FILE, edit=edit)
    (r2,) = await import_files(engine, [f])
    assert (r2.added, r2.changed, r2.removed) == (1, 1, 1)
    async with session_factory() as s:
        d = Directory(s)
        assert await d.resolve("luc.roux@pharmacien.mssante.fr") is None
        assert (await d.resolve("marie.leroy@pharmacien.mssante.fr")).postcode == "44000"
        assert await d.resolve("anne.cote2@ch-amiens.mssante.fr") is not None
    (r3,) = await import_files(engine, [f])
    assert (r3.added, r3.changed, r3.removed) == (0, 0, 0)


async def test_all_or_nothing(engine, session_factory, tmp_path):
    bogus = tmp_path / "bogus.txt"
    bogus.write_text("a|b|c|\n1|2|3|\n", encoding="utf-8")
    with pytest.raises(DirectoryFileError):
        await import_files(engine, [MAILBOX_FILE, bogus])
    assert await _count(session_factory, NationalMailbox) == 0


async def test_a_failed_first_load_keeps_the_indexes(engine, session_factory, tmp_path):
    """The indexes a first load drops (to build them once at the end) come back with the
    rollback: the drop is inside the transaction (on SQLite the driver would otherwise have
    committed it on its own), and the next import works."""
    from sqlalchemy import inspect

    bogus = tmp_path / "bogus.txt"
    bogus.write_text("a|b|c|\n1|2|3|\n", encoding="utf-8")

    async def indexes() -> set[str]:
        async with engine.connect() as c:
            return await c.run_sync(lambda s: {i["name"] for i in inspect(s).get_indexes("national_mailbox")})

    before = await indexes()
    assert "ix_national_mailbox_name_key" in before
    with pytest.raises(DirectoryFileError):
        await import_files(engine, [MAILBOX_FILE, bogus])
    assert await indexes() == before
    (r,) = await import_files(engine, [MAILBOX_FILE])
    assert r.added == 60 and await indexes() == before


async def test_readers_see_old_directory_during_import(engine, session_factory, db_url, tmp_path):
    await import_files(engine, [MAILBOX_FILE])
    seen = []

    async def count_from_another_connection() -> int:
        other = create_engine(db_url)
        try:
            async with other.connect() as c:
                return (await c.execute(select(func.count()).select_from(NationalMailbox))).scalar_one()
        finally:
            await other.dispose()

    def probe(_n: int) -> None:  # called mid-import, inside the open write transaction
        with ThreadPoolExecutor(1) as pool:
            seen.append(pool.submit(asyncio.run, count_from_another_connection()).result())

    f = write_variant(tmp_path / "smaller.txt", MAILBOX_FILE, edit=lambda r: None if r["Type de BAL"] == "ORG" else r)
    # The activity file is read after the mailbox removals were executed in the same
    # transaction: a reader probing then must still see the whole old directory.
    r, _ = await import_files(engine, [f, ACTIVITY_FILE], progress=probe)
    assert r.removed == 9
    assert len(seen) >= 2 and set(seen) == {60}
    assert await _count(session_factory, NationalMailbox) == 51


async def test_look_ups_are_not_blocked_by_a_first_load(engine, session_factory, db_url):
    """Mid first load, another connection reads the (still empty) directory at once: no lock
    held by the import stops it (on PostgreSQL a DROP INDEX would, until the commit)."""
    seen = []

    async def resolve_elsewhere() -> int:
        other = create_engine(db_url)
        try:
            async with other.connect() as c:
                if c.dialect.name == "postgresql":
                    await c.exec_driver_sql("SET lock_timeout = '2s'")
                return (await c.execute(select(func.count()).select_from(NationalMailbox))).scalar_one()
        finally:
            await other.dispose()

    def probe(_n: int) -> None:  # called mid-import, inside the open write transaction
        with ThreadPoolExecutor(1) as pool:
            seen.append(pool.submit(asyncio.run, resolve_elsewhere()).result())

    (r,) = await import_files(engine, [MAILBOX_FILE], progress=probe)
    assert r.added == 60 and seen and set(seen) == {0}
    assert await _count(session_factory, NationalMailbox) == 60


async def test_red_list_column(engine, session_factory, tmp_path):
    f = write_variant(
        tmp_path / "rl.txt",
        MAILBOX_FILE,
        add={"Liste rouge": "False"},
        edit=lambda r: dict(r, **{"Liste rouge": "True"}) if r["Adresse BAL"].startswith("zoe.richard@") else r,
    )
    await import_files(engine, [f])
    async with session_factory() as s:
        d = Directory(s)
        assert (await d.resolve("zoe.richard@chu-toulouse.mssante.fr")).red_list is True  # routable
        found = {e.address for e in await d.search(name="richard")}  # but never listed
        assert found == {"eric.richard@chu-nantes.mssante.fr", "francois.richard@hopital-demo.mssante.test"}
        assert "zoe.richard@chu-toulouse.mssante.fr" in {
            e.address for e in await d.search(name="richard", include_red_list=True)
        }


async def test_unchanged_lines_are_recognised_before_parsing(engine, monkeypatch):
    """A re-import knows an unchanged row by the digest of its line as read: nothing of it is
    decoded, split or validated (the issue's re-import target)."""
    from annuaire import importer

    (r0,) = await import_files(engine, [MAILBOX_FILE])
    parsed = _count_parsing(monkeypatch, importer)
    (r1,) = await import_files(engine, [MAILBOX_FILE])
    assert (r1.added, r1.changed, r1.removed, r1.unchanged) == (0, 0, 0, r0.added)
    # Only the duplicate lines are parsed (they are merged before they are compared).
    assert r0.duplicates and parsed == [sum(len(v) for v in r0.duplicates.values())]


def _count_parsing(monkeypatch, importer) -> list[int]:
    """How many lines `_Parser.raw` splits into values from now on (a one-item list)."""
    calls = [0]
    real = importer._Parser.raw

    def counting(self, parts):
        calls[0] += 1
        return real(self, parts)

    monkeypatch.setattr(importer._Parser, "raw", counting)
    return calls


async def test_rows_stored_with_value_digests_are_unchanged_and_upgraded(engine, session_factory, monkeypatch):
    """Rows written before line digests carry the digest of their values: the first re-import
    counts them unchanged and gives them their line's digest, so the next one is fast."""
    from sqlalchemy import text

    from annuaire import importer

    await import_files(engine, [MAILBOX_FILE])
    lines = MAILBOX_FILE.read_bytes().splitlines(keepends=True)
    report = importer.ImportReport(source="x")
    parser = importer._Parser(importer._layout(importer._text(lines[0], {}), report))
    old = {}
    for raw_line in lines[1:]:
        parts = parser.fields(importer._text(raw_line, {}))
        if parts is not None and any(p.strip() for p in parts):
            raw = parser.raw(parts)
            old[parser.key(raw)] = importer._row_hash(raw)
    async with engine.begin() as c:
        for k, h in old.items():
            await c.execute(text("UPDATE national_mailbox SET row_hash = :h WHERE address = :k"), {"h": h, "k": k})
    (r1,) = await import_files(engine, [MAILBOX_FILE])
    assert (r1.added, r1.changed, r1.removed) == (0, 0, 0) and r1.unchanged == len(old)
    async with engine.begin() as c:
        now = dict((await c.execute(text("SELECT address, row_hash FROM national_mailbox"))).all())
    merged = set(r1.duplicates)  # rows merged from duplicate lines keep the digest of their values
    assert merged and all((now[k] != h) == (k not in merged) for k, h in old.items())

    parsed = _count_parsing(monkeypatch, importer)
    (r2,) = await import_files(engine, [MAILBOX_FILE])
    assert r2.unchanged == len(old) and (r2.added, r2.changed) == (0, 0)
    assert parsed == [sum(len(v) for v in r2.duplicates.values())]


async def test_duplicate_lines_stay_unchanged_on_reimport(engine, tmp_path):
    def twice(r):
        if r["Adresse BAL"] == "marie.leroy@pharmacien.mssante.fr":
            return [dict(r, **{"Code postal structure BAL": ""}), r]  # merged: the second fills the gap
        return r

    f = write_variant(tmp_path / "dup.txt", MAILBOX_FILE, edit=twice)
    (r0,) = await import_files(engine, [f])
    assert "marie.leroy@pharmacien.mssante.fr" in r0.duplicates
    (r1,) = await import_files(engine, [f])
    assert (r1.added, r1.changed, r1.removed, r1.unchanged) == (0, 0, 0, r0.added)
