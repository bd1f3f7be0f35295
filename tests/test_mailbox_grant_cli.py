"""`mss mailbox grant` / `revoke`: RFC 4314 rights of the members of a shared ORG mailbox,
shown by `mss mailbox list`, audited, and refused with a clear error that changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support import ROOT

from mss.rights import RightsError, parse_rights

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


def listed(dep) -> dict:
    res = mss(dep, "mailbox", "list", "--json")
    assert res.returncode == 0, res.stderr
    return {m["address"]: m for m in json.loads(res.stdout)["mailboxes"]}


def audit(dep, *types: str) -> list[dict]:
    events = [json.loads(line) for line in mss(dep, "audit", "export").stdout.splitlines()]
    return [e for e in events if e["type"] in types]


@pytest.mark.parametrize(
    ("value", "letters"),
    [("read", "lrs"), ("WRITE", "lrswikxte"), ("lr", "lr"), ("etiwsrl", "lrswite"), ("lrswipkxte", "lrswipkxte")],
)
def test_named_grants_and_letters(value, letters):
    assert parse_rights(value) == letters


@pytest.mark.parametrize(
    ("value", "why"),
    [("", "no rights"), ("lrz", "'z'"), ("lrc", "RFC 2086"), ("lra", "operator"), ("admin", "unknown right")],
)
def test_bad_rights_are_refused_by_name(value, why):
    with pytest.raises(RightsError, match=why):
        parse_rights(value)


def test_grant_revoke_list_and_audit(fresh_deployment):
    dep = fresh_deployment
    org = dep.mailbox("ORG")["address"]
    claire, paul = dep.mailbox("PER", 0)["address"], dep.mailbox("PER", 1)["address"]
    # The demo's members have the `write` grant (as every member had before rights existed).
    assert listed(dep)[org]["rights"] == {claire: "lrswikxte", paul: "lrswikxte"}

    res = mss(dep, "mailbox", "grant", org, paul.upper(), "--rights", "read", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {
        "address": org,
        "member": paul,
        "rights": "lrs",
        "before": "lrswikxte",
        "new_member": False,
    }
    text = mss(dep, "mailbox", "list").stdout
    assert f"{paul}(lrs)" in text and f"{claire}(lrswikxte)" in text

    res = mss(dep, "mailbox", "revoke", org, paul)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"{paul} is no longer a member of {org} (had: lrs)",
        "  open sessions of the member lose it within 5 s; new messages are no longer encrypted to their key",
    ]
    assert listed(dep)[org]["members"] == [claire]

    res = mss(dep, "mailbox", "grant", org, paul, "--rights", "lrsw")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"{paul} has rights lrsw on {org} (was: no member)",
        "  new member: messages arriving from now on are encrypted to their key too; "
        "messages stored earlier stay readable by the earlier members only",
        "  open sessions of the member follow within 5 s; a new member sees it from their next login",
    ]
    assert listed(dep)[org]["rights"] == {claire: "lrswikxte", paul: "lrsw"}

    events = audit(dep, "mailbox.granted", "mailbox.revoked")
    assert [(e["type"], e["subject"], e["fields"]) for e in events] == [
        ("mailbox.granted", org, {"member": paul, "rights": "lrs", "before": "lrswikxte"}),
        ("mailbox.revoked", org, {"member": paul, "before": "lrs"}),
        ("mailbox.granted", org, {"member": paul, "rights": "lrsw", "before": "none"}),
    ]
    assert all(e["actor"].startswith("cli:") for e in events)


def test_refusals_change_nothing(fresh_deployment):
    dep = fresh_deployment
    org = dep.mailbox("ORG")["address"]
    app = dep.mailbox("APP")["address"]
    claire, paul = dep.mailbox("PER", 0)["address"], dep.mailbox("PER", 1)["address"]
    before = listed(dep)
    assert mss(dep, "mailbox", "revoke", org, paul).returncode == 0  # paul is now no member
    before = listed(dep)
    for args, why in [
        (["grant", "nobody@" + dep.domain, claire, "--rights", "read"], "no local mailbox"),
        (["grant", claire, paul, "--rights", "read"], "not an ORG one"),
        (["grant", app, paul, "--rights", "read"], "not an ORG one"),
        (["grant", org, "nobody@" + dep.domain, "--rights", "read"], "is not a local PER mailbox"),
        (["grant", org, app, "--rights", "read"], "is not a local PER mailbox"),
        (["grant", org, "paul@elsewhere.test", "--rights", "read"], "not in this operator's domain"),
        (["grant", org, paul, "--rights", "lrq"], "unknown right(s) 'q'"),
        (["grant", org, paul, "--rights", "lra"], "operator"),
        (["grant", org, paul], "--rights"),
        (["revoke", org, paul], "is not a member"),
        (["revoke", claire, paul], "not an ORG one"),
        (["revoke", "nobody@" + dep.domain, paul], "no local mailbox"),
    ]:
        res = mss(dep, "mailbox", *args)
        assert res.returncode != 0 and why in res.stderr, (args, res.stderr)
    assert listed(dep) == before
    assert [e["type"] for e in audit(dep, "mailbox.granted", "mailbox.revoked")] == ["mailbox.revoked"]


def _seen_and_subscriptions(dep, org: str, idnat: str, *, add: bool) -> tuple[int, int]:
    """Paul's own \\Seen and subscription rows on the ORG mailbox's INBOX (added first when `add`)."""
    import asyncio

    from sqlalchemy import func, insert, select

    from mss.config import resolve_database_url
    from mss.db.engine import create_engine, sessionmaker
    from mss.db.models import MemberSubscription, MessageSeen
    from mss.store import Store

    async def go() -> tuple[int, int]:
        engine = create_engine(resolve_database_url(dep.database_url, dep.directory))
        try:
            sessions = sessionmaker(engine)
            await Store(sessions).ensure_default_folders(org)
            inbox = await Store(sessions).get_folder(org, "INBOX")
            async with sessions() as s, s.begin():
                if add:
                    await s.execute(insert(MessageSeen), [{"folder_id": inbox.id, "member": idnat, "uid": 1}])
                    await s.execute(insert(MemberSubscription), [{"folder_id": inbox.id, "member": idnat}])
                counts = []
                for model in (MessageSeen, MemberSubscription):
                    q = select(func.count()).select_from(model).where(model.member == idnat)
                    counts.append((await s.execute(q)).scalar_one())
            return counts[0], counts[1]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def test_revoke_deletes_the_members_own_seen_and_subscriptions(fresh_deployment):
    dep = fresh_deployment
    org = dep.mailbox("ORG")["address"]
    paul = dep.mailbox("PER", 1)
    idnat = paul["idnat"]
    assert _seen_and_subscriptions(dep, org, idnat, add=True) == (1, 1)
    res = mss(dep, "mailbox", "revoke", org, paul["address"])
    assert res.returncode == 0, res.stderr
    assert _seen_and_subscriptions(dep, org, idnat, add=False) == (0, 0)
