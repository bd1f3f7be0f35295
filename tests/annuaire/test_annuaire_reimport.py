"""Re-imports by line digest (issue 12): what pass 1 recognises, what it cannot, and the paths
taken when the table is not what the importer wrote or the diff is large."""

from __future__ import annotations

import pytest
from annuaire_support import ACTIVITY_FILE, MAILBOX_FILE, write_variant
from sqlalchemy import func, select, text

from annuaire import importer
from annuaire.importer import DirectoryFileError, import_files
from annuaire.national import NationalActivity, NationalMailbox
from annuaire.search import Directory

LEROY = "marie.leroy@pharmacien.mssante.fr"
ROUX = "luc.roux@pharmacien.mssante.fr"
COTE = "anne.cote@ch-amiens.mssante.fr"


async def _rows(engine) -> dict[str, tuple]:
    """Every mailbox row, all columns but the digest: what a reader sees."""
    async with engine.connect() as c:
        res = await c.execute(select(NationalMailbox.__table__))
        return {r.address: tuple(v for k, v in r._mapping.items() if k != "row_hash") for r in res}


async def _digests(engine) -> dict[str, int]:
    async with engine.connect() as c:
        return dict((await c.execute(text("SELECT address, row_hash FROM national_mailbox"))).all())


def _next_day(r):
    """One removal, one change, one addition."""
    a = r["Adresse BAL"]
    if a == ROUX:
        return None
    if a == LEROY:
        r["Code postal structure BAL"] = "44000"
    if a == COTE:
        return [r, dict(r, **{"Adresse BAL": "anne.cote2@ch-amiens.mssante.fr"})]
    return r


@pytest.mark.parametrize(
    "knobs",
    [
        {},
        # Pass 2 reads the file again instead of keeping the lines; stored rows found by one
        # scan instead of by key; removals by key after a scan instead of by digest.
        {"TODO_BUFFER": 10, "LOOKUP_SCAN": 0, "REMOVE_BY_DIGEST": 0},
    ],
    ids=["in-memory", "re-read-and-scan"],
)
async def test_diff_is_exact_on_every_path(engine, tmp_path, monkeypatch, knobs):
    await import_files(engine, [MAILBOX_FILE])
    before = await _rows(engine)
    for name, value in knobs.items():
        monkeypatch.setattr(importer, name, value)
    f = write_variant(tmp_path / "next.txt", MAILBOX_FILE, edit=_next_day)
    (r,) = await import_files(engine, [f])
    assert (r.added, r.changed, r.removed, r.unchanged) == (1, 1, 1, 58)
    after = await _rows(engine)
    assert set(before) - set(after) == {ROUX} and set(after) - set(before) == {"anne.cote2@ch-amiens.mssante.fr"}
    assert [a for a in after if a in before and after[a] != before[a]] == [LEROY]
    assert after[LEROY][list(NationalMailbox.__table__.c.keys()).index("postcode")] == "44000"
    (r2,) = await import_files(engine, [f])
    assert (r2.added, r2.changed, r2.removed, r2.unchanged) == (0, 0, 0, 60)
    assert await _rows(engine) == after


async def test_a_key_alone_last_time_and_twice_now_is_merged(engine, session_factory, tmp_path, monkeypatch):
    """The first copy's line is recognised in pass 1 (its row was stored from it); the second
    copy names the same key: the first is fetched again and both are merged, as on a first load."""
    await import_files(engine, [MAILBOX_FILE])
    async with session_factory() as s:
        postcode = (await s.get(NationalMailbox, LEROY)).postcode

    def twice(r):
        if r["Adresse BAL"] == LEROY:
            return [r, dict(r, **{"Code postal structure BAL": "", "Enseigne commerciale structure BAL": "PHARMA"})]
        return r

    f = write_variant(tmp_path / "twice.txt", MAILBOX_FILE, edit=twice)
    lines = f.read_text(encoding="utf-8").splitlines()
    first = next(n for n, ln in enumerate(lines, 1) if LEROY in ln)
    (r,) = await import_files(engine, [f])
    assert r.duplicates[LEROY] == [first, first + 1]
    assert (r.added, r.changed, r.removed) == (0, 1, 0) and r.unchanged == 59
    async with session_factory() as s:
        e = await s.get(NationalMailbox, LEROY)
    assert postcode and (e.postcode, e.org_trade_name) == (postcode, "PHARMA")  # first wins, gaps filled
    parsed = _count_parsing(monkeypatch)
    (r2,) = await import_files(engine, [f])
    assert (r2.added, r2.changed, r2.removed, r2.unchanged) == (0, 0, 0, 60)
    assert parsed == [sum(len(v) for v in r2.duplicates.values())]  # only duplicate lines are parsed


async def test_identical_duplicate_line_appearing_later(engine, tmp_path):
    """The same line twice, where it was once: the second copy's digest was already used."""
    await import_files(engine, [MAILBOX_FILE])
    f = write_variant(tmp_path / "same.txt", MAILBOX_FILE, edit=lambda r: [r, r] if r["Adresse BAL"] == LEROY else r)
    before = await _rows(engine)
    (r,) = await import_files(engine, [f])
    assert LEROY in r.duplicates and (r.added, r.removed) == (0, 0) and r.changed + r.unchanged == 60
    assert await _rows(engine) == before


