"""Prometheus metrics (issue 13, Observability): names and exact values after a known
workload on a real `mss serve`, the CRL gauges against the CRL files, and who may scrape.

The workload runs on a server of its own (a module deployment per backend), so no other
test's traffic moves the counters; every assertion is on the difference between a scrape
before and one after, read with `prometheus_client.parser` from real HTTP responses.
"""

from __future__ import annotations

import base64
import imaplib
import secrets
import smtplib
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from cryptography import x509
from mail import build_message, smtp_submission
from prometheus_client.parser import text_string_to_metric_families
from support import ServerProcess, drop_pg_database, make_deployment, start_server

pytestmark = pytest.mark.timeout(180)

TOKEN = "mss-metrics-" + secrets.token_hex(16)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def metered(backend, tmp_path_factory) -> ServerProcess:
    """A server of its own, whose /metrics wants a bearer token (from loopback, the default)."""
    dep, pg_name = make_deployment(tmp_path_factory.mktemp(f"metrics-{backend}"), backend)
    (dep.directory / "metrics.token").write_text(TOKEN + "\n")
    with dep.config.open("a", encoding="utf-8") as fh:
        fh.write('\n[metrics]\ntoken_file = "metrics.token"\n')
    srv = start_server(dep)
    yield srv
    srv.stop()
    if pg_name:
        drop_pg_database(pg_name)


def _get(srv: ServerProcess, token: str | None = TOKEN, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"http://{srv.host}:{srv.port('http')}/metrics", headers=headers, timeout=10)


def scrape(srv: ServerProcess) -> Samples:
    r = _get(srv)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def wait_sessions(srv: ServerProcess, listener: str, expected: float) -> Samples:
    """Scrape until the server has seen the connection close (bounded; closes are async)."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(srv)
        if value(samples, "mss_sessions_open", listener=listener) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_smtp_workload_counts_exactly(metered):
    dep = metered.deployment
    claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    n = 3
    before = scrape(metered)
    assert value(before, "mss_sessions_open", listener="submission") == 0

    client = smtp_submission(metered, claire)
    try:
        during = scrape(metered)
        assert value(during, "mss_sessions_open", listener="submission") == 1
        for i in range(n):
            raw, _ = build_message(claire["address"], [paul["address"]], f"metrics {i}", "Bonjour.")
            assert client.sendmail(claire["address"], [paul["address"]], raw) == {}
        # One refused: an unknown local recipient (550 5.1.1).
        client.mail(claire["address"])
        code, _ = client.rcpt(f"nobody-{uuid.uuid4().hex[:8]}@{dep.domain}")
        assert code == 550
        client.rset()
    finally:
        client.quit()

    # One failed login: AUTH PLAIN with a wrong app password, on a second connection.
    client = smtp_submission(metered, claire)
    try:
        response = base64.b64encode(f"\0{claire['address']}\0not-the-password".encode()).decode()
        code, _ = client.docmd("AUTH", f"PLAIN {response}")
        assert code == 535
    finally:
        client.quit()

    after = wait_sessions(metered, "submission", 0)
    assert value(after, "mss_sessions_open", listener="submission") == 0
    assert delta(before, after, "mss_messages_accepted_total", protocol="smtp") == n
    assert delta(before, after, "mss_messages_accepted_total", protocol="imap") == 0
    assert (
        delta(before, after, "mss_messages_refused_total", protocol="smtp", stage="rcpt", reason="unknown_recipient")
        == 1
    )
    assert (
        sum(v for (name, _), v in after.items() if name == "mss_messages_refused_total")
        - sum(v for (name, _), v in before.items() if name == "mss_messages_refused_total")
        == 1
    )
    assert delta(before, after, "mss_delivery_duration_seconds_count", protocol="smtp") == n
    assert delta(before, after, "mss_delivery_duration_seconds_sum", protocol="smtp") > 0
    assert delta(before, after, "mss_delivery_duration_seconds_bucket", protocol="smtp", le="+Inf") == n
    # Each message was its own transaction (they were sent one after the other).
    assert delta(before, after, "mss_commit_batch_size_count") == n
    assert delta(before, after, "mss_commit_batch_size_sum") == n
    assert delta(before, after, "mss_commit_batch_size_bucket", le="1.0") == n
    auth = "mss_auth_results_total"
    # The certificate check when TLS comes up, once per connection.
    assert delta(before, after, auth, protocol="smtp", mechanism="none", result="ok", reason="none") == 2
    assert (
        delta(before, after, auth, protocol="smtp", mechanism="PLAIN", result="refused", reason="app_password:wrong")
        == 1
    )
    assert (
        sum(v for (name, _), v in after.items() if name == auth)
        - sum(v for (name, _), v in before.items() if name == auth)
        == 3
    )


def test_refusals_are_counted_by_stage(metered):
    """MAIL as an address the certificate may not use, and DATA whose From is someone else's."""
    dep = metered.deployment
    claire, paul = dep.mailbox("PER", 0), dep.mailbox("PER", 1)
    before = scrape(metered)
    client = smtp_submission(metered, claire)
    try:
        code, _ = client.mail(paul["address"])
        assert code == 550
        client.rset()
        raw, _ = build_message(paul["address"], [claire["address"]], "not mine", "Bonjour.")
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(claire["address"], [claire["address"]], raw)
        assert refused.value.smtp_code == 550
    finally:
        client.quit()
    after = wait_sessions(metered, "submission", 0)
    refused_total = "mss_messages_refused_total"
    assert delta(before, after, refused_total, protocol="smtp", stage="mail", reason="not_allowed") == 1
    assert delta(before, after, refused_total, protocol="smtp", stage="data", reason="not_allowed") == 1
    assert delta(before, after, "mss_messages_accepted_total", protocol="smtp") == 0
    assert delta(before, after, "mss_delivery_duration_seconds_count", protocol="smtp") == 0


