"""`mss mailbox`: this operator's mailboxes, their encryption keys, app passwords and quotas.

A mailbox's encryption certificate is issued by the deployment's test PKI when the mailbox is
created; its private key is written once, as a password-protected PKCS#12 in `--out`, and the
server keeps only the certificate. `rollover` issues a new key: the older certificates stay in
the directory, inactive, so new mail goes to the new key only while the owner keeps opening
older messages with the older PKCS#12.
"""

from __future__ import annotations

from pathlib import Path

import click

from mss.cli.common import config_option, database, emit, json_option, load, run


def _check_domain(settings, address: str) -> str:
    address = address.strip().lower()
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise click.BadParameter(f"not an address: {address!r}", param_hint="ADDRESS")
    if domain != settings.domain:
        raise click.BadParameter(f"{address} is not in this operator's domain {settings.domain}", param_hint="ADDRESS")
    return address


def _pki(settings):
    from crypto.pki import TestPKI

    directory = settings.path(settings.pki.directory)
    if not (directory / "pki.json").is_file():
        raise click.ClickException(f"no PKI in {directory} to issue encryption certificates; run `mss pki init`")
    return TestPKI.load(directory)


def _issue_key(settings, entry, *, surname: str | None, given: str | None):
    pki = _pki(settings)
    if entry.type == "PER":
        return pki.issue_encryption(entry.address, kind="PS", idnat=entry.idnat, surname=surname, given_name=given)
    return pki.issue_encryption(
        entry.address, kind="ORG", structure_id=entry.structure_id, organization=entry.display_name or "MSS"
    )


def _hand_over(issued, out: Path, stem: str, address: str) -> dict:
    """Write the PKCS#12 (key + cert + chain) and the certificate; the key exists only there."""
    from crypto.keys import new_password, write_pkcs12

    out.mkdir(parents=True, exist_ok=True)
    p12, crt = out / f"{stem}.p12", out / f"{stem}.crt"
    if p12.exists():
        raise click.ClickException(f"{p12} exists; choose another --out")
    password = new_password()
    write_pkcs12(p12, issued.key, issued.cert, issued.chain, password, friendly_name=address)
    crt.write_bytes(issued.cert_pem(with_chain=True))
    return {
        "p12": str(p12),
        "p12_password": password,
        "cert": str(crt),
        "serial": format(issued.cert.serial_number, "x"),
        "not_after": issued.cert.not_valid_after_utc.isoformat(),
    }


def _key_lines(doc: dict) -> list[str]:
    return [
        f"  encryption certificate: {doc['cert']} (serial {doc['serial']}, until {doc['not_after']})",
        f"  private key, PKCS#12:   {doc['p12']}",
        f"  PKCS#12 password (shown once, not stored): {doc['p12_password']}",
    ]


async def _audit(s, settings, type: str, address: str, /, **fields) -> None:
    """The audit event of a change, in its transaction (mss.audit); none when `[audit]
    enabled = false`."""
    from mss.audit import Record, append, cli_actor

    if not settings.audit.enabled:
        return
    await append(s, [Record.of(type, actor=cli_actor(), subject=address, **fields)])


@click.group()
def mailbox() -> None:
    """Local mailboxes (BAL): create, key rollover, list, app passwords, quotas, shared access."""


