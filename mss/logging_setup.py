"""Logging for `mss serve`: one line per event, to stderr and the configured log file.

Log lines name peers, mailboxes and reasons, never message content (subjects and bodies
stay out of every log: the canary test checks it).

Log lines carry client input (EHLO names, addresses, authorization identities, folder
names), so a client must not be able to write a line of its own: `EscapingFormatter` turns
every control character and line break of the formatted message into visible escapes. It is
set on the root handlers, so every logger that propagates to the root (ours, aiosmtpd's
`mail.log`, asyncio, SQLAlchemy) gets the same treatment whatever its call site did.
A library that installs handlers of its own and stops propagation would bypass it: uvicorn
does by default, so it must be started with `log_config=None`.

`[logging] format = "json"` writes JSON lines instead (`JsonFormatter`): one object per
event, `ts` (RFC 3339, UTC), `level`, `logger`, `event`, `message`, and `fields` read from
the `name=%s` pairs of the call's format string (`log.info("auth ok peer=%s mech=%s", ...)`
gives `{"event": "auth ok", "fields": {"peer": ..., "mech": ...}}`). The line is ASCII
(`ensure_ascii`), so no raw control character or line separator can reach it, and the
values are escaped as in the text format too, so a reader printing a decoded value cannot
be fooled either.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from mss.config import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: In a worker process of a node with several (`mss.workers`): the logger name says which,
#: `mss.imap[w2]`, so the interleaved lines of the workers can be told apart.
WORKER_FORMAT = "%(asctime)s %(levelname)s %(name)s[w%(worker)d] %(message)s"

# What a reader could take for the end of a line, or what rewrites a terminal:
# - C0 controls and DEL (CR, LF, NUL, ESC, and VT, FF, FS, GS, RS, which str.splitlines()
#   treats as line breaks), C1 controls (NEL U+0085 is a line break too, CSI U+009B starts
#   a terminal escape);
# - U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR (splitlines() breaks on them);
# - the bidirectional embeddings, overrides and isolates, which reorder what is displayed
#   (the "Trojan Source" trick, CVE-2021-42574) without being seen;
# - lone surrogates: aiosmtpd decodes arguments with `surrogateescape`, and a surrogate
#   makes the UTF-8 log file raise, which drops the line instead of writing it.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    cp = ord(c)
    return f"\\x{cp:02x}" if cp <= 0xFF else f"\\u{cp:04x}"


def escape_controls(text: str) -> str:
    """`text` with every unsafe character written as a visible escape (\\r, \\n, \\x00, \\u2028).

    Backslashes are left as they are, so `%r` values and Windows paths read as usual.
    """
    return _UNSAFE.sub(_escape_one, text) if _UNSAFE.search(text) else text


def _type_name(cls: type) -> str:
    """The exception type as `traceback` prints it before the message."""
    name, module = cls.__qualname__, cls.__module__
    if module in ("__main__", "builtins"):
        return name
    return f"{module if isinstance(module, str) else '<unknown>'}.{name}"


def _escape_exception_messages(text: str, exc: BaseException | None) -> str:
    """Escape the messages of `exc` and of its chain inside a formatted traceback.

    An exception's message may carry client input (`ValueError(f"bad name {name}")`), and
    `traceback` prints it raw after `Type: `; everything else in a traceback (frames, source
    lines, the chaining sentences) comes from the server itself and stays as it is.
    """
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
        if isinstance(e, BaseExceptionGroup):
            todo += e.exceptions
        try:
            message = str(e)
        except Exception:  # noqa: BLE001, S112 - traceback prints a placeholder for these
            continue
        if _UNSAFE.search(message):
            head = f"{_type_name(type(e))}: "
            text = text.replace(head + message, head + escape_controls(message))
    return text


class EscapingFormatter(logging.Formatter):
    """A `logging.Formatter` whose record line cannot be split or forged by what it logs.

    The line (`formatMessage`: the format string with `record.getMessage()`, i.e. after
    %-interpolation of the arguments) is escaped as a whole. The traceback and stack that
    `format` appends stay on their own lines, with only the exceptions' messages escaped.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei) -> str:
        return _escape_exception_messages(super().formatException(ei), ei[1])

    def format(self, record: logging.LogRecord) -> str:
        # Another formatter may have cached its own rendering of the traceback on the record
        # (`exc_text`); ours is computed afresh and the other one's cache is left for it.
        cached = record.exc_text
        if record.exc_info:
            record.exc_text = None
        try:
            return super().format(record)
        finally:
            if record.exc_info:
                record.exc_text = cached


