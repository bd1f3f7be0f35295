"""The parse worker of a first load: the lines are parsed on the other core while this one writes.

A first load (nothing stored to compare with) costs about 11 µs of Python per line to decode,
split, validate, fold and digest it, and about as much again to insert the row; in one process
they share one core (and the GIL with the driver's thread). Here the parsing
(`importer._first_load_rows`, the very code the importer runs in its own process for a small
file) runs in a child process, which sends ready rows, a chunk at a time, through a pipe; the
importer only writes them. The child never opens the database: the one transaction, and
everything that makes it durable, stays the importer's.

The child is started with `spawn` (the importer has threads, aiosqlite's and asyncio's
executor's: forking them is not safe), once per `import_files` and only when a first load
needs it, and it runs niced: on a shared machine the deliveries and look-ups come first.
Memory stays bounded: a chunk is sent only when the importer has taken the previous one.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import multiprocessing
import os
import pickle
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from annuaire.importer import ImportReport

#: Niceness of the child (the importer itself keeps its priority: it holds the write lock).
NICE = 5
#: Chunks (of importer.CHUNK rows, about 1.5 MB each) read ahead from the child.
READ_AHEAD = 16


class LoadWorker:
    """One parse process, started on first use, for the files of one import.

    `plan` names, in order, the sources the import will load first, so that the child starts
    on the next one while the importer still writes and indexes the last (its first pass,
    then up to READ_AHEAD chunks, read by a thread of this process); `rows` then gives them,
    one after the other, in that order."""

    def __init__(self) -> None:
        self._conn: Connection | None = None
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._reader: threading.Thread | None = None
        self._queue: queue.Queue[bytes | None] = queue.Queue(READ_AHEAD)
        self._planned: list[tuple[Path, str | None]] = []
        self._busy = False  # a planned file not given whole yet

    def _start(self) -> Connection:
        if self._conn is None:
            ctx = multiprocessing.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(child,), name="mss-annuaire-parse", daemon=True)
            self._proc.start()
            child.close()
            self._queue = queue.Queue(READ_AHEAD)  # nothing left from a child stopped before
            self._reader = threading.Thread(target=_read, args=(self._conn, self._queue), daemon=True)
            self._reader.start()
        return self._conn

    def plan(self, path: Path, member: str | None, insert_order: Sequence[str], chunk: int) -> None:
        """Ask for this source next: its rows in `insert_order`, `chunk` at a time."""
        self._start().send((path, member, list(insert_order), chunk))
        self._planned.append((path, member))
        self._busy = True

    def planned(self, path: Path, member: str | None) -> bool:
        """Whether `rows(path, member)` is what the child is parsing next."""
        return bool(self._planned) and self._planned[0] == (path, member)

    async def rows(self, path: Path, member: str | None) -> AsyncIterator[tuple[list[tuple], int, ImportReport | None]]:
        """(rows, octets read since the last chunk, None) per chunk of the next planned
        source (which must be `path`, `member`), then ([], octets, the report of the file).
        An error of the child is raised here. A chunk is decoded when the caller asks for
        it, not ahead by the reading thread: the importer's own work (its driver's thread)
        then runs alone, not against the decoding for the GIL."""
        if not self.planned(path, member):
            raise RuntimeError(f"parse worker: {path}:{member} was not planned next")
        self._planned.pop(0)
        finished = False
        try:
            while True:
                data = await asyncio.to_thread(self._queue.get)
                if data is None:
                    raise RuntimeError("directory parse worker: it stopped")
                if data[:1] == b"R":
                    rows, read = marshal.loads(memoryview(data)[1:])  # noqa: S302 - our own child
                    del data
                    yield rows, read, None
                    continue
                finished = True
                self._busy = bool(self._planned)
                kind, value, read = pickle.loads(memoryview(data)[1:])  # noqa: S301 - our own child
                if kind == "error":
                    raise value
                yield [], read, value
                return
        finally:
            if not finished:
                # Given up half-way (an error of the import): the child may be busy or
                # blocked sending; it goes.
                await self.aclose()

    async def aclose(self) -> None:
        """Stop the child: told to when it is idle, killed when it is busy (given up)."""
        proc, conn, reader = self._proc, self._conn, self._reader
        self._proc = self._conn = self._reader = None
        busy, self._busy = self._busy, False
        self._planned.clear()
        if proc is None or conn is None or reader is None:
            return
        if not busy and proc.is_alive():
            with contextlib.suppress(OSError):
                conn.send(None)
            await asyncio.to_thread(proc.join, 5)
        if proc.is_alive():
            proc.kill()
            await asyncio.to_thread(proc.join)
        await asyncio.to_thread(_drain, reader, self._queue)  # the pipe ends, so does the reader
        conn.close()


def _read(conn: Connection, q: queue.Queue[bytes | None]) -> None:
    """The reading thread: the child's messages into `q` (blocks when READ_AHEAD are
    waiting), then None when the pipe ends."""
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            q.put(None)
            return
        q.put(data)


def _drain(reader: threading.Thread, q: queue.Queue[bytes | None]) -> None:
    while reader.is_alive():
        with contextlib.suppress(queue.Empty):
            q.get(timeout=0.05)
    reader.join()


def _serve(conn: Connection) -> None:
    """The child: parse each file asked for, send its rows, until told to stop (None).

    Rows go with `marshal` (strings, integers, booleans: three times cheaper to write than
    pickle, and both ends are this interpreter); the report and errors with pickle."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    from annuaire import importer

    while True:
        try:
            req = conn.recv()
        except (EOFError, OSError):
            return
        if req is None:
            return
        path, member, order, chunk = req
        read = 0

        def progress(n: int) -> None:
            nonlocal read
            read += n

        try:
            src = importer._source(path, member)
            report = importer.ImportReport(source=src.name)
            for rows in importer._first_load_rows(src, report, order, progress, chunk):
                conn.send_bytes(b"R" + marshal.dumps((rows, read)))
                read = 0
            msg = b"P" + pickle.dumps(("done", report, read), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - every error goes back to the importer, raised there
            try:
                msg = b"P" + pickle.dumps(("error", e, 0))
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                msg = b"P" + pickle.dumps(("error", RuntimeError(f"directory parse worker: {e!r}"), 0))
        try:
            conn.send_bytes(msg)
        except OSError:  # the importer is gone
            return