@mailbox.command("create")
@click.argument("address")
@click.option("--type", "kind", type=click.Choice(["PER", "ORG", "APP"]), required=True)
@click.option("--idnat", default=None, help="PER: the professional's idNat_PS.")
@click.option("--structure", default=None, help="ORG/APP: the structure's idNat_Struct.")
@click.option("--member", "members", multiple=True, help="ORG: address of a PER mailbox reading it (repeatable).")
@click.option("--name", "display_name", default="", help="Display name.")
@click.option("--surname", default=None, help="PER: surname in the encryption certificate.")
@click.option("--given", default=None, help="PER: given name in the encryption certificate.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where the PKCS#12 goes.",
)
@config_option
@json_option
def create(address, kind, idnat, structure, members, display_name, surname, given, out, config, as_json) -> None:
    """Create ADDRESS and issue its encryption certificate (private key handed over once).

    An ORG mailbox with members is encrypted to every member's key and gets no key of its own.
    """
    from crypto.identity import IdentityError, check_ps_id, check_structure_id

    settings = load(config)
    address = _check_domain(settings, address)
    try:
        if kind == "PER":
            if not idnat or structure:
                raise click.UsageError("a PER mailbox needs --idnat (and no --structure)")
            check_ps_id(idnat)
        else:
            if not structure or idnat:
                raise click.UsageError(f"an {kind} mailbox needs --structure (and no --idnat)")
            check_structure_id(structure)
    except IdentityError as exc:
        raise click.BadParameter(str(exc)) from exc
    if members and kind != "ORG":
        raise click.UsageError("--member is for ORG mailboxes")
    members = tuple(_check_domain(settings, m) for m in members)

    async def go() -> dict:
        from annuaire.local import LocalDirectory
        from mss.store import Store

        async with database(settings) as sessions:
            async with sessions() as s, s.begin():
                d = LocalDirectory(s)
                for m in members:
                    entry = await d.get(m)
                    if entry is None or entry.type != "PER":
                        raise click.ClickException(f"member {m} is not a local PER mailbox")
                try:
                    entry = await d.add_mailbox(
                        address, kind, idnat=idnat, structure_id=structure, display_name=display_name, members=members
                    )
                except ValueError as exc:
                    raise click.ClickException(str(exc)) from exc
                key_doc: dict = {}
                if not (kind == "ORG" and members):
                    try:
                        issued = _issue_key(settings, entry, surname=surname, given=given)
                    except ValueError as exc:  # e.g. an ORG/APP address past the 64-character CN limit
                        raise click.ClickException(
                            f"cannot issue the encryption certificate of {address}: {exc}; nothing created"
                        ) from exc
                    key_doc = _hand_over(issued, out, address, address)
                    await d.add_certificate(address, issued.cert)
                await _audit(s, settings, "mailbox.created", address, kind=kind, key_serial=key_doc.get("serial"))
            store = Store(sessions)
            try:
                await store.ensure_default_folders(address)
            finally:
                await store.close()
        return {
            "address": address,
            "type": kind,
            "idnat": idnat,
            "structure": structure,
            "members": list(members),
            **key_doc,
        }

    doc = run(go())
    lines = [f"mailbox {address} ({kind}) created"]
    if "p12" in doc:
        lines += _key_lines(doc)
    else:
        lines.append(f"  encrypted to its members' keys: {', '.join(doc['members'])}")
    emit(as_json, doc, lines)


@mailbox.command("rollover")
@click.argument("address")
@click.option("--surname", default=None)
@click.option("--given", default=None)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True)
@config_option
@json_option
def rollover(address, surname, given, out, config, as_json) -> None:
    """Issue a new encryption key for ADDRESS; new mail uses it, older mail keeps the older key."""
    settings = load(config)
    address = _check_domain(settings, address)

    async def go() -> dict:
        from annuaire.local import LocalDirectory

        async with database(settings) as sessions, sessions() as s, s.begin():
            d = LocalDirectory(s)
            entry = await d.get(address)
            if entry is None:
                raise click.ClickException(f"no local mailbox {address}")
            if entry.type == "ORG" and entry.members:
                raise click.ClickException(f"{address} is encrypted to its members' keys: roll over theirs")
            history = await d.certificates(address)
            issued = _issue_key(settings, entry, surname=surname, given=given)
            key_doc = _hand_over(issued, out, f"{address}.{len(history) + 1}", address)
            retired = await d.retire_certificates(address)
            await d.add_certificate(address, issued.cert)
            await _audit(s, settings, "mailbox.key_rollover", address, key_serial=key_doc["serial"], retired=retired)
        return {"address": address, "retired": retired, "key_number": len(history) + 1, **key_doc}

    doc = run(go())
    emit(
        as_json,
        doc,
        [
            f"new encryption key for {address} (key #{doc['key_number']}; {doc['retired']} older key(s) retired, keep their PKCS#12 to read older mail)",
            *_key_lines(doc),
        ],
    )


