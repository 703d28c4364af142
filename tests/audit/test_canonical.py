"""Canonical JSON is RFC 8785 byte for byte (checked against the ``rfc8785`` package)."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from meshclaw.audit.canonical import (
    CanonicalError,
    body_digest,
    body_digest_json,
    canonical_details,
    canonical_json,
    header_json,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
keys = st.text(max_size=8)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(values)
def test_canonical_json_equals_rfc8785(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(CanonicalError):
            canonical_json(value)
        return
    assert canonical_json(value) == expected


def test_known_jcs_outputs_and_refusals() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é\n\u001f"]}) == (
        '{"a":[true,null,"é\\n\\u001f"],"b":1}'.encode()
    )
    assert canonical_json({"x": 1e21, "y": 0.1, "z": -0.0}) == b'{"x":1e+21,"y":0.1,"z":0}'
    # JCS sorts keys by UTF-16 code units: U+10000 (a surrogate pair) before U+FFFD
    assert canonical_json({"\ufffd": 1, "\U00010000": 2}) == rfc8785.dumps(
        {"\ufffd": 1, "\U00010000": 2}
    )
    for bad in ({"n": float("nan")}, {"n": 2**60}, {"n": object()}, {1: 2}, {"s": "\ud800"}):
        with pytest.raises(CanonicalError):
            canonical_json(bad)
    # What the sink stores reads back as plain JSON: tuples as lists, 1.0 as 1.
    assert json.loads(canonical_details({"t": (1, 2), "f": 1.0})) == {"t": [1, 2], "f": 1}


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 2**53 - 1),
    st.text(),
    st.text(),
    st.none() | st.text(),
    st.text(),
    st.text(),
    st.none() | st.text(),
    values,
)
def test_hand_written_header_and_body_are_jcs(
    seq: int,
    id_: str,
    ts: str,
    org: str | None,
    action: str,
    outcome: str,
    user: str | None,
    details: Any,
) -> None:
    header = {
        "v": 1,
        "seq": seq,
        "id": id_,
        "ts": ts,
        "org_id": org,
        "action": action,
        "outcome": outcome,
        "body_sha256": "ab" * 32,
    }
    body = {
        "actor_agent_id": None,
        "actor_user_id": user,
        "details": {"d": details},
        "resource": action,
        "salt": "00" * 16,
    }
    try:
        expected_header = rfc8785.dumps(header)
        expected_body = hashlib.sha256(rfc8785.dumps(body)).hexdigest()
    except rfc8785.CanonicalizationError:
        return  # lone surrogates: refused on both paths (checked above)
    assert header_json(seq, id_, ts, org, action, outcome, "ab" * 32) == expected_header
    assert body_digest(user, None, action, {"d": details}, "00" * 16) == expected_body
    # The sink's way: details canonicalised once, the body written around that text.
    text = canonical_details({"d": details})
    assert body_digest_json(user, None, action, text, "00" * 16) == expected_body


def test_details_are_canonicalised_once_or_refused() -> None:
    assert canonical_details({"b": (1, 2.0), "a": "é"}) == '{"a":"é","b":[1,2]}'
    assert canonical_details(OrderedDict(b=1, a=2)) == '{"a":2,"b":1}'  # any dict will do
    for bad in ({"n": float("nan")}, {"s": "\ud800"}, {1: 2}):
        with pytest.raises(CanonicalError):
            canonical_details(bad)
    with pytest.raises(CanonicalError, match="must be an object"):
        canonical_details([1, 2])  # type: ignore[arg-type]
    # A value the hand-written body cannot hold (a lone surrogate in an actor) takes the
    # strict path, which refuses it just as ``body_digest`` does.
    with pytest.raises(CanonicalError):
        body_digest_json("\ud800", None, "r", "{}", "00")
    with pytest.raises(CanonicalError):
        body_digest("\ud800", None, "r", {}, "00")
