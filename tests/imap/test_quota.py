"""IMAP QUOTA (RFC 9208) through the sans-IO session: one quota root ("") per mailbox,
STORAGE in units of 1024 octets and MESSAGE, SETQUOTA refused, and NO [OVERQUOTA] with
nothing stored for APPEND and COPY that do not fit (RFC 9208 4.3). The fake sealer stores
the bytes as they came, so a message of n octets uses n octets of the quota."""

from __future__ import annotations

import pytest
from imap_fakes import ALICE

from mss.records import QuotaLimits


def message(size: int, n: int = 0) -> bytes:
    head = f"From: a@hopital.test\r\nSubject: m{n}\r\n\r\n".encode()
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


async def append(alice, size: int, n: int = 0, folder: str = "INBOX") -> str:
    data = message(size, n)
    assert len(data) == size
    return (await alice.send(f"ap APPEND {folder} {{{size}+}}\r\n".encode() + data + b"\r\n")).decode()


async def status_messages(alice, folder: str = "INBOX") -> int:
    out = await alice.line(f"st STATUS {folder} (MESSAGES)")
    return int(out.split("(MESSAGES ")[1].split(")")[0])


@pytest.fixture
def limits(core):
    """`limits(storage, messages)`: the defaults every mailbox of the test core gets."""

    def set_limits(storage: int = 0, messages: int = 0) -> None:
        core.store.quota_limits = QuotaLimits(storage=storage, messages=messages)

    return set_limits


async def test_quota_is_advertised_once_authenticated(alice) -> None:
    caps = (await alice.line("c CAPABILITY")).split("\r\n")[0].split()
    assert {"QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"} <= set(caps)
    assert "QUOTASET" not in caps  # SETQUOTA is the operator's


async def test_getquotaroot_and_getquota_exact_output(alice, limits) -> None:
    limits(storage=100 * 1024, messages=50)
    assert "ap OK" in await append(alice, 1500)
    assert "ap OK" in await append(alice, 1000, 1)  # 2500 octets: 3 units of 1024, rounded up
    out = await alice.line("q GETQUOTAROOT INBOX")
    assert out == '* QUOTAROOT "INBOX" ""\r\n* QUOTA "" (STORAGE 3 100 MESSAGE 2 50)\r\nq OK GETQUOTAROOT completed\r\n'
    out = await alice.line('g GETQUOTA ""')
    assert out == '* QUOTA "" (STORAGE 3 100 MESSAGE 2 50)\r\ng OK GETQUOTA completed\r\n'
    # Every folder of the mailbox shares the root; a selected session may ask too.
    await alice.line("s SELECT Sent")
    out = await alice.line("q2 GETQUOTAROOT Sent")
    assert out.startswith('* QUOTAROOT "Sent" ""\r\n* QUOTA "" (STORAGE 3 100 MESSAGE 2 50)\r\n'), out


async def test_only_limited_resources_are_listed(alice, limits) -> None:
    limits(messages=10)
    await append(alice, 700)
    assert await alice.line('g GETQUOTA ""') == '* QUOTA "" (MESSAGE 1 10)\r\ng OK GETQUOTA completed\r\n'
    limits(storage=2048)
    assert await alice.line('g GETQUOTA ""') == '* QUOTA "" (STORAGE 1 2)\r\ng OK GETQUOTA completed\r\n'


async def test_without_any_limit_there_is_no_quota_root(alice, limits) -> None:
    limits()
    assert await alice.line("q GETQUOTAROOT INBOX") == '* QUOTAROOT "INBOX"\r\nq OK GETQUOTAROOT completed\r\n'
    assert (await alice.line('g GETQUOTA ""')).startswith("g NO [NONEXISTENT]")


async def test_unknown_roots_and_folders_are_refused(alice, limits) -> None:
    limits(storage=1024 * 1024)
    assert (await alice.line("g GETQUOTA INBOX")).startswith("g NO [NONEXISTENT]")
    assert (await alice.line("q GETQUOTAROOT Nope")).startswith("q NO [NONEXISTENT]")
    assert (await alice.line("g GETQUOTA")).startswith("g BAD")
    assert (await alice.line("q GETQUOTAROOT")).startswith("q BAD")


