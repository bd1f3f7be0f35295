"""A real Debian Postfix, started by a test in a scratch folder, as a peer operator of MSS.

Nothing of the machine's own Postfix is used but its programs: the folder holds its own
`main.cf`/`master.cf` (config_directory), queue, data directory, log and mailboxes. It runs
`postfix start-fg` (Postfix 3.3+) as a child process, so the test owns it and stops it.

The Postfix speaks for its own domain with a SERV certificate of the test PKI, both ways:
- as a server, `smtpd` on an ephemeral port of 127.0.0.1 requires STARTTLS
  (`smtpd_tls_security_level = encrypt`) and asks for the client's certificate;
- as a client, `smtp` presents the same certificate and verifies MSS's against the test
  trust anchors with the name of the route (`smtp_tls_security_level = secure`, nexthop
  `[localhost]`, which the demo's SERV certificates carry), TLS 1.2 at least;
- its own domain is delivered by `virtual(8)` to one Maildir per known user, so the test
  reads what arrived; other users are refused with 550 5.1.1 at RCPT;
- a transport map sends each MSS domain to that MSS's `mta` port.

Requires root (Postfix's master runs as root and drops to `mail_owner`) and the `postfix`
package (Makefile DEB_TEST_PACKAGES).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"


def postfix_available() -> str | None:
    """None when a scratch Postfix can run here, else why not (for pytest.skip)."""
    if not Path(POSTFIX).is_file():
        return "postfix is not installed (make deb-test installs it)"
    if os.geteuid() != 0:
        return "a Postfix master must start as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Every service runs unchained (chroot "n"): a chroot would need a copy of /etc files in the
# scratch queue directory. `postlog` carries the log to maillog_file (Postfix 3.4+).
_MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def _inline(table: Mapping[str, str]) -> str:
    """A Postfix `inline:` table (Postfix 3.0+), no file and no postmap."""
    return "inline:{ " + ", ".join(f"{{ {k} = {v} }}" for k, v in table.items()) + " }" if table else ""


@dataclass
class ScratchPostfix:
    """One Postfix instance (see the module docstring).

    Postfix's daemons run as the `postfix` user, which cannot enter pytest's 0700 temporary
    folders: the instance lives in its own folder under /tmp (0755, removed by `stop`), with
    copies of the certificate, key and CA file; `directory` (the test's) receives its log."""

    directory: Path
    domain: str
    users: Sequence[str]
    cert: Path  # SERV certificate (leaf then chain), PEM
    key: Path
    trust_anchors: Path
    transports: dict[str, str] = field(default_factory=dict)  # MSS domain -> "localhost:PORT"
    port: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    root: Path | None = None  # the instance's own folder, made by start()

    @property
    def base(self) -> Path:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mss-postfix-"))
            os.chmod(self.root, 0o755)  # noqa: S103 - the postfix user must enter it; nothing secret but the key (0600)
        return self.root

    @property
    def config_directory(self) -> Path:
        return self.base / "etc"

    @property
    def log_file(self) -> Path:
        return self.base / "postfix.log"

    @property
    def mail_base(self) -> Path:
        return self.base / "mail"

    @property
    def tls_files(self) -> tuple[Path, Path, Path]:
        """(certificate, key, CA file) as Postfix reads them: copies inside its folder."""
        return self.base / "tls" / "cert.pem", self.base / "tls" / "key.pem", self.base / "tls" / "ca.pem"

    def main_cf(self) -> dict[str, str]:
        owner = pwd.getpwnam("postfix")
        cert, key, ca = self.tls_files
        transports = {d: f"smtp:[{hp.rpartition(':')[0]}]:{hp.rpartition(':')[2]}" for d, hp in self.transports.items()}
        return {
            "compatibility_level": "3.6",
            "meta_directory": "/etc/postfix",
            "queue_directory": str(self.base / "queue"),
            "data_directory": str(self.base / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.base),
            "myhostname": f"mx.{self.domain}",
            "mydomain": self.domain,
            "myorigin": self.domain,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "smtputf8_enable": "no",
            # Our domain: one Maildir per user (the trailing slash), read by the test.
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(self.mail_base),
            "virtual_mailbox_maps": _inline({f"{u}@{self.domain}": f"{u}/" for u in self.users}),
            "virtual_uid_maps": f"static:{owner.pw_uid}",
            "virtual_gid_maps": f"static:{owner.pw_gid}",
            "virtual_minimum_uid": "100",
            # MSS domains: straight to their mta listener, no DNS at all.
            "transport_maps": _inline(transports),
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "disable_dns_lookups": "yes",
            # Server side TLS: required, asks for (and logs) the client's certificate.
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key),
            "smtpd_tls_CAfile": str(ca),
            "smtpd_tls_ask_ccert": "yes",
            "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
            "smtpd_tls_protocols": ">=TLSv1.2",
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
            # Client side TLS: our SERV certificate, the peer verified against the test CA and
            # its name against the nexthop (RFC 6125 through Postfix's "secure" level).
            "smtp_tls_security_level": "secure",
            "smtp_tls_secure_cert_match": "nexthop",
            "smtp_tls_CAfile": str(ca),
            "smtp_tls_cert_file": str(cert),
            "smtp_tls_key_file": str(key),
            "smtp_tls_mandatory_protocols": ">=TLSv1.2",
            "smtp_tls_loglevel": "1",
            # Fast retries: tests wait seconds, not minutes.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "delay_warning_time": "0h",
            **self.extra,
        }

    def write_config(self) -> None:
        etc = self.config_directory
        etc.mkdir(parents=True, exist_ok=True)
        for sub in ("queue", "data", "mail", "tls"):
            (self.base / sub).mkdir(exist_ok=True)
        owner = pwd.getpwnam("postfix")
        for sub in ("data", "mail"):
            os.chown(self.base / sub, owner.pw_uid, owner.pw_gid)
        cert, key, ca = self.tls_files
        shutil.copyfile(self.cert, cert)
        shutil.copyfile(self.trust_anchors, ca)
        shutil.copyfile(self.key, key)
        # The queue's top directory must be root's (postfix check); its subdirectories are
        # made by `postfix start` (post-install create-missing).
        text = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (etc / "main.cf").write_text(text)
        (etc / "master.cf").write_text(_MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        # The key is read by root-started processes only, before they drop privileges.
        os.chmod(key, 0o600)

    def postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_directory), *args], capture_output=True, text=True, check=check
        )

    def start(self, timeout: float = 30) -> ScratchPostfix:
        if not self.port:
            self.port = free_port()
        self.write_config()
        self.proc = subprocess.Popen(
            [POSTFIX, "-c", str(self.config_directory), "start-fg"],
            stdout=subprocess.DEVNULL,
            stderr=(self.base / "start-fg.err").open("wb"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postfix exited with {self.proc.returncode}:\n{self.diagnostics()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"postfix not listening on {self.port} after {timeout}s:\n{self.diagnostics()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.postfix("stop", check=False)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.postfix("abort", check=False)
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.root is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for name in ("postfix.log", "start-fg.err"):
                if (self.root / name).is_file():
                    shutil.copyfile(self.root / name, self.directory / name)
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def diagnostics(self) -> str:
        parts = []
        for p in (self.base / "start-fg.err", self.log_file):
            if p.is_file():
                parts.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-6000:])
        return "\n".join(parts)

    def log_text(self) -> str:
        path = self.log_file if self.root is not None else self.directory / "postfix.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def flush(self) -> None:
        """Retry every deferred message now (`postqueue -f` for this instance)."""
        subprocess.run(["postqueue", "-c", str(self.config_directory), "-f"], capture_output=True, check=False)

    def queue(self) -> str:
        return subprocess.run(
            ["postqueue", "-c", str(self.config_directory), "-p"], capture_output=True, text=True, check=False
        ).stdout

    def maildir(self, user: str) -> list[bytes]:
        """The messages delivered to `user`'s Maildir, oldest first."""
        new = self.mail_base / user / "new"
        if not new.is_dir():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)]

    def wait_for_mail(self, user: str, count: int = 1, timeout: float = 30) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.maildir(user)
            if len(got) >= count:
                return [message_from_bytes(m, policy=policy.default) for m in got]  # type: ignore[misc]
            time.sleep(0.2)
        raise AssertionError(
            f"{count} message(s) for {user} not delivered within {timeout}s; queue:\n{self.queue()}\n{self.diagnostics()}"
        )

    def __enter__(self) -> ScratchPostfix:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
