"""Asking the people an outcome was for: one feedback request each, with their own link.

When an outcome is recorded verified, ``ask_beneficiaries`` queues, in the recording's
transaction (so a request exists exactly when its outcome does, and a retried recording,
which skips recorded steps, asks nobody twice), one notification per beneficiary other
than the owner: a person of the org by user id (an inbox copy, and a mail to their
directory address) or an outside address as ``external:<address>`` (mail only). Each
carries that reviewer's own signed link in the notification's ``link``, which the inbox,
the API and the dashboard never show: ``notify.deliver.personal_mail`` adds it to the
mail sent to that reviewer's address alone, since whoever holds a link answers for its
reviewer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session

from meshclaw.clock import utcnow
from meshclaw.dashboard_paths import outcome_page
from meshclaw.notify.outbox import enqueue
from meshclaw.outcomes.links import DEFAULT_TTL, feedback_url
from meshclaw.outcomes.models import Outcome
from meshclaw.store.models import Agent, User

KIND = "outcome.feedback_request"
"""The notification kind of a feedback request."""


def reviewers(resolved: Iterable[tuple[str, str]], owner: str) -> list[str]:
    """Who is asked, from (name, user id or ``external``) pairs: each person other than
    the owner, and each outside mail address as ``external:<address>``. An outside name
    that is not an address (a tracker's login) names nowhere to send a link to."""
    asked: list[str] = []
    for name, user in resolved:
        if user == "external":
            if "@" not in name:
                continue
            user = f"external:{name}"
        if user != owner and user not in asked:
            asked.append(user)
    return asked


def ask_beneficiaries(
    session: Session,
    outcome: Outcome,
    asked: list[str],
    *,
    sign: Callable[[str], str],
    base_url: str | None,
) -> None:
    """Queue a feedback request for each of ``asked`` (``reviewers``) about ``outcome``.

    ``sign`` makes a reviewer's link token; ``base_url`` makes links absolute (None:
    only their path, when the platform does not know its public address)."""
    if not asked:
        return
    owner = session.get(User, outcome.user_id)
    agent = session.get(Agent, outcome.agent_id)
    who = (owner.display_name or owner.handle) if owner is not None else "A colleague"
    agent_name = agent.name if agent is not None else outcome.agent_id
    what = f"{outcome.type.replace('_', ' ')} ({outcome.ref[:200]})"
    expires = (utcnow() + DEFAULT_TTL).strftime("%d %B %Y")  # as ``sign_link`` stamps it
    intro = (
        f'{who}\'s agent "{agent_name}" recorded this as done for you: {what}.\n\n'
        f"Was it what you needed? It counts as {who}'s work only once someone it was for "
        "says yes."
    )
    if outcome.silence_accepts_at is not None:
        intro += f" No answer by {outcome.silence_accepts_at:%d %B %Y %H:%M} UTC counts as yes."
    for reviewer in asked:
        if reviewer.startswith("external:"):
            how = "Answer with the one-click link below (no sign-in)."
        else:
            # The outcome's dashboard page, where a person of the org can also answer.
            page = outcome_page(outcome.id, base_url=base_url)
            how = (
                f"Answer on its page in MeshClaw ({page}), or with the one-click link that "
                "ends the mailed copy of this message (no sign-in)."
            )
        body = (
            f"{intro}\n\n{how} The link is yours alone (whoever holds it answers as you), "
            f"so please do not forward it. It expires on {expires}."
        )
        enqueue(
            session, org_id=outcome.org_id, kind=KIND, resource=f"outcome:{outcome.id}",
            recipients=[reviewer], subject=f"{who}'s agent {agent_name}: was this useful?",
            body=body, link=feedback_url(base_url, sign(reviewer)),
        )  # fmt: skip