async def test_digests_not_as_written_are_compared_by_key(engine, tmp_path):
    """A table whose digests are not what the importer wrote (two rows sharing one, one
    edited by hand) is not trusted: those rows are compared by key, the slow and sure way."""
    await import_files(engine, [MAILBOX_FILE])
    before = await _rows(engine)
    async with engine.begin() as c:
        await c.execute(
            text(
                "UPDATE national_mailbox SET row_hash = (SELECT row_hash FROM national_mailbox WHERE address = :a) "
                "WHERE address = :b"
            ),
            {"a": LEROY, "b": ROUX},
        )
        await c.execute(text("UPDATE national_mailbox SET row_hash = 12345 WHERE address = :a"), {"a": COTE})
    # Next file: ROUX gone (its digest is LEROY's: removed by key, LEROY kept), COTE re-read.
    f = write_variant(tmp_path / "next.txt", MAILBOX_FILE, edit=lambda r: None if r["Adresse BAL"] == ROUX else r)
    (r,) = await import_files(engine, [f])
    assert (r.added, r.removed) == (0, 1)
    assert r.changed == 1 and r.unchanged == 58  # COTE rewritten with its line's digest; LEROY unchanged
    after = await _rows(engine)
    assert set(before) - set(after) == {ROUX} and all(after[a] == before[a] for a in after)
    d = await _digests(engine)
    assert len(set(d.values())) == len(d) and d[COTE] != 12345
    (r2,) = await import_files(engine, [f])
    assert (r2.added, r2.changed, r2.removed, r2.unchanged) == (0, 0, 0, 59)


async def test_value_longer_than_its_column_is_rejected(engine, session_factory, tmp_path):
    """PostgreSQL would refuse the value and fail the whole import; SQLite would store it."""

    def edit(r):
        if r["Adresse BAL"] == LEROY:
            r["Code Profession"] = "123456789"  # String(8)
        return r

    f = write_variant(tmp_path / "long.txt", MAILBOX_FILE, edit=edit)
    (r,) = await import_files(engine, [f])
    assert r.rejected == {"value_too_long": 1} and r.added == 59
    assert [(why, d) for _, why, d in r.rejected_lines] == [
        ("value_too_long", "profession_code: 9 characters, at most 8")
    ]
    async with session_factory() as s:
        assert await Directory(s).resolve(LEROY) is None
        assert await Directory(s).resolve(ROUX) is not None


async def test_a_failed_reimport_changes_nothing(engine, tmp_path):
    """Removals by digest and changes of the first file are rolled back with the second."""
    await import_files(engine, [MAILBOX_FILE, ACTIVITY_FILE])
    before = await _rows(engine)
    f = write_variant(tmp_path / "next.txt", MAILBOX_FILE, edit=_next_day)
    bogus = tmp_path / "bogus.txt"
    bogus.write_text("a|b|c|\n1|2|3|\n", encoding="utf-8")
    with pytest.raises(DirectoryFileError):
        await import_files(engine, [f, bogus])
    assert await _rows(engine) == before
    async with engine.connect() as c:
        assert (await c.execute(select(func.count()).select_from(NationalActivity))).scalar_one() == 62


def _count_parsing(monkeypatch) -> list[int]:
    calls = [0]
    real = importer._Parser.raw

    def counting(self, parts):
        calls[0] += 1
        return real(self, parts)

    monkeypatch.setattr(importer._Parser, "raw", counting)
    return calls


def _reference_lines(data: bytes) -> list[bytes]:
    """What `_raw_lines` must give: lines without LF, BOM off line 1, over-long ones marked."""
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()
    if pieces and pieces[0].startswith(b"\xef\xbb\xbf"):
        pieces[0] = pieces[0][3:]
    return [b"LONG" if len(p) > importer.MAX_LINE else p for p in pieces]


@pytest.mark.parametrize("block", [1, 2, 7, 64, 1 << 20])
def test_block_reader_splits_lines_like_a_line_reader(monkeypatch, block):
    import io
    import random

    monkeypatch.setattr(importer, "BLOCK", block)
    monkeypatch.setattr(importer, "MAX_LINE", 20)
    rnd = random.Random(block)
    for _ in range(300):
        parts = [
            rnd.choice([b"", b"a|b|", b"\r", b"x" * rnd.randint(15, 45), b"\xef\xbb\xbf", b"\xc3\xa9"])
            for _ in range(rnd.randint(0, 8))
        ]
        data = b"".join(p + rnd.choice([b"\n", b"\r\n", b""]) for p in parts)
        src = importer._Source("t.txt", len(data), lambda data=data: io.BytesIO(data))
        got = [b"LONG" if raw is importer._LONG else raw for _, raw in importer._raw_lines(src, None)]
        assert got == _reference_lines(data), data
        assert [n for n, _ in importer._raw_lines(src, None)] == list(range(1, len(got) + 1))


async def test_a_change_sets_only_the_columns_that_changed(engine, tmp_path, monkeypatch):
    """A new postcode rewrites that column and the digest, not the seven other indexed ones."""
    await import_files(engine, [MAILBOX_FILE])
    sets = []
    real = importer._Writer._update

    def recording(self, changed):
        sets.append(changed)
        return real(self, changed)

    monkeypatch.setattr(importer._Writer, "_update", recording)
    f = write_variant(tmp_path / "next.txt", MAILBOX_FILE, edit=_next_day)
    (r,) = await import_files(engine, [f])
    assert r.changed == 1 and sets == [("postcode", "row_hash")]
