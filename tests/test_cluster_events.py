"""`mss.cluster_events` (LISTEN/NOTIFY between nodes) and `mss.demo_nodes` (one config per node).

The bridge is tested against the local PostgreSQL with two bridges in one process, each with
its own `Events` bus and its own connection, as two nodes would have: what one publishes
wakes the other's watchers, never its own twice, and a link cut by the server
(`pg_terminate_backend`) comes back and wakes every watcher once.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tomllib

import asyncpg
import pytest
from support import ROOT, pg_admin_url

from mss.cluster_events import CHANNEL, MAX_PAYLOAD, ClusterEvents, asyncpg_dsn, parse_payload, payloads
from mss.demo_nodes import NodesError, check_nodes, node_config_text, node_ports
from mss.events import Events

PORTS = ("submission", "submissions", "mta", "imap", "imaps", "http")


def test_payloads_stay_under_postgresql_limit_and_keep_every_id() -> None:
    ids = list(range(10**12, 10**12 + 3000))
    out = payloads(ids)
    assert len(out) > 1 and all(len(p) <= MAX_PAYLOAD for p in out)
    assert [int(x) for p in out for x in p.split(",")] == ids
    assert payloads([]) == []


def test_parse_payload_ignores_what_is_not_a_folder_id() -> None:
    assert parse_payload("1,22,333") == [1, 22, 333]
    assert parse_payload("1,x,-3,,4;DROP,99999999999999999999,5") == [1, 5]
    assert parse_payload("*") is None


def test_asyncpg_dsn_from_the_sqlalchemy_url() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p%40w@h:5433/db") == "postgresql://u:p%40w@h:5433/db"


def test_events_forward_own_changes_but_not_remote_ones() -> None:
    events = Events()
    sent: list[int] = []
    events.forward_to(sent.append)
    events.publish(7)
    events.publish_remote(8)
    assert sent == [7]
    events.forward_to(None)
    events.publish(9)
    assert sent == [7]


needs_pg = pytest.mark.skipif(pg_admin_url() is None, reason="needs PostgreSQL (MSS_TEST_DATABASE_URL)")


async def _running(url: str, events: Events) -> tuple[ClusterEvents, asyncio.Task]:
    bridge = ClusterEvents(url, events, retry_s=0.2)
    task = asyncio.create_task(bridge.run())
    await asyncio.wait_for(bridge.listening.wait(), 10)
    return bridge, task


@needs_pg
async def test_a_change_published_on_one_node_wakes_the_other_only() -> None:
    url = pg_admin_url()
    a_events, b_events = Events(), Events()
    a, a_task = await _running(url, a_events)
    b, b_task = await _running(url, b_events)
    try:
        with a_events.watch(41) as on_a, b_events.watch(41) as on_b, b_events.watch(42) as other:
            a_events.publish(41)
            assert await on_a.wait(1)  # the local watcher, at once
            assert await on_b.wait(5)  # the other node's, through PostgreSQL
            assert not await other.wait(0.3)  # another folder: not woken
            assert not await on_a.wait(0.5)  # its own NOTIFY came back and was skipped
        assert a.sent >= 1 and b.received >= 1 and a.received == 0
    finally:
        for t in (a_task, b_task):
            t.cancel()
        await asyncio.gather(a_task, b_task, return_exceptions=True)
    assert a_events._forward is None  # stopped: nothing forwarded any more


@needs_pg
async def test_a_cut_link_reconnects_and_wakes_every_watcher() -> None:
    url = pg_admin_url()
    a_events, b_events = Events(), Events()
    a, a_task = await _running(url, a_events)
    b, b_task = await _running(url, b_events)
    try:
        with b_events.watch(5) as watch:
            admin = await asyncpg.connect(asyncpg_dsn(url))
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%' AND query LIKE $1",
                    f"%{CHANNEL}%",
                )
            finally:
                await admin.close()
            assert killed >= 2
            # Both come back; b wakes its watcher once on reconnecting (changes may be missed).
            assert await watch.wait(10)
            await asyncio.wait_for(b.listening.wait(), 10)
            await asyncio.wait_for(a.listening.wait(), 10)
            a_events.publish(5)
            assert await watch.wait(5)
    finally:
        for t in (a_task, b_task):
            t.cancel()
        await asyncio.gather(a_task, b_task, return_exceptions=True)


# -- mss demo --nodes -------------------------------------------------------------------------


def test_node_ports_follow_the_previous_node_or_stay_ephemeral() -> None:
    first = {name: 4100 + i for i, name in enumerate(PORTS)}
    assert node_ports(first, PORTS, 2) == {name: 4106 + i for i, name in enumerate(PORTS)}
    assert node_ports(first, PORTS, 3)["http"] == 4117
    assert node_ports(dict.fromkeys(PORTS, 0), PORTS, 2) == dict.fromkeys(PORTS, 0)


def test_node_config_changes_only_what_a_node_holds_for_itself() -> None:
    text = (
        'domain = "d.test"\ndatabase_url = "postgresql+asyncpg://h/db"\nlog_file = "mss.log"\n\n'
        "[listen]\nsubmission = 1\nimap = 2\nhttp = 3\n\n"
        '[patients]\nportal_url = "http://127.0.0.1:3/portal/"\n\n[relay]\nimap = 99\n'
    )
    out = node_config_text(text, node="node2", ports={"submission": 11, "imap": 12, "http": 13}, log_file="n2.log")
    doc = tomllib.loads(out)
    assert doc["node"] == "node2" and doc["log_file"] == "n2.log" and doc["database_url"].endswith("/db")
    assert doc["listen"] == {"submission": 11, "imap": 12, "http": 13}
    assert doc["patients"]["portal_url"] == "http://127.0.0.1:13/portal/"
    assert doc["relay"] == {"imap": 99}  # another table's key of the same name is left alone
    again = tomllib.loads(node_config_text(out, node="node3", ports={}, log_file="n3.log"))
    assert again["node"] == "node3"


def test_several_nodes_need_postgresql_and_a_sane_count() -> None:
    with pytest.raises(NodesError, match="PostgreSQL"):
        check_nodes(2, "sqlite+aiosqlite:///mss.db")
    with pytest.raises(NodesError, match="between 1 and"):
        check_nodes(0, "postgresql+asyncpg://h/db")
    check_nodes(1, "sqlite+aiosqlite:///mss.db")
    check_nodes(3, "postgresql+asyncpg://h/db")


def test_mss_demo_nodes_on_sqlite_is_refused_and_writes_nothing(tmp_path) -> None:
    target = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "mss", "demo", str(target), "--nodes", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode != 0 and "PostgreSQL" in res.stderr
    assert not target.exists()


@needs_pg
def test_mss_demo_nodes_writes_one_config_per_node(tmp_path) -> None:
    from support import create_pg_database, drop_pg_database

    name, url = create_pg_database()
    try:
        res = subprocess.run(
            [sys.executable, "-m", "mss", "demo", str(tmp_path / "d"), "--nodes", "3", "--base-port", "4300"]
            + ["--database-url", url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stderr
        import json

        doc = json.loads((tmp_path / "d" / "demo.json").read_text())
        assert [n["config"] for n in doc["nodes"]] == ["mss.toml", "node2.toml", "node3.toml"]
        assert doc["nodes"][2]["ports"]["submission"] == 4312
        for n in doc["nodes"]:
            cfg = tomllib.loads((tmp_path / "d" / n["config"]).read_text())
            assert cfg["node"] == n["node"] and cfg["listen"]["submission"] == n["ports"]["submission"]
            assert cfg["database_url"] == url
        assert "start node3 with:" in res.stdout
    finally:
        drop_pg_database(name)
