"""The built-in policy set: tenant isolation, the four roles, and the approval gates.

Roles are Cedar policies, not if-statements: a ``User`` entity's parent is
``Role::"<role>"``, and every role is itself inside ``Role::"employee"``, so what an
employee may do, every other role may do as well.

Policy ids (``@id``) are what ``meshclaw policy explain`` prints, so each names the
rule it is. A forbid whose id starts with ``approval.`` is an *approval gate*: when
only such gates deny a request and the same request with ``context.approved`` would be
allowed, the answer is "needs approval" instead of "deny".
"""

from __future__ import annotations

ROLES = ("employee", "team_admin", "platform_admin", "auditor")

APPROVAL_PREFIX = "approval."

BUILTIN_POLICIES = """
// -- tenancy ------------------------------------------------------------------------
@id("tenant.isolation")
forbid (principal, action, resource)
unless { resource is Org || principal.org == resource.org };

@id("tenant.isolation.org")
forbid (principal, action, resource is Org)
unless { principal.org == resource };

// -- employee: own agents and runs, own numbers -------------------------------------
@id("role.employee.agent.write")
permit (
  principal in Role::"employee",
  action in [Action::"agent.create", Action::"agent.update"],
  resource
)
when { resource.owner == principal };

@id("role.employee.agent.read")
permit (principal in Role::"employee", action == Action::"agent.read", resource);

@id("role.employee.run.start")
permit (principal in Role::"employee", action == Action::"run.start", resource)
when { resource.owner == principal };

@id("role.employee.run.own")
permit (
  principal in Role::"employee",
  action in [Action::"run.read", Action::"run.cancel"],
  resource
)
when {
  resource.owner == principal ||
  (resource has started_by && resource.started_by == principal)
};

@id("role.employee.approval.own")
permit (principal in Role::"employee", action == Action::"approval.grant", resource)
when { resource.owner == principal };

@id("role.employee.analytics.self")
permit (principal in Role::"employee", action == Action::"analytics.view_person", resource)
when { resource == principal };

// The org's own policies and their versions: everyone may read the rules they are under
// (``explain`` shows the policies behind a decision anyway); platform admins change them.
@id("role.employee.policy.read")
permit (principal in Role::"employee", action == Action::"policy.read", resource);

@id("role.employee.credential.own")
permit (principal in Role::"employee", action == Action::"credential.manage", resource)
when { resource == principal };

// -- team admin: team aggregates; a person only as an audited drill-down -------------
@id("role.team_admin.analytics.team")
permit (principal in Role::"team_admin", action == Action::"analytics.view_team", resource)
when { principal in resource };

@id("role.team_admin.analytics.drill_down")
permit (principal in Role::"team_admin", action == Action::"analytics.view_person", resource)
when {
  context.drill_down &&
  principal has team && resource has team && principal.team == resource.team
};

// -- platform admin: the whole org --------------------------------------------------
@id("role.platform_admin.org")
permit (
  principal in Role::"platform_admin",
  action in [
    Action::"agent.create", Action::"agent.update", Action::"run.start",
    Action::"run.read", Action::"run.cancel", Action::"approval.grant",
    Action::"analytics.view_team", Action::"policy.manage", Action::"credential.manage"
  ],
  resource
);

@id("role.platform_admin.analytics.drill_down")
permit (principal in Role::"platform_admin", action == Action::"analytics.view_person", resource)
when { context.drill_down };

// -- usage, cost and analytics settings for the whole org ---------------------------
// Usage reports, series and cost per outcome: the org tier is ``analytics.view_org``;
// below it a team admin's team (``analytics.view_team``), then one's own numbers.
@id("role.auditor.analytics.org")
permit (principal in Role::"auditor", action == Action::"analytics.view_org", resource);

@id("role.platform_admin.analytics.org")
permit (
  principal in Role::"platform_admin",
  action in [Action::"analytics.view_org", Action::"analytics.manage", Action::"usage.reprice"],
  resource
);

// -- budgets and rate limits: about the org, a team, a person or an agent ------------
// Everyone reads the org's budgets and the ones that apply to them.
@id("role.employee.budget.read")
permit (principal in Role::"employee", action == Action::"budget.read", resource)
when {
  resource is Org ||
  (resource is Team && principal in resource) ||
  resource == principal ||
  (resource is Agent && resource.owner == principal)
};

// A team admin: their team, its people and its agents (never the org's).
@id("role.team_admin.budget.team")
permit (
  principal in Role::"team_admin",
  action in [Action::"budget.read", Action::"budget.manage"],
  resource
)
when {
  (resource is Team && principal in resource) ||
  (resource is User && principal has team && resource has team &&
    principal.team == resource.team) ||
  (resource is Agent && principal has team && resource has team &&
    principal.team == resource.team)
};

@id("role.auditor.budget.read")
permit (principal in Role::"auditor", action == Action::"budget.read", resource);

@id("role.platform_admin.budget")
permit (
  principal in Role::"platform_admin",
  action in [Action::"budget.read", Action::"budget.manage"],
  resource
);

// -- audit log and metrics: bodies for auditors; hashes, retention, metrics for admins --
@id("role.auditor.audit")
permit (
  principal in Role::"auditor",
  action in [Action::"audit.read", Action::"audit.verify", Action::"metrics.read"],
  resource
);

@id("role.platform_admin.audit")
permit (
  principal in Role::"platform_admin",
  action in [Action::"audit.verify", Action::"audit.redact", Action::"metrics.read"],
  resource
);

// -- integrity findings: reviewers, and the person concerned -------------------------
@id("role.employee.integrity.own")
permit (principal in Role::"employee", action == Action::"integrity.read", resource)
when { resource == principal };

@id("role.auditor.integrity")
permit (
  principal in Role::"auditor",
  action in [Action::"integrity.read", Action::"integrity.review"],
  resource
);

@id("role.platform_admin.integrity")
permit (
  principal in Role::"platform_admin",
  action in [Action::"integrity.read", Action::"integrity.review"],
  resource
);

@id("integrity.no-self-review")
forbid (principal, action == Action::"integrity.review", resource)
when { resource == principal };

// -- directory and reference data ---------------------------------------------------
@id("role.employee.price.read")
permit (principal in Role::"employee", action == Action::"price.read", resource);

// Adding an effective-dated price to the org's table changes what every report shows.
@id("role.platform_admin.price.write")
permit (principal in Role::"platform_admin", action == Action::"price.write", resource);

// -- the platform's own messages (approval requests, budget alerts, feedback links) -----
// Sent on a person's delegated credential through the org's chosen channel tool, outside
// any run: allowed, except to anyone outside the org (an org policy may forbid more).
@id("platform.notify")
permit (principal, action == Action::"notify.send", resource);

@id("platform.notify.inside-org")
forbid (principal, action == Action::"notify.send", resource)
when { context.outside_org };

// The org's connectors, their tools and approval states: everyone may read them (agent
// builders pick tools from them) and probe them with their own delegated credential.
// ``connector.manage`` (add, remove, approve) is the platform admin's.
@id("role.employee.connector.read")
permit (
  principal in Role::"employee",
  action in [Action::"connector.read", Action::"connector.test"],
  resource
);

@id("role.team_admin.directory.team")
permit (principal in Role::"team_admin", action == Action::"directory.read", resource)
when { resource is Team && principal in resource };

@id("role.auditor.directory.read")
permit (principal in Role::"auditor", action == Action::"directory.read", resource);

@id("role.platform_admin.directory")
permit (
  principal in Role::"platform_admin",
  action in [Action::"directory.read", Action::"directory.manage", Action::"connector.manage"],
  resource
);

@id("directory.no-self-change")
forbid (principal, action == Action::"directory.manage", resource)
when { resource == principal };

// -- outcomes: re-checks by hand and type weights, for the whole org ---------------
@id("role.platform_admin.outcomes")
permit (
  principal in Role::"platform_admin",
  action in [Action::"outcome.recheck", Action::"outcome.weight"],
  resource
);

// -- one outcome: its owner and the people who received it; org-wide readers --------
// Reading an outcome shows its evidence and who judged it. A team admin reads their
// team's aggregates, never one person's outcome (no drill-down on a single record).
@id("role.employee.outcome.own")
permit (
  principal in Role::"employee",
  action in [Action::"outcome.read", Action::"outcome.feedback"],
  resource
)
when { resource.owner == principal || resource.beneficiaries.contains(principal) };

@id("role.auditor.outcome.read")
permit (principal in Role::"auditor", action == Action::"outcome.read", resource);

@id("role.platform_admin.outcome.read")
permit (principal in Role::"platform_admin", action == Action::"outcome.read", resource);

// -- notifications: one's own; the whole org's outbox for platform admins and auditors --
@id("role.employee.notification.own")
permit (principal in Role::"employee", action == Action::"notification.read", resource)
when { resource == principal };

@id("role.auditor.notification.read")
permit (principal in Role::"auditor", action == Action::"notification.read", resource);

@id("role.platform_admin.notification.read")
permit (principal in Role::"platform_admin", action == Action::"notification.read", resource);

// Approval gates for agents (a write after untrusted content, an argument outside a
// grant's ``after_untrusted`` patterns) are compiled per tool grant from the agent's
// spec (``policy.compiler``), so a spec can narrow them instead of every write waiting.
"""