def test_imap_session_and_append(metered):
    dep = metered.deployment
    claire = dep.mailbox("PER", 0)
    before = scrape(metered)
    m = imaplib.IMAP4_SSL(metered.host, metered.port("imaps"), ssl_context=dep.client_context(claire), timeout=20)
    try:
        m.authenticate("EXTERNAL", lambda _: b"")
        during = scrape(metered)
        assert (
            value(during, "mss_sessions_open", listener="imaps")
            == value(before, "mss_sessions_open", listener="imaps") + 1
        )
        raw, _ = build_message(claire["address"], [claire["address"]], "draft", "Brouillon.")
        typ, _ = m.append("INBOX", None, None, raw)
        assert typ == "OK"
        typ, _ = m.append("No-Such-Folder", None, None, raw)
        assert typ == "NO"
    finally:
        m.logout()
    after = wait_sessions(metered, "imaps", value(before, "mss_sessions_open", listener="imaps"))
    assert delta(before, after, "mss_sessions_open", listener="imaps") == 0
    assert delta(before, after, "mss_messages_accepted_total", protocol="imap") == 1
    assert delta(before, after, "mss_delivery_duration_seconds_count", protocol="imap") == 1
    assert (
        delta(before, after, "mss_messages_refused_total", protocol="imap", stage="append", reason="no_such_folder")
        == 1
    )
    assert (
        delta(
            before, after, "mss_auth_results_total", protocol="imap", mechanism="EXTERNAL", result="ok", reason="none"
        )
        == 1
    )


def test_crl_gauges_match_the_crl_files(metered):
    settings = metered.deployment.settings()
    files = [settings.path(p) for p in settings.tls.crl_files]
    assert files
    t0 = datetime.now(UTC)
    samples = scrape(metered)
    t1 = datetime.now(UTC)
    for path in files:
        data = path.read_bytes()
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        labels = {"ca": crl.issuer.rfc4514_string(), "source": str(path)}
        age = value(samples, "mss_crl_age_seconds", **labels)
        assert (t0 - crl.last_update_utc).total_seconds() - 1 <= age <= (t1 - crl.last_update_utc).total_seconds() + 1
        left = value(samples, "mss_crl_next_update_seconds", **labels)
        assert (crl.next_update_utc - t1).total_seconds() - 1 <= left <= (crl.next_update_utc - t0).total_seconds() + 1
        assert left > 0
    assert sum(1 for (name, _) in samples if name == "mss_crl_age_seconds") == len(files)


