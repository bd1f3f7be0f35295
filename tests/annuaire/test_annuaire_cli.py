"""`mss annuaire ...` through click's runner, on a deployment folder with its own mss.toml."""

from __future__ import annotations

import json

import pytest
from annuaire_support import ACTIVITY_FILE, MAILBOX_FILE, WHITELIST_FILE
from click.testing import CliRunner

from mss.cli.annuaire import annuaire


@pytest.fixture
def config(tmp_path, db_url, monkeypatch):
    cfg = tmp_path / "deploy" / "mss.toml"
    cfg.parent.mkdir()
    cfg.write_text('domain = "hopital-demo.mssante.test"\ndatabase_url = "sqlite+aiosqlite:///mss.db"\n')
    if not db_url.startswith("sqlite"):
        monkeypatch.setenv("MSS_DATABASE_URL", db_url)
    return cfg


def run(*args):
    r = CliRunner().invoke(annuaire, [str(a) for a in args], catch_exceptions=False)
    return r


def test_cli(config, tmp_path):
    r = run("import", MAILBOX_FILE, ACTIVITY_FILE, "-c", config)
    assert r.exit_code == 0, r.output
    assert "read 62, added 60, changed 0, removed 0" in r.output
    assert "radiologie.206291486@chu-nantes.mssante.fr: lines 13, 19" in r.output

    r = run("import", MAILBOX_FILE, "-c", config, "--json")
    assert r.exit_code == 0
    (rep,) = json.loads(r.output)
    assert (rep["added"], rep["changed"], rep["removed"], rep["unchanged"]) == (0, 0, 0, 60)

    r = run("resolve", "Eric.Cote@CHU-Nantes.mssante.fr", "-c", config, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["idnat"] == "815240824001"
    r = run("resolve", "eric.cote@chu-nantes.mssante.fr", "-c", config)
    assert "Médecin" in r.output
    r = run("resolve", "nobody@chu-nantes.mssante.fr", "-c", config)
    assert r.exit_code == 1

    r = run("search", "--name", "cote", "--profession", "10", "-c", config, "--json")
    assert [e["address"] for e in json.loads(r.output)] == ["eric.cote@chu-nantes.mssante.fr"]
    r = run("search", "--type", "ORG", "--department", "44", "-c", config)
    assert r.exit_code == 0
    assert (
        "secretariat.441418886@chu-nantes.mssante.fr" in r.output
        and "radiologie.445977465@pharmacien.mssante.fr" in r.output
    )
    assert "zoe.martinez@pharmacien.mssante.fr" not in r.output  # a PER in 44: filtered out by --type
    r = run("search", "-c", config)
    assert r.exit_code == 2  # no criterion

    r = run("whitelist", "import", WHITELIST_FILE, "-c", config, "--json")
    assert json.loads(r.output)["domains"] == 9
    bad = tmp_path / "bad.xml"
    bad.write_text("<nope")
    r = run("whitelist", "import", bad, "-c", config)
    assert r.exit_code == 1 and "not XML" in r.output

    out = tmp_path / "export.txt"
    r = run("export", "--out", out, "-c", config, "--json")
    assert json.loads(r.output) == {"rows": 0, "out": str(out)}
    assert out.read_text(encoding="utf-8").startswith("Type de BAL|Adresse BAL|")

    bogus = tmp_path / "bogus.txt"
    bogus.write_text("x|y|\n")
    r = run("import", bogus, "-c", config)
    assert r.exit_code == 1 and "unknown layout" in r.output
