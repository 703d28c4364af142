"""Deterministic token counting for the scripted model server.

Real tokenisers are the wrong tool here. ``tiktoken`` downloads its BPE files on first
use, which fails on an offline machine, and any real tokeniser ties test expectations to
one vendor's vocabulary. The scripted server only needs counts that are stable,
documented and cheap to predict, so that metering and budget tests can assert exact
numbers.

The rule, which every function below applies:

* ``count_tokens(text)`` is the number of matches of the Unicode regex
  ``\\w+|[^\\w\\s]`` in ``text``: each run of word characters is one token and each other
  non-space character is one token; whitespace is free. ``"clock.now(UTC)"`` is 6 tokens.
* **Prompt tokens** of a chat request: for each message, 4 (per-message overhead)
  + tokens(role) + tokens(content: a string, or the ``text`` of each text part; other
  parts such as images count 0) + for each ``tool_calls`` entry tokens(function name)
  + tokens(function arguments string) + tokens(``tool_call_id``) + tokens(``name``);
  then, if the request has ``tools``, tokens of
  ``json.dumps(tools, sort_keys=True, ensure_ascii=False)``; then 3 for priming the reply.
* **Completion tokens** of a reply: tokens(content) + for each tool call tokens(name as
  sent on the wire) + tokens(arguments JSON string) + the scripted ``reasoning_tokens``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["completion_tokens", "count_tokens", "prompt_tokens"]

_TOKEN = re.compile(r"\w+|[^\w\s]")
_MESSAGE_OVERHEAD = 4
_REPLY_PRIMING = 3


def count_tokens(text: str | None) -> int:
    """Count tokens in ``text`` by the module rule; ``None`` counts as empty."""
    if not text:
        return 0
    return sum(1 for _ in _TOKEN.finditer(text))


def _content_tokens(content: object) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                text = part.get("text")
                total += count_tokens(text if isinstance(text, str) else None)
        return total
    return 0


def _str_tokens(value: object) -> int:
    return count_tokens(value) if isinstance(value, str) else 0


def _tool_call_tokens(tool_calls: object) -> int:
    if not isinstance(tool_calls, list):
        return 0
    total = 0
    for call in tool_calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            total += _str_tokens(function.get("name")) + _str_tokens(function.get("arguments"))
    return total


def prompt_tokens(request: Mapping[str, Any]) -> int:
    """Prompt tokens of a chat completion request body (the JSON object sent by a client).

    Tolerates malformed entries (they count 0) so it can be called on any recorded body.
    """
    total = _REPLY_PRIMING
    messages = request.get("messages")
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, Mapping):
            continue
        total += _MESSAGE_OVERHEAD
        total += _str_tokens(message.get("role"))
        total += _content_tokens(message.get("content"))
        total += _tool_call_tokens(message.get("tool_calls"))
        total += _str_tokens(message.get("tool_call_id"))
        total += _str_tokens(message.get("name"))
    tools = request.get("tools")
    if tools:
        total += count_tokens(json.dumps(tools, sort_keys=True, ensure_ascii=False))
    return total


def completion_tokens(
    content: str | None,
    tool_calls: Iterable[tuple[str, str]] = (),
    reasoning_tokens: int = 0,
) -> int:
    """Completion tokens of a reply; ``tool_calls`` holds ``(wire name, arguments JSON)``."""
    total = count_tokens(content) + reasoning_tokens
    for name, arguments in tool_calls:
        total += count_tokens(name) + count_tokens(arguments)
    return total
