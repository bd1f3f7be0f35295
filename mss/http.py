"""The `http` listener: a small HTTP/1.1 server for health checks and directory look-ups.

Kept dependency-free on purpose: it serves a few JSON endpoints; the patient portal will
bring a real web framework when it arrives.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("mss.http")

Handler = Callable[[str, str, dict[str, list[str]]], Awaitable[tuple[int, dict[str, str], bytes] | None]]
MAX_REQUEST_HEAD = 16 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error"}


def _response(status: int, headers: dict[str, str], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    hdrs = {"Content-Length": str(len(body)), "Connection": "close", **headers}
    head += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def json_body(obj: object) -> tuple[dict[str, str], bytes]:
    return {"Content-Type": "application/json; charset=utf-8"}, json.dumps(obj, ensure_ascii=False).encode()


async def serve_http(host: str, port: int, handlers: list[Handler]) -> asyncio.AbstractServer:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            writer.close()
            return
        try:
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _version = request_line.split(" ", 2)
            url = urlsplit(target)
            query = parse_qs(url.query, keep_blank_values=True)
            result = None
            if method not in ("GET", "HEAD"):
                result = (405, *json_body({"error": "method not allowed"}))
            else:
                for h in handlers:
                    result = await h(method, url.path, query)
                    if result is not None:
                        break
            if result is None:
                result = (404, *json_body({"error": "not found"}))
        except ValueError:
            result = (400, *json_body({"error": "bad request"}))
        except Exception:  # noqa: BLE001 - a handler bug must not kill the listener
            log.exception("http handler failed")
            result = (500, *json_body({"error": "internal error"}))
        status, headers, body = result
        writer.write(_response(status, headers, b"" if method == "HEAD" else body))
        try:
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(client, host, port, limit=MAX_REQUEST_HEAD)


async def health_handler(method: str, path: str, query: dict[str, list[str]]):
    if path == "/health":
        return (200, *json_body({"status": "ok"}))
    return None


def jwks_handler(settings) -> Handler:  # noqa: ANN001 - mss.config.Settings (kept import-free)
    """`GET /.well-known/jwks.json`: the demo token issuer's public keys (RFC 7517).

    Served only when `[tokens] serve_jwks = true` and `jwks` is a local file; the file is
    re-read when it changes, so a key rollover needs no restart.
    """
    source = settings.tokens.jwks_source(settings) if settings.tokens.serve_jwks else None
    cache: dict[str, object] = {}

    async def handle(method: str, path: str, query: dict[str, list[str]]):
        if path != "/.well-known/jwks.json":
            return None
        if source is None or isinstance(source, str):
            return (404, *json_body({"error": "not found"}))
        try:
            st = source.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if cache.get("stamp") != stamp:
                doc = json.loads(source.read_text(encoding="utf-8"))
                # Never publish private members, whatever the file holds.
                keys = [
                    {k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "k")}
                    for key in doc.get("keys", [])
                ]
                cache.update(stamp=stamp, body=json.dumps({"keys": keys}).encode())
        except (OSError, ValueError, AttributeError):
            log.exception("cannot read JWKS %s", source)
            return (500, *json_body({"error": "internal error"}))
        headers = {"Content-Type": "application/jwk-set+json", "Cache-Control": "max-age=300"}
        return (200, headers, cache["body"])

    return handle