# A %-placeholder of a format string (`%s`, `%r`, `%d`, `%5.2f`; `%%` is a literal percent).
_PLACEHOLDER = re.compile(r"%(?:%|(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?[diouxXeEfFgGcrsa])")
_FIELD_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)=$")


def structured_fields(record: logging.LogRecord) -> tuple[str, dict[str, object]]:
    """(event, fields) of a record: the text of the format string before its first `name=%s`,
    and each `name=%s` with its argument (`%r` as repr, numbers as numbers, the rest as
    escaped text). A record without positional arguments has no fields."""
    template = record.msg if isinstance(record.msg, str) else str(record.msg)
    args = record.args if isinstance(record.args, tuple) else ()
    fields: dict[str, object] = {}
    event_end: int | None = None
    i = 0
    for m in _PLACEHOLDER.finditer(template):
        spec = m.group()
        if spec == "%%":
            continue
        if i >= len(args):
            break
        value, i = args[i], i + 1
        named = _FIELD_NAME.search(template, 0, m.start())
        if named is None:
            continue
        if event_end is None:
            event_end = named.start()
        name = named.group(1)
        if spec.endswith("r"):
            fields[name] = escape_controls(repr(value))
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or spec.endswith(("s", "a")):
            fields[name] = value if isinstance(value, bool) else escape_controls(str(value))
        else:
            fields[name] = value
    event = template if event_end is None else template[:event_end]
    event = event.replace("%%", "%")
    return escape_controls(" ".join(event.split())), fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (JSON lines); `worker` (1, 2, ...) in a
    worker process of a node with several."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        message = escape_controls(record.getMessage())
        event, fields = structured_fields(record)
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": event,
            "message": message,
        }
        if self.worker is not None:
            doc["worker"] = self.worker
        if fields:
            doc["fields"] = fields
        if record.exc_info:
            doc["exc"] = _escape_exception_messages(self.formatException(record.exc_info), record.exc_info[1])
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, ensure_ascii=True, default=str)


def formatter(settings: Settings, worker: int | None = None) -> logging.Formatter:
    """The formatter `[logging] format` names; `worker`: the number (1, 2, ...) of this
    worker process, shown on each line."""
    if settings.logging.format == "json":
        return JsonFormatter(worker)
    if worker is None:
        return EscapingFormatter(FORMAT)
    return EscapingFormatter(WORKER_FORMAT, defaults={"worker": worker})


def tag_worker(settings: Settings, worker: int) -> None:
    """In a freshly forked worker: its lines carry its number from now on (the handlers are
    the supervisor's, inherited; only their formatters change)."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter(settings, worker))


def setup_logging(settings: Settings) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(settings.log_level.upper())
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter(settings))
    root.addHandler(stderr)
    if settings.log_file:
        fh = logging.FileHandler(settings.path(settings.log_file), encoding="utf-8")
        fh.setFormatter(formatter(settings))
        root.addHandler(fh)
    # Library chatter at INFO would log every SMTP line, content included: keep it quiet.
    # uvicorn's access log is off (web.server); its INFO lines (process started, shutting
    # down) say nothing `ready` and `stopped` do not.
    for noisy in ("mail.log", "aiosmtpd", "sqlalchemy", "alembic", "asyncio", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
