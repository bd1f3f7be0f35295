"""`GET /.well-known/jwks.json`: the demo token issuer's public keys (RFC 7517).

Served only when `[tokens] serve_jwks = true` and `jwks` names a local file (404 otherwise);
the file is re-read when it changes (mtime and size), so a key rollover needs no restart.
Private members (RFC 7518 6.2.2, 6.3.2, 6.4.1) are never published, whatever the file holds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from mss.config import Settings
from web.errors import error

log = logging.getLogger("mss.web")

PATH = "/.well-known/jwks.json"
MEDIA_TYPE = "application/jwk-set+json"
#: EC and RSA private members, and the symmetric key: never served.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class JwksBody(JSONResponse):
    """A JWK Set (RFC 7517 8.5.1); the body comes rendered (`JwksFile.body`)."""

    media_type = MEDIA_TYPE

    def render(self, content: object) -> bytes:
        return content if isinstance(content, bytes) else super().render(content)


class JsonWebKey(BaseModel):
    model_config = ConfigDict(extra="allow")
    kty: str
    kid: str | None = None


class JsonWebKeySet(BaseModel):
    keys: list[JsonWebKey]


class JwksFile:
    """The published key set of one file, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._body = b""

    def body(self) -> bytes:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            keys = doc.get("keys", []) if isinstance(doc, dict) else []
            public = [
                {k: v for k, v in key.items() if k not in PRIVATE_MEMBERS} for key in keys if isinstance(key, dict)
            ]
            self._body = json.dumps({"keys": public}, separators=(",", ":")).encode()
            self._stamp = stamp
        return self._body


def router(settings: Settings) -> APIRouter:
    source = settings.tokens.jwks_source(settings) if settings.tokens.serve_jwks else None
    published = JwksFile(source) if isinstance(source, Path) else None
    r = APIRouter(tags=["tokens"])

    @r.get(
        PATH,
        summary="The token issuer's public keys (JWKS)",
        response_class=JwksBody,
        response_model=JsonWebKeySet,
        responses={
            404: {"description": "Not served by this node (a JSON error)"},
            500: {"description": "The key file cannot be read (a JSON error)"},
        },
    )
    def jwks() -> Response:
        # A plain function: FastAPI runs it in a thread, so the file read never blocks the loop.
        if published is None:
            return error(404, "not found")
        try:
            body = published.body()
        except (OSError, ValueError):
            log.exception("cannot read JWKS %s", published.path)
            return error(500, "internal error")
        return JwksBody(body, headers={"Cache-Control": "max-age=300"})

    return r
