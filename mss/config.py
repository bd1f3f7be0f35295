"""One Settings object, read from a TOML file (`mss.toml`).

Relative paths in the file are relative to the file's own folder, so a deployment folder
can be moved or copied as a whole.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from mss.records import QuotaLimits

DEFAULT_CONFIG_NAMES = ("mss.toml",)


class _Section(BaseModel):
    """Unknown keys are errors: a misspelt limit must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


class ListenSettings(_Section):
    host: str = "127.0.0.1"
    submission: int = 2587
    submissions: int = 2465
    mta: int = 2525
    imap: int = 2143
    imaps: int = 2993
    http: int = 2080
    # The `http` listener speaks HTTPS with the [tls] server certificate. Plain HTTP is served
    # only on a loopback host (`check_http_transport`): the portal carries health data.
    http_tls: bool = False

    def ports(self) -> dict[str, int]:
        return {
            "submission": self.submission,
            "submissions": self.submissions,
            "mta": self.mta,
            "imap": self.imap,
            "imaps": self.imaps,
            "http": self.http,
        }


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 (an IPv4-mapped loopback too) or `localhost`: nobody else on the
    network can listen in on a connection to it."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


class TLSSettings(_Section):
    cert: Path = Path("pki/server.crt")
    key: Path = Path("pki/server.key")
    trust_anchors: Path = Path("pki/trust-anchors.pem")
    crl_files: list[Path] = Field(default_factory=list)
    # CRL distribution points fetched at every refresh (http is fine: CRLs are signed).
    crl_urls: list[str] = Field(default_factory=list)
    minimum_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"  # MSSANTE.md: 1.2 is the floor
    # CRL files are re-read this often by a running node, so `mss pki revoke` + `mss pki crl`
    # reach it without a restart.
    crl_refresh_s: float = 60.0
    # A CRL past its nextUpdate (or older than crl_max_age_s) refuses every certificate of its
    # CA unless this is false (then it is logged and accepted).
    crl_fail_closed: bool = True
    crl_max_age_s: float | None = None
    # An accepted client certificate is remembered this long (0: never), within its notAfter
    # and its CRLs' freshness, and forgotten at every CRL refresh (crypto.validate): a
    # client's next connections skip the chain and CRL checks. docs/operations.md.
    accept_cache_s: float = Field(300.0, ge=0, le=3600)


class PKISettings(_Section):
    """Where `mss pki` keeps the test PKI (CA keys!): never on a production node."""

    directory: Path = Path("pki/ca")


class TokenSettings(_Section):
    """e-CPS access tokens (OAUTHBEARER / XOAUTH2). Off until `jwks` is set."""

    # Verifier: a JWKS file path (re-read when it changes) or an https:// URL.
    jwks: str | None = None
    issuer: str = ""
    audience: str = "mss"
    acr_values: list[str] = Field(default_factory=list)  # empty: any acr
    skew_s: float = 30.0
    # The small issuer of tests and the demo (`mss token issue`): its private key.
    signing_key: Path | None = None
    # Serve the JWKS file at /.well-known/jwks.json on the http listener.
    serve_jwks: bool = False

    @field_validator("jwks")
    @classmethod
    def _jwks_transport(cls, v: str | None) -> str | None:
        """Keys that sign identities come over TLS: plain http only from this machine
        (the demo's own listener), where nobody on the network can swap them."""
        if v and v.lower().startswith("http://"):
            host = (urlsplit(v).hostname or "").lower()
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("a JWKS URL must use https:// (plain http only for a loopback address)")
        return v

    def jwks_source(self, settings: Settings) -> str | Path | None:
        if not self.jwks:
            return None
        if self.jwks.startswith(("https://", "http://")):
            return self.jwks
        return settings.path(self.jwks)


class DkimSettings(_Section):
    directory: Path = Path("dkim")
    selector: str = "mss"


