"""`mss status -c mss.toml`: is this node healthy, from the outside and from its files.

What it looks at (read-only: it never migrates, writes or takes the serve lock):
- every configured listener, as a client would meet it: TCP connect, then the protocol's
  greeting and TLS (implicit on submissions and imaps, STARTTLS on submission and imap,
  HTTPS on http when `[listen] http_tls`), `GET /health` on http. The certificate the server
  presents is compared with the `[tls] cert` file: a mismatch means the running process still
  serves an older certificate (restart it after a renewal). No client certificate is sent,
  so each TLS probe shows in the server's log as a refused certificate (`no_certificate`);
- the database: reachable, and its schema at the newest migration (alembic head);
- each CRL file: thisUpdate and nextUpdate (stale past nextUpdate or `[tls] crl_max_age_s`);
- certificate expiries: the `[tls] cert` file (with its chain) and the trust anchors.
  DKIM keys are bare keys published in DNS: they have no expiry to check.

Exit status (the Nagios plug-in convention, so a monitoring agent can run it as is):
0 healthy, 1 warnings only (an expiry within `--warn-days`, a CRL near its nextUpdate,
a port 0 that cannot be probed), 2 problems (a listener down, the database unreachable or
behind, a stale CRL, an expired certificate, an unreadable file or configuration, a listener
answering something other than its protocol, or `mss status` itself failing: never 1 for a crash).
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import imaplib
import json
import os
import smtplib
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mss.cli.common import config_option, json_option

Level = Literal["ok", "warning", "problem"]
EXIT = {"ok": 0, "warning": 1, "problem": 2}
_LISTENERS = ("submission", "submissions", "mta", "imap", "imaps", "http")


@dataclass
class Check:
    """One thing looked at: `check` is its kind, `name` what exactly, `detail` the finding."""

    check: str
    name: str
    status: Level
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def overall(checks: list[Check]) -> Level:
    if any(c.status == "problem" for c in checks):
        return "problem"
    return "warning" if any(c.status == "warning" for c in checks) else "ok"


# -- listeners ------------------------------------------------------------------------------


def _probe_context() -> ssl.SSLContext:
    """TLS without verification: the probe reports what the server presents and compares it
    with the configured certificate itself (a public-CA check would be wrong for health PKI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _tls_facts(sock: ssl.SSLSocket) -> dict[str, Any]:
    der = sock.getpeercert(binary_form=True) or b""
    return {"tls": sock.version(), "cert_sha256": hashlib.sha256(der).hexdigest() if der else None}


def _smtp(host: str, port: int, timeout: float, *, implicit: bool) -> dict[str, Any]:
    ctx = _probe_context()
    if implicit:
        client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, local_hostname="mss-status", timeout=timeout, context=ctx)
    else:
        client = smtplib.SMTP(host, port, local_hostname="mss-status", timeout=timeout)
    try:
        client.ehlo()
        if not implicit:
            code, text = client.starttls(context=ctx)
            if code != 220:
                raise RuntimeError(f"STARTTLS answered {code} {text.decode(errors='replace')}")
        assert isinstance(client.sock, ssl.SSLSocket)
        return _tls_facts(client.sock)
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


def _imap(host: str, port: int, timeout: float, *, implicit: bool) -> dict[str, Any]:
    ctx = _probe_context()
    if implicit:
        client: imaplib.IMAP4 = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=timeout)
    else:
        client = imaplib.IMAP4(host, port, timeout=timeout)
        client.starttls(ssl_context=ctx)
    try:
        assert isinstance(client.sock, ssl.SSLSocket)
        return _tls_facts(client.sock)
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            client.shutdown()


def _mta(host: str, port: int, timeout: float) -> dict[str, Any]:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        greeting = sock.makefile("rb").readline(1024).decode("ascii", "replace").strip()
        if not greeting[:3].isdigit():
            raise RuntimeError(f"no SMTP greeting (got {greeting[:60]!r})")
        sock.sendall(b"QUIT\r\n")
    return {"greeting": greeting[:3]}


