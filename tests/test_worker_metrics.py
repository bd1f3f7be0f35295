"""`/metrics` of a node of several workers (`mss.worker_metrics`): the registries of every
worker in one exposition, labelled by worker, over real Unix sockets; a sibling that does
not answer is left out and counted, never waited for past the timeout."""

from __future__ import annotations

import asyncio
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mss import metrics, worker_metrics
from mss.worker_metrics import WorkerRegistries, merge, parse, socket_path

ONE = b"""# HELP mss_messages_accepted_total Messages accepted.
# TYPE mss_messages_accepted_total counter
mss_messages_accepted_total{protocol="smtp"} 3.0
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 12.0
"""
TWO = b"""# HELP mss_messages_accepted_total Messages accepted.
# TYPE mss_messages_accepted_total counter
mss_messages_accepted_total{protocol="smtp"} 5.0
mss_messages_accepted_total{protocol="imap"} 1.0
"""


def _samples(text: bytes) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text.decode())
        for s in f.samples
    }


def test_merge_gives_each_family_once_with_every_workers_samples_labelled() -> None:
    out = merge({0: parse(ONE), 1: parse(TWO)}, missing=1)
    assert len(re.findall(rb"^# TYPE mss_messages_accepted_total counter$", out, re.M)) == 1
    got = _samples(out)
    assert got[("mss_messages_accepted_total", (("protocol", "smtp"), ("worker", "1")))] == 3
    assert got[("mss_messages_accepted_total", (("protocol", "smtp"), ("worker", "2")))] == 5
    assert got[("mss_messages_accepted_total", (("protocol", "imap"), ("worker", "2")))] == 1
    assert got[("process_open_fds", (("worker", "1"),))] == 12
    assert got[("mss_metrics_workers_missing", ())] == 1


async def test_a_scrape_reads_the_siblings_and_counts_the_one_that_does_not_answer(tmp_path, monkeypatch) -> None:
    """Worker 1 answers the scrape; worker 2 serves its registry on its socket; worker 3's
    socket accepts and never answers (stuck): left out after the timeout, and counted."""
    monkeypatch.setattr(worker_metrics, "PEER_TIMEOUT_S", 0.3)
    metrics.MESSAGES_ACCEPTED.labels("smtp").inc(0)
    second = WorkerRegistries(tmp_path, 1, 3)
    await second.start()

    async def stuck(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)
        w.close()

    third = await asyncio.start_unix_server(stuck, path=str(socket_path(tmp_path, 2)))
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        out = await WorkerRegistries(tmp_path, 0, 3).exposition()
        assert loop.time() - started < 2
        got = _samples(out)
        workers = {dict(labels).get("worker") for name, labels in got if name == "process_open_fds"}
        assert workers == {"1", "2"}
        assert got[("mss_metrics_workers_missing", ())] == 1
        assert ("mss_messages_accepted_total", (("protocol", "smtp"), ("worker", "2"))) in got
    finally:
        third.close()
        await second.close()
    assert not socket_path(tmp_path, 1).exists()  # a stopped worker takes its socket away


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # closed without a word (its registry raised)
        b"5000\n" + b"# TYPE x counter\n",  # cut short: the worker died in mid-write
        b"12\n# TYPE x gau",  # the length of what came, but not the text format
        b"3\nabcdef",  # more than announced
        b"99999999999\n",  # more than MAX_PEER_BYTES announced
        b"x" * 100,  # no length at all
    ],
)
async def test_a_sibling_whose_answer_is_not_whole_is_left_out_and_the_scrape_still_answers(
    tmp_path, monkeypatch, answer
) -> None:
    monkeypatch.setattr(worker_metrics, "PEER_TIMEOUT_S", 0.5)

    async def sick(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(answer)
        await w.drain()
        w.close()

    srv = await asyncio.start_unix_server(sick, path=str(socket_path(tmp_path, 1)))
    try:
        got = _samples(await WorkerRegistries(tmp_path, 0, 2).exposition())
    finally:
        srv.close()
    assert got[("mss_metrics_workers_missing", ())] == 1
    assert {dict(labels).get("worker") for name, labels in got if name == "process_open_fds"} == {"1"}