class RelaySettings(_Section):
    """Mail between operators of the trust space (issue 10, docs/relay.md).

    Outbound mail for another operator's whitelisted domain is queued in the database in the
    transaction that answers `250`, then relayed over mutual TLS with this operator's SERV
    certificate (`[tls] cert`/`key`), DKIM-signed with `[dkim]` keys."""

    #: Off: other operators' domains are answered `550 5.7.1` as before, the `mta` listener
    #: refuses every peer.
    enabled: bool = True
    #: Static transport map: {"domain" = "host:port"}; domains not in it are routed by DNS MX.
    routes: dict[str, str] = Field(default_factory=dict)
    #: Seconds to wait before each retry; the last value repeats (exponential back-off).
    retry_schedule_s: list[float] = Field(default_factory=lambda: [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0])
    #: A message not delivered after this long is returned to its sender (failure DSN).
    max_age_s: float = Field(5 * 24 * 3600, gt=0)
    #: A delay DSN goes out once a message waited this long, when its recipient asked
    #: NOTIFY=DELAY (RFC 3461 4.1).
    delay_warning_s: float = Field(4 * 3600, gt=0)
    connect_timeout_s: float = Field(30, gt=0, le=600)
    command_timeout_s: float = Field(300, gt=0, le=3600)
    #: How long a node owns a queue entry it took (a node killed mid-delivery gives it back
    #: when the lease runs out).
    lease_s: float = Field(300, ge=5, le=24 * 3600)
    #: How often the queue is polled for due entries (new entries wake it at once).
    poll_interval_s: float = Field(5, gt=0, le=3600)
    #: Messages relayed at the same time by one node.
    concurrency: int = Field(4, ge=1, le=256)
    #: Loop detection: a message with more `Received:` fields than this is refused
    #: (RFC 5321 6.3: a simple hop count; Postfix's hopcount_limit is 50).
    max_hops: int = Field(30, ge=5, le=200)
    #: Inbound: refuse a message whose DKIM signature fails (`550 5.7.20`); off: deliver it
    #: with `dkim=fail` in its Authentication-Results field.
    refuse_dkim_fail: bool = False
    #: DKIM public keys of peers instead of DNS (tests, the demo, closed networks):
    #: {"selector._domainkey.domain" = "v=DKIM1; k=rsa; p=..."}.
    dkim_keys: dict[str, str] = Field(default_factory=dict)
    #: Key that encrypts queued messages at rest when they leave in clear over mutual TLS
    #: (no certificate of the remote recipient known): created 0600 on first use.
    queue_key: Path = Path("pki/queue.key")

    @field_validator("routes")
    @classmethod
    def _routes(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for domain, target in v.items():
            host, sep, port = target.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"route for {domain!r} must be host:port, not {target!r}")
            out[domain.strip().lower().rstrip(".")] = target.strip()
        return out

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        if not v or any(x <= 0 for x in v):
            raise ValueError("retry_schedule_s needs at least one positive delay")
        return v


