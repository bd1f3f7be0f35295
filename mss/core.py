"""The core's services bundled for the front ends: one `Core` per `mss serve` process."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crypto.tokens import TokenVerifier
from crypto.validate import CertificateValidator, TrustAnchors
from mss import metrics
from mss.audit import AuditTrail
from mss.auth import Authenticator, AuthThrottle, CoreCredentials
from mss.cluster_events import ClusterEvents
from mss.config import Settings
from mss.db.engine import create_engine, sessionmaker, upgrade
from mss.delivery import Delivery
from mss.directory import CoreDirectory
from mss.events import Events
from mss.mailaccess import MailAccessService
from mss.metering import MeteredDelivery, MeteredMailAccess, metered_for
from mss.notify import notifier_for
from mss.password_cache import VerifiedPasswords
from mss.patients import PatientSpaces
from mss.portal import CorePortal
from mss.queue import RelayQueue
from mss.queue_key import QueueKeyError
from mss.sealing import Sealer
from mss.services import RelayTransport
from mss.store import Store
from mss.throttle import Throttle
from mss.tls import server_context
from mss.worker_events import WorkerEvents
from mss.worker_metrics import WorkerRegistries
from mss.write_gate import ProcessWriteGate, sqlite_gate_path

if TYPE_CHECKING:
    from mss.workers import WorkerSlot

log = logging.getLogger("mss.core")


@dataclass
class Core:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    events: Events
    store: Store
    sealer: Sealer
    submission: Delivery
    mail: MailAccessService
    patients: PatientSpaces
    auth: Authenticator
    validator: CertificateValidator | None = None
    #: The audit trail (mss.audit); by default the patient spaces' own.
    audit: AuditTrail | None = None
    #: The relay queue of mail for other operators (mss.queue), shared with `submission`.
    queue: RelayQueue | None = None
    #: How queued mail reaches other operators (`smtp.relay.SmtpRelayClient`, set by
    #: mss.serve, the composition root: the core never imports a front end). None: the
    #: queue fills but nothing is relayed (the CLI's short-lived cores).
    relay_transport: RelayTransport | None = None
    crl_task: asyncio.Task | None = field(default=None, repr=False)
    notify_task: asyncio.Task | None = field(default=None, repr=False)
    relay_task: asyncio.Task | None = field(default=None, repr=False)
    #: Folder-change events to and from the other nodes on the same PostgreSQL.
    cluster: ClusterEvents | None = field(default=None, repr=False)
    cluster_task: asyncio.Task | None = field(default=None, repr=False)
    #: Folder-change events to and from this node's other worker processes, on SQLite.
    worker_events: WorkerEvents | None = field(default=None, repr=False)
    #: With several worker processes: this worker's metrics socket, and `/metrics` for all.
    worker_metrics: WorkerRegistries | None = field(default=None, repr=False)
    #: `mss.services.Credentials` over `auth`: what the front ends authenticate with.
    credentials: CoreCredentials = field(init=False, repr=False)
    #: `mss.services.Directory`: the published directory the web front end shows.
    directory: CoreDirectory = field(init=False, repr=False)
    #: `mss.services.PatientPortal`: the patient portal the web front end serves.
    portal: CorePortal = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.audit is None:
            self.audit = self.patients.audit
        # Refused password attempts are counted in the database across connections, nodes,
        # SMTP and IMAP alike ([abuse], mss.auth.AuthThrottle).
        throttle = AuthThrottle(Throttle(self.settings, self.sessions))
        self.credentials = CoreCredentials(self.auth, audit=self.audit, throttle=throttle)
        self.directory = CoreDirectory(self.sessions)
        # The portal's answers are counted as `http` (mss.metering), SMTP's as `smtp`.
        portal_submission = metered_for(self.submission, "http")
        self.portal = CorePortal(self.settings, self.sessions, self.patients, portal_submission, self.mail)

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Core:
        url = settings.resolved_database_url
        if migrate:
            await upgrade(url)
        engine = create_engine(url)
        sessions = sessionmaker(engine)
        events = Events()
        # Several worker processes on one SQLite file take turns to write (mss.write_gate).
        gate_path = sqlite_gate_path(url) if settings.worker_count > 1 else None
        store = Store(
            sessions,
            events,
            max_batch=settings.delivery.group_commit_max,
            quota=settings.limits.quota,
            write_gate=ProcessWriteGate(gate_path) if gate_path is not None else None,
        )
        sealer = Sealer(settings, sessions)
        a = settings.audit
        audit = AuditTrail(sessions, max_pending=a.max_pending, batch_max=a.batch_max, enabled=a.enabled)
        patients = PatientSpaces(settings, sessions, store, audit=audit)
        anchors = TrustAnchors.load(settings.path(settings.tls.trust_anchors))
        validator = build_validator(settings, anchors)
        queue = RelayQueue(settings, sessions)
        core = cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            events=events,
            store=store,
            sealer=sealer,
            submission=MeteredDelivery(settings, sessions, sealer, store, patients, queue=queue),
            mail=MeteredMailAccess(store, sealer, max_message_size=settings.limits.max_message_size),
            patients=patients,
            auth=Authenticator(
                validator,
                sessions,
                build_token_verifier(settings),
                local_domains=(settings.domain, settings.patient_domain),
                password_cache=VerifiedPasswords(settings.abuse.app_password_cache_s)
                if settings.abuse.app_password_cache_s > 0
                else None,
            ),
            validator=validator,
            audit=audit,
            queue=queue,
        )
        if validator.crl_files and settings.tls.crl_refresh_s > 0:
            core.crl_task = asyncio.get_running_loop().create_task(
                _refresh_crls(validator, settings.tls.crl_refresh_s), name="crl-refresh"
            )
        # /metrics reads the CRL freshness of the latest core opened in this process.
        metrics.watch_crls(validator)
        return core

    def start_background(self, worker: WorkerSlot | None = None) -> None:
        """The tasks a serving node runs beside its listeners (not the CLI's short-lived cores).

        With several worker processes (`mss.workers`), the patient notifier runs in the first
        worker only (once per node, as with one process). Every worker runs a relay worker of
        its own, with a lease owner of its own: mail a worker queued is sent at once by that
        worker (the queue's wake-up is in-process), and a restarted worker takes up only the
        leases it held itself. Every worker hears the others' folder changes."""
        if worker is None or worker.primary:
            notifier = notifier_for(self.settings, self.sessions)
            if notifier is not None and self.notify_task is None:
                self.notify_task = asyncio.get_running_loop().create_task(notifier.run(), name="patient-notify")
        self.start_cluster_events()
        if worker is not None and worker.bus is not None and self.engine.dialect.name != "postgresql":
            self.start_worker_events(worker.bus.receiving(worker.index), worker.bus.peers(worker.index))
        self.start_relay(worker)

    async def start_worker_metrics(self, worker: WorkerSlot | None) -> None:
        """With several worker processes: this worker's metrics socket, so that the node's
        `/metrics` shows it whichever worker takes the scrape (`mss.worker_metrics`)."""
        if worker is None or worker.metrics_dir is None or self.worker_metrics is not None:
            return
        registries = WorkerRegistries(worker.metrics_dir, worker.index, worker.count)
        await registries.start()
        self.worker_metrics = registries

    async def metrics_exposition(self) -> bytes:
        """The node's Prometheus metrics: this process's registry, or, with several worker
        processes, every worker's, labelled by worker (`mss.worker_metrics`)."""
        if self.worker_metrics is not None:
            return await self.worker_metrics.exposition()
        return metrics.exposition()

    def start_worker_events(self, receiving: socket.socket, peers: list[socket.socket]) -> None:
        """On SQLite with several workers: folder changes to and from the sibling workers
        (mss.worker_events)."""
        if self.worker_events is not None:
            return
        self.worker_events = WorkerEvents(self.events, receiving, peers)
        self.worker_events.start()

    def start_cluster_events(self) -> None:
        """On PostgreSQL, the LISTEN/NOTIFY bridge to the other nodes (mss.cluster_events):
        an IDLE session here sees what another node delivered. SQLite has one node only."""
        if self.cluster_task is not None or self.engine.dialect.name != "postgresql":
            return
        self.cluster = ClusterEvents(self.settings.resolved_database_url, self.events)
        self.cluster_task = asyncio.get_running_loop().create_task(self.cluster.run(), name="cluster-events")

    def start_relay(self, worker: WorkerSlot | None = None) -> None:
        """The relay worker (mss.relay), when `[relay] enabled` and a transport was given."""
        if self.relay_task is not None or self.queue is None:
            return
        if not self.settings.relay.enabled:
            return
        try:
            self.queue.key()  # a missing or unreadable key shows now, not at the first relayed message
        except (OSError, QueueKeyError) as exc:
            log.error("relay queue key unusable: %s; mail for other operators will be refused (451)", exc)
        if self.relay_transport is None:
            log.warning("relay enabled but no relay transport: queued mail for other operators waits")
            return
        from mss.relay import RelayWorker

        # The lease owner: this node (host and deployment folder), the same across restarts,
        # so a node restarted after a crash takes its own leased entries up at once
        # (RelayQueue.release); another node's leases run out after `[relay] lease_s`.
        # Nodes run from one folder (`mss demo --nodes`) differ by `node`.
        node = self.settings.node
        place = str(self.settings.base_dir.resolve()) + (f"\0{node}" if node else "")
        folder = hashlib.sha256(place.encode()).hexdigest()[:12]
        owner = f"{socket.gethostname()[:150]}:{folder}"
        if worker is not None:  # one of the node's worker processes: leases of its own
            owner += f":w{worker.index + 1}"
        relay = RelayWorker(self.settings, self.queue, self.submission, self.relay_transport, owner)
        self.relay_task = asyncio.get_running_loop().create_task(relay.run(), name="relay-worker")

    def server_ssl_context(self) -> ssl.SSLContext:
        return server_context(self.settings)

    async def close(self) -> None:
        if self.relay_task is not None:
            # Cancelled mid-send, an entry stays leased until `[relay] lease_s` and is then
            # retried (perhaps sent twice: never lost).
            self.relay_task.cancel()
            try:
                await self.relay_task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("relay worker ended with an error")
            self.relay_task = None
        if self.worker_events is not None:
            self.worker_events.close()
            self.worker_events = None
        if self.worker_metrics is not None:
            await self.worker_metrics.close()
            self.worker_metrics = None
        if self.cluster_task is not None:
            self.cluster_task.cancel()
            try:
                await self.cluster_task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("cluster events ended with an error")
            self.cluster_task = None
        if self.notify_task is not None:
            self.notify_task.cancel()
            try:
                await self.notify_task
            except asyncio.CancelledError:
                pass
            self.notify_task = None
        if self.crl_task is not None:
            self.crl_task.cancel()
            try:
                await self.crl_task
            except asyncio.CancelledError:
                pass
            self.crl_task = None
        if self.audit is not None:
            await self.audit.close()  # the queued login events, before the engine goes
        await self.store.close()
        await self.engine.dispose()


def build_validator(settings: Settings, anchors: TrustAnchors | None = None) -> CertificateValidator:
    anchors = anchors or TrustAnchors.load(settings.path(settings.tls.trust_anchors))
    max_age = settings.tls.crl_max_age_s
    return CertificateValidator(
        anchors,
        [*(settings.path(p) for p in settings.tls.crl_files), *settings.tls.crl_urls],
        crl_max_age=timedelta(seconds=max_age) if max_age else None,
        fail_closed_on_stale_crl=settings.tls.crl_fail_closed,
        accept_cache_s=settings.tls.accept_cache_s,
    )


def build_token_verifier(settings: Settings) -> TokenVerifier | None:
    """The e-CPS token verifier, or None when `[tokens] jwks` is not configured."""
    t = settings.tokens
    source = t.jwks_source(settings)
    if source is None:
        return None
    if not t.issuer:
        raise ValueError("[tokens] jwks is set but issuer is empty")
    return TokenVerifier(source, issuer=t.issuer, audience=t.audience, acr_values=t.acr_values, skew=t.skew_s)


async def _refresh_crls(validator: CertificateValidator, interval: float) -> None:
    """Re-read the CRL files every `interval` seconds (revocations reach a running node).

    A file that cannot be read keeps the previous set, loudly; if the publisher stays broken the
    loaded CRLs pass their nextUpdate and the validator fails closed (unless configured open).
    """
    failing = False
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(validator.reload_crls)
        except ValueError as exc:
            log.error("CRL refresh failed, keeping the previous CRLs: %s", exc)
            failing = True
        except Exception:
            log.exception("CRL refresh failed")
            failing = True
        else:
            if failing:
                log.info("CRL refresh recovered")
            failing = False
