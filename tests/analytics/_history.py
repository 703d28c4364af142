"""A tiny builder of event format v1 histories for analytics tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
"""A Monday; the week's cut-off is Friday 2026-03-06 17:00 UTC."""


class Org:
    """Append events in order; ``write`` puts them in a JSON Lines file."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.n = 0
        self.owners: dict[str, tuple[str, str]] = {}

    def _base(self, kind: str, user: str, team: str, hours: float) -> dict[str, Any]:
        self.n += 1
        ts = (T0 + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"v": 1, "kind": kind, "id": f"e{self.n}", "ts": ts, "org": "acme",
                "team": team, "user": user}  # fmt: skip

    def run(self, user: str, team: str = "t1", *, hours: float = 0, cost: float = 0.01) -> str:
        run = f"r{self.n + 1}"
        e = self._base("run", user, team, hours)
        e.update(agent="a1", run=run, trigger="manual", ended_at=e["ts"], status="ok")
        self.events.append(e)
        call = self._base("llm_call", user, team, hours)
        call.update(agent="a1", run=run, provider="p", model="m", input_tokens=100,
                    output_tokens=20, cost_usd=cost)  # fmt: skip
        self.events.append(call)
        return run

    def outcome(
        self,
        user: str,
        team: str = "t1",
        *,
        type: str = "ticket_resolved",
        ref: str | None = None,
        beneficiary: str = "bob",
        verified: bool = True,
        value: float | None = None,
        hours: float = 0,
    ) -> str:
        run = self.run(user, team, hours=hours)
        e = self._base("outcome", user, team, hours)
        e.update(agent="a1", run=run, type=type, ref=ref or f"ref-{self.n}",
                 beneficiary=beneficiary, verified=verified)  # fmt: skip
        if value is not None:
            e["value"] = value
        self.events.append(e)
        self.owners[e["id"]] = (user, team)
        return str(e["id"])

    def feedback(self, outcome: str, by: str, verdict: str, *, hours: float = 1) -> str:
        """Feedback carries the outcome owner's ``user`` and ``team`` (the format says so)."""
        user, team = self.owners.get(outcome, ("alice", "t1"))
        e = self._base("feedback", user, team, hours)
        e.update(outcome=outcome, by=by, verdict=verdict)
        self.events.append(e)
        return str(e["id"])

    def write(self, path: Path, *, extra_lines: list[str] | None = None) -> Path:
        lines = [json.dumps(e) for e in self.events] + (extra_lines or [])
        path.write_text("\n".join(lines) + "\n")
        return path
