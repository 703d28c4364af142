"""Checks across a spec's parts, made when a spec is validated (not on stored versions).

A chat or mail trigger starts runs that read the message which started them with the
agent's own tools, so the spec must grant a read tool of the trigger's connector; and
that read grant, if it declares ``targets``, must cover what the trigger watches: a chat
trigger's channel (``chat:#help``), a mail trigger's folder (``folder:INBOX``).
The scheduler checks the grant again before it reads (``triggers._inbound``): a version
stored before this check existed is refused there, with the same words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshclaw.spec.models import AgentSpec, ChatTrigger, MailTrigger, ToolGrant

TRIGGER_READ_TOOLS = {"mail": ("read_message",), "chat": ("read_channel", "read_thread")}
"""The tools an agent needs (any one) to read what started it, by trigger type."""


@dataclass(frozen=True, kw_only=True)
class TriggerIssue:
    """Why ``triggers[index]`` cannot work as written; ``field`` is the key to fix."""

    index: int
    field: str
    message: str

    @property
    def path(self) -> str:
        return f"triggers[{self.index}].{self.field}"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def read_grants(spec: AgentSpec, trigger: ChatTrigger | MailTrigger) -> list[ToolGrant]:
    """The spec's grants through which the agent reads what ``trigger`` starts it with."""
    found: list[ToolGrant] = []
    for tool in TRIGGER_READ_TOOLS[trigger.type]:
        grant = spec.grant_for(f"{trigger.connector}.{tool}")
        if grant is not None and grant not in found:
            found.append(grant)
    return found


def read_grant_problem(
    spec: AgentSpec, index: int, trigger: ChatTrigger | MailTrigger
) -> TriggerIssue | None:
    """The trigger's connector has no read grant in ``spec``."""
    if read_grants(spec, trigger):
        return None
    connector = trigger.connector
    tools = [f"{connector}.{tool}" for tool in TRIGGER_READ_TOOLS[trigger.type]]
    wanted = " or ".join(f"'{t}'" for t in [*tools, f"{connector}.*"])
    return TriggerIssue(
        index=index,
        field="connector",
        message=f"the agent may not read connector {connector!r}; grant {wanted} in tools",
    )


def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` is the only wildcard (as in the policy); case-insensitive, whole string."""
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.IGNORECASE)


def channel_targets(channel: str) -> tuple[str, str]:
    """The targets a read of ``channel`` may name: with and without its ``#``."""
    name = channel.removeprefix("#")
    return f"chat:#{name}", f"chat:{name}"


FOLDER_KIND = "folder"
"""The target kind of a mail folder (``folder:INBOX``): the kind a mail connector's
``targets`` give the ``folder`` argument of its read tools. Not ``mail``: ``mail:``
targets are the addresses a message is sent to (``mail:*@acme.example``)."""


def folder_target(folder: str) -> str:
    """The target a read of mail ``folder`` names."""
    return f"{FOLDER_KIND}:{folder}"


def _watched(trigger: ChatTrigger | MailTrigger) -> tuple[str, str, tuple[str, ...]]:
    """The trigger's key naming what it watches, that thing, and the targets reading it names."""
    if isinstance(trigger, ChatTrigger):
        return "channel", trigger.channel, channel_targets(trigger.channel)
    return "folder", trigger.folder, (folder_target(trigger.folder),)


def target_problem(
    spec: AgentSpec, index: int, trigger: ChatTrigger | MailTrigger
) -> TriggerIssue | None:
    """No read grant of the trigger's connector has targets that cover the chat channel
    or mail folder it watches (grants without ``targets`` cover everything: ``*``)."""
    grants = read_grants(spec, trigger)
    field, watched, wanted = _watched(trigger)
    if not grants or any(
        _glob(pattern).fullmatch(target)
        for grant in grants
        for pattern in grant.targets
        for target in wanted
    ):
        return None
    declared = "; ".join(
        f"tools[{spec.tools.index(g)}] '{g.name}': " + ", ".join(f"'{t}'" for t in g.targets)
        for g in grants
    )
    return TriggerIssue(
        index=index,
        field=field,
        message=(
            f"{field} {watched!r} is outside the targets of the agent's read grant "
            f"on connector {trigger.connector!r} ({declared}); add '{wanted[0]}' to its targets"
        ),
    )


def trigger_problems(spec: AgentSpec) -> list[TriggerIssue]:
    """Every chat and mail trigger of ``spec`` that could not read what starts it."""
    problems: list[TriggerIssue] = []
    for index, trigger in enumerate(spec.triggers):
        if not isinstance(trigger, ChatTrigger | MailTrigger):
            continue
        problem = read_grant_problem(spec, index, trigger) or target_problem(spec, index, trigger)
        if problem is not None:
            problems.append(problem)
    return problems
