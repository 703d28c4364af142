"""The Cedar schema every MeshClaw policy is validated against.

Principals are ``User`` (a person calling the API or CLI) and ``Agent`` (acting for
its owner, a ``User``, inside a run). Every entity carries its ``org`` so one policy
(``tenant.isolation`` in ``roles.py``) can forbid any request that crosses orgs.

Tool calls are decided in two layers: ``tool.read`` / ``tool.write`` on the ``Tool``
decides the call itself; ``tool.argument`` is then asked once per argument value and
once per target the call touches, because Cedar has no "for every element" operator
and argument constraints (``to`` only inside the org) must hold for *every* value.

Integrity findings are about a person, so ``integrity.read`` / ``integrity.review`` on a
``User`` mean "the findings about that person" (who may be a pseudonymous id of an
imported history); on the ``Org`` they mean the whole review queue (and recording a
scan's findings). ``directory.manage`` on a ``User`` is changing that person's role or
team; on the ``Org``, creating people and teams.

The audit log has three actions on the ``Org``, because they expose different things:
``audit.read`` shows record bodies (everyone's personal data), ``audit.verify`` only
counts, hashes and checkpoints, ``audit.redact`` applies retention to the org's records.
``metrics.read`` is the org's Prometheus series.

Usage and cost: ``analytics.view_org`` on the ``Org`` is the org-wide tier (usage
reports, series, cost per outcome; below it ``analytics.view_team`` on one's team, then
``analytics.view_person`` on oneself); ``analytics.manage`` changes the org's analytics
settings; ``usage.reprice`` re-prices the org's history. A budget is about its subject:
``budget.read`` / ``budget.manage`` on the ``Org``, a ``Team``, a ``User`` or an
``Agent``. Rotating the vault's key is not an API action: the key is the install's, so
only the install's operator rotates it (``meshclaw vault rotate``, docs/policy.md).

An ``Outcome`` carries its owner, the people who received it (``beneficiaries``: user
ids; outsiders are not entities) and its team: ``outcome.read`` is reading one outcome
(its evidence, verification and feedback), ``outcome.feedback`` is giving a verdict on it.
Notifications are about their recipients: ``notification.read`` on a ``User`` is the
notifications addressed to that person, on the ``Org`` every notification of the org.

The platform's own connector calls, outside any run, have a ``Platform`` principal of
the org they are made for: ``Platform::"notifier"`` sends the outbox, and
``Platform::"trigger-poller"`` reads chat channels and mail folders for triggers. They
are decided with the run actions (``tool.read`` / ``tool.write``, ``tool.argument``), so
an org policy about a tool or its arguments applies to them too unless it says
``principal is Agent`` (``policy.platform``).
"""

from __future__ import annotations

ENTITY_TYPES = (
    "Org", "Role", "Team", "User", "Agent", "Model", "Connector", "Tool", "Run", "Outcome",
    "Platform",
)  # fmt: skip

API_ACTIONS = (
    "agent.create",
    "agent.update",
    "agent.read",
    "run.start",
    "run.read",
    "run.cancel",
    "approval.grant",
    "analytics.view_team",
    "analytics.view_person",
    "audit.read",
    "audit.verify",
    "audit.redact",
    "metrics.read",
    "policy.manage",
    "policy.read",
    "credential.manage",
    "integrity.read",
    "integrity.review",
    "directory.read",
    "directory.manage",
    "price.read",
    "price.write",
    "connector.manage",
    "connector.read",
    "connector.test",
    "analytics.view_org",
    "analytics.manage",
    "budget.read",
    "budget.manage",
    "usage.reprice",
    "outcome.recheck",
    "outcome.weight",
    "outcome.read",
    "outcome.feedback",
    "notification.read",
    "notify.send",
)
"""Actions a person takes through the API or CLI (``notify.send``: the platform sends its
own message, an approval request or an alert, on a person's delegated credential)."""

RUN_ACTIONS = ("model.invoke", "tool.read", "tool.write", "tool.argument")
"""Actions an agent takes inside a run, through the gateway."""

SCHEMA = """
entity Org;
entity Role in [Role];
entity Team in [Org] { org: Org, name: String };
entity User in [Team, Role] { org: Org, role: String, team?: Team };
entity Agent { org: Org, owner: User, name: String, team?: Team };
entity Platform { org: Org, name: String };
entity Model { org: Org, provider: String, name: String };
entity Connector { org: Org };
entity Tool in [Connector] { org: Org, connector: String, name: String, kind: String };
entity Run { org: Org, owner: User, agent: Agent, started_by?: User, team?: Team };
entity Outcome {
  org: Org, owner: User, beneficiaries: Set<User>, agent: Agent, type: String, team?: Team
};

type RunContext = {
  run_id: String,
  trigger: String,
  untrusted_content_seen: Bool,
};

type ToolContext = {
  run_id: String,
  trigger: String,
  untrusted_content_seen: Bool,
  approved: Bool,
  arguments_summary: String,
  targets: Set<String>,
};

type ArgumentContext = {
  run_id: String,
  trigger: String,
  untrusted_content_seen: Bool,
  approved: Bool,
  kind: String,
  name: String,
  value: String,
};

type ApiContext = { drill_down: Bool };

type NotifyContext = {
  drill_down: Bool,
  kind: String,
  outside_org: Bool,
  arguments_summary: String,
};

action "model.invoke" appliesTo { principal: [Agent], resource: [Model], context: RunContext };
action "tool.read", "tool.write" appliesTo {
  principal: [Agent, Platform], resource: [Tool], context: ToolContext
};
action "tool.argument" appliesTo {
  principal: [Agent, Platform], resource: [Tool], context: ArgumentContext
};

action "agent.create", "agent.update", "agent.read", "run.start" appliesTo {
  principal: [User], resource: [Agent], context: ApiContext
};
action "run.read", "run.cancel", "approval.grant" appliesTo {
  principal: [User], resource: [Run], context: ApiContext
};
action "analytics.view_team" appliesTo { principal: [User], resource: [Team], context: ApiContext };
action "analytics.view_person" appliesTo {
  principal: [User], resource: [User], context: ApiContext
};
action "analytics.view_org", "analytics.manage", "usage.reprice" appliesTo {
  principal: [User], resource: [Org], context: ApiContext
};
action "budget.read", "budget.manage" appliesTo {
  principal: [User], resource: [Org, Team, User, Agent], context: ApiContext
};
action "credential.manage" appliesTo {
  principal: [User], resource: [User, Org], context: ApiContext
};
action "audit.read", "audit.verify", "audit.redact", "metrics.read", "policy.manage",
  "policy.read" appliesTo {
  principal: [User], resource: [Org], context: ApiContext
};
action "integrity.read", "integrity.review" appliesTo {
  principal: [User], resource: [User, Org], context: ApiContext
};
action "directory.read" appliesTo { principal: [User], resource: [Org, Team], context: ApiContext };
action "directory.manage" appliesTo {
  principal: [User], resource: [Org, User], context: ApiContext
};
action "price.read", "price.write", "connector.manage", "connector.read", "connector.test"
  appliesTo {
  principal: [User], resource: [Org], context: ApiContext
};
action "outcome.recheck", "outcome.weight" appliesTo {
  principal: [User], resource: [Org], context: ApiContext
};
action "outcome.read", "outcome.feedback" appliesTo {
  principal: [User], resource: [Outcome], context: ApiContext
};
action "notify.send" appliesTo {
  principal: [User], resource: [Tool], context: NotifyContext
};
action "notification.read" appliesTo {
  principal: [User], resource: [User, Org], context: ApiContext
};
"""
