"""Recipient routing: local mailbox, unknown local, another operator of the trust space
(whitelist), or outside the trust space; each with its own reply."""
from __future__ import annotations

import idna
import pytest

from annuaire.whitelist import import_whitelist
from mss.core import Core
from mss.errors import PolicyRejection

WHITELIST = """<?xml version="1.0" encoding="UTF-8"?>
<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema">
  <Domaine><Nom>medecin.mssante.fr</Nom></Domaine>
  <Domaine><Nom>clinique-sainte-hélène.mssante.fr</Nom></Domaine>
</ListeBlanche>
"""


@pytest.fixture
async def core(fresh_deployment, tmp_path):
    c = await Core.open(fresh_deployment.settings())
    wl = tmp_path / "listeblanche.xml"
    wl.write_text(WHITELIST, encoding="utf-8")
    await import_whitelist(c.engine, wl)
    yield c
    await c.close()


async def test_each_kind_of_recipient_gets_its_reply(core, fresh_deployment):
    paul = fresh_deployment.mailbox("PER", 1)["address"]
    assert (await core.delivery.check_recipient(None, paul.upper())).kind == "local"
    cases = {
        f"nobody@{fresh_deployment.domain}": ("5.1.1", "does not exist"),
        "dr.x@medecin.mssante.fr": ("5.7.1", "trust space is not enabled"),
        "dr.y@" + idna.encode("clinique-sainte-hélène.mssante.fr").decode(): ("5.7.1", "trust space is not enabled"),
        "someone@gmail.com": ("5.7.1", "outside the health trust space"),
        "dr.z@sub.medecin.mssante.fr": ("5.7.1", "outside the health trust space"),
    }
    for address, (status, text) in cases.items():
        with pytest.raises(PolicyRejection) as err:
            await core.delivery.check_recipient(None, address)
        assert err.value.code == 550 and err.value.status == status and text in err.value.text, address
