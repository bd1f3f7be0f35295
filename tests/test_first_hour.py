"""A newcomer's first hour: the commands `mss demo` prints work, `mss serve` says what it listens
on, a busy port or a second instance is one clear line (not a traceback), `make run
BASE_PORT=N`, `mss --version`, and the small CLI fixes (name search, unknown app password id,
aligned `mailbox list`, `pki crl` help, the SPDX license)."""

from __future__ import annotations

import errno
import importlib.metadata
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from support import ROOT, start_server

VENV_MSS = Path(sys.executable).with_name("mss")
BANNER_LISTENERS = ("SMTP submission", "SMTP submissions", "SMTP MTA", "IMAP", "IMAPS", "HTTP")


def mss(*args: str, cwd: Path = ROOT, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mss", *args], cwd=cwd, capture_output=True, text=True, **kw)


def mss_json(dep, *args: str):
    res = mss(*args, "-c", str(dep.config), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def path_without_venv() -> str:
    venv_bin = str(Path(sys.executable).parent)
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)


class Started:
    """A process whose stderr goes to a file we can wait on."""

    def __init__(self, argv: list[str], cwd: Path, err: Path, env: dict | None = None) -> None:
        self.err = err
        with err.open("wb") as fh:
            self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=fh, env=env)

    def text(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text(), re.S)
            if m:
                return m
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode} before {pattern!r}:\n{self.text()}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} after {timeout}s:\n{self.text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)


# -- mss --version ------------------------------------------------------------------------------


