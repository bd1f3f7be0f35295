"""`mss mailbox quota`: shows a mailbox's usage and limits, sets its own, goes back to the
defaults, audits each change, and refuses what it cannot do without changing anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import ROOT

from mss.cli.mailbox import parse_size

pytestmark = pytest.mark.timeout(300)


def mss(dep, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mss", *args, "-c", str(dep.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def quota(dep, *args: str) -> dict:
    res = mss(dep, "mailbox", "quota", *args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize(
    ("text", "octets"),
    [("0", 0), ("1234", 1234), ("10G", 10 * 1024**3), ("1.5k", 1536), ("500MiB", 500 * 1024**2), ("2TB", 2 * 1024**4)],
)
def test_sizes(text, octets):
    assert parse_size(text) == octets


@pytest.mark.parametrize("text", ["", "-1", "ten", "1X", "nan", "inf", "G", "9" * 30])
def test_bad_sizes(text):
    import click

    with pytest.raises(click.BadParameter):
        parse_size(text)


def test_show_set_reset_and_audit(fresh_deployment):
    dep = fresh_deployment
    paul = dep.mailbox("PER", 1)["address"]
    doc = quota(dep, paul)
    assert doc == {
        "address": paul,
        "changed": [],
        "storage": {"used": 0, "limit": 10 * 1024**3, "default": True},
        "messages": {"used": 0, "limit": 1_000_000, "default": True},
    }
    doc = quota(dep, paul.upper(), "--storage", "2G")
    assert doc["changed"] == ["storage"]
    assert doc["storage"] == {"used": 0, "limit": 2 * 1024**3, "default": False}
    assert doc["messages"]["default"] is True
    doc = quota(dep, paul, "--messages", "0")  # no message limit; the storage limit stays
    assert doc["storage"]["limit"] == 2 * 1024**3 and doc["messages"] == {"used": 0, "limit": 0, "default": False}

    text = mss(dep, "mailbox", "quota", paul).stdout
    assert text.splitlines() == [
        f"quota of {paul}",
        "  storage : 0 B of 2.0 GiB (this mailbox's own)",
        "  messages: 0 of no limit (this mailbox's own)",
    ]
    doc = quota(dep, paul, "--default")
    assert doc["storage"]["default"] and doc["messages"]["default"] and doc["storage"]["limit"] == 10 * 1024**3

    events = [json.loads(line) for line in mss(dep, "audit", "export").stdout.splitlines()]
    changes = [e for e in events if e["type"] == "mailbox.quota_set"]
    assert [(e["subject"], e["fields"]) for e in changes] == [
        (paul, {"storage_limit": 2 * 1024**3}),
        (paul, {"messages_limit": 0}),
        (paul, {"storage_limit": "default", "messages_limit": "default"}),
    ]
    assert all(e["actor"].startswith("cli:") for e in changes)


def test_refusals_change_nothing(fresh_deployment):
    dep = fresh_deployment
    paul = dep.mailbox("PER", 1)["address"]
    for args, why in [
        (["nobody@" + dep.domain, "--storage", "1G"], "no mailbox"),
        (["paul@elsewhere.test", "--storage", "1G"], "not an address of this operator"),
        ([paul, "--storage", "lots"], "not a size"),
        ([paul, "--messages", "-3"], "-3"),
        ([paul, "--default", "--storage", "1G"], "--default goes alone"),
    ]:
        res = mss(dep, "mailbox", "quota", *args)
        assert res.returncode != 0 and why in res.stderr, (args, res.stderr)
    assert quota(dep, paul)["storage"] == {"used": 0, "limit": 10 * 1024**3, "default": True}
    events = [json.loads(line) for line in mss(dep, "audit", "export").stdout.splitlines()]
    assert not [e for e in events if e["type"] == "mailbox.quota_set"]
