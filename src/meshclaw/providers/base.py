"""The provider seam: one typed Protocol for every model vendor.

The *message model* here is MeshClaw's own; each provider translates it to its wire
format. Tool names are MeshClaw's ``connector.tool`` everywhere above this layer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from meshclaw.errors import ProviderError

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """A tool as offered to the model."""

    name: str
    """``connector.tool``."""
    description: str
    parameters: dict[str, Any]
    """JSON Schema of the arguments."""


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str = ""
    """The arguments exactly as the model sent them (kept when they are not valid JSON)."""


def parse_tool_arguments(raw: str) -> dict[str, Any]:
    """A streamed or returned arguments string as a dict; ``{}`` if it is not a JSON object.

    The raw text is kept on ``ToolCall.raw_arguments``, so nothing the model sent is lost.
    """
    try:
        value = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def status_error(
    vendor: str,
    status: int | None,
    message: str,
    *,
    retryable_statuses: Collection[int] = (429,),
    code: str | None = None,
    retryable: bool = False,
) -> ProviderError:
    """A vendor's error answer as a ``ProviderError``: "<vendor> answered HTTP <status>:
    <message>" (``code``, e.g. Bedrock's exception name, goes before the status).

    Retryable when ``retryable`` already says so (a vendor's own error code), for any 5xx,
    and for ``retryable_statuses`` (rate limits; Anthropic adds 408). Only the vendor's
    message goes in, never the SDK exception's text, which can carry request headers.
    """
    retryable = retryable or (
        status is not None and (status in retryable_statuses or status >= 500)
    )
    answered = f"{code} (HTTP {status})" if code is not None else f"HTTP {status}"
    return ProviderError(
        f"{vendor} answered {answered}: {message}", status=status, retryable=retryable
    )


@dataclass(frozen=True, kw_only=True)
class Message:
    role: Role
    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    """For ``tool`` messages: which call this answers."""


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Token counts as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    """Input tokens served from the provider's prompt cache (included in input_tokens)."""
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    """Hidden reasoning tokens (included in output_tokens)."""
    estimated: bool = False
    """True when the provider sent no usage and MeshClaw had to estimate."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, kw_only=True)
class ModelRequest:
    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    """Vendor parameters from the spec (temperature, max_tokens, stream, ...)."""


@dataclass(frozen=True, kw_only=True)
class ModelResponse:
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    finish_reason: str | None = None
    model: str | None = None
    response_id: str | None = None

    def as_message(self) -> Message:
        return Message(role="assistant", content=self.content, tool_calls=self.tool_calls)


DeltaCallback = Callable[[str], Awaitable[None]]


class ModelProvider(Protocol):
    """A model vendor. Only ``meshclaw.runtime.gateway`` may call ``complete``."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """One chat completion. Raise ``ProviderError`` (retryable or not) on failure."""
        ...

    async def aclose(self) -> None: ...
