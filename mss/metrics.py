"""The node's Prometheus metrics: one registry per process, served at `/metrics` (web.metrics).

Definitions and tiny recording helpers only, no I/O: the front ends may import this module
(tests/test_architecture.py, PUBLIC_CORE) to count their sessions, the core records the rest.
Names follow the Prometheus conventions (https://prometheus.io/docs/practices/naming/):
`mss_` prefix, base units in the name (`_seconds`), `_total` on counters.

Labels only ever take values from closed sets the code defines (listener names, the
`mss.refusals.Reason` values, SASL mechanism names, the core's authentication reasons): a
client cannot make a new series by sending a made-up mechanism or address, because a
value outside those sets is recorded as `other`.

No metric carries an address, a national id or anything of a message (DESIGN.md).
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mss.refusals import Reason, Refusal

# No `*_created` series: they double the output and no dashboard of ours reads them.
disable_created_metrics()

#: The process's one registry (not the library's global default, which other code may fill).
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

#: `protocol` label values: how a message reached the core.
PROTOCOLS = ("smtp", "imap", "http")
#: `listener` label values of the session gauge.
LISTENERS = ("submission", "submissions", "mta", "imap", "imaps")
#: `stage` label values: the step that refused the message (SMTP MAIL, RCPT, DATA; IMAP APPEND).
STAGES = ("mail", "rcpt", "data", "append")
#: SASL mechanisms a label may name (`mss.sasl.MECHANISMS`); "none" is SMTP's implicit
#: certificate check when TLS comes up.
MECHANISMS = ("EXTERNAL", "PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2", "none")
OTHER = "other"
_REASON_LABEL = re.compile(r"[a-z0-9_:]{1,64}")

MESSAGES_ACCEPTED = Counter(
    "mss_messages_accepted",
    "Messages durably stored: SMTP DATA answered 250, IMAP APPEND answered OK, portal answers.",
    ["protocol"],
    registry=REGISTRY,
)
MESSAGES_REFUSED = Counter(
    "mss_messages_refused",
    "Refusals of the core (mss.refusals.Reason) at each stage of a submission or APPEND.",
    ["protocol", "stage", "reason"],
    registry=REGISTRY,
)
MESSAGES_FAILED = Counter(
    "mss_messages_failed",
    "Submissions or APPENDs that failed on an error of the server (the client was told to retry).",
    ["protocol", "stage"],
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "mss_delivery_duration_seconds",
    "From the end of DATA / APPEND to the durable commit of the message (parse, encrypt, store).",
    ["protocol"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
COMMIT_BATCH_SIZE = Histogram(
    "mss_commit_batch_size",
    "Write operations carried by one group-commit transaction (mss.commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024),
    registry=REGISTRY,
)
COMMIT_FAILED_BATCHES = Counter(
    "mss_commit_failed_batches",
    "Group-commit batches the database refused and that were retried one operation at a time.",
    registry=REGISTRY,
)
SESSIONS_OPEN = Gauge(
    "mss_sessions_open",
    "SMTP and IMAP connections open now, by listener (SMTP/IMAP over TLS once the handshake is done).",
    ["listener"],
    registry=REGISTRY,
)
AUTH_RESULTS = Counter(
    "mss_auth_results",
    "Authentication results by protocol, SASL mechanism, outcome (ok, refused, unauthorized, "
    "unavailable, malformed, cancelled, unsupported) and the core's reason.",
    ["protocol", "mechanism", "result", "reason"],
    registry=REGISTRY,
)

#: Why an audit event was not kept: invalid fields, a full queue, or refused by the database
#: on its own (`mss.audit`, "quarantined"). Any of them deserves an alert.
AUDIT_DROP_REASONS = ("invalid", "queue_full", "unstorable")
AUDIT_EVENTS_DROPPED = Counter(
    "mss_audit_events_dropped",
    "Security events the audit trail could not keep, by reason (invalid, queue_full, unstorable).",
    ["reason"],
    registry=REGISTRY,
)

#: What one relay attempt did to each recipient (`mss.relay`): sent (2xx), failed (5xx,
#: expiry), deferred (retried later). A growing `deferred` with no `sent` is a peer down.
RELAY_OUTCOMES = ("sent", "failed", "deferred")
RELAY_RECIPIENTS = Counter(
    "mss_relay_recipients",
    "Recipients of relay attempts to other operators, by outcome (sent, failed, deferred).",
    ["outcome"],
    registry=REGISTRY,
)
RELAY_REPORTS = Counter(
    "mss_relay_reports",
    "Delivery status notifications the relay worker made, by kind (failure, delay, success).",
    ["kind"],
    registry=REGISTRY,
)

for _protocol in PROTOCOLS:
    MESSAGES_ACCEPTED.labels(_protocol)
for _outcome in RELAY_OUTCOMES:
    RELAY_RECIPIENTS.labels(_outcome)
for _kind in ("failure", "delay", "success"):
    RELAY_REPORTS.labels(_kind)
for _reason in AUDIT_DROP_REASONS:
    AUDIT_EVENTS_DROPPED.labels(_reason)
for _listener in LISTENERS:
    SESSIONS_OPEN.labels(_listener)


def _one_of(value: str | None, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


def reason_label(reason: str | None) -> str:
    """A code-defined reason (`app_password:wrong`, `expired`), else `other`; empty: `none`."""
    if not reason:
        return "none"
    reason = reason.split(" ", 1)[0]  # "plain_authzid_differs authzid=...": the code's part
    return reason if _REASON_LABEL.fullmatch(reason) else OTHER


# -- recording helpers ---------------------------------------------------------------------


def session_opened(listener: str) -> None:
    SESSIONS_OPEN.labels(_one_of(listener, LISTENERS)).inc()


def session_closed(listener: str) -> None:
    SESSIONS_OPEN.labels(_one_of(listener, LISTENERS)).dec()


def auth_result(protocol: str, mechanism: str | None, result: str, reason: str | None = None) -> None:
    """One authentication conclusion (`mss.auth.ConnectionAuthentication._log`)."""
    AUTH_RESULTS.labels(
        _one_of(protocol, PROTOCOLS),
        "none" if mechanism is None else _one_of(mechanism.upper(), MECHANISMS),
        reason_label(result),
        "none" if result == "ok" else reason_label(reason),
    ).inc()


def refused(protocol: str, stage: str, reason: Reason, messages: int = 1) -> None:
    MESSAGES_REFUSED.labels(_one_of(protocol, PROTOCOLS), _one_of(stage, STAGES), reason.value).inc(messages)


def relay_attempt(sent: int, failed: int, deferred: int) -> None:
    """One relay attempt's recipients by outcome (mss.relay)."""
    for outcome, n in (("sent", sent), ("failed", failed), ("deferred", deferred)):
        if n:
            RELAY_RECIPIENTS.labels(outcome).inc(n)


