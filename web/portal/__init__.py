"""The patient portal at `/portal/` (docs/portal.md): server-rendered pages, a JSON API for
the browser's key logic, plain forms for settings, and its static files.

The server never sees a password nor a message in clear: it serves forms, ciphertext and
wrapped keys, and reaches the core through `mss.services.PatientPortal` only.
"""

from __future__ import annotations

from web.portal.routes import install

__all__ = ["install"]
