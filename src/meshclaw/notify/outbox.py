"""Writing to the outbox: in the caller's transaction, so a notification exists exactly
when the event it reports committed (a soft cap crossed, an approval requested, an
outcome recorded for someone)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from meshclaw.ids import new_id
from meshclaw.notify.models import Notification, NotificationRecipient
from meshclaw.store.models import Agent, User


def enqueue(
    session: Session,
    *,
    org_id: str,
    kind: str,
    resource: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    link: str | None = None,
) -> Notification:
    """Add a notification for ``recipients`` (user ids) to the outbox, and to the inbox
    of each recipient who is a person of the org (unread).

    ``link`` answers for its recipient (a signed feedback link): the notification is
    then for exactly one, a user id or ``external:<address>`` (no inbox), and is mailed
    to that address only, the link added to the body (``notify.deliver``)."""
    people = sorted(set(recipients))
    if link is not None and len(people) != 1:
        raise ValueError("a notification with a link is for exactly one recipient")
    row = Notification(
        id=new_id("ntf"), org_id=org_id, kind=kind, resource=resource,
        recipients=people, subject=subject[:300], body=body, link=link,
    )  # fmt: skip
    session.add(row)
    # Only people of this org get an inbox row: an id from elsewhere must neither fail
    # the event's transaction (a foreign key) nor show this org's message to anyone else.
    members = session.scalars(select(User.id).where(User.org_id == org_id, User.id.in_(people)))
    session.add_all(
        NotificationRecipient(notification_id=row.id, user_id=user_id, org_id=org_id)
        for user_id in members
    )
    return row


def budget_watchers(session: Session, org_id: str, scope: str, scope_id: str) -> list[str]:
    """Who answers for a budget: the person for a user budget, the agent's owner for an
    agent budget, the team's admins for a team budget, the org's platform admins for
    the org's (and for any scope nobody else answers for)."""
    people: list[str] = []
    if scope == "user":
        people = [scope_id]
    elif scope == "agent":
        owner = session.scalar(
            select(Agent.owner_id).where(Agent.id == scope_id, Agent.org_id == org_id)
        )
        people = [owner] if owner else []
    elif scope == "team":
        people = list(
            session.scalars(
                select(User.id).where(
                    User.org_id == org_id, User.team_id == scope_id, User.role == "team_admin"
                )
            )
        )
    if not people:
        people = list(
            session.scalars(
                select(User.id).where(User.org_id == org_id, User.role == "platform_admin")
            )
        )
    return people
