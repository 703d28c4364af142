"""Signed one-click feedback links: ``/v1/feedback/<token>`` in a mail or chat message.

A token names one outcome, one reviewer and an expiry, and is signed with HMAC-SHA256
under the platform's link key, so it needs no login and cannot be forged or pointed at
another outcome or person. It carries no verdict: the page it opens offers accept and
reject (a GET never records anything, so mail scanners that prefetch links do no harm).

``public_base`` and ``feedback_url`` turn a token into the address a mailed link needs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from meshclaw.clock import utcnow
from meshclaw.errors import AuthError

DEFAULT_TTL = timedelta(days=14)
EVERY_INTERFACE = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True, kw_only=True)
class LinkClaim:
    outcome_id: str
    reviewer: str
    """A user id, or ``external:<address>``."""
    expires: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_link_key(path: Path) -> bytes:
    """The key at ``path``, created (32 random bytes, mode 0600) on first use."""
    if path.exists():
        key = path.read_bytes()
        if len(key) < 32:
            raise ValueError(f"{path}: link key too short")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def sign_link(key: bytes, outcome_id: str, reviewer: str, *, ttl: timedelta = DEFAULT_TTL) -> str:
    payload = json.dumps(
        {"o": outcome_id, "r": reviewer, "e": int((utcnow() + ttl).timestamp())},
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_link(key: bytes, token: str, *, now: datetime | None = None) -> LinkClaim:
    """The claim of a valid token; ``AuthError`` if forged, damaged or expired."""
    try:
        body, mac = token.split(".", 1)
        payload = _unb64(body)
        given = _unb64(mac)
    except (ValueError, TypeError):
        raise AuthError("invalid feedback link") from None
    if not hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).digest(), given):
        raise AuthError("invalid feedback link")
    data = json.loads(payload)
    expires = datetime.fromtimestamp(int(data["e"]), tz=(now or utcnow()).tzinfo)
    if (now or utcnow()) > expires:
        raise AuthError("this feedback link has expired")
    return LinkClaim(outcome_id=str(data["o"]), reviewer=str(data["r"]), expires=expires)


def public_base(public_url: str | None, host: str, port: int) -> str | None:
    """The base of absolute links: ``web.public_url``, else the serve address. None when
    the platform listens on every interface: no address of its own to name, so a link
    can only carry its path (and the operator is told to set ``web.public_url``)."""
    if public_url:
        return public_url.rstrip("/")
    if host in EVERY_INTERFACE:
        return None
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def feedback_url(base: str | None, token: str) -> str:
    """The one-click link for ``token``: absolute under ``base``, else only its path."""
    return f"{base or ''}/v1/feedback/{token}"
