"""Agent spec v1: what an agent is allowed to do, on which model, for which outcomes.

A spec is YAML written by an employee (or produced by the web form). It is validated
here and stored as an immutable version; runs record the version they used.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

NAME_PATTERN = r"^[a-z][a-z0-9-]{1,62}$"
TOOL_PATTERN = re.compile(r"^[a-z][a-z0-9_-]*\.([a-z][a-z0-9_-]*|\*)$")
ARGUMENT_PATTERN = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*|#link)$")
"""An argument name (``to``, ``recipient.address``), or ``#link``: every link (URL or
``www.`` host) written anywhere in the call's arguments (``policy.arguments``)."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a permission must not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRef(_Strict):
    provider: str = Field(min_length=1)
    """A provider name configured on the platform (e.g. ``scripted``, ``openai``)."""
    model: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Passed to the provider as-is (temperature, max_tokens, ...)."""


class ToolScope(StrEnum):
    read = "read"
    write = "write"


def _check_name(name: str) -> None:
    if not ARGUMENT_PATTERN.match(name):
        raise ValueError(
            f"argument name {name!r} must be like 'to', 'recipient.address' or '#link'"
        )


class ToolGrant(_Strict):
    """One tool the agent may call, and how far that permission reaches."""

    name: str
    """``connector.tool``, or ``connector.*`` for every tool of a connector."""
    scope: ToolScope = ToolScope.read
    """``read`` tools only observe; ``write`` tools change something in an app."""
    targets: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns of resources the tool may touch, e.g. ``ticket:OPS-*``."""
    arguments: dict[str, list[str]] | None = None
    """Argument constraints: argument name (``a.b`` for nested) -> globs; every value
    the call passes for that argument must match one of them. ``None`` (not stored)
    means no constraint. ``*`` is the only wildcard."""

    after_untrusted: dict[str, list[str]] | None = None
    """Provenance rules: argument name (or ``#link``) -> globs that apply once untrusted
    content entered the run. A value outside them makes the call *need approval* (it is
    not denied: the owner may want it). An empty list: any value needs approval.
    Declaring this, even ``{}``, replaces the blanket "any write after untrusted content
    needs approval" for this grant: the grant says precisely what needs a person."""

    @field_validator("arguments")
    @classmethod
    def _argument_globs(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return None
        for name, globs in value.items():
            _check_name(name)
            if not globs or any(not g for g in globs):
                raise ValueError(f"argument {name!r} needs at least one non-empty pattern")
        return value

    @field_validator("after_untrusted")
    @classmethod
    def _provenance_globs(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is None:
            return None
        for name, globs in value.items():
            _check_name(name)
            if any(not g for g in globs):
                raise ValueError(f"argument {name!r}: patterns must not be empty")
        return value

    @field_validator("name")
    @classmethod
    def _tool_name(cls, value: str) -> str:
        if not TOOL_PATTERN.match(value):
            raise ValueError("must be 'connector.tool' or 'connector.*' (lower case)")
        return value


class ManualTrigger(_Strict):
    type: Literal["manual"]


class ApiTrigger(_Strict):
    type: Literal["api"]


class CronTrigger(_Strict):
    type: Literal["cron"]
    schedule: str
    """Five-field cron expression, evaluated in UTC."""
    input: str | None = None

    @field_validator("schedule")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a five-field cron expression, e.g. '0 9 * * 1-5'")
        return value


class WebhookTrigger(_Strict):
    type: Literal["webhook"]
    secret_ref: str | None = None
    """Vault reference of the HMAC secret that signs incoming calls."""


CONNECTOR_REF = r"^[a-z][a-z0-9_-]{0,62}$"
"""A connector's name, as in ``connectors.config.CONNECTOR_NAME``."""


_CHANNEL = re.compile(r"^#?[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_CONNECTOR = re.compile(CONNECTOR_REF)


def _check_glob(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty (leave the key out to match everything)")
    return value


def _check_connector(value: str) -> str:
    if not _CONNECTOR.match(value):
        raise ValueError("must be a connector name: lower case letters, digits, '-' and '_'")
    return value


class ChatTrigger(_Strict):
    """New messages in a chat channel, read through the owner's chat connector."""

    type: Literal["chat"]
    channel: str
    """A channel id (``C0123``), ``name`` or ``#name``."""
    connector: str = "chat"
    """The chat connector (the built-in Slack Web API server) whose bot reads the channel."""
    mention: bool = False
    """Only messages that mention the connector's bot (``<@BOT>``) start a run."""

    _connector = field_validator("connector")(_check_connector)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not _CHANNEL.match(value):
            raise ValueError("must be a channel id (C0123ABC), a name or '#name'")
        return value


class MailTrigger(_Strict):
    """New mail in a folder of the owner's mailbox, read through the mail connector."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    type: Literal["mail"]
    connector: str = "mail"
    """The mail connector (the built-in IMAP/SMTP server) whose mailbox is watched."""
    folder: str = Field(default="INBOX", min_length=1, max_length=200)
    sender: str | None = Field(default=None, alias="from", max_length=320)
    """Only mail whose sender address matches this glob (``*@acme.example``)."""
    subject: str | None = Field(default=None, max_length=500)
    """Only mail whose subject matches this glob (``*invoice*``); case-insensitive."""
    mailbox: str | None = None
    """The address watched, as a check: a trigger whose connector logs into another
    mailbox for the owner is refused (the login decides which mailbox is read)."""

    _connector = field_validator("connector")(_check_connector)
    _globs = field_validator("sender", "subject")(_check_glob)


Trigger = Annotated[
    ManualTrigger | ApiTrigger | CronTrigger | WebhookTrigger | ChatTrigger | MailTrigger,
    Field(discriminator="type"),
]


class Budget(_Strict):
    """Per-run limits; org/team/user budgets live in metering."""

    max_steps: int = Field(default=20, ge=1, le=1000)
    """Model turns allowed in one run."""
    max_tokens_per_run: int | None = Field(default=None, ge=1)
    max_cost_usd_per_run: Decimal | None = Field(default=None, gt=0)
    timeout_seconds: float = Field(default=300, gt=0, le=86_400)


OUTCOME_TYPES = (
    "mail_sent",
    "meeting_scheduled",
    "ticket_resolved",
    "pr_merged",
    "deploy",
    "doc_published",
)


class OutcomeClaim(_Strict):
    """An outcome type the agent claims to produce; credit needs evidence later."""

    type: str = Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")
    """A built-in type (see ``OUTCOME_TYPES``) or ``custom:<name>``-free snake case."""
    description: str | None = None
    # Verification settings (docs/outcomes.md); unset: the type's defaults.
    tools: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")]] = Field(
        default_factory=list
    )
    """Write tools (``connector.tool``) whose evidence produces this outcome."""
    verify_tool: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")
    """A read tool the verifier queries for the outcome's real state."""
    verify_argument: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    """The read tool's argument that takes the outcome's id (``ref``)."""
    durability_hours: float | None = Field(default=None, ge=0, le=24 * 365)
    """Re-check the outcome this long after it was recorded (0: never)."""
    silence_accepts_hours: float | None = Field(default=None, ge=0, le=24 * 365)
    """No feedback this long after verification counts as acceptance."""


def _manual_only() -> list[Trigger]:
    return [ManualTrigger(type="manual")]


class AgentSpec(_Strict):
    """Agent spec, version 1."""

    apiVersion: Literal["meshclaw/v1"] = "meshclaw/v1"  # camelCase: it is the YAML key
    name: str = Field(pattern=NAME_PATTERN)
    """Unique per org: lower case, digits and dashes."""
    description: str = ""
    owner: str = Field(min_length=1)
    """The user id the agent acts for (its credentials and its outcomes)."""
    team: str | None = None
    """Defaults to the owner's team when created."""
    model: ModelRef
    instructions: str = Field(min_length=1)
    tools: list[ToolGrant] = Field(default_factory=list)
    triggers: list[Trigger] = Field(default_factory=_manual_only)
    """When the agent runs; by default only by hand."""
    budget: Budget = Field(default_factory=Budget)
    outcomes: list[OutcomeClaim] = Field(default_factory=list)

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[ToolGrant]) -> list[ToolGrant]:
        # A field validator (not a model one) so this is reported together with every
        # other problem; ``at`` lets the loader point at the second grant's name.
        first: dict[str, int] = {}
        for index, grant in enumerate(tools):
            if grant.name in first:
                raise PydanticCustomError(
                    "duplicate_tool",
                    "tool '{tool}' is granted twice (first at tools[{first}])",
                    {"tool": grant.name, "first": first[grant.name], "at": (index, "name")},
                )
            first[grant.name] = index
        return tools

    def grant_for(self, tool: str) -> ToolGrant | None:
        """The grant that covers ``connector.tool``, exact names before wildcards."""
        connector = tool.split(".", 1)[0]
        exact = next((g for g in self.tools if g.name == tool), None)
        return exact or next((g for g in self.tools if g.name == f"{connector}.*"), None)