@mailbox.command("list")
@config_option
@json_option
def list_(config, as_json) -> None:
    """Every local mailbox with its keys."""
    settings = load(config)

    async def go() -> list[dict]:
        from annuaire.local import LocalDirectory
        from mss.credentials import list_app_passwords

        out = []
        async with database(settings) as sessions, sessions() as s:
            d = LocalDirectory(s)
            passwords: dict[str, int] = {}
            for p in await list_app_passwords(s):
                passwords[p.address] = passwords.get(p.address, 0) + 1
            for e in await d.all():
                certs = await d.certificates(e.address)
                out.append(
                    {
                        "address": e.address,
                        "type": e.type,
                        "idnat": e.idnat,
                        "structure": e.structure_id,
                        "name": e.display_name,
                        "members": list(e.members),
                        "rights": dict(e.member_rights),
                        "certificates": [
                            {"sha256": c.sha256, "active": c.active, "not_after": c.not_after.isoformat()}
                            for c in certs
                        ],
                        "app_passwords": passwords.get(e.address, 0),
                    }
                )
        return out

    rows = run(go())
    table = [("TYPE", "ADDRESS", "ID", "KEYS", "APP-PASSWORDS", "MEMBERS(RIGHTS)")]
    for r in rows:
        active = sum(1 for c in r["certificates"] if c["active"])
        table.append(
            (
                r["type"],
                r["address"],
                r["idnat"] or r["structure"] or "-",
                f"{active}/{len(r['certificates'])}",
                str(r["app_passwords"]),
                ",".join(f"{m}({r['rights'].get(m, '?')})" for m in r["members"]) or "-",
            )
        )
    emit(as_json, {"mailboxes": rows}, _columns(table))


