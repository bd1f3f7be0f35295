"""docker-compose.yml: PostgreSQL and two stateless nodes sharing it (DESIGN.md, Scale-out).
No Docker engine runs here, so the file is checked with `docker-compose config` (installed
by `make test` from Debian's packages)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from support import ROOT


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is installed by `make test`")
def test_compose_file_describes_postgres_and_two_nodes_on_it():
    res = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    cfg = res.stdout
    assert "postgres:" in cfg and "node1:" in cfg and "node2:" in cfg
    # Both nodes point at the same database and listen beyond the container's loopback.
    assert cfg.count("MSS_DATABASE_URL: postgresql+asyncpg://mss:mss@postgres:5432/mss") == 2
    assert cfg.count("MSS_LISTEN_HOST: 0.0.0.0") == 2
    # Beyond loopback, the http listener must serve HTTPS (mss.config.check_http_transport).
    assert cfg.count('MSS_LISTEN_HTTP_TLS: "true"') == 2
    # Each node has its own name (relay-queue leases) and a health check of its own.
    assert "MSS_NODE: node1" in cfg and "MSS_NODE: node2" in cfg
    assert cfg.count("healthcheck:") == 3 and cfg.count("socket.create_connection") == 2
    services = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.split()
    assert sorted(services) == ["node1", "node2", "postgres"]
