"""Opaque, sortable identifiers: a short prefix saying what it is, then a ULID-like body."""

from __future__ import annotations

import base64
import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
# ``base64.b32encode`` writes RFC 4648's alphabet; the same digit values in Crockford's.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def new_id(prefix: str) -> str:
    """Return ``prefix_`` + 10 chars of millisecond time + 16 random chars (time-sortable).

    The 130-bit body (50 bits of time, 80 random) is written as 32 base-32 digits of a
    160-bit number whose top 30 bits are zero, in C (``b32encode``): several times faster than
    dividing digit by digit in Python. Ids are made on every call.
    """
    millis = int(time.time() * 1000) & ((1 << 50) - 1)
    body = millis.to_bytes(10, "big") + os.urandom(10)
    return f"{prefix}_{base64.b32encode(body).translate(_TO_CROCKFORD)[6:].decode()}"
