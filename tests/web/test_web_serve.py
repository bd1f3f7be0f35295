"""The http listener inside a real `mss serve` (uvicorn on the same loop as SMTP and IMAP):
health, JWKS, the directory, headers, limits, logging, clean stops, HTTPS with the demo's
certificate, and the refusal of plain HTTP beyond loopback. Clients: curl, http.client, httpx."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from support import ROOT, Deployment, ServerProcess, start_server

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is a Debian package")


def curl(*args: str) -> tuple[int, dict[str, str], str]:
    """(status, headers lower-cased, body) of one curl request."""
    res = subprocess.run(["curl", "-sS", "-i", "--max-time", "20", *args], capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr.decode()
    head, _, body = res.stdout.decode("utf-8", "replace").partition("\r\n\r\n")
    status_line, *lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, body


def base(srv: ServerProcess, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{srv.port('http')}"


def with_listen(dep: Deployment, **values: str) -> None:
    """Change (or add) keys of the deployment's [listen] section."""
    text = dep.config.read_text()
    for key, value in values.items():
        lines = text.split("\n")
        start = lines.index("[listen]")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        found = [i for i in range(start + 1, end) if lines[i].split("=")[0].strip() == key]
        if found:
            lines[found[0]] = f"{key} = {value}"
        else:
            lines.insert(start + 1, f"{key} = {value}")
        text = "\n".join(lines)
    dep.config.write_text(text)


@needs_curl
def test_health_jwks_and_directory_through_curl(server: ServerProcess):
    status, headers, body = curl(f"{base(server)}/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    assert headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "server" not in headers  # uvicorn does not announce itself

    status, headers, body = curl(f"{base(server)}/.well-known/jwks.json")
    published = json.loads((server.deployment.directory / "pki/tokens/jwks.json").read_text())
    assert status == 200 and headers["content-type"] == "application/jwk-set+json"
    assert json.loads(body) == published and all("d" not in k for k in json.loads(body)["keys"])

    per = server.deployment.mailbox("PER")
    status, headers, body = curl(f"{base(server)}/annuaire/resolve?address={per['address'].upper()}")
    doc = json.loads(body)
    assert status == 200 and doc["address"] == per["address"] and doc["idnat"] == per["idnat"]
    assert headers["cache-control"] == "no-store" and headers["content-type"] == "application/json"
    status, headers, body = curl(f"{base(server)}/fhir/Practitioner?identifier={per['idnat']}")
    assert status == 200 and headers["content-type"] == "application/fhir+json"
    assert json.loads(body)["entry"][0]["resource"]["telecom"][0]["value"] == per["address"]
    status, headers, _ = curl("-X", "POST", "--data", "x=1", f"{base(server)}/annuaire/search")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, _ = curl("-I", f"{base(server)}/openapi.json")
    assert status == 200 and headers["x-content-type-options"] == "nosniff"


def test_openapi_of_the_running_node_lists_the_directory(server: ServerProcess):
    doc = httpx.get(f"{base(server)}/openapi.json", timeout=20).json()
    assert {"/annuaire/resolve", "/annuaire/search", "/fhir/Practitioner", "/fhir/Organization/{id}"} <= set(
        doc["paths"]
    )
    names = {p["name"] for p in doc["paths"]["/fhir/Practitioner"]["get"]["parameters"]}
    assert {"identifier", "mailbox-mss", "mailbox-mss:exact", "_count", "name"} <= names


def test_request_lines_are_not_logged_and_limits_hold(server: ServerProcess):
    """No access log (query strings carry addresses); the query, the header block and the
    body are capped; a bad request does not disturb the next one."""
    canary = f"canary-{uuid.uuid4().hex}@nowhere.mssante.test"
    with httpx.Client(base_url=base(server), timeout=20) as c:
        assert c.get("/annuaire/resolve", params={"address": canary}).status_code == 404
        assert c.get("/fhir/Practitioner", params={"mailbox-mss:exact": canary}).json()["total"] == 0
        r = c.get("/annuaire/resolve", params={"address": "a" * 400})
        assert (r.status_code, r.json()) == (400, {"error": "query too long"})
        r = c.post("/annuaire/search", content=b"x" * (65 * 1024))
        assert r.status_code == 413
    # A header block over [limits] http_max_head (16 KiB), sent whole: 431 from the app.
    with socket.create_connection(("127.0.0.1", server.port("http")), timeout=20) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (20 * 1024) + b"\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]
    # One that keeps coming without an end: uvicorn's h11 stops buffering it and closes.
    with socket.create_connection(("127.0.0.1", server.port("http")), timeout=20) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        reply = b""
        try:
            for i in range(64):
                s.sendall(b"X-H%d: " % i + b"a" * 1000 + b"\r\n")
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            reply = s.recv(4096)
        except ConnectionResetError:
            pass
    assert reply == b"" or reply.startswith(b"HTTP/1.1 4"), reply[:100]
    assert httpx.get(f"{base(server)}/health", timeout=20).status_code == 200
    time.sleep(0.2)
    log = server.log_text() + (server.deployment.directory / "mss.log").read_text(encoding="utf-8", errors="replace")
    assert canary not in log
    assert "GET /annuaire" not in log and "/fhir/Practitioner?" not in log
    # uvicorn's own lines go through the server's handlers and format (log_config=None).
    assert "WARNING uvicorn.error Invalid HTTP request received." in server.log_text()


def test_sigterm_stops_the_http_listener_with_a_keep_alive_connection_open(fresh_deployment: Deployment):
    srv = start_server(fresh_deployment)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port("http"), timeout=20)
        conn.request("GET", "/health")
        assert conn.getresponse().read() == b'{"status":"ok"}'  # the connection stays open (keep-alive)
        started = time.monotonic()
        assert srv.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
        assert "stopped" in srv.log_text()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", srv.port("http")), timeout=5).close()
        conn.close()
    finally:
        srv.stop()


