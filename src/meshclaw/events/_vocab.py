"""Word lists and task templates for the org simulator (``events.simulate``)."""

from __future__ import annotations

REPOS = (
    "billing", "checkout", "search", "auth", "ledger", "mobile-app", "web-frontend",
    "data-pipeline", "notifications", "inventory", "reporting", "gateway", "scheduler",
)  # fmt: skip
TOPICS = (
    "rate limiting", "cache invalidation", "retry budgets", "schema migration", "tracing",
    "feature flags", "quarterly planning", "pricing tiers", "onboarding flow", "churn drivers",
    "vector search", "cost attribution", "incident review", "data retention", "accessibility",
    "localisation", "fraud signals", "capacity planning", "sla reporting", "vendor contracts",
)  # fmt: skip
CUSTOMERS = (
    "Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne",
    "Acme Retail", "Tyrell", "Cyberdyne", "Soylent", "Vandelay", "Wonka", "Oscorp",
)  # fmt: skip
ISSUES = (
    "login fails after password reset", "invoice totals are off by one cent",
    "export times out for large accounts", "webhook retries flood the endpoint",
    "search misses recent documents", "mobile push arrives twice", "sso redirect loop",
    "csv import drops unicode names", "dashboard shows stale numbers", "refund stuck pending",
    "api returns 502 under load", "calendar invites lose time zone",
)  # fmt: skip
FILLER = (
    "please", "kindly", "again", "quickly", "carefully", "now", "for me", "in detail",
    "thoroughly", "as before", "one more time", "properly",
)  # fmt: skip
SYNONYMS = {
    "summarise": ("summarize", "recap", "sum up", "give an overview of"),
    "draft": ("write", "prepare", "compose"),
    "check": ("review", "look at", "inspect", "go over"),
    "status": ("progress", "state", "update"),
    "weekly": ("this week's", "the week's"),
    "report": ("summary", "write-up", "overview"),
    "list": ("enumerate", "collect", "gather"),
}
BOILERPLATE = (
    "You are a helpful, thorough and careful assistant. Always think step by step and "
    "double check every answer. Be complete and precise. Consider every angle. "
)
CONTEXT_WORDS = [
    "latency",
    "p99",
    "regression",
    "rollout",
    "canary",
    "shard",
    "replica",
    "quota",
    "tenant",
    "invoice",
    "ledger",
    "payload",
    "schema",
    "index",
    "partition",
    "backfill",
    "cohort",
    "funnel",
    "metric",
    "alert",
    "threshold",
    "budget",
    "forecast",
    "variance",
    "contract",
    "renewal",
    "escalation",
    "runbook",
    "dependency",
    "upgrade",
    "patch",
    "release",
    "branch",
    "pipeline",
    "artifact",
    "coverage",
    "fixture",
    "mock",
    "endpoint",
    "handler",
    "queue",
    "worker",
    "retry",
    "timeout",
    "circuit",
    "breaker",
    "token",
    "session",
    "cookie",
    "header",
    "locale",
    "currency",
    "tax",
    "refund",
    "chargeback",
    "dispute",
    "onboarding",
    "activation",
    "retention",
    "segment",
    "campaign",
    "conversion",
    "experiment",
    "variant",
    "hypothesis",
    "sample",
    "significance",
    "baseline",
    "outlier",
    "anomaly",
    "trend",
    "seasonality",
    "capacity",
    "headroom",
    "utilisation",
    "throughput",
    "backlog",
    "triage",
    "priority",
    "severity",
]