async def test_quota_commands_need_authentication(make_session) -> None:
    anon = make_session()
    assert (await anon.line('g GETQUOTA ""')).startswith("g BAD")
    assert (await anon.line("q GETQUOTAROOT INBOX")).startswith("q BAD")


async def test_setquota_is_refused_and_changes_nothing(alice, core, limits) -> None:
    limits(storage=4096)
    assert await alice.line('s SETQUOTA "" (STORAGE 1000000)') == "s NO [NOPERM] Quotas are set by the operator\r\n"
    assert await alice.line('s2 SETQUOTA "" ()') == "s2 NO [NOPERM] Quotas are set by the operator\r\n"
    q = await core.store.quota(ALICE)
    assert (q.storage_limit, q.storage_override) == (4096, None)


@pytest.mark.parametrize(
    "args",
    ['"" (STORAGE)', '"" (STORAGE x)', '"" STORAGE 5', '"" (STORAGE 1 STORAGE 2)', '"" (STORAGE 99999999999999999999)'],
)
async def test_malformed_setquota_is_bad(alice, args) -> None:
    assert (await alice.line(f"s SETQUOTA {args}")).startswith("s BAD")


async def test_append_over_quota_is_refused_and_stores_nothing(alice, core, limits) -> None:
    limits(storage=3000)
    assert "ap OK" in await append(alice, 2000)
    before = await status_messages(alice)
    out = await append(alice, 1001, 1)
    assert out.startswith("ap NO [OVERQUOTA]"), out
    assert await status_messages(alice) == before == 1
    assert (await core.store.quota(ALICE)).storage_used == 2000
    assert "ap OK" in await append(alice, 1000, 2)  # exactly up to the limit
    assert (await append(alice, 100, 3)).startswith("ap NO [OVERQUOTA]")


async def test_the_message_count_limit(alice, limits) -> None:
    limits(messages=2)
    assert "ap OK" in await append(alice, 100)
    assert "ap OK" in await append(alice, 100, 1, folder="Drafts")  # every folder counts
    assert (await append(alice, 100, 2)).startswith("ap NO [OVERQUOTA]")
    assert await status_messages(alice) == 1
    assert await status_messages(alice, "Drafts") == 1


async def test_copy_all_repeated_stops_at_the_limit(alice, core, limits) -> None:
    limits(storage=10_000)
    for n in range(2):
        assert "ap OK" in await append(alice, 1000, n)
    await alice.line("s SELECT INBOX")
    sizes = []
    for k in range(6):
        out = await alice.line(f"c{k} COPY 1:* INBOX")
        if f"c{k} OK" not in out:
            break
        sizes.append(await status_messages(alice))
    assert sizes == [4, 8]  # 2 -> 4 -> 8 messages; 16 would be 16,000 octets
    assert f"c{k} NO [OVERQUOTA]" in out, out
    assert await status_messages(alice) == 8
    assert (await core.store.quota(ALICE)).storage_used == 8000


async def test_move_into_another_folder_needs_no_room(alice, limits) -> None:
    limits(storage=1000)
    assert "ap OK" in await append(alice, 1000)
    await alice.line("s SELECT INBOX")
    assert (await alice.line("c COPY 1 Trash")).startswith("c NO [OVERQUOTA]")
    out = await alice.line("m MOVE 1 Trash")
    assert "m OK" in out, out
    assert await status_messages(alice, "Trash") == 1


async def test_expunge_gives_the_room_back(alice, limits) -> None:
    limits(storage=1000)
    assert "ap OK" in await append(alice, 1000)
    assert (await append(alice, 500, 1)).startswith("ap NO [OVERQUOTA]")
    await alice.line("s SELECT INBOX")
    await alice.line("d STORE 1 +FLAGS (\\Deleted)")
    assert await alice.line("st STATUS INBOX (DELETED DELETED-STORAGE SIZE)") == (
        '* STATUS "INBOX" (DELETED 1 DELETED-STORAGE 1 SIZE 1000)\r\nst OK STATUS completed\r\n'
    )
    await alice.line("e EXPUNGE")
    assert await alice.line('g GETQUOTA ""') == '* QUOTA "" (STORAGE 0 0)\r\ng OK GETQUOTA completed\r\n'
    assert "ap OK" in await append(alice, 500, 1)
