"""NUL characters in text that comes from outside the platform.

A model's answer, a tool's result, or the message that started a run may hold NUL
(U+0000), which PostgreSQL keeps in no text column: storing it fails the write, and with
it the run's step or its end. Where such text enters, each NUL becomes U+FFFD (the
replacement character), on every engine, so a run behaves the same on SQLite and
PostgreSQL and what is stored still shows that something was there. (A person's request
to the API with a NUL is refused at the door instead: ``api.nul``.)
"""

from __future__ import annotations

from typing import TypeVar

NUL = "\x00"
REPLACEMENT = "\ufffd"

T = TypeVar("T")


def without_nul(text: str) -> str:
    return text.replace(NUL, REPLACEMENT) if NUL in text else text


def without_nul_in(value: T) -> T:
    """``value`` (a string, or JSON-like lists, tuples and dicts of them, keys included)
    with every NUL replaced; the very same object when it holds none (the common case,
    which costs no copy)."""
    if isinstance(value, str):
        return without_nul(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        pairs = [(without_nul_in(k), without_nul_in(v)) for k, v in value.items()]
        same = all(a is k and b is v for (a, b), (k, v) in zip(pairs, value.items(), strict=True))
        return value if same else dict(pairs)  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        parts = [without_nul_in(v) for v in value]
        same = all(a is b for a, b in zip(parts, value, strict=True))
        return value if same else type(value)(parts)
    return value
