"""mss.toml: defaults, relative paths, and clear refusals of bad files."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mss.config import ConfigError, load_settings
from support import ROOT


def write(tmp_path, text: str):
    p = tmp_path / "mss.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_minimal_file_gets_safe_defaults_and_paths_resolve_beside_it(tmp_path):
    s = load_settings(write(tmp_path, 'domain = "Hopital.Test"\n'))
    assert s.domain == "hopital.test"
    assert s.limits.max_message_size == 25 * 1024 * 1024
    assert s.tls.minimum_version == "TLSv1.2"
    assert s.path(s.tls.trust_anchors) == tmp_path / "pki/trust-anchors.pem"
    assert s.resolved_database_url == f"sqlite+aiosqlite:///{(tmp_path / 'mss.db').resolve()}"


@pytest.mark.parametrize(
    "text, words",
    [
        ('domain = "a.test"\n[limits]\nmax_mesage_size = 10\n', ["limits.max_mesage_size", "Extra inputs"]),
        ('domain = "a.test"\n[limits]\nmax_message_size = 0\n', ["limits.max_message_size"]),
        ('domain = "a.test"\n[limits]\nsmtp_command_line = 100\n', ["limits.smtp_command_line"]),
        ('domain = "a.test"\ndatabse_url = "x"\n', ["databse_url"]),
        ("[listen]\nhost = '127.0.0.1'\n", ["domain", "Field required"]),
        ('domain = "a.test"\n[listen\n', ["not valid TOML"]),
        ('domain = "a.test"\n[tls]\nminimum_version = "TLSv1"\n', ["tls.minimum_version"]),
        ('domain = "a.test"\n[tls]\nminimum_version = "TLSv1.1"\n', ["tls.minimum_version"]),
        ('domain = "a.test"\n[tokens]\njwks = "http://keys.example.org/jwks.json"\n', ["tokens.jwks", "https"]),
    ],
    ids=["misspelt-key", "zero-size", "short-command-line", "misspelt-top-level", "no-domain", "bad-toml",
         "tls-1.0", "tls-1.1", "jwks-over-http"],
)
def test_bad_files_are_refused_with_the_field_named(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    for w in words:
        assert w in str(err.value)
    assert str(tmp_path / "mss.toml") in str(err.value)


def test_mss_serve_reports_a_bad_file_without_a_traceback(tmp_path):
    cfg = write(tmp_path, 'domain = "a.test"\n[limits]\nmax_recipients = -1\n')
    res = subprocess.run([sys.executable, "-m", "mss", "serve", "-c", str(cfg)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    assert "limits.max_recipients" in res.stderr and "Traceback" not in res.stderr


def test_jwks_over_https_or_loopback_http_is_accepted(tmp_path):
    for url in ("https://keys.example.org/jwks.json", "http://127.0.0.1:2592/.well-known/jwks.json"):
        assert load_settings(write(tmp_path, f'domain = "a.test"\n[tokens]\njwks = "{url}"\n')).tokens.jwks == url