def _columns(table: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells padded to each column's widest cell (the last column is not padded)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]


_RIGHTS_HELP = (
    "read (= lrs: see the folders, read, keep one's own \\Seen), write (= lrswikxte, the default "
    "of create --member: also flag, file in, delete, expunge, create/delete/rename folders), or RFC 4314 letters among lrswipkxte "
    "(k: create folders, x: delete/rename folders, p: post)."
)


async def _membership_target(d, settings, org: str, member: str):
    """The ORG mailbox and the PER member a grant or revoke names, or a ClickException."""
    entry = await d.get(org)
    if entry is None:
        raise click.ClickException(f"no local mailbox {org}; nothing changed")
    if entry.type != "ORG":
        raise click.ClickException(f"{org} is a {entry.type} mailbox, not an ORG one: only ORG mailboxes are shared")
    who = await d.get(member)
    if who is None or who.type != "PER":
        raise click.ClickException(f"member {member} is not a local PER mailbox; nothing changed")
    return entry


@mailbox.command("grant")
@click.argument("org_address")
@click.argument("member_address")
@click.option("--rights", "rights_arg", required=True, help=_RIGHTS_HELP)
@config_option
@json_option
def grant(org_address, member_address, rights_arg, config, as_json) -> None:
    """Give MEMBER_ADDRESS (a PER mailbox) RIGHTS on the shared ORG_ADDRESS mailbox.

    A new member becomes a recipient key of the messages that arrive from now on; messages
    stored earlier stay encrypted to the earlier members only (end-to-end: the server
    cannot re-encrypt them). New rights reach the member's open sessions within
    mss.services.RIGHTS_TTL (5 s); a new member sees the mailbox (IMAP: under
    Partagés/ORG_ADDRESS/) from their next login.
    """
    from mss.rights import RightsError, parse_rights

    settings = load(config)
    org, member = _check_domain(settings, org_address), _check_domain(settings, member_address)
    try:
        rights = parse_rights(rights_arg)
    except RightsError as exc:
        raise click.BadParameter(str(exc), param_hint="--rights") from exc

    async def go() -> dict:
        from annuaire.local import LocalDirectory

        async with database(settings) as sessions, sessions() as s, s.begin():
            d = LocalDirectory(s)
            await _membership_target(d, settings, org, member)
            before = await d.grant(org, member, rights)
            await _audit(s, settings, "mailbox.granted", org, member=member, rights=rights, before=before or "none")
        return {"address": org, "member": member, "rights": rights, "before": before, "new_member": before is None}

    doc = run(go())
    lines = [f"{member} has rights {doc['rights']} on {org} (was: {doc['before'] or 'no member'})"]
    if doc["new_member"]:
        lines.append(
            "  new member: messages arriving from now on are encrypted to their key too; "
            "messages stored earlier stay readable by the earlier members only"
        )
    lines.append("  open sessions of the member follow within 5 s; a new member sees it from their next login")
    emit(as_json, doc, lines)


@mailbox.command("revoke")
@click.argument("org_address")
@click.argument("member_address")
@config_option
@json_option
def revoke(org_address, member_address, config, as_json) -> None:
    """End MEMBER_ADDRESS's membership of the shared ORG_ADDRESS mailbox: no more access
    (open sessions too, within mss.services.RIGHTS_TTL = 5 s), and no new message is encrypted to their key. Messages
    stored while they were a member stay encrypted to their key too (end-to-end)."""
    settings = load(config)
    org, member = _check_domain(settings, org_address), _check_domain(settings, member_address)

    async def go() -> dict:
        from annuaire.local import LocalDirectory

        async with database(settings) as sessions, sessions() as s, s.begin():
            d = LocalDirectory(s)
            await _membership_target(d, settings, org, member)
            who = await d.get(member)
            before = await d.revoke(org, member)
            if before is None:
                raise click.ClickException(f"{member} is not a member of {org}; nothing changed")
            left = await d.members(org)
            # Their own \Seen and subscriptions go in the same transaction, unless another PER
            # mailbox of the same professional (same idNat_PS) is still a member.
            still = {e.idnat for e in [await d.get(m) for m in left] if e is not None}
            if who is not None and who.idnat and who.idnat not in still:
                from mss.store import forget_member

                await forget_member(s, org, who.idnat)
            await _audit(s, settings, "mailbox.revoked", org, member=member, before=before)
        return {"address": org, "member": member, "before": before, "members_left": sorted(left)}

    doc = run(go())
    lines = [
        f"{member} is no longer a member of {org} (had: {doc['before']})",
        "  open sessions of the member lose it within 5 s; new messages are no longer encrypted to their key",
    ]
    if not doc["members_left"]:
        lines.append(f"  {org} has no member left: nobody can read the mail it receives until a grant")
    emit(as_json, doc, lines)


@mailbox.command("app-password")
@click.argument("address")
@click.option("--label", default="", help="What it is for (e.g. 'Outlook, bureau').")
@click.option("--list", "list_only", is_flag=True, help="List the mailbox's app passwords (never the passwords).")
@click.option(
    "--revoke", "revoke_ids", multiple=True, type=int, help="Revoke the app password with this id (repeatable)."
)
@click.option("--revoke-all", is_flag=True)
@config_option
@json_option
def app_password(address, label, list_only, revoke_ids, revoke_all, config, as_json) -> None:
    """Print a new app password for ADDRESS (PLAIN/LOGIN next to a client certificate).

    Only its Argon2id hash is stored: it cannot be shown again.
    """
    from mss.credentials import create_app_password, list_app_passwords, revoke_app_passwords

    settings = load(config)
    address = _check_domain(settings, address)

    async def go() -> dict:
        from annuaire.local import LocalDirectory

        async with database(settings) as sessions, sessions() as s, s.begin():
            if (list_only or revoke_ids or revoke_all) and await LocalDirectory(s).get(address) is None:
                raise click.ClickException(f"no local mailbox {address}")
            if list_only:
                items = await list_app_passwords(s, address)
                return {
                    "address": address,
                    "app_passwords": [
                        {
                            "id": i.id,
                            "label": i.label,
                            "created_at": i.created_at.isoformat(),
                            "last_used_at": i.last_used_at.isoformat() if i.last_used_at else None,
                        }
                        for i in items
                    ],
                }
            if revoke_ids or revoke_all:
                if revoke_ids:
                    known = {i.id for i in await list_app_passwords(s, address)}
                    unknown = sorted(set(revoke_ids) - known)
                    if unknown:  # nothing is revoked: the operator mistyped or chose the wrong mailbox
                        raise click.ClickException(
                            f"{address} has no app password {', '.join(f'#{i}' for i in unknown)}; nothing revoked "
                            f"(`mss mailbox app-password {address} --list` shows its ids)"
                        )
                n = await revoke_app_passwords(s, address, list(revoke_ids) or None, audited=settings.audit.enabled)
                return {"address": address, "revoked": n}
            try:
                pid, password = await create_app_password(s, address, label=label, audited=settings.audit.enabled)
            except (LookupError, ValueError) as exc:
                raise click.ClickException(str(exc)) from exc
            return {"address": address, "id": pid, "label": label, "password": password}

    doc = run(go())
    if "password" in doc:
        lines = [f"app password #{doc['id']} for {doc['address']} (shown once):", doc["password"]]
    elif "revoked" in doc:
        lines = [f"{doc['revoked']} app password(s) revoked for {doc['address']}"]
    else:
        lines = [
            f"#{i['id']} {i['label'] or '-'} created {i['created_at']} last used {i['last_used_at'] or 'never'}"
            for i in doc["app_passwords"]
        ]
    emit(as_json, doc, lines)


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: str) -> int:
    """`--storage`: octets, or a number with K, M, G or T (powers of 1024; `KiB`, `MB`...
    are read the same way); 0 is no limit."""
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "")
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if not number or amount < 0 or amount != amount or amount * _UNITS[unit] >= 2**63:  # NaN is not a size
        raise click.BadParameter(
            f"not a size: {value!r} (octets, or a number with K, M, G or T)", param_hint="--storage"
        )
    return int(amount * _UNITS[unit])


