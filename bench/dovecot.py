"""A real Debian Dovecot, started by a benchmark in a scratch folder: the reference IMAP and
LMTP server that MSS is measured against.

Nothing of the machine's own Dovecot is used but its programs: the folder holds its own
`dovecot.conf` (passed with `-c`), its run and state directories, its log, a passwd-file with
the benchmark's users (PLAIN passwords: a scratch instance on 127.0.0.1), and one Maildir per
user. `dovecot -F` runs in the foreground as a child process, so the benchmark owns it.

- LMTP on an ephemeral TCP port of 127.0.0.1 (what Postfix's `lmtp:inet:` transport speaks);
- IMAP on an ephemeral port with STARTTLS (`ssl = required`: no login in clear), with a
  certificate of the project's test PKI;
- mail stored as the `mail` system user, fsynced as Dovecot does by default
  (`mail_fsync = optimized`: at the end of each delivery and each IMAP save).

Requires root (Dovecot's master starts as root and drops to its users) and the
`dovecot-imapd` and `dovecot-lmtpd` packages (Makefile DEB_TEST_PACKAGES).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
PASSWORD = "bench-password"


def dovecot_available() -> str | None:
    """None when a scratch Dovecot can run here, else why not."""
    if not Path(DOVECOT).is_file():
        return "dovecot is not installed (make deb-test installs dovecot-imapd and dovecot-lmtpd)"
    if not Path("/usr/lib/dovecot/lmtp").is_file():
        return "dovecot-lmtpd is not installed"
    if os.geteuid() != 0:
        return "a Dovecot master must start as root"
    for user in ("dovecot", "dovenull", "mail"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"no {user} user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
default_login_user = dovenull
default_internal_user = dovecot
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:{base}/mail/%n
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
mail_fsync = optimized
lmtp_save_to_detail_mailbox = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/mail/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
  unix_listener auth-userdb {{
    mode = 0600
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


@dataclass
class ScratchDovecot:
    """One Dovecot instance (see the module docstring); `users` get PASSWORD."""

    users: Sequence[str]
    cert: Path  # server certificate (leaf then chain), PEM
    key: Path
    lmtp_port: int = 0
    imap_port: int = 0
    proc: subprocess.Popen | None = None
    root: Path | None = None

    @property
    def base(self) -> Path:
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="mss-dovecot-"))
            os.chmod(self.root, 0o755)  # noqa: S103 - Dovecot's users must enter it; the key stays 0600
        return self.root

    @property
    def mail_base(self) -> Path:
        return self.base / "mail"

    def maildir_new(self, user: str) -> Path:
        return self.mail_base / user / "new"

    def delivered(self, user: str) -> int:
        try:
            return sum(1 for _ in os.scandir(self.maildir_new(user)))
        except FileNotFoundError:
            return 0

    def empty_maildir(self, user: str) -> None:
        """A fresh Maildir for the next round (Dovecot recreates it at the next delivery)."""
        shutil.rmtree(self.mail_base / user, ignore_errors=True)

    def write_config(self) -> Path:
        mail = pwd.getpwnam("mail")
        for sub in ("run", "state", "mail", "tls"):
            (self.base / sub).mkdir(exist_ok=True)
        os.chown(self.base / "mail", mail.pw_uid, mail.pw_gid)
        cert, key = self.base / "tls" / "cert.pem", self.base / "tls" / "key.pem"
        shutil.copyfile(self.cert, cert)
        shutil.copyfile(self.key, key)
        os.chmod(key, 0o600)
        (self.base / "passwd").write_text("".join(f"{u}:{{PLAIN}}{PASSWORD}::::::\n" for u in self.users))
        conf = self.base / "dovecot.conf"
        conf.write_text(
            _CONF.format(
                base=self.base,
                cert=cert,
                key=key,
                uid=mail.pw_uid,
                gid=mail.pw_gid,
                lmtp_port=self.lmtp_port,
                imap_port=self.imap_port,
            )
        )
        return conf

    def start(self, timeout: float = 30) -> ScratchDovecot:
        self.lmtp_port = self.lmtp_port or _free_port()
        self.imap_port = self.imap_port or _free_port()
        conf = self.write_config()
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=(self.base / "dovecot.err").open("wb"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.proc.returncode}:\n{self.diagnostics()}")
            try:
                with socket.create_connection(("127.0.0.1", self.lmtp_port), timeout=2) as s:
                    if s.recv(512).startswith(b"220"):
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dovecot not listening after {timeout}s:\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        parts = []
        for p in (self.base / "dovecot.err", self.base / "dovecot.log"):
            if p.is_file():
                parts.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-6000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> ScratchDovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
