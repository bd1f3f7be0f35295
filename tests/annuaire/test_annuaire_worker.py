"""First loads parsed in the worker process (annuaire/load_worker.py, issue 12): the same rows
and the same report as when parsed in the importer's process, whatever the file holds; an error
on either side fails the whole import and leaves no process behind; a wrong plan only costs
speed. The fast paths the first load takes (`_usual_split`, the mailbox key read from the
octets) give what the general ones give."""

from __future__ import annotations

import multiprocessing
import zipfile

import pytest
from annuaire_support import ACTIVITY_FILE, MAILBOX_FILE, write_variant
from sqlalchemy import delete, select

from annuaire import importer
from annuaire.importer import DirectoryFileError, import_files
from annuaire.load_worker import LoadWorker
from annuaire.national import DirectoryImport, NationalActivity, NationalMailbox

TABLES = (NationalMailbox.__table__, NationalActivity.__table__, DirectoryImport.__table__)


async def _snapshot(engine) -> dict[str, set[tuple]]:
    """Every stored row of the two tables, every column (digests included)."""
    async with engine.connect() as c:
        return {t.name: {tuple(r) for r in await c.execute(select(t))} for t in TABLES[:2]}


async def _empty(engine) -> None:
    async with engine.begin() as c:
        for t in TABLES:
            await c.execute(delete(t))


def _report(r: importer.ImportReport) -> dict:
    return r.to_dict()


def _messy_mailboxes(tmp_path):
    """Bad lines of every kind, duplicates (one with a bad copy), CRLF and Latin-1."""

    def edit(r):
        a = r["Adresse BAL"]
        if a == "jean.fournier@medecin.mssante.fr":
            r["Identification nationale PP"] = "813431611726"  # bad check digit
        elif a == "eric.cote@chu-nantes.mssante.fr":
            r["Adresse BAL"] = "eric.cote chu-nantes.mssante.fr"  # not an address
        elif a == "zoe.morel@infirmier.mssante.fr":
            r["Code Profession"] = "123456789"  # longer than its column
        elif a == "luc.roux@pharmacien.mssante.fr":  # three copies, the middle one bad
            bad = dict(r, **{"Identification nationale PP": "81"})
            return [r, bad, dict(r, **{"Service de rattachement": "Officine", "Nom d'exercice": ""})]
        elif a == "marie.leroy@pharmacien.mssante.fr":
            r["Adresse BAL"] = "  Marie.Leroy@Pharmacien.MSSante.fr "
            return [r, dict(r, **{"Adresse BAL": "MARIE.LEROY@pharmacien.mssante.fr"})]
        return r

    f = write_variant(tmp_path / "messy.txt", MAILBOX_FILE, edit=edit, encoding="latin-1", eol="\r\n")
    with f.open("ab") as fh:
        fh.write(b"PER|x@medecin.mssante.fr|8|" + b"|" * 28 + b"oops|extra|\r\n")  # a stray pipe
        fh.write(b"\r\n   \r\n")  # blank lines: not rows
        fh.write(b"A" * (importer.MAX_LINE + 10) + b"\r\n")  # over-long
        fh.write(b"ORG|short.line@ch-amiens.mssante.fr\r\n")  # fewer fields, no trailing pipe
    return f


def _activities(tmp_path):
    def edit(r):
        if r["Identifiant PP"].endswith("7"):
            return [r, dict(r, **{"Téléphone (coord. structure)": "0102030405"})]  # same key twice
        return r

    return write_variant(tmp_path / "act.txt", ACTIVITY_FILE, edit=edit, add={"Colonne nouvelle": "valeur"})


def _zipped(tmp_path):
    z = tmp_path / "Extraction_Correspondance_MSSante_202611200600.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(MAILBOX_FILE, "Extraction_Correspondance_MSSante.txt")
        zf.write(ACTIVITY_FILE, "PS_LibreAcces_Personne_activite.txt")
    return z


@pytest.fixture
def spy(monkeypatch):
    """The sources the worker gave rows for (in this process: what `rows` was called with)."""
    given: list[str] = []
    real = LoadWorker.rows

    def rows(self, path, member):
        given.append(f"{path.name}:{member}")
        return real(self, path, member)

    monkeypatch.setattr(LoadWorker, "rows", rows)
    return given