class LimitSettings(_Section):
    # 25 MiB: what common mail services accept; advertised through SMTP SIZE.
    max_message_size: PositiveInt = 25 * 1024 * 1024
    max_recipients: PositiveInt = 100
    smtp_command_line: int = Field(512, ge=512)  # RFC 5321 4.5.3.1.4 sets the floor
    imap_line: int = Field(64 * 1024, ge=1000)
    imap_literal: PositiveInt = 25 * 1024 * 1024 + 64 * 1024
    imap_nesting: int = Field(16, ge=1, le=256)
    idle_timeout_s: int = Field(30 * 60, ge=29 * 60)  # RFC 2177: at least 29 minutes
    imap_preauth_timeout_s: float = Field(60, gt=0, le=600)  # connect to authenticated
    imap_max_connections: PositiveInt = 1000
    imap_max_connections_per_ip: PositiveInt = 50  # authenticated (or valid client certificate)
    # Connections from one address that have not authenticated yet: their own, smaller cap;
    # the oldest is closed for a newcomer (docs/operations.md, "Abuse resistance") if it is
    # older than *_preauth_evict_after_s, else the newcomer is refused.
    imap_max_preauth_per_ip: PositiveInt = 10
    imap_preauth_evict_after_s: float = Field(5, ge=0, le=600)
    smtp_timeout_s: PositiveInt = 300
    # SMTP listeners (submission, submissions, mta), counted like IMAP's.
    smtp_max_connections: PositiveInt = 1000
    smtp_max_connections_per_ip: PositiveInt = 50
    smtp_max_preauth_per_ip: PositiveInt = 10
    smtp_preauth_timeout_s: float = Field(60, gt=0, le=600)  # connect to authenticated
    smtp_preauth_evict_after_s: float = Field(5, ge=0, le=600)
    # The http listener (uvicorn, h11): the request line and header block, the body, and
    # how many connections and requests in flight before it answers 503.
    http_max_head: int = Field(16 * 1024, ge=4 * 1024, le=1024 * 1024)
    http_max_body: int = Field(64 * 1024, ge=0)
    http_max_connections: PositiveInt = 1000
    # Message content whose lines end in a bare LF (practice software): made CRLF, as Postfix's
    # `smtpd_forbid_bare_newline = normalize` does, or refused with 550 5.5.2 (RFC 5321 2.3.8).
    # Only <CRLF>.<CRLF> ends DATA either way (docs/operations.md).
    bare_newline: Literal["normalize", "reject"] = "normalize"
    # Every mailbox's quota (IMAP QUOTA, RFC 9208; SMTP 552 5.2.2), unless the operator set
    # its own (`mss mailbox quota`): octets of stored ciphertext (what encryption makes of a
    # message, a little over its size) and messages; 0 is no limit.
    mailbox_quota: int = Field(10 * 1024**3, ge=0)
    mailbox_quota_messages: int = Field(1_000_000, ge=0)

    @property
    def quota(self) -> QuotaLimits:
        """The default limits as the store takes them."""
        return QuotaLimits(storage=self.mailbox_quota, messages=self.mailbox_quota_messages)

    @model_validator(mode="after")
    def _quota_holds_a_message(self) -> LimitSettings:
        if 0 < self.mailbox_quota < self.max_message_size:
            raise ValueError(
                "mailbox_quota must be 0 (no limit) or at least max_message_size: "
                "a message of the largest accepted size could never be stored"
            )
        return self


class DeliverySettings(_Section):
    placeholder_subject: str = "[...]"
    # A message its sender already encrypted is stored as it came (DESIGN.md); with this on,
    # its clear outer Subject (clients without header protection) is replaced too.
    hide_subject_of_encrypted: bool = False
    # Most writes one transaction carries (mss.commit); writers never wait for a timer.
    group_commit_max: int = Field(64, ge=1, le=10_000)
    # The local mailbox that receives mail for `postmaster` (RFC 5321 4.5.1): `RCPT TO:<postmaster>`
    # and `postmaster@<domain>`. Empty: a mailbox called postmaster@<domain>, if one exists.
    postmaster: str = ""

    @field_validator("postmaster")
    @classmethod
    def _postmaster_address(cls, v: str) -> str:
        v = v.strip().lower()
        if v and (v.count("@") != 1 or not all(v.split("@"))):
            raise ValueError("postmaster must be the address of a local mailbox (local@domain)")
        return v


class PatientSettings(_Section):
    """The patient space (DESIGN.md "Patient space"; MSSANTE.md "Patients")."""

    # Patient addresses are <INS>@<domain>; empty means "patient.<operator domain>".
    domain: str = ""
    # Where arrival notifications go: "file:DIR" (one .eml each; the demo's) or
    # "smtp://HOST:PORT" (optionally "?starttls=1"); empty: none are sent.
    notify_url: str = ""
    notify_from: str = ""  # empty: "no-reply@<operator domain>"
    # At most one notification per patient per window, whatever arrives meanwhile.
    notify_window_s: float = Field(3600, ge=0)
    # The portal's address, the only link a notification carries.
    portal_url: str = ""
    # An activation code is valid this long after `mss patient create`.
    activation_ttl_s: float = Field(30 * 24 * 3600, gt=0)
    # PBKDF2-HMAC-SHA256 iterations for the keys the browser derives (OWASP 2023: 600,000,
    # also the portal script's floor: below it the browser refuses the parameters, and
    # decoys for unknown logins would stand out).
    kdf_iterations: int = Field(600_000, ge=600_000, le=10_000_000)

    @field_validator("domain")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.strip().lower()


