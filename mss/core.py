"""The core's services bundled for the front ends: one `Core` per `mss serve` process."""
from __future__ import annotations

import ssl
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from crypto.validate import CertificateValidator, TrustAnchors
from mss.auth import Authenticator
from mss.config import Settings
from mss.db.engine import create_engine, sessionmaker, upgrade
from mss.delivery import Delivery, GroupCommitter
from mss.events import Events
from mss.mailboxes import Mailboxes
from mss.store import Store
from mss.tls import server_context


@dataclass
class Core:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker
    events: Events
    store: Store
    mailboxes: Mailboxes
    delivery: Delivery
    auth: Authenticator
    committer: GroupCommitter

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> "Core":
        url = settings.resolved_database_url
        if migrate:
            await upgrade(url)
        engine = create_engine(url)
        sessions = sessionmaker(engine)
        events = Events()
        store = Store(sessions, events)
        mailboxes = Mailboxes(settings, sessions, store)
        committer = GroupCommitter(
            store, max_batch=settings.delivery.group_commit_max, wait_ms=settings.delivery.group_commit_wait_ms
        )
        committer.start()
        anchors = TrustAnchors.load(settings.path(settings.tls.trust_anchors))
        validator = CertificateValidator(anchors, [settings.path(p) for p in settings.tls.crl_files])
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            events=events,
            store=store,
            mailboxes=mailboxes,
            delivery=Delivery(settings, sessions, mailboxes, committer),
            auth=Authenticator(validator, sessions),
            committer=committer,
        )

    def server_ssl_context(self) -> ssl.SSLContext:
        return server_context(self.settings)

    async def close(self) -> None:
        await self.committer.stop()
        await self.engine.dispose()