@pytest.mark.parametrize("case", ["messy", "activities", "zip", "both"])
async def test_the_worker_loads_what_this_process_loads(engine, tmp_path, monkeypatch, spy, case):
    files = {
        "messy": lambda: [_messy_mailboxes(tmp_path)],
        "activities": lambda: [_activities(tmp_path)],
        "zip": lambda: [_zipped(tmp_path)],
        "both": lambda: [_messy_mailboxes(tmp_path), _activities(tmp_path)],
    }[case]()
    here = [_report(r) for r in await import_files(engine, files)]
    rows_here = await _snapshot(engine)
    assert spy == []
    await _empty(engine)
    monkeypatch.setattr(importer, "PARALLEL_MIN", 0)
    monkeypatch.setattr(importer, "CHUNK", 7)  # many chunks, read ahead
    there = [_report(r) for r in await import_files(engine, files)]
    assert len(spy) == len(here)
    assert there == here
    assert await _snapshot(engine) == rows_here
    assert multiprocessing.active_children() == []
    if case == "messy":
        (r,) = here
        assert r["encoding"] == "latin-1"
        assert r["rejected"] == {
            "bad_rpps_check_digit": 1,
            "bad_address": 1,
            "value_too_long": 1,
            "bad_rpps_format": 1,
            "field_count": 1,
            "line_too_long": 1,
        }
        assert {d["key"] for d in r["duplicates"]} >= {
            "luc.roux@pharmacien.mssante.fr",
            "marie.leroy@pharmacien.mssante.fr",
        }


async def test_bad_lines_over_many_chunks_are_counted_in_file_order(engine, tmp_path, monkeypatch, spy):
    monkeypatch.setattr(importer, "PARALLEL_MIN", 0)
    monkeypatch.setattr(importer, "CHUNK", 3)
    f = write_variant(
        tmp_path / "bad.txt", MAILBOX_FILE, edit=lambda r: dict(r, **{"Identification nationale PP": "8123"})
    )
    (r,) = await import_files(engine, [f])
    assert spy and r.added == 0 and r.rejected == {"bad_rpps_format": r.rows_read}
    assert [n for n, _, _ in r.rejected_lines] == list(range(2, r.rows_read + 2))


