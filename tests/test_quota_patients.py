"""Quotas on the patient paths, which write through the same delivery and store as SMTP (a
real `Core` over a fresh demo deployment, each backend): a full patient space refuses the
professional's mail at RCPT; a patient's answer to a full professional mailbox is refused;
a full patient space still lets the patient answer, without keeping a Sent copy."""

from __future__ import annotations

import pytest
import test_patients
from test_patients import patient_inbox, professional, send
from test_portal_core import MARIE, activate_in_browser, new_patient

from mss.portal import SEND_FAILED
from mss.refusals import Reason, Refusal
from mss.store import set_quota_limits

core = test_patients.core


async def fill(core, address: str) -> None:
    """Make the mailbox exactly full: its storage limit is what it stores now."""
    used = (await core.store.quota(address)).storage_used
    assert used > 0
    async with core.sessions() as s, s.begin():
        await set_quota_limits(s, address, {"storage": used})


async def test_a_full_patient_space_refuses_mail_at_rcpt(core, fresh_deployment):
    address, _ = await new_patient(core)
    pro, sender = professional(fresh_deployment)
    await send(core, pro, sender, [address], subject="Question")
    await fill(core, address)
    with pytest.raises(Refusal) as err:
        await send(core, pro, sender, [address], subject="Encore")
    assert err.value.reason is Reason.OVER_QUOTA and err.value.public == f"Mailbox <{address}> is full"
    assert len(await patient_inbox(core, address)) == 1


async def test_answers_and_quotas(core, fresh_deployment):
    portal = core.portal
    address, code = await new_patient(core)
    pro, sender = professional(fresh_deployment)
    await send(core, pro, sender, [address], subject="Question")
    marie = await activate_in_browser(portal, MARIE, code)
    (conv,) = (await portal.inbox(marie, 1)).conversations
    colleague, colleague_address = professional(fresh_deployment, 1)
    await send(core, colleague, colleague_address, [sender], subject="Something stored")
    inbox_before = len(await patient_inbox(core, sender))

    await fill(core, sender)  # the professional's mailbox is full: the answer is refused
    with pytest.raises(Refusal) as err:
        await portal.answer(marie, conv.id, "Re: Question", "Bonjour")
    assert err.value.reason is Reason.OVER_QUOTA and err.value.public == SEND_FAILED
    assert len(await patient_inbox(core, sender)) == inbox_before
    assert await patient_inbox(core, address, "Sent") == []

    async with core.sessions() as s, s.begin():
        await set_quota_limits(s, sender, {"storage": None})
    await fill(core, address)  # now the patient's own space is full: the answer still goes
    await portal.answer(marie, conv.id, "Re: Question", "Bonjour")
    assert len(await patient_inbox(core, sender)) == inbox_before + 1
    assert await patient_inbox(core, address, "Sent") == []  # no room for the patient's copy
    quota = await core.store.quota(address)
    assert quota.storage_used == quota.storage_limit