def relay_report(kind: str) -> None:
    RELAY_REPORTS.labels(_one_of(kind, ("failure", "delay", "success"))).inc()


def commit_batch(size: int) -> None:
    COMMIT_BATCH_SIZE.observe(size)


@contextmanager
def refusals(protocol: str, stage: str) -> Iterator[None]:
    """Count the core's `Refusal` raised inside (and let it go on)."""
    try:
        yield
    except Refusal as exc:
        refused(protocol, stage, exc.reason)
        raise


@contextmanager
def delivery(protocol: str, stage: str, *, messages: int = 1) -> Iterator[None]:
    """Around one message's way from the end of DATA / APPEND to its durable commit: on
    success it is accepted and its latency observed; a `Refusal` is counted by reason; any
    other error counts as failed (the front end answers "try again later").

    `messages` > 1 is an IMAP MULTIAPPEND (RFC 3502): its messages share one fate and one
    commit, so each counter moves by their number and the latency is observed once."""
    start = time.perf_counter()
    try:
        yield
    except Refusal as exc:
        refused(protocol, stage, exc.reason, messages)
        raise
    except Exception:
        MESSAGES_FAILED.labels(_one_of(protocol, PROTOCOLS), _one_of(stage, STAGES)).inc(messages)
        raise
    label = _one_of(protocol, PROTOCOLS)
    DELIVERY_SECONDS.labels(label).observe(time.perf_counter() - start)
    MESSAGES_ACCEPTED.labels(label).inc(messages)


# -- CRL freshness: read when scraped ------------------------------------------------------


class CrlSource(Protocol):
    """What the CRL gauges read (`crypto.validate.CertificateValidator.loaded_crls`): for each
    CRL in use, its source, issuer name, thisUpdate and nextUpdate (aware datetimes)."""

    def crl_times(self) -> list[tuple[str, str, datetime, datetime | None]]: ...


class _CrlCollector(Collector):
    """`mss_crl_age_seconds` and `mss_crl_next_update_seconds` per CA, computed at scrape
    time from the validator the serving core registered (a weak reference: a closed core's
    validator is not kept alive)."""

    def __init__(self) -> None:
        self._source: weakref.ref[CrlSource] | None = None

    def watch(self, source: CrlSource | None) -> None:
        self._source = weakref.ref(source) if source is not None else None

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        source = self._source() if self._source is not None else None
        age, left = self._families()
        for path, issuer, this_update, next_update in source.crl_times() if source is not None else []:
            age.add_metric([issuer, path], (now - this_update).total_seconds())
            if next_update is not None:
                left.add_metric([issuer, path], (next_update - now).total_seconds())
        yield age
        yield left

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "mss_crl_age_seconds",
                "Seconds since the thisUpdate of each CRL in use, by issuing CA and source.",
                labels=["ca", "source"],
            ),
            GaugeMetricFamily(
                "mss_crl_next_update_seconds",
                "Seconds until the nextUpdate of each CRL in use (negative: stale), by CA and source.",
                labels=["ca", "source"],
            ),
        )


CRLS = _CrlCollector()
REGISTRY.register(CRLS)


def watch_crls(source: CrlSource | None) -> None:
    """Make `source` (the serving core's validator) the one the CRL gauges read."""
    CRLS.watch(source)


def exposition() -> bytes:
    """The registry in the Prometheus text format (what `/metrics` answers)."""
    return generate_latest(REGISTRY)
