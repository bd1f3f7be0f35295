"""One Settings object, read from a TOML file (`mss.toml`).

Relative paths in the file are relative to the file's own folder, so a deployment folder
can be moved or copied as a whole.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

DEFAULT_CONFIG_NAMES = ("mss.toml",)


class ListenSettings(BaseModel):
    host: str = "127.0.0.1"
    submission: int = 2587
    submissions: int = 2465
    mta: int = 2525
    imap: int = 2143
    imaps: int = 2993
    http: int = 2080

    def ports(self) -> dict[str, int]:
        return {
            "submission": self.submission,
            "submissions": self.submissions,
            "mta": self.mta,
            "imap": self.imap,
            "imaps": self.imaps,
            "http": self.http,
        }


class TLSSettings(BaseModel):
    cert: Path = Path("pki/server.crt")
    key: Path = Path("pki/server.key")
    trust_anchors: Path = Path("pki/trust-anchors.pem")
    crl_files: list[Path] = Field(default_factory=list)
    minimum_version: str = "TLSv1.2"


class LimitSettings(BaseModel):
    # 25 MiB: what common mail services accept; advertised through SMTP SIZE.
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    smtp_command_line: int = 512  # RFC 5321 4.5.3.1.4
    imap_line: int = 64 * 1024
    imap_literal: int = 25 * 1024 * 1024 + 64 * 1024
    imap_nesting: int = 16
    idle_timeout_s: int = 30 * 60
    smtp_timeout_s: int = 300


class DeliverySettings(BaseModel):
    placeholder_subject: str = "[...]"
    group_commit_max: int = 64
    group_commit_wait_ms: float = 2.0


class Settings(BaseModel):
    """Everything a node needs; `base_dir` is the folder relative paths resolve against."""

    domain: str
    database_url: str = "sqlite+aiosqlite:///mss.db"
    log_file: Path | None = Path("mss.log")
    log_level: str = "INFO"
    listen: ListenSettings = Field(default_factory=ListenSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    base_dir: Path = Path(".")

    @field_validator("domain")
    @classmethod
    def _lower_domain(cls, v: str) -> str:
        return v.strip().lower()

    def path(self, p: Path | str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else (self.base_dir / p)

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
        rest = url[len(prefix):]
        if rest and not rest.startswith("/") and rest != ":memory:":
            return prefix + str((base_dir / rest).resolve())
    return url


def default_config_path() -> Path:
    return Path(os.environ.get("MSS_CONFIG", "mss.toml"))


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate a config file; a bad file raises with the field that is wrong."""
    path = Path(path) if path else default_config_path()
    if not path.is_file():
        raise FileNotFoundError(f"configuration file not found: {path}")
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    data.setdefault("base_dir", str(path.resolve().parent))
    settings = Settings.model_validate(data)
    # Containers bind every interface without editing the deployment's file.
    if os.environ.get("MSS_LISTEN_HOST"):
        settings.listen.host = os.environ["MSS_LISTEN_HOST"]
    return settings
