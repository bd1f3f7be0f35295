"""JSON lines logs (`[logging] format = "json"`, issue 13 Observability): every line of a real
server's log file parses with `json.loads`, carries ts/level/logger/event/message, and no
client-controlled CR, LF or other line break reaches a line, raw or decoded, even when a
client sends them base64-encoded inside SASL PLAIN; the settings keep the old keys working.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from mail import smtp_submission
from support import ROOT, Deployment, ServerProcess

pytestmark = pytest.mark.timeout(120)

#: What must never be inside a line: every line break `str.splitlines` knows, ESC, NUL.
LINE_BREAKS = re.compile("[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x1b\x00]")
RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")
FORGED = "\r\n2026-12-02 10:00:00,000 INFO mss.auth auth ok peer=203.0.113.9 forged=\u2028yes\x1b[2J"


def start_json_server(deployment: Deployment, timeout: float = 60) -> ServerProcess:
    """`mss serve` whose stderr is JSON lines too: wait for its `ready` event."""
    err = deployment.directory / "serve-json.err"
    with err.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mss", "serve", "-c", str(deployment.config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            env=dict(os.environ),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in err.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                doc = json.loads(line)
                if doc.get("event") == "ready":
                    fields = doc["fields"]
                    return ServerProcess(deployment, proc, fields["host"], json.loads(fields["ports"]), err)
        if proc.poll() is not None:
            raise RuntimeError(f"mss serve exited with {proc.returncode}:\n{err.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"mss serve not ready after {timeout}s:\n{err.read_text()}")


def json_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    docs = []
    for line in raw.split(b"\n")[:-1]:
        assert line.isascii(), line  # ensure_ascii: no raw byte outside printable ASCII
        text = line.decode("ascii")
        assert not LINE_BREAKS.search(text), text
        docs.append(json.loads(text))
    return docs


def test_a_forged_line_in_sasl_plain_stays_inside_its_json_line(fresh_deployment):
    dep = fresh_deployment
    with dep.config.open("a", encoding="utf-8") as fh:
        fh.write('\n[logging]\nformat = "json"\n')
    claire = dep.mailbox("PER", 0)
    srv = start_json_server(dep)
    try:
        client = smtp_submission(srv, claire)
        try:
            # An authzid naming someone else, with CR LF and a whole forged log line in it.
            plain = f"{claire['address']}{FORGED}\0{claire['address']}\0whatever".encode()
            code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(plain).decode())
            assert code == 535
            # And as the user name (an address nobody is entitled to).
            plain = f"\0x{FORGED}@{dep.domain}\0whatever".encode()
            code, _ = client.docmd("AUTH", "PLAIN " + base64.b64encode(plain).decode())
            assert code == 535
        finally:
            client.quit()
    finally:
        srv.stop()

    docs = json_lines(dep.directory / "mss.log")
    assert any(d["event"] == "ready" for d in docs)
    for d in docs:
        assert {"ts", "level", "logger", "event", "message"} <= d.keys()
        assert RFC3339_UTC.match(d["ts"]), d["ts"]
        datetime.fromisoformat(d["ts"].replace("Z", "+00:00"))
        assert d["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
        # Decoded, the values hold no line break either (escaped as in the text format).
        for value in [d["message"], d["event"], *(d.get("fields") or {}).values()]:
            assert not LINE_BREAKS.search(str(value)), value
    refused = [d for d in docs if d["event"] == "auth refused" and d["fields"].get("mech") == "PLAIN"]
    assert len(refused) == 2, [d["message"] for d in docs]
    differs, stranger = refused
    assert differs["logger"] == "mss.auth" and differs["level"] == "WARNING"
    assert differs["fields"]["protocol"] == "smtp"
    assert differs["fields"]["reason"].startswith("plain_authzid_differs authzid=")
    # The forged text is there, visibly escaped, inside the one line of the refusal.
    assert "\\r\\n2026-12-02 10:00:00,000 INFO mss.auth auth ok" in differs["fields"]["reason"]
    assert "\\u2028yes\\x1b[2J" in differs["message"]
    assert stranger["fields"]["reason"] == "app_password:not_entitled"
    assert "\\r\\n2026-12-02" in stranger["fields"]["detail"]
    # No line anywhere claims the forged success.
    assert not [d for d in docs if d["event"] == "auth ok"]


def test_json_formatter_keeps_one_event_per_line(tmp_path):
    """The formatter alone, with what a careless call site could pass it: raw line breaks in
    arguments, in the format string and in an exception's message."""
    from mss.logging_setup import JsonFormatter

    fmt = JsonFormatter()
    logger = logging.getLogger("mss.test")

    def line(msg: str, *args: object, exc: BaseException | None = None) -> dict:
        record = logger.makeRecord(
            "mss.test", logging.INFO, __file__, 1, msg, args, (type(exc), exc, None) if exc else None
        )
        text = fmt.format(record)
        assert "\n" not in text and "\r" not in text and text.isascii()
        assert not LINE_BREAKS.search(text)
        return json.loads(text)

    d = line("DATA stored peer=%s rcpts=%d size=%d note=%r", "1.2.3.4:5", 2, 300, "a\nb")
    assert d["event"] == "DATA stored"
    assert d["fields"] == {"peer": "1.2.3.4:5", "rcpts": 2, "size": 300, "note": "'a\\nb'"}
    assert d["message"] == "DATA stored peer=1.2.3.4:5 rcpts=2 size=300 note='a\\nb'"
    d = line("ehlo name=%s", "x\r\nFAKE\u2028\x85\x1b[31m")
    assert d["fields"]["name"] == "x\\r\\nFAKE\\u2028\\x85\\x1b[31m"
    d = line("a format string\r\nwith a break and 100%% of %s", "it")
    assert "fields" not in d
    assert d["message"] == "a format string\\r\\nwith a break and 100% of it"
    try:
        raise ValueError("bad name\r\nforged line")
    except ValueError as exc:
        d = line("failed x=%s", 1, exc=exc)
    assert "ValueError: bad name\\r\\nforged line" in d["exc"]


