"""Logging for `mss serve`: one line per event, to stderr and the configured log file.

Log lines name peers, mailboxes and reasons, never message content (subjects and bodies
stay out of every log: the canary test checks it).
"""
from __future__ import annotations

import logging
import sys

from mss.config import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup_logging(settings: Settings) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(settings.log_level.upper())
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(stderr)
    if settings.log_file:
        fh = logging.FileHandler(settings.path(settings.log_file), encoding="utf-8")
        fh.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(fh)
    # Library chatter at INFO would log every SMTP line, content included: keep it quiet.
    for noisy in ("mail.log", "aiosmtpd", "sqlalchemy", "alembic", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
