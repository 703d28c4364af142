"""The run trace tells the agent's own tool calls from the platform's reads after them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from meshclaw.runtime.service import StepInfo
from meshclaw.web._trace import trace_step


def _tool_step(call_id: str) -> StepInfo:
    return StepInfo(
        seq=7, kind="tool", name="tickets.get_ticket", status="ok", decision="allow: granted",
        error=None, request={"tool_call_id": call_id, "arguments": {"number": 3}},
        response={"content": "{}"}, cost_usd=Decimal(0),
        started_at=datetime(2026, 11, 27, tzinfo=UTC), ended_at=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("call_id", "label"),
    [
        ("call_abc", "Tool call"),
        ("verify-run_1-tickets.get_ticket", "Outcome verification read"),
        ("recheck-out_1-1", "Durability re-check read"),
    ],
)
def test_each_kind_of_tool_step_is_labelled(call_id: str, label: str) -> None:
    assert trace_step(_tool_step(call_id)).label == label