ROLE_TASKS: dict[str, tuple[str, ...]] = {
    "engineer": (
        "fix the failing test in {repo} around {topic}",
        "review pull request #{n} in {repo}",
        "write a migration for the {repo} {topic} tables",
        "investigate the flaky build on {repo} branch release-{n}",
        "draft a design note on {topic} for {repo}",
        "upgrade the {repo} dependencies and open a pull request",
    ),
    "sre": (
        "check alert {n} on {repo} and update the runbook",
        "rotate credentials for {repo} service accounts",
        "plan capacity for {repo} next quarter around {topic}",
        "deploy {repo} release {n} to production",
    ),
    "support": (
        "answer {customer} about ticket SUP-{n}: {issue}",
        "draft a knowledge base article on {issue}",
        "escalate SUP-{n} from {customer} to engineering: {issue}",
    ),
    "sales": (
        "draft a follow-up mail to {customer} about {topic}",
        "schedule a demo with {customer} for the {repo} product",
        "prepare the renewal proposal for {customer}",
    ),
    "researcher": (
        "summarise recent literature on {topic}",
        "compare approaches to {topic} and write findings",
        "analyse experiment {n} results on {topic}",
    ),
    "analyst": (
        "reconcile the {customer} ledger for period {n}",
        "build the variance report on {topic} for month {n}",
        "forecast {topic} for the next quarter",
    ),
    "marketer": (
        "draft a blog post about {topic}",
        "write the campaign brief for {customer} on {topic}",
        "prepare social copy for release {n} of {repo}",
    ),
    "manager": (
        "triage queue item OPS-{n}: {issue}",
        "triage queue item SUP-{n} from {customer}: {issue}",
        "prepare one-on-one notes on {topic}",
        "review the team plan for {topic}",
    ),
}
ROLE_TOOLS: dict[str, tuple[tuple[str, str], ...]] = {
    # (read tool, target prefix) pairs; writes are chosen by outcome type.
    "engineer": (("repo.read", "repo"), ("ci.logs", "build"), ("docs.read", "doc")),
    "sre": (("logs.search", "logs"), ("metrics.query", "dash"), ("repo.read", "repo")),
    "support": (("tickets.get", "ticket"), ("kb.search", "kb"), ("mail.read", "mail:thread")),
    "sales": (("crm.get", "crm"), ("mail.read", "mail:thread"), ("calendar.free", "cal")),
    "researcher": (("docs.read", "doc"), ("papers.fetch", "paper"), ("files.read", "file")),
    "analyst": (("sheets.read", "sheet"), ("db.query", "table"), ("docs.read", "doc")),
    "marketer": (("docs.read", "doc"), ("analytics.get", "report"), ("crm.get", "crm")),
    "manager": (("tickets.get", "ticket"), ("docs.read", "doc"), ("chat.read", "chat")),
}
ROLE_OUTCOMES: dict[str, tuple[str, ...]] = {
    "engineer": ("pr_merged", "pr_merged", "deploy", "doc_published"),
    "sre": ("deploy", "ticket_resolved", "doc_published"),
    "support": ("ticket_resolved", "ticket_resolved", "mail_sent", "doc_published"),
    "sales": ("mail_sent", "meeting_scheduled", "doc_published"),
    "researcher": ("doc_published",),
    "analyst": ("doc_published", "mail_sent"),
    "marketer": ("doc_published", "mail_sent"),
    "manager": ("ticket_triaged", "ticket_triaged", "meeting_scheduled", "doc_published"),
}
OUTCOME_WRITE: dict[str, tuple[str, str]] = {
    "pr_merged": ("repo.merge", "pr"),
    "deploy": ("deploy.release", "deploy"),
    "doc_published": ("docs.publish", "doc"),
    "ticket_resolved": ("tickets.resolve", "ticket"),
    "ticket_triaged": ("tickets.assign", "ticket"),
    "mail_sent": ("mail.send", "mail:thread"),
    "meeting_scheduled": ("calendar.invite", "cal:event"),
}
UNDO_VERDICT = {
    "pr_merged": "reverted",
    "deploy": "rolled_back",
    "ticket_resolved": "reopened",
    "ticket_triaged": "reopened",
    "meeting_scheduled": "cancelled",
    "doc_published": "reverted",
    "mail_sent": "rejected",
}
TEAM_FUNCTIONS: dict[str, tuple[tuple[str, float], ...]] = {
    # function -> (role, weight) for non-manager members
    "platform": (("engineer", 0.7), ("sre", 0.3)),
    "product": (("engineer", 0.8), ("marketer", 0.2)),
    "support": (("support", 1.0),),
    "sales": (("sales", 1.0),),
    "research": (("researcher", 1.0),),
    "finance": (("analyst", 1.0),),
    "growth": (("marketer", 0.6), ("analyst", 0.4)),
}
MODELS = (
    ("openai", "gpt-4.1"), ("openai", "gpt-4.1-mini"), ("anthropic", "claude-sonnet-4"),
    ("bedrock", "llama-3.3-70b"),
)  # fmt: skip
