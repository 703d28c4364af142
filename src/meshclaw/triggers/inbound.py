"""The scheduler's poll of chat and mail triggers (``triggers.chat``, ``triggers.mail``).

``InboundPoller.tick`` runs beside the cron tick (the embedded worker's loop, the Celery
cron task). One scheduler replica polls at a time (the ``inbound`` lease in
``scheduler_leases``, like cron's), so a mailbox is not read twice as often as needed;
exactly-once does not depend on it: every message is a unique ``inbound_deliveries`` row
before its run exists (``triggers._deliveries``).

Each poll of a trigger first tries its messages whose runs could not be created before
and are due again (``triggers._deliveries``), then reads what is new. A trigger that
cannot poll (no such connector, no credential, no read grant in the spec or none whose
targets cover its channel or folder, a read Cedar refuses the platform's poller, an
unreachable server) is skipped, its reason kept on its watermark row and audited as
``trigger.refused`` when it changes (with the decision, for a refused read); the other
triggers go on. Pending messages that no poll retried for an hour past their deadline
(their trigger is gone or cannot poll) are given up at the end of the tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from meshclaw.clock import utcnow
from meshclaw.platform import Platform
from meshclaw.spec.models import MailTrigger
from meshclaw.triggers._deliveries import TriggerProblem
from meshclaw.triggers._inbound import Inbound, PolicyRefused, read_grant_problem, watchers
from meshclaw.triggers.chat import poll_chat
from meshclaw.triggers.mail import poll_mail
from meshclaw.triggers.matrix_push import prune_transactions

log = logging.getLogger(__name__)

LEADER = "inbound"


class InboundPoller:
    """Polls every chat and mail trigger, as the leader only."""

    def __init__(
        self,
        platform: Platform,
        *,
        dispatch: Callable[[str], None] | None,
        owner: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._inbound = Inbound(platform, dispatch=dispatch, clock=clock)
        self._platform = platform
        self.owner = owner

    def tick(self) -> list[str]:
        """Poll each trigger once; the ids of the runs started."""
        if not self._inbound.lead(LEADER, self.owner):
            return []
        started: list[str] = []
        for watcher in watchers(self._platform):
            poll = poll_mail if isinstance(watcher.trigger, MailTrigger) else poll_chat
            try:
                refused = read_grant_problem(watcher)
                if refused is not None:
                    raise TriggerProblem(refused)
                self._inbound.authorize_poll(watcher)
                started += self._inbound.retry_due(watcher)
                started += poll(self._inbound, watcher)
            except TriggerProblem as exc:
                decision = exc.decision if isinstance(exc, PolicyRefused) else None
                self._inbound.problem(watcher, str(exc), decision)
                continue
            except Exception:  # one broken trigger must not stop the others
                log.exception("%s trigger of agent %s", watcher.trigger.type, watcher.agent_id)
                continue
            self._inbound.problem(watcher, None)
        try:
            self._inbound.deliveries.abandon_overdue()
        except Exception:  # the store blinked: the next tick gives them up
            log.exception("giving up overdue chat and mail messages")
        try:
            prune_transactions(self._platform, self._inbound.clock())
        except Exception:  # the store blinked: the next tick prunes them
            log.exception("pruning old Matrix push transactions")
        return started
