"""Mail triggers: new mail in a folder of the owner's mailbox starts one run per message.

The poll logs into the mailbox the trigger's connector (MeshClaw's built-in mail server,
``connectors.servers.mail``) would use for the agent's owner — its ``MESHCLAW_MAIL_*``
settings and the owner's delegated credential — with that server's own IMAP code
(``Mailbox.arrivals``). The watermark is the folder's UIDVALIDITY and the last UID seen:

- the first poll of a trigger only records where the folder stands (mail already there
  is not new);
- each later poll reads the headers of up to ``BATCH`` messages above the last UID,
  oldest first, starts a run for each one that passes the trigger's ``from`` and
  ``subject`` globs, and moves the watermark past it;
- a new UIDVALIDITY (the folder was recreated) starts again from where it stands now.

The run's input is the message's metadata as JSON, not its body: the agent reads the
message with its mail tools, which mark mail from outside the org untrusted. Headers
from outside the org (subject, Message-ID, date) are left out of the input too — they
are the sender's text — as is everything but the address when the connector is
configured ``untrusted``.
"""

from __future__ import annotations

import json
from email.utils import parseaddr
from typing import Any

from meshclaw.connectors.servers.mail import Mailbox, MailError, MailSettings
from meshclaw.spec.models import MailTrigger
from meshclaw.triggers._deliveries import TriggerProblem
from meshclaw.triggers._inbound import (
    Inbound,
    Watcher,
    connector_settings,
    glob_match,
)

BATCH = 20
"""Messages looked at per trigger per poll: a flood is started over several polls."""
PREFIX = "MESHCLAW_MAIL_"


def mail_settings(inbound: Inbound, watcher: Watcher) -> tuple[MailSettings, bool]:
    """The mailbox the trigger reads, and whether its connector is configured untrusted."""
    settings, config = connector_settings(
        inbound.platform, watcher, PREFIX, MailSettings, "the built-in mail server"
    )
    assert isinstance(settings, MailSettings)
    trigger = watcher.trigger
    assert isinstance(trigger, MailTrigger)
    if trigger.mailbox and trigger.mailbox.lower() != settings.username.lower():
        raise TriggerProblem(
            f"{watcher.field('mailbox')}: connector {trigger.connector!r} logs into another "
            f"mailbox for the agent's owner"
        )
    return settings, config.untrusted


def poll_mail(inbound: Inbound, watcher: Watcher) -> list[str]:
    """Start a run for each new matching message; the ids of the runs started.

    The caller has checked the read grant (``InboundPoller.tick``)."""
    trigger = watcher.trigger
    assert isinstance(trigger, MailTrigger)
    settings, untrusted = mail_settings(inbound, watcher)
    box = Mailbox(settings)
    mark = inbound.watermark(watcher)
    try:
        if mark is None or not mark[1]:
            validity, highest, _ = box.arrivals(trigger.folder, 2**32, 0)
            inbound.advance(watcher, str(validity), str(highest))
            return []
        validity, highest, messages = box.arrivals(trigger.folder, int(mark[1]), BATCH)
    except MailError as exc:  # the server's messages name hosts and folders, not secrets
        raise TriggerProblem(f"connector {trigger.connector!r}: {exc}") from None
    if str(validity) != mark[0]:
        inbound.advance(watcher, str(validity), str(highest))  # recreated: start afresh
        return []
    started: list[str] = []
    domains = settings.trusted_domains()
    for message in messages:
        if _matches(trigger, message):
            text, details = _run_input(trigger, validity, message, domains, untrusted)
            run_id = inbound.start(watcher, f"{validity}:{message['uid']}", text, details)
            if run_id is not None:
                started.append(run_id)
        inbound.advance(watcher, str(validity), str(message["uid"]))
    return started


def _address(sender: str) -> str:
    return parseaddr(sender)[1][:254]


def _matches(trigger: MailTrigger, message: dict[str, Any]) -> bool:
    if trigger.sender is not None and not glob_match(trigger.sender, _address(message["from"])):
        return False
    return trigger.subject is None or glob_match(trigger.subject, message["subject"])


def _outside(address: str, domains: tuple[str, ...]) -> bool:
    domain = address.rpartition("@")[2].lower().rstrip(".")
    return not (domain and any(domain == d or domain.endswith("." + d) for d in domains))


def _run_input(
    trigger: MailTrigger,
    validity: int,
    message: dict[str, Any],
    domains: tuple[str, ...],
    untrusted: bool,
) -> tuple[str, dict[str, Any]]:
    address = _address(message["from"])
    outside = _outside(address, domains)
    data: dict[str, Any] = {
        "trigger": "mail",
        "connector": trigger.connector,
        "folder": trigger.folder,
        "uid": message["uid"],
        "uidvalidity": validity,
        "from": address,
        "outside_org": outside,
    }
    if outside or untrusted:
        data["note"] = (
            f"mail from outside the org: read it with {trigger.connector}.read_message "
            f"(uid {message['uid']}, folder {trigger.folder!r})"
        )
    else:
        data |= {
            "subject": message["subject"][:500],
            "message_id": message["message_id"],
            "date": message["date"],
        }
    details = {"uid": message["uid"], "from": address, "outside_org": outside}
    return json.dumps(data, ensure_ascii=False, indent=1), details
