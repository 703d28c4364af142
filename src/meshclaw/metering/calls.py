"""A call as the budget guard sees it before it is made: a fingerprint and an estimate.

The gateway fills a ``PlannedCall`` (``metering.budget``) from these: the fingerprint
feeds the runaway-loop breaker (the N+1st identical call in a run is refused), and the
upper estimate of a model call's cost and tokens is what ``metering.limits`` reserves on
the budgets while the call is in flight.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from meshclaw.metering.prices import PriceTable, to_nano
from meshclaw.providers._estimate import estimate_usage
from meshclaw.providers.base import ModelRequest, ToolCall, Usage

INPUT_RESERVE_FACTOR = 2
DEFAULT_OUTPUT_RESERVE = 4096
"""Output tokens reserved for a call whose spec sets no ``max_tokens``."""


def model_fingerprint(request: ModelRequest) -> str:
    """What the model is asked, cheaply: within one run a conversation only grows, so
    its length and last message identify a request (hashing it all would cost
    milliseconds per call on long contexts)."""
    last = request.messages[-1] if request.messages else None
    body = {
        "model": request.model,
        "length": len(request.messages),
        "last": None
        if last is None
        else [last.role, last.content, [[c.name, c.arguments] for c in last.tool_calls]],
        "tools": sorted(t.name for t in request.tools),
    }
    return _digest("model", body)


def tool_fingerprint(call: ToolCall) -> str:
    return _digest("tool", [call.name, call.arguments])


def _digest(kind: str, body: Any) -> str:
    raw = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    return f"{kind}:{hashlib.sha256(raw.encode()).hexdigest()[:32]}"


def estimate_call(prices: PriceTable, provider: str, request: ModelRequest) -> tuple[int, int]:
    """An upper estimate of a model call's cost (nano-dollars) and tokens, to reserve.

    The offline estimate is about 4 characters per token; tokenisers differ (code, JSON
    and non-Latin text cost more), so the input side is doubled. Output is the spec's
    ``max_tokens``, else ``DEFAULT_OUTPUT_RESERVE``. Over-reserving only delays *other*
    calls near a cap while this one is in flight; under-reserving would let concurrent
    calls overshoot it.
    """
    prompt = INPUT_RESERVE_FACTOR * estimate_usage(request, None, ()).input_tokens
    limit = request.parameters.get("max_tokens")
    output = limit if isinstance(limit, int) and limit > 0 else DEFAULT_OUTPUT_RESERVE
    cost = prices.cost_usd(
        provider, request.model, Usage(input_tokens=prompt, output_tokens=output)
    )
    return (to_nano(cost) if cost is not None else 0), prompt + output
