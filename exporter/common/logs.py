"""Structured logging for both daemons: logfmt on a terminal, JSON elsewhere.

Context such as ``collector`` or ``target`` is passed with ``extra={...}`` and
appears as its own field, so logs can be filtered without parsing messages.

Warnings and errors that repeat (the same logger, level, message, context and
exception: its type, the line that raised it and the start of its text) pass
once per :data:`REPEAT_INTERVAL`; the next one to pass carries ``repeated=N``,
the number held back meanwhile (:class:`RepeatFilter`).
A flood (a peer refusing every connection, the accept loop out of file
descriptors) then costs a line a minute, not megabytes a second.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

LogFormat = Literal["auto", "logfmt", "json"]
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

# Attributes every LogRecord has; anything else was passed through ``extra``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower().replace("warning", "warn"),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update({k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS})
    if record.exc_info:
        fields["error"] = logging.Formatter().formatException(record.exc_info)
    return fields


# How often one kind of warning or error is written while it keeps repeating.
REPEAT_INTERVAL = 60.0
# Kinds remembered at once; the least recently seen is forgotten first.
REPEAT_KINDS = 1024

# Characters of an exception's text that tell two kinds apart: enough for
# "no such table: x" against "no such table: y", not a whole payload each.
REPEAT_ERROR_CHARS = 100

_RepeatKey = tuple[str, int, str, str, str]


@dataclass(slots=True)
class _Repeats:
    """One kind of record: when it last passed, and how many were held back since."""

    passed_at: float
    held_back: int = 0


class RepeatFilter(logging.Filter):
    """Passes a repeated warning or error once per ``interval``; counts the rest.

    Records below WARNING always pass. The record that passes after others
    were held back gets the attribute ``repeated`` (how many), which the
    formatters print as a field.
    """

    def __init__(
        self,
        interval: float = REPEAT_INTERVAL,
        *,
        kinds: int = REPEAT_KINDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._interval = interval
        self._kinds = kinds
        self._clock = clock
        self._seen: OrderedDict[_RepeatKey, _Repeats] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = _repeat_key(record)
        now = self._clock()
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Repeats(now)
            if len(self._seen) > self._kinds:
                self._seen.popitem(last=False)
            return True
        self._seen.move_to_end(key)
        if now - seen.passed_at < self._interval:
            seen.held_back += 1
            return False
        if seen.held_back:
            record.repeated = seen.held_back
        seen.passed_at, seen.held_back = now, 0
        return True


def _repeat_key(record: logging.LogRecord) -> _RepeatKey:
    extra = sorted((k, str(v)) for k, v in vars(record).items() if k not in _RECORD_ATTRS)
    return (record.name, record.levelno, record.getMessage(), _error_kind(record), repr(extra))


def _error_kind(record: logging.LogRecord) -> str:
    """The exception's type, where it was raised and the start of its text.

    Two bugs that raise the same type with the same log message are still two
    kinds: the second must not be hidden behind the first.
    """
    error = record.exc_info[1] if record.exc_info else None
    if error is None:
        return ""
    where = ""
    if (frame := error.__traceback__) is not None:
        while frame.tb_next is not None:
            frame = frame.tb_next
        where = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}"
    return f"{type(error).__name__} {where} {str(error)[:REPEAT_ERROR_CHARS]}"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in _fields(record).items():
            text = str(value)
            if not text or any(c in text for c in ' ="\n'):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        return " ".join(parts)


# Third-party loggers held to a level above what they chatter at. fontTools logs
# every font subset at info ("glyf pruned", ~75 lines for each PDF report or
# digest); fpdf warns of each character its font lacks, quoting it, and so
# quoting alert text (the report logs that once, briefly, itself). pypsrp logs
# every WinRM read timeout at error with a traceback; the scrape it failed is
# already logged once, with its reason, by the WinRM scraper.
QUIETED_LOGGERS = {
    # aiohttp logs every request at info; that is noise for a scrape target.
    "aiohttp.access": logging.WARNING,
    "fontTools": logging.WARNING,
    "fpdf": logging.ERROR,
    "pypsrp": logging.CRITICAL,
}


def quiet_third_party_loggers() -> None:
    """Hold :data:`QUIETED_LOGGERS` to their levels (the daemons' and the commands' own
    loggers keep theirs)."""
    for name, level in QUIETED_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Send the root logger to stderr in the chosen format."""
    if fmt == "auto":
        fmt = "logfmt" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[level])
    quiet_third_party_loggers()