def test_version_comes_from_the_package_metadata():
    res = mss("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"mss {importlib.metadata.version('mss')}"


def test_the_package_license_is_an_spdx_expression():
    """PEP 639: the string form (setuptools >= 77 warns about the old TOML table)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "AGPL-3.0-or-later"
    backend = project["build-system"]["requires"]
    floor = next(r for r in backend if r.startswith("setuptools"))
    assert tuple(int(x) for x in re.search(r">=\s*([\d.]+)", floor).group(1).split(".")) >= (77,)
    assert importlib.metadata.metadata("mss")["License-Expression"] == "AGPL-3.0-or-later"


# -- mss demo prints a command that works, mss serve lists every listener -------------------------


@pytest.mark.parametrize("how", ["venv-script", "python-m"])
def test_the_command_demo_prints_starts_the_server_from_here(tmp_path, how):
    argv = [str(VENV_MSS)] if how == "venv-script" else [sys.executable, "-m", "mss"]
    if how == "venv-script" and not VENV_MSS.is_file():
        pytest.skip("no console script next to this interpreter")
    env = {**os.environ, "PATH": path_without_venv()}  # as after a fresh `make run`: mss not on PATH
    made = subprocess.run(
        [*argv, "demo", str(tmp_path / "d"), "--base-port", "0"], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert made.returncode == 0, made.stderr
    line = next(ln for ln in made.stdout.splitlines() if ln.startswith("start it with: "))
    command = shlex.split(line.removeprefix("start it with: "))
    assert command[-3:] == ["serve", "-c", str(tmp_path / "d" / "mss.toml")]
    if how == "venv-script":
        assert command[0] == os.path.relpath(VENV_MSS, ROOT)  # `.venv/bin/mss`, relative to where we are
    else:
        assert command[1:3] == ["-m", "mss"]
    srv = Started(command, ROOT, tmp_path / "serve.err", env)
    try:
        m = srv.wait_for(r"ready host=\S+ ports=(\{.*?\})")
        ports = json.loads(m.group(1))
        banner = srv.wait_for(r"is listening.*?HTTP .*?\n").group(0)
    finally:
        assert srv.stop() == 0
    assert set(ports) == {"submission", "submissions", "mta", "imap", "imaps", "http"}
    for role, label in zip(
        ("submission", "submissions", "mta", "imap", "imaps", "http"), BANNER_LISTENERS, strict=True
    ):
        assert re.search(rf"^  {re.escape(label)} +127\.0\.0\.1:{ports[role]}\b", banner, re.M), (label, banner)


# -- a busy port, a second instance ---------------------------------------------------------------


def set_port(config: Path, name: str, port: int) -> None:
    text = config.read_text(encoding="utf-8")
    text, n = re.subn(rf"(?m)^{name} = \d+$", f"{name} = {port}", text)
    assert n == 1
    config.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "label"),
    [("submission", "SMTP submission"), ("mta", "SMTP MTA"), ("imaps", "IMAPS"), ("http", "HTTP")],
)
def test_a_busy_port_is_one_clear_line(fresh_deployment, name, label):
    dep = fresh_deployment
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        set_port(dep.config, name, busy)
        res = mss("serve", "-c", str(dep.config), timeout=120)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    error = errors[0]
    assert f"127.0.0.1:{busy}" in error and f"({label}, [listen] {name})" in error
    assert "already in use" in error
    assert "--base-port" in error and "make run BASE_PORT=" in error
    assert "is listening" not in res.stderr  # no banner for listeners that never listened


def test_a_second_serve_of_the_same_deployment_names_the_running_one(fresh_deployment):
    dep = fresh_deployment
    first = start_server(dep)
    try:
        pid_file = dep.config.parent / "mss.pid"
        assert pid_file.read_text().strip() == str(first.proc.pid)
        res = mss("serve", "-c", str(dep.config), timeout=120)
        assert res.returncode != 0
        assert "Traceback" not in res.stderr
        assert f"already being served by process {first.proc.pid}" in res.stderr
        assert str(pid_file) in res.stderr and f"kill {first.proc.pid}" in res.stderr
        # The first one still serves.
        with socket.create_connection(("127.0.0.1", first.port("submission")), timeout=10) as c:
            assert c.recv(3) == b"220"
    finally:
        first.proc.kill()  # kill -9: the pid file stays, the lock goes with the process
        first.proc.wait(10)
    assert pid_file.read_text().strip() == str(first.proc.pid)
    again = start_server(dep)
    try:
        assert pid_file.read_text().strip() == str(again.proc.pid)
    finally:
        assert again.stop() == 0


# -- make run BASE_PORT=N -------------------------------------------------------------------------


def make_demo(folder: Path, *variables: str) -> subprocess.CompletedProcess:
    # -o: never rebuild the venv from here (its stamp may be older than pyproject.toml).
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "demo", f"DEMO={folder}", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_make_demo_takes_a_base_port_and_keeps_a_demo_made_on_others(tmp_path):
    folder = tmp_path / "demo"

    def ports() -> dict:
        return json.loads((folder / "demo.json").read_text())["ports"]

    made = make_demo(folder, "BASE_PORT=32600")
    assert made.returncode == 0, made.stderr
    assert ports() == {
        "submission": 32600,
        "submissions": 32601,
        "mta": 32602,
        "imap": 32603,
        "imaps": 32604,
        "http": 32605,
    }
    assert "imap = 32603" in (folder / "mss.toml").read_text()
    before = (folder / "demo.json").read_text()
    assert make_demo(folder, "BASE_PORT=32600").returncode == 0  # same ports: kept as it is
    assert make_demo(folder).returncode == 0
    assert (folder / "demo.json").read_text() == before
    # FORCE=0 (or no) is not "set": the demo and its mail stay (a made mark file survives).
    (folder / "kept.mark").write_text("mail lives here")
    for value in ("FORCE=0", "FORCE=no", "FORCE="):
        assert make_demo(folder, value).returncode == 0, value
        assert (folder / "demo.json").read_text() == before, value
        assert (folder / "kept.mark").exists(), value
    other = make_demo(folder, "BASE_PORT=32700")
    assert other.returncode != 0
    assert "other ports" in other.stderr and "make run BASE_PORT=32700 FORCE=1" in other.stderr
    assert (folder / "demo.json").read_text() == before  # nothing changed
    forced = make_demo(folder, "BASE_PORT=32700", "FORCE=1")
    assert forced.returncode == 0, forced.stderr
    assert ports()["submission"] == 32700 and ports()["http"] == 32705


# -- CLI details ----------------------------------------------------------------------------------


def test_annuaire_search_finds_local_mailboxes_by_any_word_with_their_surname(fresh_deployment):
    dep = fresh_deployment
    claire = dep.mailbox("PER", 0)["address"]
    for query in ("MARTIN", "martin", "Màrtin", "claire", "claire mar", "mart"):
        hits = mss_json(dep, "annuaire", "search", "--name", query)
        assert [h["address"] for h in hits] == [claire], query
        assert hits[0]["source"] == "local"
        assert (hits[0]["last_name"], hits[0]["first_name"]) == ("MARTIN", "CLAIRE")  # from its certificate
    for query in ("artin", "martinez", "claire durand"):
        assert mss_json(dep, "annuaire", "search", "--name", query) == [], query
    # ORG and APP mailboxes by a word of their display name; no surname made up for them.
    org = mss_json(dep, "annuaire", "search", "--name", "cardiologie")
    assert [h["type"] for h in org] == ["ORG"] and org[0]["last_name"] == ""
    text = mss("annuaire", "search", "--name", "MARTIN", "-c", str(dep.config))
    assert text.returncode == 0 and claire in text.stdout


def test_revoking_an_unknown_app_password_id_fails_and_revokes_nothing(fresh_deployment):
    dep = fresh_deployment
    paul = dep.mailbox("PER", 1)["address"]
    created = mss_json(dep, "mailbox", "app-password", paul, "--label", "Outlook")

    def ids() -> list[int]:
        return [p["id"] for p in mss_json(dep, "mailbox", "app-password", paul, "--list")["app_passwords"]]

    assert ids() == [created["id"]]
    unknown = created["id"] + 99
    for args in (["--revoke", str(unknown)], ["--revoke", str(created["id"]), "--revoke", str(unknown)]):
        res = mss("mailbox", "app-password", paul, *args, "-c", str(dep.config))
        assert res.returncode != 0
        assert f"no app password #{unknown}" in res.stderr and "nothing revoked" in res.stderr
        assert ids() == [created["id"]]
    # Another mailbox's id is unknown for this one.
    claire = dep.mailbox("PER", 0)["address"]
    res = mss("mailbox", "app-password", claire, "--revoke", str(created["id"]), "-c", str(dep.config))
    assert res.returncode != 0 and ids() == [created["id"]]
    res = mss("mailbox", "app-password", f"nobody@{dep.domain}", "--revoke", "1", "-c", str(dep.config))
    assert res.returncode != 0 and f"no local mailbox nobody@{dep.domain}" in res.stderr
    ok = mss("mailbox", "app-password", paul, "--revoke", str(created["id"]), "-c", str(dep.config))
    assert ok.returncode == 0 and "1 app password(s) revoked" in ok.stdout
    assert ids() == []


def test_mailbox_list_columns_line_up(fresh_deployment, tmp_path):
    dep = fresh_deployment
    long_address = f"app.a-much-longer-local-part@{dep.domain}"
    created = mss(
        "mailbox", "create", long_address, "--type", "APP", "--structure", dep.mailbox("APP")["structure"],
        "--out", str(tmp_path), "-c", str(dep.config),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    mss_json(dep, "mailbox", "app-password", dep.mailbox("PER", 0)["address"])
    res = mss("mailbox", "list", "-c", str(dep.config))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    header = lines[0]
    assert header.split() == ["TYPE", "ADDRESS", "ID", "KEYS", "APP-PASSWORDS", "MEMBERS(RIGHTS)"]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    assert len(lines) == 1 + len(dep.doc["mailboxes"]) + 1
    for line in lines[1:]:
        for col in starts[1:]:
            assert line[col - 2 : col] == "  " and line[col] != " ", (col, line)
    assert any(long_address in ln for ln in lines)


def test_a_mailbox_whose_certificate_cannot_be_issued_is_a_clear_error(fresh_deployment, tmp_path):
    """An APP address is the common name of its certificate, at most 64 characters (RFC 5280)."""
    dep = fresh_deployment
    address = f"{'x' * 40}@{dep.domain}"
    res = mss(
        "mailbox", "create", address, "--type", "APP", "--structure", dep.mailbox("APP")["structure"],
        "--out", str(tmp_path / "keys"), "-c", str(dep.config),
    )  # fmt: skip
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"cannot issue the encryption certificate of {address}" in res.stderr and "nothing created" in res.stderr
    assert address not in [m["address"] for m in mss_json(dep, "mailbox", "list")["mailboxes"]]
    assert not (tmp_path / "keys").exists() or list((tmp_path / "keys").iterdir()) == []


def test_pki_crl_help_names_the_default_it_uses(fresh_deployment):
    dep = fresh_deployment
    help_text = " ".join(mss("pki", "crl", "--help").stdout.split())
    assert "crl/ inside the [pki] directory (pki/ca/crl in a demo)" in help_text
    doc = mss_json(dep, "pki", "crl")
    written = sorted(Path(p).resolve() for p in doc["crl_files"])
    pki_dir = dep.settings().path(dep.settings().pki.directory)
    assert pki_dir == (dep.directory / "pki/ca").resolve() or pki_dir == dep.directory / "pki/ca"
    assert {p.parent for p in written} == {(dep.directory / "pki/ca/crl").resolve()}
    configured = sorted((dep.directory / p).resolve() for p in dep.settings().tls.crl_files)
    assert written == configured


def test_the_instance_lock_is_exclusive_and_optional(tmp_path, caplog):
    """Unit level: a second holder is refused with the first one's pid; a folder where the
    lock cannot be made (read-only, or gone) only costs a warning."""
    from mss.serve import ServeError, acquire_instance_lock

    config = tmp_path / "mss.toml"
    config.write_text("")
    first = acquire_instance_lock(config)
    try:
        assert (tmp_path / "mss.pid").read_text() == f"{os.getpid()}\n"
        with pytest.raises(ServeError, match=rf"already being served by process {os.getpid()}"):
            acquire_instance_lock(config)  # another open file description: flock refuses it
    finally:
        first.close()
    acquire_instance_lock(config).close()  # released with its holder
    with caplog.at_level("WARNING", logger="mss.serve"):
        assert acquire_instance_lock(tmp_path / "missing-folder" / "mss.toml") is None
    assert "no instance lock" in caplog.text


@pytest.mark.parametrize(
    ("code", "stage", "expected"),
    [
        (errno.EACCES, "http", "permission denied (ports below 1024 need privileges)"),
        (errno.EADDRNOTAVAIL, "smtp", "is not an address of this machine"),
        (errno.EADDRINUSE, "imap", "already in use"),
    ],
)
def test_bind_failures_name_the_listener(code, stage, expected):
    from mss.config import Settings
    from mss.serve import _bind_failure

    settings = Settings(
        domain="d.test",
        listen={"submission": 587, "submissions": 465, "mta": 25, "imap": 143, "imaps": 993, "http": 80},
    )
    port = {"http": 80, "smtp": 465, "imap": 993}[stage]
    message = f"error while attempting to bind on address ('127.0.0.1', {port}): x" if stage != "http" else "x"
    text = str(_bind_failure(settings, stage, OSError(code, message)))
    name = {"http": "http", "smtp": "submissions", "imap": "imaps"}[stage]
    assert f"127.0.0.1:{port}" in text and f"[listen] {name})" in text and expected in text