class PortalSettings(_Section):
    """The patient portal's sessions, throttling and answers (docs/portal.md).

    Bounds keep a typo from opening a hole: sessions end within a day at most, and the
    back-off never locks an account for more than an hour (OWASP: a long lockout is a
    denial of service anyone can trigger with a victim's login)."""

    # A session ends after this long without a request (RGAA 13.1: the page warns first).
    idle_timeout_s: int = Field(900, ge=1, le=24 * 3600)
    # ... and this long after sign-in, however active.
    absolute_timeout_s: int = Field(43200, ge=60, le=7 * 24 * 3600)
    # The page warns this long before the idle timeout and offers to extend the session
    # (never more than the time left).
    warn_before_s: int = Field(120, ge=0, le=3600)
    # Failed attempts allowed per account and client network ("account:<INS>|<net>"), and
    # for the second factor ("totp:<INS>"), before the back-off starts.
    account_free_failures: int = Field(5, ge=1, le=100)
    # ... per account from anywhere ("account:<INS>"): larger, so that a guesser elsewhere
    # cannot keep the patient out (OWASP), yet distributed guessing still slows down.
    account_wide_free_failures: int = Field(50, ge=1, le=10_000)
    # ... and per client address ("address:..." keys): shared networks fail more often.
    address_free_failures: int = Field(50, ge=1, le=10_000)
    # The back-off doubles from 1 s up to this.
    max_backoff_s: int = Field(900, ge=1, le=3600)
    # Longest text of a patient's answer (characters). At most 15,000: four UTF-8 bytes each
    # stay under the http listener's 64 KiB body limit.
    answer_max_chars: int = Field(10_000, ge=100, le=15_000)
    # Conversations per inbox page.
    inbox_page_size: int = Field(20, ge=1, le=200)

    @model_validator(mode="after")
    def _coherent(self) -> PortalSettings:
        if self.absolute_timeout_s < self.idle_timeout_s:
            raise ValueError("absolute_timeout_s must be at least idle_timeout_s")
        return self


class AbuseSettings(_Section):
    """Authentication back-off across connections and protocols, and recipient enumeration
    (docs/operations.md, "Abuse resistance").

    Failed password attempts are counted per source address, per target mailbox and per
    (mailbox, address) pair, in the database (every node, SMTP and IMAP alike). Each key gets
    free failures, then a wait that doubles from 1 s up to its cap. The mailbox-wide key gets
    many free failures and a short cap (OWASP: a lockout is a denial of service anyone who
    knows an address can cause); a success resets the pair."""

    # Per (mailbox, source address): the guesser's own key, reset by a success.
    auth_free_failures: int = Field(5, ge=1, le=100)
    auth_max_backoff_s: int = Field(900, ge=1, le=3600)
    # Per mailbox from anywhere: large allowance, short cap, so nobody keeps its owner out.
    auth_mailbox_free_failures: int = Field(50, ge=1, le=10_000)
    auth_mailbox_max_backoff_s: int = Field(60, ge=1, le=600)
    # Per source address, whatever mailbox (many users may share one address).
    auth_address_free_failures: int = Field(30, ge=1, le=10_000)
    auth_address_max_backoff_s: int = Field(900, ge=1, le=3600)
    # Verified app passwords kept this long per (mailbox, certificate, password), so frequent
    # logins skip Argon2id (mss.password_cache, its risks in docs/imap.md); 0 turns it off.
    app_password_cache_s: float = Field(60, ge=0, le=3600)
    # Refused recipients (550 5.1.1 and other permanent RCPT refusals) per authenticated
    # principal and source address, across its SMTP sessions (on this node; one refusal is
    # forgotten every rcpt_error_decay_s): after the soft limit each further refusal is
    # delayed (delay x refusals over the limit, at most the max), at the hard limit the session
    # is closed with 421 4.7.0 (the spirit of Postfix's smtpd_soft_error_limit /
    # smtpd_hard_error_limit).
    rcpt_soft_error_limit: int = Field(5, ge=0, le=1000)
    rcpt_hard_error_limit: int = Field(20, ge=1, le=10_000)
    rcpt_error_delay_s: float = Field(1.0, ge=0, le=60)
    rcpt_error_max_delay_s: float = Field(10.0, ge=0, le=120)
    rcpt_error_decay_s: float = Field(60.0, gt=0, le=24 * 3600)

    @model_validator(mode="after")
    def _coherent(self) -> AbuseSettings:
        if self.rcpt_hard_error_limit <= self.rcpt_soft_error_limit:
            raise ValueError("rcpt_hard_error_limit must be greater than rcpt_soft_error_limit")
        return self


