"""Keep credentials out of logs and labels: URLs lose their user info and query string."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """rtsp://user:pw@cam:554/live?token=x -> rtsp://***@cam:554/live?***"""
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        if p.port:
            host = f"{host}:{p.port}"
    except ValueError:
        return "<unparseable url>"
    if p.username is not None or p.password is not None:
        host = "***@" + host
    return urlunsplit((p.scheme, host, p.path, "***" if p.query else "", ""))


def redact_text(text: str) -> str:
    """Every URL inside free text (e.g. an FFmpeg error message) redacted."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
