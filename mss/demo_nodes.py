"""`mss demo --nodes N`: one configuration file per node of a deployment on PostgreSQL.

Every node of a deployment shares its database, its PKI, its keys (token issuer, DKIM, queue
key) and its folder; what differs is what a process holds for itself: its listening ports (node
k's follow node k-1's, or are all ephemeral with `--base-port 0`), its log file and its name
(`node`, which keeps the relay queue's leases of two nodes of one folder apart). So node k's
file is node 1's `mss.toml` with those lines changed, written once node 1's is complete (relay
section and peers included), and every node can be started with `mss serve -c FILE`
(docs/scale.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

MAX_NODES = 16

_LISTEN = re.compile(r"^\s*\[\s*listen\s*\]\s*(#.*)?$")
_TABLE = re.compile(r"^\s*\[")


class NodesError(ValueError):
    """A `--nodes` request that cannot work (SQLite, too many nodes)."""


def check_nodes(nodes: int, database_url: str) -> None:
    if not 1 <= nodes <= MAX_NODES:
        raise NodesError(f"--nodes must be between 1 and {MAX_NODES}")
    if nodes > 1 and not database_url.startswith("postgresql"):
        raise NodesError(
            "several nodes share one PostgreSQL database: give --database-url postgresql+asyncpg://... "
            "(SQLite is embedded in one process)"
        )


def node_ports(first: dict[str, int], order: Sequence[str], k: int) -> dict[str, int]:
    """Node k's ports (k from 1): node 1's shifted by one block of len(order) per node; all
    ephemeral (0) when node 1's are."""
    if not any(first.values()):
        return dict.fromkeys(order, 0)
    base = min(p for p in first.values() if p)
    return {name: base + (k - 1) * len(order) + i for i, name in enumerate(order)}


def node_config_text(text: str, *, node: str, ports: dict[str, int], log_file: str) -> str:
    """Node 1's configuration made node `node`'s: its ports, log file, portal address, name."""
    out: list[str] = []
    in_listen = False
    named = False
    for line in text.splitlines():
        if _TABLE.match(line):
            in_listen = bool(_LISTEN.match(line))
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else ""
        if in_listen and key in ports:
            line = f"{key} = {ports[key]}"
        elif not _TABLE.match(line) and key == "log_file" and not in_listen:
            line = f'log_file = "{log_file}"'
        elif key == "node":
            line, named = f'node = "{node}"', True
        elif key == "portal_url" and ports.get("http"):
            line = f'portal_url = "http://127.0.0.1:{ports["http"]}/portal/"'
        out.append(line)
    if not named:
        # Top-level keys come before the first table (TOML 1.0): after `database_url`.
        at = next((i + 1 for i, ln in enumerate(out) if ln.startswith("database_url")), 0)
        out.insert(at, f'node = "{node}"')
    return "\n".join(out) + "\n"


def write_node_configs(
    directory: Path, config: Path, nodes: int, ports: dict[str, int], order: Sequence[str]
) -> list[dict]:
    """Name node 1 in `config`, write nodes 2..N beside it; `demo.json`'s "nodes" entries."""
    text = config.read_text(encoding="utf-8")
    entries: list[dict] = []
    for k in range(1, nodes + 1):
        own = ports if k == 1 else node_ports(ports, order, k)
        name = config.name if k == 1 else f"node{k}.toml"
        log_file = "mss.log" if k == 1 else f"mss-node{k}.log"
        (directory / name).write_text(
            node_config_text(text, node=f"node{k}", ports=own, log_file=log_file), encoding="utf-8"
        )
        entries.append({"node": f"node{k}", "config": name, "ports": own})
    return entries
