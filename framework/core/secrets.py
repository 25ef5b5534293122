"""Keeps passwords out of every output: logs, errors, --json, audit entries, the state DB.

Every configured secret is registered here when the config is loaded; ``redact`` is applied
at each boundary where text leaves the process (CLI output, log handler, audit writer).
URL passwords are masked even when they were never registered: in the userinfo
(``scheme://user:pw@host``) and in the query string (``?password=pw``, ``&sslpassword=pw``,
both accepted by libpq and redis-py).
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote

_MASK = "***"
_secrets: set[str] = set()
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s/]*)@")
# A query parameter whose name ends in "password", after "?" or "&" (or ";" in old-style queries).
_QUERY_PASSWORD = re.compile(r"(?P<key>[?&;][A-Za-z_]*password=)(?P<pw>[^&#\s]*)", re.IGNORECASE)


def register(secret: str | None) -> None:
    # Very short strings would mask ordinary words; a 1-3 character password is still
    # masked inside URLs by the pattern below.
    if secret and len(secret) >= 4:
        _secrets.add(secret)


def register_url(url: str) -> None:
    """Register every password a URL carries, as written and percent-decoded."""
    found = [m["pw"] for m in _URL_PASSWORD.finditer(url)] + [m["pw"] for m in _QUERY_PASSWORD.finditer(url)]
    for secret in found:
        register(secret)
        register(unquote(secret))


def pop_query_password(tail: str) -> tuple[str, str | None]:
    """(the URL's path and query without its ``password=`` parameter, that password decoded or None)."""
    path, mark, query = tail.partition("?")
    if not mark:
        return tail, None
    query, hash_mark, fragment = query.partition("#")
    kept, found = [], None
    for item in query.split("&"):
        key, _, value = item.partition("=")
        if key.lower() == "password":
            found = unquote(value)
        else:
            kept.append(item)
    rest = "&".join(kept)
    return path + (f"?{rest}" if rest else "") + hash_mark + fragment, found


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m['key']}{_MASK}", text)
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
    """The URL to show: no userinfo password, and any password in the query string masked."""
    url = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}@" if m["user"] else m["scheme"], url)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['key']}{_MASK}", url)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True
