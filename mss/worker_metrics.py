"""One `/metrics` for a node of several worker processes (`mss.workers`): every worker's
registry, each sample labelled with its `worker`.

Why: the workers share the http listener (SO_REUSEPORT), so a scrape lands on whichever
worker the kernel picks. Each answering with its own registry alone would make every counter
jump between scrapes (Prometheus reads a drop as a counter reset) and hide what the other
workers did. So the worker that takes a scrape asks its siblings for theirs and answers with
all of them: the samples of each family, each with `worker="N"`, in one family (the text
format allows one `# TYPE` per family). Sums across workers are the dashboard's
(`sum without (worker) (...)`); the process metrics stay per process, which is what they mean.

How: each worker listens on a Unix socket of its own, `w<N>.sock` in a folder the supervisor
makes for the node (mode 0700, removed when the node stops), and answers a connection with
its registry in the text format, preceded by its length in ASCII digits and a newline, then
closes it: no request to parse, and only the node's user can connect. The length tells a
whole answer from one cut short by a worker dying in mid-write. A sibling that does not
answer within `PEER_TIMEOUT_S` (being restarted, or stuck), answers less or more than it
announced, more than `MAX_PEER_BYTES`, or text that does not parse, is left out of that
scrape and counted in `mss_metrics_workers_missing`: one sick worker never costs the scrape
the others' metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from mss import metrics

log = logging.getLogger("mss.metrics")

#: How long a scrape waits for a sibling's registry.
PEER_TIMEOUT_S = 2.0
#: A worker's registry is a few tens of KB; past this, something is wrong with that worker.
MAX_PEER_BYTES = 8 * 1024 * 1024
WORKER_LABEL = "worker"


def socket_path(directory: Path, index: int) -> Path:
    """Worker `index`'s (0 is the first) socket: `w1.sock` for the first, as logs number them."""
    return directory / f"w{index + 1}.sock"


async def serve_registry(directory: Path, index: int) -> asyncio.AbstractServer:
    """Answer each connection on this worker's socket with its registry, then close it."""

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            body = metrics.exposition()
            writer.write(b"%d\n" % len(body) + body)
            await writer.drain()
        except OSError:
            pass  # the asking worker gave up
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    path = socket_path(directory, index)
    path.unlink(missing_ok=True)  # left by this worker's previous life (a restart)
    return await asyncio.start_unix_server(answer, path=str(path))


async def _peer_registry(path: Path) -> list[Metric] | None:
    """A sibling's registry, parsed; None when it does not answer in time, or its answer is
    not whole, too large or not the text format (see the module's docstring)."""
    try:
        async with asyncio.timeout(PEER_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                head = await reader.readuntil(b"\n")
                if not head[:-1].isdigit() or int(head) > MAX_PEER_BYTES:
                    raise ValueError(f"announced {head[:20]!r}")
                body = await reader.readexactly(int(head))
                if await reader.read(1):
                    raise ValueError("more than announced")
            finally:
                writer.close()
        return list(text_string_to_metric_families(body.decode("utf-8")))
    except (OSError, TimeoutError, EOFError, asyncio.LimitOverrunError, ValueError) as exc:
        # IncompleteReadError is an EOFError; a bad number or text is a ValueError.
        log.warning("metrics: left out %s (%s)", path.name, exc or type(exc).__name__)
        return None


def parse(exposition: bytes) -> list[Metric]:
    """A registry in the text format, as metric families."""
    return list(text_string_to_metric_families(exposition.decode("utf-8")))


def merge(registries: dict[int, list[Metric]], missing: int = 0) -> bytes:
    """The registries of workers (by index, 0 first) as one exposition: each family once,
    its samples from every worker labelled `worker="N"`; then `mss_metrics_workers_missing`."""
    families: dict[str, Metric] = {}
    for index in sorted(registries):
        label = str(index + 1)
        for family in registries[index]:
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            merged.samples.extend(s._replace(labels={**s.labels, WORKER_LABEL: label}) for s in family.samples)
    gauge = GaugeMetricFamily(
        "mss_metrics_workers_missing",
        "Worker processes whose metrics this scrape lacks (not answering in time).",
        value=missing,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([*families.values(), gauge]))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


async def node_exposition(directory: Path, index: int, count: int) -> bytes:
    """The node's metrics as worker `index` answers a scrape: its own registry and those of
    the `count - 1` others, asked at once."""
    others = [i for i in range(count) if i != index]
    answers = await asyncio.gather(*(_peer_registry(socket_path(directory, i)) for i in others))
    registries = {index: parse(metrics.exposition())}
    registries.update({i: a for i, a in zip(others, answers, strict=True) if a is not None})
    return merge(registries, missing=count - len(registries))


class WorkerRegistries:
    """This worker's side of the node's `/metrics`: its socket, and the scrape's answer."""

    def __init__(self, directory: Path, index: int, count: int) -> None:
        self.directory, self.index, self.count = directory, index, count
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen on this worker's socket (before the worker says it is ready, so that no
        sibling's scrape finds it missing; a failure stops the worker's start)."""
        self._server = await serve_registry(self.directory, self.index)

    async def exposition(self) -> bytes:
        return await node_exposition(self.directory, self.index, self.count)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            socket_path(self.directory, self.index).unlink(missing_ok=True)
