"""Group commit: every write of the store shares transactions with the writes beside it.

Deliveries, APPEND, COPY, MOVE, flag changes and folder changes are all `WriteOp`s. One
task commits them: it takes whatever is queued (up to `max_batch`), runs the operations
one after the other in one transaction, commits once (one fsync), and only then wakes each
caller with its own result. A writer that finds nothing in flight is committed at once; the
others wait only for the commit already in flight, never for a timer (DESIGN.md, Storage).

Locks are declared up front and taken for the whole batch in one global order (see
`Store._lock`: per-mailbox locks in sorted order, then folder rows by ascending id), so two
nodes' batches that touch the same mailboxes cannot deadlock.

One operation's refusal never costs its neighbours their shared commit. The contract that
makes it safe: an operation raises `Refusal` only *before* it writes anything (it checks,
then writes). A refused operation is answered and the batch goes on in the same
transaction; a folder named by one operation that no longer exists fails that operation
only. Any other error (the database) rolls the batch back, and each operation is then tried
on its own so each caller gets its own outcome.

Bulk operations (a COPY of thousands of messages) run `alone`: in their own transaction, in
the caller's task, so they never hold up the deliveries queued behind the committer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mss import metrics
from mss.refusals import Reason, Refusal
from mss.storage_full import storage_full_refusal
from mss.write_gate import ProcessWriteGate

log = logging.getLogger("mss.commit")

T = TypeVar("T")


@dataclass(frozen=True)
class Locks:
    """The folders a write touches, known before it runs: by id (existing folders) and by
    (mailbox, name) (deliveries that may create a mailbox's default folders). `mailbox`
    scopes the ids: a folder id of another mailbox does not lock, it fails the operation."""

    mailbox: str | None = None
    folder_ids: frozenset[int] = frozenset()
    folder_keys: frozenset[tuple[str, str]] = frozenset()


@dataclass
class WriteOp(Generic[T]):
    """One caller's write: `run` does it inside the shared transaction and returns its
    result and the folder ids whose watchers must hear of it once committed."""

    locks: Locks
    run: Callable[[AsyncSession], Awaitable[tuple[T, Iterable[int]]]]
    future: asyncio.Future[T] | None = field(default=None, repr=False)


class LockTaker(Protocol):
    async def __call__(self, session: AsyncSession, locks: Sequence[Locks]) -> set[int]:
        """Take the batch's locks; returns the positions of the operations whose folders are
        gone (they are refused, the others go on)."""
        ...


class GroupCommit:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        lock: LockTaker,
        publish: Callable[[int], None],
        *,
        max_batch: int = 64,
        gate: ProcessWriteGate | None = None,
    ) -> None:
        self.sessions = sessions
        #: Across the worker processes of a node on SQLite: one transaction at a time
        #: (`mss.write_gate`); None with one process, or on PostgreSQL (its locks are rows).
        self.gate = gate
        self.lock = lock
        self.publish = publish
        self.max_batch = max_batch
        self._queue: list[WriteOp[object]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[WriteOp[object]] = []
        self._stopping = False
        #: Transactions committed and operations carried, for tests and metrics.
        self.commits = 0
        self.operations = 0
        #: Batches the database refused (a deadlock, a lost connection) and that were split.
        self.failed_batches = 0

    async def run(
        self, locks: Locks, run: Callable[[AsyncSession], Awaitable[tuple[T, Iterable[int]]]], *, alone: bool = False
    ) -> T:
        """Queue one write and wait until the transaction holding it is committed (`alone`:
        run it now in a transaction of its own, for bulk work). A store that cannot grow
        (full disk) is answered with a temporary `Refusal` (`mss.storage_full`)."""
        try:
            return await self._run(locks, run, alone=alone)
        except Exception as exc:
            refusal = storage_full_refusal(exc)
            if refusal is None:
                raise
            log.error("write refused, the database cannot grow: %s: %s", type(exc).__name__, exc)
            raise refusal from exc

    async def _run(
        self, locks: Locks, run: Callable[[AsyncSession], Awaitable[tuple[T, Iterable[int]]]], *, alone: bool
    ) -> T:
        if self._stopping:
            raise RuntimeError("server stopping")
        if alone:
            lone: WriteOp[T] = WriteOp(locks, run, asyncio.get_running_loop().create_future())
            outcomes = await self._transaction([lone])  # type: ignore[list-item]
            result = outcomes[0]
            if isinstance(result, BaseException):
                raise result
            return result  # type: ignore[return-value]
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="group-commit")
        op: WriteOp[T] = WriteOp(locks, run, asyncio.get_running_loop().create_future())
        self._queue.append(op)  # type: ignore[arg-type]
        self._wake.set()
        assert op.future is not None
        return await op.future

    async def stop(self, timeout: float = 30.0) -> None:
        """Commit what is already queued, then stop: a session waiting for its 250 when
        the server is asked to stop still gets it. Past `timeout`, waiters get an error."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        self._wake.set()
        try:
            await asyncio.wait_for(task, timeout)
        except TimeoutError:
            pass  # cancelled by wait_for: `_loop` fails the operations it held
        for op in self._queue:
            _fail(op, RuntimeError("server stopping"))
        self._queue = []

    async def _loop(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._stopping:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._inflight = batch
                await self._commit(batch)
                self._inflight = []
        finally:
            # Cancelled in the middle of a commit (a drain that timed out): whatever the
            # outcome, no caller may wait forever.
            for op in self._inflight:
                _fail(op, RuntimeError("server stopping"))
            self._inflight = []

    async def _commit(self, batch: list[WriteOp[object]]) -> None:
        try:
            outcomes = await self._transaction(batch)
        except Exception as exc:  # noqa: BLE001 - handed to the callers below
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            self.failed_batches += 1
            metrics.COMMIT_FAILED_BATCHES.inc()
            log.warning("batch of %d failed (%s); committing each on its own", len(batch), type(exc).__name__)
            for op in batch:
                try:
                    (outcome,) = await self._transaction([op])
                except Exception as one:  # noqa: BLE001 - handed to its caller
                    _fail(op, one)
                else:
                    _settle(op, outcome)
            return
        for op, outcome in zip(batch, outcomes, strict=True):
            _settle(op, outcome)

    async def _transaction(self, batch: list[WriteOp[object]]) -> list[object]:
        """Run a batch in one transaction; each op's result, or the Refusal it raised."""
        if self.gate is None:
            return await self._transaction_held(batch)
        async with self.gate.hold():
            return await self._transaction_held(batch)

    async def _transaction_held(self, batch: list[WriteOp[object]]) -> list[object]:
        outcomes: list[object] = []
        changed: set[int] = set()
        async with self.sessions() as s, s.begin():
            gone = await self.lock(s, [op.locks for op in batch])
            for i, op in enumerate(batch):
                if i in gone:
                    outcomes.append(Refusal(Reason.NO_SUCH_FOLDER, "The folder no longer exists"))
                    continue
                try:
                    result, folders = await op.run(s)
                except Refusal as refused:  # raised before the op wrote anything (see above)
                    outcomes.append(refused)
                    continue
                outcomes.append(result)
                changed.update(folders)
        self.commits += 1
        self.operations += len(batch)
        metrics.commit_batch(len(batch))
        for folder_id in changed:
            self.publish(folder_id)
        return outcomes


def _settle(op: WriteOp[object], outcome: object) -> None:
    if isinstance(outcome, BaseException):
        _fail(op, outcome)
    else:
        _resolve(op, outcome)


def _resolve(op: WriteOp[object], result: object) -> None:
    if op.future is not None and not op.future.done():
        op.future.set_result(result)


def _fail(op: WriteOp[object], exc: BaseException) -> None:
    if op.future is not None and not op.future.done():
        op.future.set_exception(exc)
