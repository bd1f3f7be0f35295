"""National-size benchmark of the directory import and look-ups (not a test).

    python bench/annuaire_bench.py [--mailboxes 536000] [--activities 600000] [--pg URL]

Generates synthetic extraction files (valid Luhn national ids, a few hundred duplicate
addresses, accented names) in a temporary folder, then for SQLite and, when reachable,
PostgreSQL measures: full import (time, peak RSS of a fresh process), re-import of the same
files, re-import of a file with ~1% changes, resolve-by-address and name-search latency.
Each import runs in a child process so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

LAST = [
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "PETIT",
    "DURAND",
    "LEROY",
    "MOREAU",
    "SIMON",
    "LAURENT",
    "LEFÈVRE",
    "MICHEL",
    "GARCIA",
    "DAVID",
    "BERTRAND",
    "ROUX",
    "VINCENT",
    "FOURNIER",
    "MOREL",
    "GIRARD",
    "ANDRÉ",
    "LEFEBVRE",
    "MERCIER",
    "DUPONT",
    "LAMBERT",
    "BONNET",
    "FRANÇOIS",
    "MARTINEZ",
    "CÔTÉ",
    "ÉTIENNE",
    "LE GALL",
    "DE LA FONTAINE",
    "NGUYEN",
    "MÜLLER",
    "FAURE",
    "ROUSSEAU",
    "BLANC",
    "GUÉRIN",
]
FIRST = [
    "Jean",
    "Marie",
    "Éric",
    "Chloé",
    "Zoé",
    "Loïc",
    "Inès",
    "Hélène",
    "Jérôme",
    "Cécile",
    "Anne",
    "Luc",
    "Pierre",
    "Sophie",
    "Noël",
    "François",
    "Agnès",
    "Anne-Sophie",
    "Jean-Marc",
    "Maëlle",
]
PROF = [
    ("10", "Médecin"),
    ("21", "Pharmacien"),
    ("40", "Chirurgien-Dentiste"),
    ("50", "Sage-Femme"),
    ("60", "Infirmier"),
    ("70", "Masseur-Kinésithérapeute"),
]
SF = [
    ("SM54", "Médecine générale (SM)"),
    ("SM04", "Cardiologie et maladies vasculaires"),
    ("SM49", "Radio-diagnostic"),
    ("", ""),
]
DOMAINS = [f"{p}.mssante.fr" for p in ("medecin", "pharmacien", "infirmier")] + [
    f"ch-{i:03d}.mssante.fr" for i in range(300)
]
CITIES = [
    ("75013", "PARIS", "75"),
    ("69003", "LYON", "69"),
    ("31000", "TOULOUSE", "31"),
    ("44000", "NANTES", "44"),
    ("80000", "AMIENS", "80"),
    ("20000", "AJACCIO", "2A"),
    ("97400", "SAINT-DENIS", "974"),
    ("13001", "MARSEILLE", "13"),
]
SERVICES = ["Urgences", "Radiologie", "Laboratoire", "Secrétariat cardiologie", "Pharmacie", "Maternité"]


def _ascii(s: str) -> str:
    from annuaire.ids import fold

    return fold(s).replace(" ", "-")


def generate(
    folder: Path, n_mailboxes: int, n_activities: int, seed: int = 4
) -> tuple[Path, Path, list[str], list[str]]:
    from annuaire.national import MAILBOX_FIELDS
    from crypto.identity import luhn_check_digit as luhn_digit

    rnd = random.Random(seed)
    n_people = n_activities * 9 // 10
    rpps = []
    for i in range(n_people):
        base = f"1{i:09d}"
        rpps.append(base + luhn_digit(base))
    mb = folder / "Extraction_Correspondance_MSSante_202611200600.txt"
    addresses: list[str] = []
    names: list[str] = []
    with mb.open("w", encoding="utf-8", newline="") as f:
        f.write("|".join(h for _, h in MAILBOX_FIELDS) + "|\n")
        rows = []
        for i in range(n_mailboxes):
            city = rnd.choice(CITIES)
            dom = rnd.choice(DOMAINS)
            if rnd.random() < 0.86:
                p = rpps[i % n_people]
                last, first = rnd.choice(LAST), rnd.choice(FIRST)
                prof = rnd.choice(PROF)
                sf = rnd.choice(SF) if prof[0] == "10" else ("", "")
                siret = f"3{i:013d}"
                siret += luhn_digit(siret[1:])
                addr = f"{_ascii(first)}.{_ascii(last)}.{i}@{dom}"
                row = [
                    "PER",
                    addr,
                    "8",
                    p,
                    "8" + p,
                    "3",
                    siret,
                    "",
                    rnd.choice(["DR", "M", "MME", ""]),
                    last,
                    first,
                    "C",
                    "Civil",
                    prof[0],
                    prof[1],
                    sf[0],
                    sf[1],
                    rnd.choice(["True", "False"]),
                    f"CABINET {last}",
                    "",
                    "",
                    "",
                    str(rnd.randint(1, 200)),
                    "",
                    "R",
                    "DE LA PAIX",
                    "",
                    f"{city[0]} {city[1]}",
                    city[0],
                    city[2],
                    "FRANCE",
                ]
                names.append(_ascii(last)[:4])
            else:
                fin = f"{i % 100000000:08d}"
                fin += luhn_digit(fin)
                svc = rnd.choice(SERVICES)
                addr = f"{_ascii(svc)}.{i}@{dom}"
                row = [
                    rnd.choice(["ORG"] * 20 + ["APP", "CAB"]),
                    addr,
                    "",
                    "",
                    "",
                    "1",
                    "1" + fin,
                    svc,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "True",
                    f"CH {city[1]}",
                    "",
                    "",
                    "",
                    "1",
                    "",
                    "R",
                    "DE L'HÔPITAL",
                    "",
                    f"{city[0]} {city[1]}",
                    city[0],
                    city[2],
                    "FRANCE",
                ]
            addresses.append(addr)
            rows.append("|".join(row) + "|\n")
            if i % 2000 == 1999:  # a few hundred duplicated addresses, as nationally
                rows.append(rows[rnd.randrange(len(rows))])
            if len(rows) >= 10000:
                f.writelines(rows)
                rows = []
        f.writelines(rows)
    act = folder / "PS_LibreAcces_Personne_activite_202611200600.txt"
    header = (
        open(
            ROOT.parent / "shared/fixtures/annuaire/PS_LibreAcces_Personne_activite_202611200600.txt", encoding="utf-8"
        ).readline()
        if (ROOT.parent / "shared/fixtures/annuaire").is_dir()
        else None
    )
    from annuaire.national import ACTIVITY_FIELDS

    cols = header.rstrip("\n").rstrip("|").split("|") if header else [h for _, h in ACTIVITY_FIELDS]
    with act.open("w", encoding="utf-8", newline="") as f:
        f.write("|".join(cols) + "|\n")
        rows = []
        for i in range(n_activities):
            p = rpps[i % n_people]
            city = rnd.choice(CITIES)
            prof = rnd.choice(PROF)
            sf = rnd.choice(SF) if prof[0] == "10" else ("", "")
            v = {
                "Type d'identifiant PP": "8",
                "Identifiant PP": p,
                "Identification nationale PP": "8" + p,
                "Code civilité d'exercice": "DR",
                "Libellé civilité d'exercice": "Docteur",
                "Nom d'exercice": rnd.choice(LAST),
                "Prénom d'exercice": rnd.choice(FIRST),
                "Code profession": prof[0],
                "Libellé profession": prof[1],
                "Code catégorie professionnelle": "C",
                "Code savoir-faire": sf[0],
                "Libellé savoir-faire": sf[1],
                "Code mode exercice": rnd.choice("LSB"),
                "Numéro SIRET site": f"{i:014d}",
                "Identifiant technique de la structure": f"R{i:09d}",
                "Raison sociale site": "CABINET",
                "Code postal (coord. structure)": city[0],
                "Code commune (coord. structure)": city[0],
                "Libellé commune (coord. structure)": city[1],
                "Code Département (structure)": city[2],
                "Autorité d'enregistrement": "ARS",
            }
            rows.append("|".join(v.get(c, "") for c in cols) + "|\n")
            if len(rows) >= 10000:
                f.writelines(rows)
                rows = []
        f.writelines(rows)
    return mb, act, addresses, names


def mutate(src: Path, dst: Path, rate: float = 0.01, seed: int = 5) -> None:
    """A 'next day' file: ~rate of rows changed, ~rate/2 removed, ~rate/2 added."""
    rnd = random.Random(seed)
    with src.open(encoding="utf-8") as f, dst.open("w", encoding="utf-8", newline="") as g:
        g.write(f.readline())
        for n, line in enumerate(f):
            x = rnd.random()
            if x < rate / 2:
                continue
            if x < rate * 1.5:
                parts = line.split("|")
                parts[7] = "Service modifié"
                line = "|".join(parts)
            g.write(line)
            if x > 1 - rate / 2:
                parts = line.split("|")
                parts[1] = f"nouveau.{n}@medecin.mssante.fr"
                g.write("|".join(parts))


# ------------------------------------------------------------------ child: one import


async def _child_import(url: str, files: list[str]) -> dict:
    from annuaire.importer import import_files
    from mss.db.engine import create_engine

    engine = create_engine(url)
    t0 = time.perf_counter()
    reports = await import_files(engine, files)
    dt = time.perf_counter() - t0
    await engine.dispose()
    return {
        "seconds": round(dt, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "reports": [
            {
                k: r.to_dict()[k]
                for k in ("source", "rows_read", "added", "changed", "removed", "unchanged", "rejected_total")
            }
            | {"duplicates": len(r.duplicates)}
            for r in reports
        ],
    }


def run_import(url: str, files: list[Path]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child-import", url, *map(str, files)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ latency


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


async def latencies(url: str, addresses: list[str], names: list[str], n: int = 3000) -> dict:
    from annuaire.search import Directory
    from mss.db.engine import create_engine, sessionmaker

    engine = create_engine(url)
    sm = sessionmaker(engine)
    rnd = random.Random(7)
    out = {}
    async with sm() as session:
        d = Directory(session)
        for _ in range(200):  # warm-up
            await d.resolve(rnd.choice(addresses))
        ts = []
        for _ in range(n):
            a = rnd.choice(addresses)
            if rnd.random() < 0.5:
                a = a.upper()
            t0 = time.perf_counter()
            e = await d.resolve(a)
            ts.append(time.perf_counter() - t0)
            assert e is not None, a
        out["resolve_ms"] = {"p50": round(_pct(ts, 0.5) * 1e3, 3), "p99": round(_pct(ts, 0.99) * 1e3, 3)}
        ts = []
        for _ in range(n // 3):
            prefix = rnd.choice(names)[: rnd.randint(3, 4)]
            t0 = time.perf_counter()
            await d.search(name=prefix, limit=20)
            ts.append(time.perf_counter() - t0)
        out["search_name_ms"] = {"p50": round(_pct(ts, 0.5) * 1e3, 3), "p99": round(_pct(ts, 0.99) * 1e3, 3)}
        ts = []
        for _ in range(n // 3):
            t0 = time.perf_counter()
            await d.search(name=rnd.choice(names)[:3], profession="10", department=rnd.choice(CITIES)[2], limit=20)
            ts.append(time.perf_counter() - t0)
        out["search_name_prof_dept_ms"] = {"p50": round(_pct(ts, 0.5) * 1e3, 3), "p99": round(_pct(ts, 0.99) * 1e3, 3)}
    await engine.dispose()
    return out


async def _pg_reachable(url: str) -> str | None:
    """A scratch database on the server of `url`, or None when it cannot be reached."""
    import asyncpg

    raw = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(raw, timeout=5)
    except Exception:
        return None
    name = "mss_annuaire_bench"
    await conn.execute(f"DROP DATABASE IF EXISTS {name}")
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    return url.rsplit("/", 1)[0] + "/" + name


def bench_backend(
    label: str, url: str, files: list[Path], changed: list[Path], addresses: list[str], names: list[str]
) -> dict:
    from mss.db.engine import upgrade_sync

    upgrade_sync(url)
    res: dict = {"backend": label}
    res["full_import"] = run_import(url, files)
    print(label, "full import", json.dumps(res["full_import"]), flush=True)
    res["unchanged_reimport"] = run_import(url, files)
    print(label, "unchanged re-import", json.dumps(res["unchanged_reimport"]), flush=True)
    res["latency"] = asyncio.run(latencies(url, addresses, names))
    print(label, "latency", json.dumps(res["latency"]), flush=True)
    res["one_percent_diff"] = run_import(url, changed)
    print(label, "1% diff re-import", json.dumps(res["one_percent_diff"]), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailboxes", type=int, default=536_000)
    ap.add_argument("--activities", type=int, default=600_000)
    ap.add_argument("--pg", default=os.environ.get("MSS_BENCH_PG_URL", DEFAULT_PG))
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--child-import", nargs="+")
    a = ap.parse_args()
    if a.child_import:
        url, *files = a.child_import
        print(json.dumps(asyncio.run(_child_import(url, files))))
        return
    with tempfile.TemporaryDirectory(prefix="annuaire-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        mb, act, addresses, names = generate(folder, a.mailboxes, a.activities)
        nxt = folder / "next"
        nxt.mkdir()
        mutate(mb, nxt / mb.name)
        mutate(act, nxt / act.name)
        print(
            f"generated {a.mailboxes} mailbox + {a.activities} activity rows in {time.perf_counter() - t0:.1f} s "
            f"({mb.stat().st_size / 1e6:.0f} + {act.stat().st_size / 1e6:.0f} MB)",
            flush=True,
        )
        results = [
            bench_backend(
                "sqlite",
                f"sqlite+aiosqlite:///{folder / 'bench.db'}",
                [mb, act],
                [nxt / mb.name, nxt / act.name],
                addresses,
                names,
            )
        ]
        if not a.no_pg:
            pg = asyncio.run(_pg_reachable(a.pg))
            if pg is None:
                print(f"postgresql: {a.pg} not reachable, skipped")
            else:
                results.append(
                    bench_backend("postgresql", pg, [mb, act], [nxt / mb.name, nxt / act.name], addresses, names)
                )
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
