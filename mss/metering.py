"""The core's services with their metrics (mss.metrics): what `Core` hands the front ends.

Counting at the service boundary, in the core, means every front end is counted the same
way and none of them has to remember to: a submission's sender (MAIL), recipients (RCPT) and
message (DATA) are counted where the core decides them, an IMAP APPEND where its handle
stores it. The `protocol` label says which front end the service was handed to: `Core`
gives SMTP a `MeteredDelivery` labelled `smtp` and the patient portal one labelled `http`.

Refusals raised by the front ends alone (an address that is not RFC 5321 syntax, an APPEND
without a message) are protocol errors, not the core's decisions, and are not counted here.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TypeVar

from mss import metrics
from mss.delivery import Delivery, Transaction
from mss.mailaccess import Handle, MailAccessService
from mss.patients import ConversationInfo
from mss.policy import Recipient
from mss.principal import Principal
from mss.records import MailDsn, RcptDsn, StoredRef, TraceInfo
from mss.services import AppendItem, DeliveryResult

D = TypeVar("D", bound=Delivery)


class MeteredTransaction:
    """`mss.services.SubmissionTransaction` around the core's `Transaction`."""

    def __init__(self, inner: Transaction, protocol: str) -> None:
        self._inner = inner
        self._protocol = protocol

    def mail_from(self, address: str, dsn: MailDsn | None = None, size: int | None = None) -> None:
        with metrics.refusals(self._protocol, "mail"):
            self._inner.mail_from(address, dsn, size)

    async def add_recipient(self, address: str, dsn: RcptDsn | None = None) -> Recipient:
        with metrics.refusals(self._protocol, "rcpt"):
            return await self._inner.add_recipient(address, dsn)

    async def deliver(self, raw: bytes) -> DeliveryResult:
        with metrics.delivery(self._protocol, "data"):
            return await self._inner.deliver(raw)


class MeteredDelivery(Delivery):
    """`Delivery` whose transactions are counted under `protocol`."""

    protocol = "smtp"

    def begin(  # type: ignore[override]
        self, principal: Principal, *, answering: ConversationInfo | None = None, trace: TraceInfo | None = None
    ) -> MeteredTransaction:
        return MeteredTransaction(super().begin(principal, answering=answering, trace=trace), self.protocol)

    def via(self, protocol: str) -> MeteredDelivery:
        """The same delivery (same store, sealer, settings), counted under another protocol."""
        other = copy.copy(self)
        other.protocol = protocol
        return other


def metered_for(submission: D, protocol: str) -> D:
    """`submission` counted under `protocol` when it is metered, else as it is."""
    if isinstance(submission, MeteredDelivery):
        return submission.via(protocol)  # type: ignore[return-value]
    return submission


class MeteredHandle(Handle):
    """A mailbox handle whose APPENDs are counted (protocol `imap`, stage `append`), once
    per message: `Handle.append` goes through `append_many`, the one method counted here, so
    a single APPEND counts one message and a MULTIAPPEND of n counts n, accepted or refused
    together (RFC 3502 3), with one latency sample for their one commit."""

    async def append_many(self, folder: str, messages: Sequence[AppendItem]) -> list[StoredRef]:
        with metrics.delivery("imap", "append", messages=len(messages)):
            return await super().append_many(folder, messages)


class MeteredMailAccess(MailAccessService):
    """`MailAccessService` handing out `MeteredHandle`s."""

    handle_type = MeteredHandle
