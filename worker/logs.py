"""Logging set-up: plain or JSON lines on stderr, with every URL in every message redacted.

The JSON formatter is a dozen lines, so it is written here rather than adding a dependency.
Structured fields go in `extra=` (stream, source, reason, ...) and become JSON keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from worker.redact import redact_text

# LogRecord attributes that are not user "extra" fields.
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


class JsonLinesFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                doc[k] = v if isinstance(v, str | int | float | bool | None) else str(v)
        if record.exc_info:
            doc["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STD and not k.startswith("_")}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return redact_text(line)


def setup_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if json_lines else PlainFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # FFmpeg's own log lines can carry URLs with passwords and flood on bad streams; errors
    # reach us as exceptions anyway.
    try:
        import av.logging

        av.logging.set_level(None)
    except Exception:  # pragma: no cover - av missing or too old; nothing to silence
        pass