async def test_an_error_in_the_worker_fails_the_import(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(importer, "PARALLEL_MIN", 0)
    real = LoadWorker.plan

    def plan(self, path, member, order, chunk):  # the child is asked for a table the zip lacks
        real(self, path, "no such member", order, chunk)
        self._planned[-1] = (path, member)

    monkeypatch.setattr(LoadWorker, "plan", plan)
    with pytest.raises(DirectoryFileError, match="no such member"):
        await import_files(engine, [_zipped(tmp_path)])
    assert await _snapshot(engine) == {"national_mailbox": set(), "national_activity": set()}
    assert multiprocessing.active_children() == []


async def test_an_error_here_stops_the_busy_worker(engine, tmp_path, monkeypatch):
    """The import fails while the child still has rows to send (and a file planned after):
    nothing is written, the child is killed, not waited for."""
    monkeypatch.setattr(importer, "PARALLEL_MIN", 0)
    monkeypatch.setattr(importer, "CHUNK", 2)
    real = importer._Writer.flush_inserts
    calls = 0

    async def flush(self):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("disk full")
        await real(self)

    monkeypatch.setattr(importer._Writer, "flush_inserts", flush)
    with pytest.raises(RuntimeError, match="disk full"):
        await import_files(engine, [MAILBOX_FILE, ACTIVITY_FILE])
    assert await _snapshot(engine) == {"national_mailbox": set(), "national_activity": set()}
    assert multiprocessing.active_children() == []


async def test_a_bad_file_after_a_worker_load_fails_the_whole_import(engine, tmp_path, monkeypatch, spy):
    monkeypatch.setattr(importer, "PARALLEL_MIN", 0)
    bogus = tmp_path / "bogus.txt"
    bogus.write_text("a|b|c|\n1|2|3|\n", encoding="utf-8")
    with pytest.raises(DirectoryFileError):
        await import_files(engine, [MAILBOX_FILE, ACTIVITY_FILE, bogus])
    assert spy == [f"{MAILBOX_FILE.name}:None", f"{ACTIVITY_FILE.name}:None"]
    spy.clear()
    with pytest.raises(DirectoryFileError):  # the plan stops at the file that cannot be read
        await import_files(engine, [MAILBOX_FILE, bogus, ACTIVITY_FILE])
    assert spy == [f"{MAILBOX_FILE.name}:None"]
    assert await _snapshot(engine) == {"national_mailbox": set(), "national_activity": set()}
    assert multiprocessing.active_children() == []


async def test_a_wrong_plan_costs_speed_not_rows(engine, tmp_path, monkeypatch, spy):
    """A source planned as a first load whose table is not empty after all (no import plans
    that, but the check is cheap): the worker goes, the rest is parsed here, as a diff."""
    await import_files(engine, [MAILBOX_FILE])
    f = write_variant(tmp_path / "next.txt", MAILBOX_FILE, edit=lambda r: dict(r, **{"Code postal structure BAL": "1"}))
    monkeypatch.setattr(importer, "PARALLEL_MIN", 0)

    async def plan_all(conn, paths, worker):
        for src in importer._sources(f):
            worker.plan(src.path, src.member, importer._insert_statement(conn.dialect, NationalMailbox.__table__)[1], 5)

    monkeypatch.setattr(importer, "_plan", plan_all)
    r, _ = await import_files(engine, [f, ACTIVITY_FILE])
    assert (r.changed, r.unchanged) == (60, 0)
    assert spy == []
    assert multiprocessing.active_children() == []


async def test_two_files_of_one_kind_plan_only_the_first(engine, tmp_path, monkeypatch, spy):
    monkeypatch.setattr(importer, "PARALLEL_MIN", 0)
    f = write_variant(
        tmp_path / "more.txt", MAILBOX_FILE, edit=lambda r: dict(r, **{"Adresse BAL": "x" + r["Adresse BAL"]})
    )
    r1, r2 = await import_files(engine, [MAILBOX_FILE, f])
    assert spy == [f"{MAILBOX_FILE.name}:None"]
    assert (r1.added, r2.added, r2.removed) == (60, 60, 60)  # the second file is a diff against the first


@pytest.mark.parametrize(
    "line",
    [
        b"a|b|c|",
        b"a|b|c|\r",
        b" a | b\x1f| c\r|",
        b"a|b|\xe9t\xe9|",  # Latin-1
        "a|b|été|".encode(),
        b"a|b|c",  # no trailing pipe: the slow path
        b"a|b|c|d|",  # a field too many
        b"a|b|c||",  # an empty one too many
        b"a|b|",  # too few
        b"|||",
        b"",
        b"  ",
        b"a|b|c|\r\r",
    ],
)
def test_the_usual_split_is_the_general_one(line):
    layout = importer._Layout(importer.ACTIVITY, ["x", "y", "z"], {}, 3, [], None)
    parser = importer._Parser.__new__(importer._Parser)
    parser.l = layout
    st1, st2 = {"encoding": "utf-8"}, {"encoding": "utf-8"}
    fast = importer._usual_split(line, st1, 3)
    text = importer._text(line, st2)
    slow = parser.fields(text)
    if fast is not None:
        assert slow is not None and text.strip()
        assert [p.strip() for p in fast[:3]] == [p.strip() for p in slow[:3]]
        assert fast[3].strip() == slow[3] == ""
        assert st1 == st2


@pytest.mark.parametrize(
    "line",
    [
        b"PER| Anne.Cote@CH-Amiens.mssante.fr |x|",
        b"PER|anne\x1f@x.fr|x|",
        "PER|anne.côté@x.fr|x|".encode(),
        "PER|anne.côté@x.fr|x|".encode("latin-1"),
        b"PER|a@x.fr\r",
        b"PER|a@x.fr|\r",
        b"PER|",
        b"PER",
        b"",
    ],
)
def test_the_mailbox_key_from_octets_is_the_key_from_text(line):
    layout = importer._Layout(importer.MAILBOX, ["t", "a", "x"], {"address": 1}, 3, [], None)
    key_of = importer._key_reader(layout, None, {"encoding": "utf-8"})  # type: ignore[arg-type]
    parts = importer._text(line, {"encoding": "utf-8"}).split("|", 2)
    assert key_of(line) == (parts[1].strip().lower() if len(parts) > 1 else "")
