"""Keeps passwords out of every output: logs, errors, --json, audit entries, the state DB.

Every configured secret is registered here when the config is loaded; ``redact`` is applied
at each boundary where text leaves the process (CLI output, log handler, audit writer).
URL userinfo passwords are masked even when they were never registered.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_MASK = "***"
_secrets: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]*)@")


def register(secret: str | None) -> None:
    # Very short strings would mask ordinary words; a 1-3 character password is still
    # masked inside URLs by the pattern below.
    if secret and len(secret) >= 4:
        _secrets.add(secret)


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


def redact_obj(value: Any) -> Any:
    """Redact strings anywhere inside JSON-like data."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_obj(v) for v in value]
    return value


def url_without_password(url: str) -> str:
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}@", url)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True