def _human(octets: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if octets >= _UNITS[unit]:
            return f"{octets / _UNITS[unit]:.1f} {unit}iB"
    return f"{octets} B"


@mailbox.command("quota")
@click.argument("address")
@click.option("--storage", default=None, help="Storage limit: octets, or 10G, 500M...; 0 for none.")
@click.option("--messages", type=click.IntRange(min=0), default=None, help="Message limit; 0 for none.")
@click.option("--default", "use_default", is_flag=True, help="Back to the configured [limits] defaults.")
@config_option
@json_option
def quota(address, storage, messages, use_default, config, as_json) -> None:
    """Show ADDRESS's usage and quota (IMAP QUOTA, SMTP 552 5.2.2), or set its own limits.

    Without options: the usage and the limits in force. --storage / --messages set this
    mailbox's own limit (each alone keeps the other); --default drops both, so the
    `[limits] mailbox_quota` and `mailbox_quota_messages` of mss.toml apply again. Usage
    counts the stored ciphertext. A patient space's address (the patients' domain) works too.
    """
    settings = load(config)
    address = address.strip().lower()
    local, _, domain = address.rpartition("@")
    if not local or domain not in (settings.domain, settings.patient_domain):
        raise click.BadParameter(
            f"{address} is not an address of this operator ({settings.domain} or {settings.patient_domain})",
            param_hint="ADDRESS",
        )
    if use_default and (storage is not None or messages is not None):
        raise click.UsageError("--default goes alone (it resets both limits)")
    changes: dict[str, int | None] = {}
    if use_default:
        changes = {"storage": None, "messages": None}
    if storage is not None:
        changes["storage"] = parse_size(storage)
    if messages is not None:
        changes["messages"] = messages

    async def go() -> dict:
        from annuaire.local import LocalDirectory
        from mss.patients import PatientSpaces
        from mss.refusals import Refusal
        from mss.store import Store, read_quota, set_quota_limits

        async with database(settings) as sessions:
            if domain == settings.domain:
                async with sessions() as s:
                    known = await LocalDirectory(s).get(address) is not None
            else:
                store = Store(sessions)
                try:
                    known = await PatientSpaces(settings, sessions, store).get(address) is not None
                except Refusal as exc:
                    raise click.BadParameter(exc.public, param_hint="ADDRESS") from exc
                finally:
                    await store.close()
            if not known:
                raise click.ClickException(f"no mailbox {address}")
            async with sessions() as s, s.begin():
                if changes:
                    await set_quota_limits(s, address, changes)
                    await _audit(
                        s,
                        settings,
                        "mailbox.quota_set",
                        address,
                        **{f"{k}_limit": "default" if v is None else v for k, v in changes.items()},
                    )
                q = await read_quota(s, address, settings.limits.quota)
        return {
            "address": address,
            "changed": sorted(changes),
            "storage": {"used": q.storage_used, "limit": q.storage_limit, "default": q.storage_override is None},
            "messages": {"used": q.messages_used, "limit": q.messages_limit, "default": q.messages_override is None},
        }

    doc = run(go())

    def line(name: str, used: str, res: dict, limit: str) -> str:
        where = "default" if res["default"] else "this mailbox's own"
        return f"  {name}: {used} of {limit if res['limit'] else 'no limit'} ({where})"

    st, ms = doc["storage"], doc["messages"]
    lines = [f"quota of {address}" + (" updated" if doc["changed"] else "")]
    lines.append(line("storage ", _human(st["used"]), st, _human(st["limit"])))
    lines.append(line("messages", str(ms["used"]), ms, str(ms["limit"])))
    emit(as_json, doc, lines)