class AuditSettings(_Section):
    """The tamper-evident audit trail (mss.audit; docs/operations.md, "Audit trail")."""

    enabled: bool = True
    #: Queued hot-path events (logins) beyond which further ones are counted as dropped.
    max_pending: int = Field(10_000, ge=100, le=1_000_000)
    #: Most events one group commit writes.
    batch_max: int = Field(500, ge=1, le=10_000)
    #: A file holding a secret key: `mss audit anchor` then adds an HMAC-SHA256 to the anchor
    #: and `verify --anchor` checks it (keep the key off the database server).
    anchor_key_file: Path | None = None


class AutoconfigSettings(_Section):
    """What `/.well-known/autoconfig/...` and `/autodiscover/...` tell mail clients (web.autoconfig)."""

    # The host name clients connect to; it must be in the server certificate. Empty: the
    # [listen] host, or the domain when that host is a wildcard address (0.0.0.0, ::).
    hostname: str = ""


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LoggingSettings(_Section):
    """How `mss serve` logs (mss.logging_setup; docs/operations.md, "Monitoring").

    `file` and `level` may also be given as the older top-level `log_file` and `log_level`
    (still read); naming one of them both ways is an error. `file = ""`: stderr only."""

    # "text": one line per event as before; "json": one JSON object per line (JSON lines).
    format: Literal["text", "json"] = "text"
    file: str | None = None
    level: str | None = None

    @field_validator("level")
    @classmethod
    def _known_level(cls, v: str | None) -> str | None:
        if v is not None and v.strip().upper() not in _LOG_LEVELS:
            raise ValueError(f"level must be one of {', '.join(_LOG_LEVELS)}")
        return v.strip().upper() if v is not None else None


class MetricsSettings(_Section):
    """`/metrics` on the http listener (Prometheus; docs/operations.md, "Monitoring").

    Not for the public internet: a scrape is answered only from a source address in `allow`
    (loopback by default; uvicorn trusts no proxy header, so it is the TCP peer), and, when
    `token_file` is set, only with `Authorization: Bearer <the file's content>` as well. A
    request with proxy headers (`Forwarded`, `X-Forwarded-For`, ...) is refused unless
    `token_file` is set: a proxy on the same host would otherwise make loopback mean anyone."""

    enabled: bool = True
    allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    token_file: Path | None = None

    @field_validator("allow")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item.strip())
            except ValueError as exc:
                raise ValueError(f"allow: {item!r} is not an IP network ({exc})") from None
        return [item.strip() for item in v]

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item) for item in self.allow]