def test_no_metric_names_an_address(metered):
    text = _get(metered).text
    dep = metered.deployment
    for entry in dep.doc["mailboxes"]:
        assert entry["address"] not in text
        assert entry.get("idnat", "@@") not in text


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789"])
def test_scrape_without_the_token_is_refused(metered, token):
    r = _get(metered, token)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "mss_" not in r.text
    assert "metrics scrape refused" in metered.log_text()


def test_scrape_from_an_address_not_allowed_is_refused(fresh_deployment):
    """allow names another network: loopback is refused, and a forwarded-for header naming an
    allowed address changes nothing (uvicorn trusts no proxy header)."""
    dep = fresh_deployment
    with dep.config.open("a", encoding="utf-8") as fh:
        fh.write('\n[metrics]\nallow = ["192.0.2.0/24"]\n')
    srv = start_server(dep)
    try:
        base = f"http://{srv.host}:{srv.port('http')}"
        for headers in ({}, {"X-Forwarded-For": "192.0.2.7", "X-Real-IP": "192.0.2.7", "Forwarded": "for=192.0.2.7"}):
            r = httpx.get(f"{base}/metrics", headers=headers, timeout=10)
            assert r.status_code == 403
            assert "mss_" not in r.text
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    finally:
        srv.stop()
    assert "metrics scrape refused peer=127.0.0.1 reason=address_not_allowed" in srv.log_text()


PROXY_HEADER_SETS = [
    {"X-Forwarded-For": "203.0.113.9"},
    {"X-Real-IP": "203.0.113.9"},
    {"Forwarded": "for=203.0.113.9;proto=https"},
    {"X-Forwarded-Host": "mss.example"},
]


@pytest.mark.parametrize("headers", PROXY_HEADER_SETS, ids=lambda h: next(iter(h)))
def test_a_proxied_scrape_without_a_token_is_refused(server, headers):
    """The default: loopback allowed, no token. A reverse proxy on the same host connects from
    127.0.0.1 for internet clients; its forwarding headers get 403 although the peer is
    allowed, and the refusal is logged with the header that gave it away."""
    base = f"http://{server.host}:{server.port('http')}"
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 200  # the peer is allowed
    r = httpx.get(f"{base}/metrics", headers=headers, timeout=10)
    assert r.status_code == 403
    assert "mss_" not in r.text
    header = next(iter(headers)).lower()
    assert f"metrics scrape refused peer=127.0.0.1 reason=proxied_without_token header={header}" in server.log_text()


def test_a_proxied_scrape_with_the_token_is_answered(metered):
    """With `token_file`, a proxy may forward scrapes: the token decides (200 with it, 401 without)."""
    forwarded = {"X-Forwarded-For": "203.0.113.9", "Forwarded": "for=203.0.113.9", "X-Real-IP": "203.0.113.9"}
    r = _get(metered, **forwarded)
    assert r.status_code == 200
    assert "mss_sessions_open" in r.text
    for token in (None, "wrong-token-0123456789"):
        r = _get(metered, token, **forwarded)
        assert r.status_code == 401
        assert "mss_" not in r.text


# -- in process: the allow list for other networks, and the settings ------------------------


@pytest.fixture
async def core(deployment):
    from mss.core import Core

    core = await Core.open(deployment.settings(), migrate=False)
    yield core
    await core.close()