def _http(host: str, port: int, timeout: float, *, tls: bool) -> dict[str, Any]:
    conn: http.client.HTTPConnection
    if tls:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=_probe_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        resp = conn.getresponse()
        body = resp.read(4096)
        if resp.status != 200 or json.loads(body or b"{}").get("status") != "ok":
            raise RuntimeError(f"/health answered {resp.status}")
        facts: dict[str, Any] = {"health": "ok"}
        if tls and isinstance(conn.sock, ssl.SSLSocket):
            facts |= _tls_facts(conn.sock)
        return facts
    finally:
        conn.close()


def _probe_host(host: str) -> str:
    """Where to connect for a listener bound to `host` (the wildcard: this machine)."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - reading the bind address, not binding
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _listener(settings, name: str, port: int, timeout: float, server_sha256: str | None) -> Check:
    host = _probe_host(settings.listen.host)
    where = f"{host}:{port}"
    data: dict[str, Any] = {"host": host, "port": port}
    if port == 0:
        return Check("listener", name, "warning", "port 0 (ephemeral) in the configuration: cannot probe it", data)
    probes: dict[str, Callable[[], dict[str, Any]]] = {
        "submission": lambda: _smtp(host, port, timeout, implicit=False),
        "submissions": lambda: _smtp(host, port, timeout, implicit=True),
        "mta": lambda: _mta(host, port, timeout),
        "imap": lambda: _imap(host, port, timeout, implicit=False),
        "imaps": lambda: _imap(host, port, timeout, implicit=True),
        "http": lambda: _http(host, port, timeout, tls=settings.listen.http_tls),
    }
    try:
        facts = probes[name]()
    except ConnectionRefusedError:
        return Check("listener", name, "problem", f"{where}: connection refused (not running?)", data)
    except (
        OSError,
        ssl.SSLError,
        smtplib.SMTPException,
        imaplib.IMAP4.error,
        http.client.HTTPException,  # BadStatusLine and friends: not OSErrors
        RuntimeError,
        ValueError,
    ) as exc:
        return Check("listener", name, "problem", f"{where}: {type(exc).__name__}: {exc}", data)
    except Exception as exc:  # noqa: BLE001 - whatever a wrong answer makes a client library raise is the finding
        return Check("listener", name, "problem", f"{where}: unexpected {type(exc).__name__}: {exc}", data)
    data |= facts
    detail = f"{where} answers"
    if facts.get("tls"):
        detail += f" ({facts['tls']})"
    sha = facts.get("cert_sha256")
    if sha and server_sha256 and sha != server_sha256:
        return Check(
            "listener",
            name,
            "warning",
            f"{where} presents a certificate other than [tls] cert (restart after a renewal?)",
            data,
        )
    return Check("listener", name, "ok", detail, data)


def listeners(settings, timeout: float) -> list[Check]:
    ports = settings.listen.ports()
    server_sha = _leaf_sha256(settings.path(settings.tls.cert))
    with ThreadPoolExecutor(max_workers=len(_LISTENERS)) as pool:
        futures = [pool.submit(_listener, settings, n, ports[n], timeout, server_sha) for n in _LISTENERS]
        return [f.result() for f in futures]


# -- database -------------------------------------------------------------------------------


def _display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


async def _revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from mss.db.engine import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    finally:
        await engine.dispose()


def database(settings, timeout: float) -> Check:
    from alembic.script import ScriptDirectory

    from mss.db.engine import _alembic_config, is_sqlite

    url = settings.resolved_database_url
    shown = _display_url(url)
    data: dict[str, Any] = {"url": shown}
    if is_sqlite(url):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:" and not Path(path).is_file():
            return Check("database", "schema", "problem", f"{shown}: the database file does not exist", data)
    head = ScriptDirectory.from_config(_alembic_config(url)).get_current_head()
    try:
        current = asyncio.run(asyncio.wait_for(_revision(url), timeout))
    except TimeoutError:
        return Check("database", "schema", "problem", f"{shown}: no answer within {timeout:g} s", data)
    except Exception as exc:  # noqa: BLE001 - whatever the driver raises is the finding
        return Check("database", "schema", "problem", f"{shown}: unreachable: {type(exc).__name__}: {exc}", data)
    data |= {"revision": current, "head": head}
    if current != head:
        return Check(
            "database",
            "schema",
            "problem",
            f"{shown}: schema at {current or 'nothing'}, the newest is {head} (run `mss db upgrade`)",
            data,
        )
    return Check("database", "schema", "ok", f"{shown}: reachable, schema at the newest migration {head}", data)


# -- CRLs and certificates ------------------------------------------------------------------


def _when(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def crls(settings, now: datetime, warn: timedelta) -> list[Check]:
    out = []
    max_age = settings.tls.crl_max_age_s
    for p in settings.tls.crl_files:
        path = settings.path(p)
        name = str(p)
        try:
            blob = path.read_bytes()
            crl = x509.load_pem_x509_crl(blob) if b"-----BEGIN" in blob else x509.load_der_x509_crl(blob)
        except (OSError, ValueError) as exc:
            out.append(Check("crl", name, "problem", f"cannot read {path}: {exc}"))
            continue
        this, nxt = crl.last_update_utc, crl.next_update_utc
        data = {
            "issuer": crl.issuer.rfc4514_string(),
            "this_update": this.isoformat(),
            "next_update": nxt.isoformat() if nxt else None,
            "age_s": int((now - this).total_seconds()),
        }
        span = f"thisUpdate {_when(this)}, nextUpdate {_when(nxt) if nxt else 'none'}"
        if nxt is not None and nxt < now:
            out.append(Check("crl", name, "problem", f"stale: {span} (its CA's certificates are refused)", data))
        elif max_age and now - this > timedelta(seconds=max_age):
            out.append(Check("crl", name, "problem", f"older than crl_max_age_s={max_age:g}: {span}", data))
        elif nxt is not None and nxt - now < warn:
            out.append(Check("crl", name, "warning", f"nextUpdate is near, publish a new CRL: {span}", data))
        else:
            out.append(Check("crl", name, "ok", span, data))
    for url in settings.tls.crl_urls:
        out.append(Check("crl", url, "ok", "distribution point: fetched by the server, not by `mss status`"))
    return out


def _certificates(path: Path) -> list[x509.Certificate]:
    from crypto.validate import load_certificates

    return load_certificates(path.read_bytes())


def _leaf_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(_certificates(path)[0].public_bytes(Encoding.DER)).hexdigest()
    except (OSError, ValueError, IndexError):
        return None


def certificates(settings, now: datetime, warn: timedelta) -> list[Check]:
    out = []
    for what, p in (("server certificate", settings.tls.cert), ("trust anchor", settings.tls.trust_anchors)):
        path = settings.path(p)
        try:
            found = _certificates(path)
        except (OSError, ValueError) as exc:
            out.append(Check("certificate", str(p), "problem", f"cannot read {what} file {path}: {exc}"))
            continue
        for cert in found:
            subject = cert.subject.rfc4514_string()
            end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
            data = {"file": str(p), "subject": subject, "not_after": end.isoformat(), "days_left": (end - now).days}
            label = f"{what} {subject}"
            if end < now:
                out.append(Check("certificate", label, "problem", f"expired on {_when(end)}", data))
            elif start > now:
                out.append(Check("certificate", label, "problem", f"not valid before {_when(start)}", data))
            elif end - now < warn:
                out.append(
                    Check(
                        "certificate", label, "warning", f"expires on {_when(end)} (in {(end - now).days} days)", data
                    )
                )
            else:
                out.append(Check("certificate", label, "ok", f"valid until {_when(end)}", data))
    return out


def _pid(config: Path) -> dict[str, Any]:
    """What `<config stem>.pid` (written by `mss serve`) says; informational only."""
    path = config.parent / f"{config.stem}.pid"
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return {"pid": None}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return {"pid": pid, "pid_running": False}
    except PermissionError:
        pass
    return {"pid": pid, "pid_running": True}


def collect(settings, config: Path, *, timeout: float, warn_days: int, crl_warn_hours: float) -> dict[str, Any]:
    now = datetime.now(UTC)
    checks = [
        *listeners(settings, timeout),
        database(settings, timeout),
        *crls(settings, now, timedelta(hours=crl_warn_hours)),
        *certificates(settings, now, timedelta(days=warn_days)),
    ]
    level = overall(checks)
    up = [c.name for c in checks if c.check == "listener" and c.status != "problem" and c.data.get("port")]
    return {
        "status": level,
        "exit_code": EXIT[level],
        "config": str(config),
        "domain": settings.domain,
        "server_up": bool(up) and all(c.status != "problem" for c in checks if c.check == "listener"),
        "ports": settings.listen.ports(),
        **_pid(config),
        "checked_at": now.isoformat(),
        "problems": [f"{c.check} {c.name}: {c.detail}" for c in checks if c.status == "problem"],
        "warnings": [f"{c.check} {c.name}: {c.detail}" for c in checks if c.status == "warning"],
        "checks": [asdict(c) for c in checks],
    }


def _lines(doc: dict[str, Any]) -> list[str]:
    n_p, n_w = len(doc["problems"]), len(doc["warnings"])
    head = {"ok": "healthy", "warning": f"{n_w} warning(s)", "problem": f"{n_p} problem(s), {n_w} warning(s)"}
    lines = [f"MSS {doc['domain']} ({doc['config']}): {head[doc['status']]}"]
    if doc.get("pid"):
        state = "running" if doc.get("pid_running") else "not running"
        lines.append(f"  pid file names process {doc['pid']} ({state})")
    marks = {"ok": "ok     ", "warning": "WARNING", "problem": "PROBLEM"}
    for c in doc["checks"]:
        lines.append(f"  {marks[c['status']]}  {c['check']:11} {c['name']}: {c['detail']}")
    return lines


@click.command()
@config_option
@json_option
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=5.0, show_default=True, help="Seconds per probe.")
@click.option(
    "--warn-days",
    type=click.IntRange(0, 3650),
    default=30,
    show_default=True,
    help="Warn about certificates expiring within this many days.",
)
@click.option(
    "--crl-warn-hours",
    type=click.FloatRange(0, 24 * 365),
    default=24,
    show_default=True,
    help="Warn about CRLs whose nextUpdate is this close.",
)
def status(config: Path | None, as_json: bool, timeout: float, warn_days: int, crl_warn_hours: float) -> None:
    """Is the node healthy: listeners, database, CRLs, certificate expiries.

    Exit status 0 healthy, 1 warnings only, 2 problems (listed).
    """
    from mss.config import ConfigError, default_config_path, load_settings

    path = config or default_config_path()
    try:
        settings = load_settings(path)
    except (FileNotFoundError, ConfigError, ValueError) as exc:
        doc = {"status": "problem", "exit_code": 2, "config": str(path), "problems": [f"configuration: {exc}"]}
        if as_json:
            click.echo(json.dumps(doc, indent=2))
        else:
            click.echo(f"MSS ({path}): cannot read the configuration: {exc}", err=True)
        raise SystemExit(2) from None
    try:
        doc = collect(settings, path, timeout=timeout, warn_days=warn_days, crl_warn_hours=crl_warn_hours)
    except Exception as exc:  # noqa: BLE001 - a crash must exit 2 (problem), not Python's 1 (= warning)
        problem = f"mss status failed: {type(exc).__name__}: {exc}"
        doc = {"status": "problem", "exit_code": 2, "config": str(path), "problems": [problem]}
        if as_json:
            click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
        else:
            click.echo(f"MSS {settings.domain} ({path}): {problem}", err=True)
        raise SystemExit(2) from None
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))
    else:
        for line in _lines(doc):
            click.echo(line)
    raise SystemExit(doc["exit_code"])