class Settings(BaseModel):
    """Everything a node needs; `base_dir` is the folder relative paths resolve against."""

    model_config = ConfigDict(extra="forbid")

    domain: str
    database_url: str = "sqlite+aiosqlite:///mss.db"
    #: This node's name among the nodes sharing one PostgreSQL (`mss demo --nodes`): it tells
    #: apart the relay-queue leases of nodes run from the same folder (docs/scale.md).
    node: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    #: Worker processes of this node (`mss.workers`): every listener is shared by all of them
    #: (SO_REUSEPORT), so a node uses as many cores as it has workers. "auto": one per core.
    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = 1
    log_file: Path | None = Path("mss.log")
    log_level: str = "INFO"
    listen: ListenSettings = Field(default_factory=ListenSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    pki: PKISettings = Field(default_factory=PKISettings)
    tokens: TokenSettings = Field(default_factory=TokenSettings)
    dkim: DkimSettings = Field(default_factory=DkimSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    patients: PatientSettings = Field(default_factory=PatientSettings)
    portal: PortalSettings = Field(default_factory=PortalSettings)
    abuse: AbuseSettings = Field(default_factory=AbuseSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    autoconfig: AutoconfigSettings = Field(default_factory=AutoconfigSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _logging_keys(self) -> Settings:
        """`[logging] file` / `level` are the newer names of `log_file` / `log_level`: the
        rest of the code reads `log_file` and `log_level`, filled from either."""
        for new, old in (("file", "log_file"), ("level", "log_level")):
            value = getattr(self.logging, new)
            if value is None:
                continue
            if old in self.model_fields_set:
                raise ValueError(f"{old} and [logging] {new} are the same setting: keep one of them")
            if new == "file":
                self.log_file = Path(value) if value else None
            else:
                self.log_level = value
        return self

    @field_validator("domain")
    @classmethod
    def _lower_domain(cls, v: str) -> str:
        return v.strip().lower()

    def path(self, p: Path | str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def worker_count(self) -> int:
        """How many worker processes `mss serve` starts (`workers`, "auto" read as the cores
        this process may run on)."""
        if self.workers == "auto":
            return max(1, min(64, len(os.sched_getaffinity(0))))
        return self.workers

    @property
    def patient_domain(self) -> str:
        """The domain of patient addresses (`[patients] domain`, else patient.<domain>)."""
        return self.patients.domain or f"patient.{self.domain}"

    @property
    def resolved_database_url(self) -> str:
        """SQLite URLs with a relative path are anchored at `base_dir`."""
        return resolve_database_url(self.database_url, self.base_dir)


def resolve_database_url(url: str, base_dir: Path) -> str:
    env = os.environ.get("MSS_DATABASE_URL")
    if env:
        url = env
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix):
        rest = url[len(prefix) :]
        if rest and not rest.startswith("/") and rest != ":memory:":
            return prefix + str((base_dir / rest).resolve())
    return url


def default_config_path() -> Path:
    return Path(os.environ.get("MSS_CONFIG", "mss.toml"))


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the field."""


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate a config file; a bad file raises with the field that is wrong."""
    path = Path(path) if path else default_config_path()
    if not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    data.setdefault("base_dir", str(path.resolve().parent))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from exc
    # Containers bind every interface without editing the deployment's file (and then
    # serve HTTPS on the http listener: see `check_http_transport`).
    if os.environ.get("MSS_LISTEN_HOST"):
        settings.listen.host = os.environ["MSS_LISTEN_HOST"]
    node = os.environ.get("MSS_NODE", "").strip()
    if node:
        if len(node) > 64 or not re.fullmatch(r"[A-Za-z0-9._-]+", node):
            raise ConfigError(f"MSS_NODE: letters, digits, '.', '_' and '-' only (at most 64), not {node!r}")
        settings.node = node
    workers = os.environ.get("MSS_WORKERS", "").strip().lower()
    if workers:
        if workers != "auto" and not (workers.isdigit() and 1 <= int(workers) <= 64):
            raise ConfigError(f"MSS_WORKERS: a number from 1 to 64, or auto, not {workers!r}")
        settings.workers = "auto" if workers == "auto" else int(workers)
    tls = os.environ.get("MSS_LISTEN_HTTP_TLS", "").strip().lower()
    if tls:
        if tls not in ("true", "false", "1", "0"):
            raise ConfigError(f"MSS_LISTEN_HTTP_TLS: expected true or false, not {tls!r}")
        settings.listen.http_tls = tls in ("true", "1")
    return settings


def check_http_transport(settings: Settings) -> None:
    """Refuse plain HTTP beyond this machine: without `[listen] http_tls`, the http listener
    (patient portal, directory, JWKS) may only bind a loopback address."""
    listen = settings.listen
    if not listen.http_tls and not is_loopback_host(listen.host):
        raise ConfigError(
            f"listen.http_tls: plain HTTP is served only on a loopback address, and listen.host is "
            f"{listen.host!r}; set [listen] http_tls = true (HTTPS with the [tls] certificate) "
            f"or bind 127.0.0.1"
        )