@needs_curl
def test_https_with_the_demo_certificate(fresh_deployment: Deployment):
    with_listen(fresh_deployment, http_tls="true")
    srv = start_server(fresh_deployment)
    try:
        ca = str(fresh_deployment.trust_anchors)
        status, headers, body = curl("--cacert", ca, f"{base(srv, 'https')}/health")
        assert (status, json.loads(body)) == (200, {"status": "ok"})
        assert headers["strict-transport-security"].startswith("max-age=")
        status, _, body = curl("--cacert", ca, f"https://localhost:{srv.port('http')}/fhir/metadata")
        assert status == 200 and json.loads(body)["fhirVersion"] == "4.0.1"
        # httpx with the demo's anchors only (never the system CAs), no client certificate.
        ctx = ssl.create_default_context(cafile=ca)
        r = httpx.get(f"{base(srv, 'https')}/.well-known/jwks.json", verify=ctx, timeout=20)
        assert r.status_code == 200 and r.json()["keys"]
        # The system's CAs do not know the demo PKI: the handshake fails.
        refused = subprocess.run(
            ["curl", "-sS", "--max-time", "20", f"{base(srv, 'https')}/health"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0
        # Plain HTTP to the TLS port gets no answer from the application.
        with socket.create_connection(("127.0.0.1", srv.port("http")), timeout=20) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
        assert b'"status"' not in data
        assert "https" in srv.log_text()
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize("how", ["file", "environment"])
def test_plain_http_on_a_non_loopback_host_is_refused(fresh_deployment: Deployment, how):
    env = {}
    if how == "file":
        with_listen(fresh_deployment, host='"0.0.0.0"')
    else:
        env = {"MSS_LISTEN_HOST": "0.0.0.0"}
    res = subprocess.run(
        [sys.executable, "-m", "mss", "serve", "-c", str(fresh_deployment.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    assert res.returncode == 2, res.stderr
    assert "listen.http_tls" in res.stderr and "0.0.0.0" in res.stderr and str(fresh_deployment.config) in res.stderr
    assert "Traceback" not in res.stderr and "ready" not in res.stderr
