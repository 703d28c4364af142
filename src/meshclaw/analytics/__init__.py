"""Analytics: outcome credit, leaderboards, adoption and cost reports, privacy tiers.

Tokens are a cost, never a credit. The public surface:

- ``load_history(path)``: an event format v1 file as a Polars ``LazyFrame`` (through a
  columnar cache) plus the read report (every skipped line with its number).
- ``compute_credit(events, CreditRules(...))``: every outcome's status (``credited``,
  ``unverified``, ``self``, ``unaccepted``, ``undone``, ``duplicate``) and points; the
  rules and the diminishing-returns formula are in ``analytics._credit``'s docstring.
- ``leaderboard(credit, top=N, by="user"|"team")`` and ``build_report(...)``.
- ``withheld_from_scan`` / ``withheld_from_findings``: the integrity seam; the credit an
  open finding concerns (``integrity.scope``) is shown as pending review.
"""

from __future__ import annotations

from meshclaw.analytics._credit import (
    STATUSES,
    UNDOING,
    Credit,
    CreditRules,
    Cutoff,
    compute_credit,
)
from meshclaw.analytics._integrity import withheld_from_findings, withheld_from_scan
from meshclaw.analytics._leaderboard import Entry, Leaderboard, leaderboard
from meshclaw.analytics._load import (
    History,
    Tables,
    default_cache_dir,
    load_history,
    tables_from_frame,
)
from meshclaw.analytics._report import Report, build_report

__all__ = [
    "STATUSES",
    "UNDOING",
    "Credit",
    "CreditRules",
    "Cutoff",
    "Entry",
    "History",
    "Leaderboard",
    "Report",
    "Tables",
    "build_report",
    "compute_credit",
    "default_cache_dir",
    "leaderboard",
    "load_history",
    "tables_from_frame",
    "withheld_from_findings",
    "withheld_from_scan",
]
