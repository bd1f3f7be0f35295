"""The patient space's life cycle and the patient's data access reach the audit trail
(mss.audit) through the real core and portal: created, activated, login, a refused login,
a conversation read, the data export, closed; and the chain still verifies."""

from __future__ import annotations

import json

from portal_helpers import active_patient, client_for, conversation_ids, send_to, sign_in, signed_in
from sqlalchemy import select

from mss import audit
from mss.db.models import AuditEvent


async def _events(core, ins: str) -> list[AuditEvent]:
    await core.audit.flush()  # the refused login is queued (group commit)
    async with core.sessions() as s:
        rows = await s.execute(
            select(AuditEvent).where(AuditEvent.subject == f"patient:{ins}").order_by(AuditEvent.seq)
        )
        return list(rows.scalars())


async def test_patient_life_cycle_and_data_access_are_audited(core, deployment):
    patient = await active_patient(core)
    await send_to(core, deployment, patient, "Compte rendu")
    async with signed_in(core, patient) as (http, _):
        page = await http.get("/portal/messages")
        (cid,) = conversation_ids(page.text)
        assert (await http.get(f"/portal/conversations/{cid}")).status_code == 200
        assert (await http.get("/portal/api/export")).status_code == 200
    async with client_for(core) as http:
        refused = await sign_in(http, core, patient.ins, "pas le bon mot de passe")
        assert refused.status_code in (401, 403), refused.text
    # A refusal is queued (group commit) and takes its place in the chain at the next commit;
    # the close is written in its own transaction, so flush first to fix the order.
    await core.audit.flush()
    await core.patients.close(patient.ins, actor_kind="patient")

    events = await _events(core, patient.ins)
    kinds = [(e.type, e.outcome, e.actor) for e in events]
    me = f"portal:{patient.ins}"
    assert kinds[0][0] == "patient.created" and kinds[0][2].startswith("cli:")
    assert kinds[1:] == [
        ("patient.activated", "ok", me),
        ("patient.login", "ok", me),
        ("patient.conversation_read", "ok", me),
        ("patient.data_export", "ok", me),
        ("portal.login", "refused", me),
        ("patient.closed", "ok", me),
    ]
    assert json.loads(events[4].fields) == {"detail": "1 messages"}
    assert "Compte rendu" not in json.dumps([e.fields for e in events])  # no content, not even the subject
    result = await audit.verify(core.sessions)
    assert result.ok, result.problems