async def _status(core, client: str, **headers: str) -> int:
    from web.app import create_app

    transport = httpx.ASGITransport(app=create_app(core), client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://mss.test") as http:
        return (await http.get("/metrics", headers=headers)).status_code


async def test_allow_list_admits_its_networks_only(core):
    from mss.config import MetricsSettings

    core.settings.metrics = MetricsSettings(allow=["10.0.0.0/8", "2001:db8::/32"])
    assert await _status(core, "10.1.2.3") == 200
    assert await _status(core, "::ffff:10.1.2.3") == 200  # IPv4-mapped
    assert await _status(core, "2001:db8::5") == 200
    assert await _status(core, "127.0.0.1") == 403
    assert await _status(core, "192.0.2.1") == 403
    core.settings.metrics = MetricsSettings()
    assert await _status(core, "127.0.0.1") == 200
    assert await _status(core, "::1") == 200
    assert await _status(core, "10.1.2.3") == 403
    for headers in PROXY_HEADER_SETS:  # an allowed peer that is a proxy without a token
        assert await _status(core, "127.0.0.1", **headers) == 403
        assert await _status(core, "::1", **headers) == 403


async def test_disabled_metrics_have_no_route(core):
    from mss.config import MetricsSettings

    core.settings.metrics = MetricsSettings(enabled=False)
    assert await _status(core, "127.0.0.1") == 404


async def test_a_short_or_missing_token_file_stops_the_start(core, tmp_path):
    from mss.config import ConfigError, MetricsSettings
    from web.app import create_app

    core.settings.metrics = MetricsSettings(token_file=tmp_path / "missing.token")
    with pytest.raises(ConfigError, match="metrics.token_file: cannot read"):
        create_app(core)
    (tmp_path / "short.token").write_text("abc\n")
    core.settings.metrics = MetricsSettings(token_file=tmp_path / "short.token")
    with pytest.raises(ConfigError, match="fewer than 16"):
        create_app(core)


def test_allow_entries_must_be_networks(tmp_path):
    from mss.config import ConfigError, load_settings

    cfg = tmp_path / "mss.toml"
    cfg.write_text('domain = "x.test"\n[metrics]\nallow = ["10.0.0.0/8", "not-a-network"]\n')
    with pytest.raises(ConfigError, match="metrics.allow"):
        load_settings(cfg)


def test_label_values_come_from_closed_sets():
    """A client-chosen mechanism or an odd reason cannot create a series of its own."""
    from mss import metrics

    metrics.auth_result("smtp", "X-MADE-UP-\r\nMECH", "unsupported", "mechanism_not_offered")
    metrics.auth_result("smtp", "plain", "refused", "Bad-Reason\u2028")
    metrics.auth_result("smtp", "PLAIN", "refused", "plain_authzid_differs authzid='x\\r\\ny'")
    text = metrics.exposition().decode()
    assert "X-MADE-UP" not in text
    assert (
        'mss_auth_results_total{mechanism="other",protocol="smtp",reason="mechanism_not_offered",result="unsupported"}'
        in text
    )
    assert 'mss_auth_results_total{mechanism="PLAIN",protocol="smtp",reason="other",result="refused"}' in text
    assert 'reason="plain_authzid_differs",result="refused"}' in text
    assert "authzid=" not in text and "Bad-Reason" not in text


def test_delivery_outcomes_in_process():
    """The one helper every path uses: accepted with its latency, refused by reason, failed."""
    from mss import metrics
    from mss.refusals import Reason, Refusal

    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "ok": sample("mss_messages_accepted_total", protocol="http"),
        "seen": sample("mss_delivery_duration_seconds_count", protocol="http"),
        "big": sample("mss_messages_refused_total", protocol="http", stage="data", reason="too_big"),
        "failed": sample("mss_messages_failed_total", protocol="http", stage="data"),
    }
    with metrics.delivery("http", "data"):
        pass
    with pytest.raises(Refusal), metrics.delivery("http", "data"):
        raise Refusal(Reason.TOO_BIG, "too big")
    with pytest.raises(OSError), metrics.delivery("http", "data"):
        raise OSError("disk full")
    assert sample("mss_messages_accepted_total", protocol="http") == before["ok"] + 1
    assert sample("mss_delivery_duration_seconds_count", protocol="http") == before["seen"] + 1
    assert sample("mss_messages_refused_total", protocol="http", stage="data", reason="too_big") == before["big"] + 1
    assert sample("mss_messages_failed_total", protocol="http", stage="data") == before["failed"] + 1