def test_text_format_is_still_the_default(tmp_path):
    from mss.config import Settings
    from mss.logging_setup import EscapingFormatter, JsonFormatter, formatter

    assert type(formatter(Settings(domain="x.test"))) is EscapingFormatter
    assert type(formatter(Settings(domain="x.test", logging={"format": "json"}))) is JsonFormatter


def _load(tmp_path: Path, text: str):
    from mss.config import load_settings

    cfg = tmp_path / "mss.toml"
    cfg.write_text('domain = "x.test"\n' + text)
    return load_settings(cfg)


def test_old_and_new_logging_keys(tmp_path):
    from mss.config import ConfigError

    old = _load(tmp_path, 'log_file = "old.log"\nlog_level = "warning"\n')
    assert (old.log_file, old.log_level, old.logging.format) == (Path("old.log"), "warning", "text")
    new = _load(tmp_path, '[logging]\nformat = "json"\nfile = "new.log"\nlevel = "debug"\n')
    assert (new.log_file, new.log_level, new.logging.format) == (Path("new.log"), "DEBUG", "json")
    assert _load(tmp_path, '[logging]\nfile = ""\n').log_file is None  # stderr only
    mixed = _load(tmp_path, 'log_file = "old.log"\n[logging]\nformat = "json"\nlevel = "error"\n')
    assert (mixed.log_file, mixed.log_level) == (Path("old.log"), "ERROR")
    with pytest.raises(ConfigError, match="log_file and \\[logging\\] file are the same setting"):
        _load(tmp_path, 'log_file = "a.log"\n[logging]\nfile = "b.log"\n')
    with pytest.raises(ConfigError, match="logging.format"):
        _load(tmp_path, '[logging]\nformat = "xml"\n')
    with pytest.raises(ConfigError, match="logging.level"):
        _load(tmp_path, '[logging]\nlevel = "loud"\n')
    with pytest.raises(ConfigError, match="logging.colour"):
        _load(tmp_path, "[logging]\ncolour = true\n")
