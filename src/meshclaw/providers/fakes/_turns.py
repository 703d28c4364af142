"""What a fake answers: turns picked by conversation position, shared by every vendor."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class FakeCall:
    """A tool call the fake model makes (MeshClaw name; the fake sends the wire name)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class FakeUsage:
    """Usage exactly as the vendor reports it (vendor semantics, not MeshClaw's)."""

    input_tokens: int = 0
    """Uncached input tokens (both vendors exclude cache reads and writes here)."""
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    """Anthropic ``output_tokens_details.thinking_tokens``; Bedrock does not report it."""


@dataclass(frozen=True, kw_only=True)
class FakeError:
    """An HTTP error served instead of the turn's reply."""

    status: int
    message: str = "fake error"


@dataclass(frozen=True, kw_only=True)
class FakeTurn:
    text: str | None = None
    calls: tuple[FakeCall, ...] = ()
    thinking: str | None = None
    usage: FakeUsage | None = field(
        default_factory=lambda: FakeUsage(input_tokens=10, output_tokens=5)
    )
    """``None``: the reply carries no usage at all (the provider must estimate)."""
    errors_before: tuple[FakeError, ...] = ()
    """The first N requests reaching this turn get these errors instead."""


class TurnBook:
    """Picks the turn for a request (turn k answers a conversation with k assistant
    messages, so concurrent conversations stay deterministic) and records requests."""

    def __init__(self, turns: Sequence[FakeTurn]) -> None:
        if not turns:
            raise ValueError("a fake needs at least one turn")
        self.turns = tuple(turns)
        self._lock = threading.Condition()
        self._requests: list[dict[str, Any]] = []
        self._hits: dict[int, int] = {}
        self._served = 0

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"waited {timeout}s for {count} request(s)")
                self._lock.wait(left)
            return list(self._requests)

    def pick(self, body: dict[str, Any]) -> tuple[int, FakeTurn | FakeError]:
        """The turn index and what to answer; records ``body``."""
        messages = body.get("messages") or []
        index = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
        with self._lock:
            self._requests.append(body)
            self._lock.notify_all()
            self._served += 1
            if index >= len(self.turns):
                return index, FakeError(
                    status=400, message=f"fake exhausted: no turn {index} of {len(self.turns)}"
                )
            turn = self.turns[index]
            hits = self._hits.get(index, 0)
            self._hits[index] = hits + 1
        if hits < len(turn.errors_before):
            return index, turn.errors_before[hits]
        return index, turn

    def next_id(self) -> int:
        with self._lock:
            return self._served
