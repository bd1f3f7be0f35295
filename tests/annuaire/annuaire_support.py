"""Helpers of the directory tests (file paths, file variants)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path("/work/shared/fixtures/annuaire")
for _p in Path(__file__).resolve().parents:
    if (_p / "shared" / "fixtures" / "annuaire").is_dir():
        FIXTURES = _p / "shared" / "fixtures" / "annuaire"
        break
MAILBOX_FILE = FIXTURES / "Extraction_Correspondance_MSSante_202611200600.txt"
ACTIVITY_FILE = FIXTURES / "PS_LibreAcces_Personne_activite_202611200600.txt"
WHITELIST_FILE = FIXTURES / "listeblanche.xml"


def write_variant(
    path: Path,
    src: Path,
    *,
    encoding: str = "utf-8",
    eol: str = "\n",
    order: list[str] | None = None,
    drop: tuple[str, ...] = (),
    add: dict[str, str] | None = None,
    edit=None,
) -> Path:
    """Rewrite `src` with reordered/dropped/added columns, another encoding or EOL.

    `edit(row: dict) -> dict | list[dict] | None` may change, drop (None) or multiply rows."""
    lines = src.read_text(encoding="utf-8").splitlines()
    header = lines[0].rstrip("|").split("|")
    rows = [dict(zip(header, ln.rstrip("|").split("|"), strict=False)) for ln in lines[1:] if ln]
    cols = [c for c in (order or header) if c not in drop] + list((add or {}).keys())
    out = []
    for r in rows:
        r = dict(r, **(add or {}))
        res = edit(r) if edit else r
        for x in [] if res is None else res if isinstance(res, list) else [res]:
            out.append("|".join(x.get(c, "") for c in cols) + "|")
    text = eol.join(["|".join(cols) + "|"] + out) + eol
    path.write_bytes(text.encode(encoding))
    return path
