"""The QR code of a TOTP key URI, as an SVG in a `data:` URL: the page CSP allows `data:`
images and nothing inline, and the secret never leaves this response (no image URL that a
log or a cache could keep)."""

from __future__ import annotations

import base64
import io

import segno


def svg_data_url(uri: str) -> str:
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=5, border=4, xmldecl=False, svgns=True)
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
