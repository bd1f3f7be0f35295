"""mss.toml: defaults, relative paths, and clear refusals of bad files."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import ROOT

from mss.config import ConfigError, load_settings


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
    ids=[
        "misspelt-key",
        "zero-size",
        "short-command-line",
        "misspelt-top-level",
        "no-domain",
        "bad-toml",
        "tls-1.0",
        "tls-1.1",
        "jwks-over-http",
    ],
)
def test_bad_files_are_refused_with_the_field_named(tmp_path, text, words):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    for w in words:
        assert w in str(err.value)
    assert str(tmp_path / "mss.toml") in str(err.value)


def test_mss_serve_reports_a_bad_file_without_a_traceback(tmp_path):
    cfg = write(tmp_path, 'domain = "a.test"\n[limits]\nmax_recipients = -1\n')
    res = subprocess.run(
        [sys.executable, "-m", "mss", "serve", "-c", str(cfg)], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "limits.max_recipients" in res.stderr and "Traceback" not in res.stderr


def test_jwks_over_https_or_loopback_http_is_accepted(tmp_path):
    for url in ("https://keys.example.org/jwks.json", "http://127.0.0.1:2592/.well-known/jwks.json"):
        assert load_settings(write(tmp_path, f'domain = "a.test"\n[tokens]\njwks = "{url}"\n')).tokens.jwks == url


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST", "::ffff:127.0.0.1"]
)
def test_plain_http_is_allowed_on_a_loopback_host(tmp_path, host):
    from mss.config import check_http_transport

    s = load_settings(write(tmp_path, f'domain = "a.test"\n[listen]\nhost = "{host}"\n'))
    assert s.listen.http_tls is False
    check_http_transport(s)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.0.2.10", "10.0.0.1", "mss.example.org", "localhost.example.org", ""]
)
def test_plain_http_beyond_loopback_is_refused_naming_the_field(tmp_path, host):
    from mss.config import check_http_transport

    s = load_settings(write(tmp_path, f'domain = "a.test"\n[listen]\nhost = "{host}"\n'))
    with pytest.raises(ConfigError) as err:
        check_http_transport(s)
    assert "listen.http_tls" in str(err.value) and "loopback" in str(err.value)
    with_tls = load_settings(write(tmp_path, f'domain = "a.test"\n[listen]\nhost = "{host}"\nhttp_tls = true\n'))
    check_http_transport(with_tls)


def test_containers_turn_https_on_from_the_environment(tmp_path, monkeypatch):
    from mss.config import check_http_transport

    monkeypatch.setenv("MSS_LISTEN_HOST", "0.0.0.0")
    cfg = write(tmp_path, 'domain = "a.test"\n')
    with pytest.raises(ConfigError):
        check_http_transport(load_settings(cfg))
    monkeypatch.setenv("MSS_LISTEN_HTTP_TLS", "true")
    s = load_settings(cfg)
    assert (s.listen.host, s.listen.http_tls) == ("0.0.0.0", True)
    check_http_transport(s)
    monkeypatch.setenv("MSS_LISTEN_HTTP_TLS", "yes please")
    with pytest.raises(ConfigError, match="MSS_LISTEN_HTTP_TLS"):
        load_settings(cfg)


def test_the_node_name_comes_from_the_file_or_the_environment(tmp_path, monkeypatch):
    assert load_settings(write(tmp_path, 'domain = "a.test"\n')).node == ""
    cfg = write(tmp_path, 'domain = "a.test"\nnode = "node1"\n')
    assert load_settings(cfg).node == "node1"
    monkeypatch.setenv("MSS_NODE", "node2")
    assert load_settings(cfg).node == "node2"
    monkeypatch.setenv("MSS_NODE", "node 2; rm")
    with pytest.raises(ConfigError, match="MSS_NODE"):
        load_settings(cfg)
    monkeypatch.delenv("MSS_NODE")
    with pytest.raises(ConfigError, match="node"):
        load_settings(write(tmp_path, 'domain = "a.test"\nnode = "a/b"\n'))


def test_http_limits_have_safe_defaults_and_floors(tmp_path):
    s = load_settings(write(tmp_path, 'domain = "a.test"\n'))
    assert (s.limits.http_max_head, s.limits.http_max_body, s.limits.http_max_connections) == (16384, 65536, 1000)
    with pytest.raises(ConfigError, match="limits.http_max_head"):
        load_settings(write(tmp_path, 'domain = "a.test"\n[limits]\nhttp_max_head = 100\n'))


def test_mailbox_quota_defaults_and_bounds(tmp_path):
    s = load_settings(write(tmp_path, 'domain = "a.test"\n'))
    assert (s.limits.mailbox_quota, s.limits.mailbox_quota_messages) == (10 * 1024**3, 1_000_000)
    s = load_settings(write(tmp_path, 'domain = "a.test"\n[limits]\nmailbox_quota = 0\nmailbox_quota_messages = 0\n'))
    assert (s.limits.quota.storage, s.limits.quota.messages) == (0, 0)  # no limit
    for bad, words in (
        ("mailbox_quota = -1", "limits.mailbox_quota"),
        ("mailbox_quota_messages = -5", "limits.mailbox_quota_messages"),
        ("mailbox_quota = 1000", "at least max_message_size"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_settings(write(tmp_path, f'domain = "a.test"\n[limits]\n{bad}\n'))
