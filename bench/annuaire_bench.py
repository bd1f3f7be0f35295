"""National-size benchmark of the directory import and look-ups (not a test).

    python -m bench annuaire [--quick] [--mailboxes 536000] [--activities 600000] [--pg URL] [--no-pg]
                             [--reference OTHER_CHECKOUT] [--data DIR] [--lookups-during]

Generates synthetic extraction files (valid Luhn national ids, a few hundred duplicate
addresses, accented names) in a temporary folder, then for SQLite and, when reachable,
PostgreSQL measures: full import (time, peak RSS of a fresh process), re-import of the same
files, re-import of a file with ~1% changes, resolve-by-address and name-search latency.
Each import runs in a child process so that its peak memory is its own; it reports wall
time, its CPU (user + system, all threads: aiosqlite's included, and the parse worker's of
a first load, also given alone with its peak RSS) and, on PostgreSQL, the CPU of its server
backend. With --reference, each step runs with that checkout's code too, right before ours,
into a database of its own, and a table gives the ratio reference / new. With
--lookups-during, `resolve` runs every 5 ms in the bench's process during two more imports
(a full one into a fresh database, and the first day's files over the next day's): its
latency is what a delivery sees while an operator imports.
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
    """A 'next day' file: ~rate of rows changed, ~rate/2 removed, ~rate/2 added (for
    activities, added rows differ only in a column that is not part of their key: they are
    changes). The changed column is free text on both layouts (PostgreSQL checks lengths)."""
    rnd = random.Random(seed)
    with src.open(encoding="utf-8") as f, dst.open("w", encoding="utf-8", newline="") as g:
        header = f.readline()
        g.write(header)
        cols = header.rstrip("|\n").split("|")
        free = cols.index("Service de rattachement" if "Service de rattachement" in cols else "Raison sociale site")
        for n, line in enumerate(f):
            x = rnd.random()
            if x < rate / 2:
                continue
            if x < rate * 1.5:
                parts = line.split("|")
                parts[free] = "Service modifié"
                line = "|".join(parts)
            g.write(line)
            if x > 1 - rate / 2:
                parts = line.split("|")
                parts[1] = f"nouveau.{n}@medecin.mssante.fr"
                g.write("|".join(parts))


# ------------------------------------------------------------------ child: one import


def _proc_cpu(pid: int) -> float:
    """user + system CPU seconds of a process of this machine (the PostgreSQL backend)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _child_import(url: str, files: list[str], root: str | None) -> dict:
    if root:  # the code under comparison (--reference): its annuaire and mss, not ours
        sys.path.insert(0, root)
    from annuaire.importer import import_files
    from mss.db.engine import create_engine

    engine = create_engine(url)
    backend_pid = None
    if url.startswith("postgresql"):
        async with engine.connect() as c:  # the pooled connection the import then takes
            backend_pid = (await c.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one()
    server0 = _proc_cpu(backend_pid) if backend_pid else 0.0
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    reports = await import_files(engine, files)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the parse worker (annuaire/load_worker.py)
    server = (_proc_cpu(backend_pid) - server0) if backend_pid else None
    await engine.dispose()
    return {
        "seconds": round(dt, 2),
        "cpu_s": round(
            r1.ru_utime
            - r0.ru_utime
            + r1.ru_stime
            - r0.ru_stime
            + c1.ru_utime
            - c0.ru_utime
            + c1.ru_stime
            - c0.ru_stime,
            2,
        ),
        "worker_cpu_s": round(c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime, 2),
        **({"server_cpu_s": round(server, 2)} if server is not None else {}),
        "peak_rss_mb": round(r1.ru_maxrss / 1024, 1),
        "worker_peak_rss_mb": round(c1.ru_maxrss / 1024, 1),
        "reports": [
            {
                k: r.to_dict()[k]
                for k in ("source", "rows_read", "added", "changed", "removed", "unchanged", "rejected_total")
            }
            | {"duplicates": len(r.duplicates)}
            for r in reports
        ],
    }


def _import_cmd(url: str, files: list[Path], root: Path | None) -> list[str]:
    cmd = [sys.executable, __file__, "--child-import", url, *map(str, files)]
    if root is not None:
        cmd[2:2] = ["--root", str(root)]
    return cmd


def run_import(url: str, files: list[Path], root: Path | None = None) -> dict:
    cmd = _import_cmd(url, files, root)
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"import failed ({' '.join(cmd)}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_import_with_lookups(url: str, files: list[Path], addresses: list[str], root: Path | None = None) -> dict:
    """The import in its child process and, in this one meanwhile, `resolve` of random
    addresses at a steady pace (what mail routing does while an operator imports): the
    latency a delivery sees during an import, from the first second to the commit."""
    cmd = _import_cmd(url, files, root)
    with tempfile.TemporaryFile("w+") as err, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        lookups = asyncio.run(_resolve_while(url, proc, addresses))
        if proc.wait():
            err.seek(0)
            raise RuntimeError(f"import failed ({' '.join(cmd)}):\n{err.read()[-3000:]}")
        out.seek(0)
        r = json.loads(out.read().strip().splitlines()[-1])
    return r | {"lookups_during": lookups}


async def _resolve_while(url: str, proc: subprocess.Popen, addresses: list[str], pace: float = 0.005) -> dict:
    """One `resolve` every `pace` seconds, each in a session of its own (a delivery's), until
    `proc` ends. A first load: the old directory is empty, so the look-ups find nothing but
    still read the table's index, beside the import's writes."""
    from annuaire.search import Directory
    from mss.db.engine import create_engine, sessionmaker

    engine = create_engine(url)
    sm = sessionmaker(engine)
    rnd = random.Random(11)
    ts: list[float] = []
    found = 0
    while proc.poll() is None:
        async with sm() as session:
            d = Directory(session)
            t0 = time.perf_counter()
            e = await d.resolve(rnd.choice(addresses))
            ts.append(time.perf_counter() - t0)
        found += e is not None
        await asyncio.sleep(pace)
    await engine.dispose()
    if not ts:
        return {}
    return {
        "n": len(ts),
        "found": found,
        "p50_ms": round(_pct(ts, 0.5) * 1e3, 3),
        "p99_ms": round(_pct(ts, 0.99) * 1e3, 3),
        "max_ms": round(max(ts) * 1e3, 3),
    }


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


async def _pg_reachable(url: str, name: str = "mss_annuaire_bench") -> str | None:
    """A scratch database on the server of `url`, or None when it cannot be reached."""
    import asyncpg

    raw = url.replace("postgresql+asyncpg://", "postgresql://")
    try:
        conn = await asyncpg.connect(raw, timeout=5)
    except Exception:
        return None
    await conn.execute(f"DROP DATABASE IF EXISTS {name}")
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    return url.rsplit("/", 1)[0] + "/" + name


def bench_backend(
    label: str,
    urls: dict[str, str],
    files: list[Path],
    changed: list[Path],
    addresses: list[str],
    names: list[str],
    roots: dict[str, Path | None],
    fresh: dict[str, str] | None = None,
) -> dict:
    """Each step for every code version in turn (`roots`: "new" is this checkout, "reference"
    another one), each into its own database (`urls`), so that both meet the same machine.
    With `fresh` (another empty database per version), two more steps measure `resolve`
    during an import: a full import into that one, and the files of the first day imported
    again over the next day's (a 1 % diff back)."""
    from mss.db.engine import upgrade_sync

    for url in [*urls.values(), *(fresh or {}).values()]:
        upgrade_sync(url)
    res: dict = {"backend": label}
    for step, step_files in (("full_import", files), ("unchanged_reimport", files), ("one_percent_diff", changed)):
        if step == "one_percent_diff":
            res["latency"] = asyncio.run(latencies(urls["new"], addresses, names))
            print(label, "latency", json.dumps(res["latency"]), flush=True)
        for version, root in roots.items():
            r = run_import(urls[version], step_files, root)
            res.setdefault(step, {})[version] = r
            print(label, version, step, json.dumps(r), flush=True)
    if fresh:
        for step, step_urls in (("full_import_with_lookups", fresh), ("diff_back_with_lookups", urls)):
            for version, root in roots.items():
                r = run_import_with_lookups(step_urls[version], files, addresses, root)
                res.setdefault(step, {})[version] = r
                print(label, version, step, json.dumps(r), flush=True)
    return res


def _table(results: list[dict]) -> str:
    """Seconds and CPU per step, and the ratio reference / new (above 1: the new code is faster)."""
    lines = [
        f"{'backend':10} {'step':24} {'version':10} {'wall s':>7} {'cpu s':>6} {'server cpu s':>12} {'rss MB':>7}"
        f" {'worker MB':>9} {'resolve p50/p99/max ms':>24}"
    ]
    for res in results:
        for step in STEPS:
            runs = res.get(step, {})
            for version, r in runs.items():
                server = r.get("server_cpu_s", "")
                lk = r.get("lookups_during")
                lookups = f"{lk['p50_ms']}/{lk['p99_ms']}/{lk['max_ms']}" if lk else ""
                lines.append(
                    f"{res['backend']:10} {step:24} {version:10} {r['seconds']:7.2f} {r['cpu_s']:6.2f} "
                    f"{server!s:>12} {r['peak_rss_mb']:7.1f} {r.get('worker_peak_rss_mb', '')!s:>9} {lookups:>24}"
                )
            if "reference" in runs:
                ref, new = runs["reference"], runs["new"]
                lines.append(
                    f"{res['backend']:10} {step:20} {'ratio':10} {ref['seconds'] / new['seconds']:7.2f} "
                    f"{ref['cpu_s'] / max(new['cpu_s'], 0.01):6.2f}"
                )
    return "\n".join(lines)


STEPS = ("full_import", "unchanged_reimport", "one_percent_diff", "full_import_with_lookups", "diff_back_with_lookups")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench annuaire", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mailboxes", type=int, default=536_000)
    ap.add_argument("--activities", type=int, default=600_000)
    ap.add_argument("--pg", default=os.environ.get("MSS_BENCH_PG_URL", DEFAULT_PG))
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument(
        "--reference", type=Path, help="another checkout (e.g. `git worktree add /tmp/ref main`): run side by side"
    )
    ap.add_argument("--data", type=Path, help="keep the generated files here and reuse them on the next run")
    ap.add_argument(
        "--lookups-during", action="store_true", help="two more steps: resolve latency during a full import and a diff"
    )
    ap.add_argument("--quick", action="store_true", help="a tenth of the national size (53,600 + 60,000 rows)")
    ap.add_argument("--child-import", nargs="+")
    ap.add_argument("--root")
    a = ap.parse_args(argv)
    if a.quick:
        a.mailboxes, a.activities = a.mailboxes // 10, a.activities // 10
    if a.child_import:
        url, *files = a.child_import
        print(json.dumps(asyncio.run(_child_import(url, files, a.root))))
        return
    roots: dict[str, Path | None] = {"reference": a.reference.resolve(), "new": None} if a.reference else {"new": None}
    with tempfile.TemporaryDirectory(prefix="annuaire-bench-") as tmp:
        folder = Path(tmp)
        data = a.data or folder
        data.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        meta = data / f"bench-{a.mailboxes}-{a.activities}.json"
        if meta.exists():
            mb, act = (
                data / "Extraction_Correspondance_MSSante_202611200600.txt",
                data / ("PS_LibreAcces_Personne_activite_202611200600.txt"),
            )
            saved = json.loads(meta.read_text())
            addresses, names = saved["addresses"], saved["names"]
        else:
            mb, act, addresses, names = generate(data, a.mailboxes, a.activities)
            nxt = data / "next"
            nxt.mkdir(exist_ok=True)
            mutate(mb, nxt / mb.name)
            mutate(act, nxt / act.name)
            if a.data:
                meta.write_text(json.dumps({"addresses": addresses, "names": names}))
        nxt = data / "next"
        print(
            f"{a.mailboxes} mailbox + {a.activities} activity rows ready in {time.perf_counter() - t0:.1f} s "
            f"({mb.stat().st_size / 1e6:.0f} + {act.stat().st_size / 1e6:.0f} MB)",
            flush=True,
        )
        files, changed = [mb, act], [nxt / mb.name, nxt / act.name]
        sqlite = {v: f"sqlite+aiosqlite:///{folder / f'bench-{v}.db'}" for v in roots}
        fresh = (
            {v: f"sqlite+aiosqlite:///{folder / f'bench-{v}-lookups.db'}" for v in roots} if a.lookups_during else None
        )
        results = [bench_backend("sqlite", sqlite, files, changed, addresses, names, roots, fresh)]
        if not a.no_pg:
            pg = {v: asyncio.run(_pg_reachable(a.pg, f"mss_annuaire_bench_{v}")) for v in roots}
            if None in pg.values():
                print(f"postgresql: {a.pg} not reachable, skipped")
            else:
                pg_fresh = (
                    {v: asyncio.run(_pg_reachable(a.pg, f"mss_annuaire_bench_{v}_lookups")) for v in roots}
                    if a.lookups_during
                    else None
                )
                results.append(bench_backend("postgresql", pg, files, changed, addresses, names, roots, pg_fresh))  # type: ignore[arg-type]
        print(json.dumps(results, indent=2))
        print(_table(results))


if __name__ == "__main__":
    main()
