"""One outcome's state from its feedback: the credit rules of ``analytics._credit``.

``credited`` needs: verified, a beneficiary other than the owner, an acceptance by a
person other than the owner (``system`` is not a person; ``silence`` is the type's
silence-is-acceptance rule), and no undoing verdict after the last such acceptance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

UNDOING = ("rejected", "reverted", "reopened", "rolled_back", "cancelled")
"""Verdicts that take credit away when they come after the acceptance."""
NOT_A_PERSON = ("system",)
"""Reviewers whose ``accepted`` does not count as a person's acceptance."""


def counts_as_acceptance(by: str, verdict: str, owner: str) -> bool:
    return verdict == "accepted" and by not in NOT_A_PERSON and by != owner


STATES = ("credited", "unaccepted", "self", "unverified", "undone")
"""Every value ``outcome_state`` gives."""


def outcome_state(
    *,
    verified: bool,
    owner: str,
    beneficiaries: Sequence[str],
    feedback: Iterable[tuple[datetime, str, str]],
) -> str:
    """``feedback`` as (time, by, verdict) in the order it was recorded."""
    if not verified:
        return "unverified"
    if not [b for b in beneficiaries if b != owner]:
        return "self"
    last_accept: int | None = None
    last_undo: int | None = None
    ordered = sorted(enumerate(feedback), key=lambda item: (item[1][0], item[0]))
    for position, (_, (_, by, verdict)) in enumerate(ordered):
        if counts_as_acceptance(by, verdict, owner):
            last_accept = position
        elif verdict in UNDOING:
            last_undo = position
    if last_undo is not None and (last_accept is None or last_accept < last_undo):
        return "undone"
    return "unaccepted" if last_accept is None else "credited"
