"""Identifiers: prefix, length, alphabet, time order, and the digits' meaning."""

from __future__ import annotations

import time

from meshclaw.ids import _ALPHABET, new_id


def digits(value: int, length: int) -> str:
    """``value`` in Crockford base 32, most significant digit first (the reference)."""
    out = ""
    for _ in range(length):
        value, rem = divmod(value, 32)
        out = _ALPHABET[rem] + out
    return out


def test_an_id_is_prefix_time_and_randomness_in_crockford_base32() -> None:
    before = int(time.time() * 1000)
    ident = new_id("run")
    after = int(time.time() * 1000)
    prefix, body = ident.split("_")
    assert prefix == "run" and len(body) == 26
    assert set(body) <= set(_ALPHABET)
    stamp = sum(_ALPHABET.index(c) * 32 ** (9 - i) for i, c in enumerate(body[:10]))
    assert before <= stamp <= after
    assert body[:10] == digits(stamp, 10)


def test_ids_sort_by_time_and_do_not_repeat() -> None:
    first = new_id("aud")
    time.sleep(0.002)
    later = [new_id("aud") for _ in range(10_000)]
    assert all(first < x for x in later)
    assert len(set(later)) == len(later)
