"""Deciding what the scripted model answers: the HTTP-free core of the server.

``Replayer`` turns a chat request body into an ``Answer``, a ``Failure`` (an HTTP error
in OpenAI's shape) or ``Malformed``. It owns the only mutable state of a server — the
``errors_before`` counters and the log of received requests — behind one lock, because
tests read it from another thread while the server thread writes it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshclaw.providers.scripted.script import ErrorSpec, Script, ScriptedTurn
from meshclaw.providers.scripted.tokens import completion_tokens, prompt_tokens

__all__ = ["MALFORMED", "Answer", "Failure", "Malformed", "Replayer", "ToolCall", "Usage"]


@dataclass(frozen=True, kw_only=True)
class Failure:
    """An HTTP error answered with OpenAI's error body."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Malformed:
    """Answer HTTP 200 with a body that is not a valid completion."""


MALFORMED: Final = Malformed()


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A tool call as it goes on the wire."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, kw_only=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, kw_only=True)
class Answer:
    """A successful reply, ready to be rendered as a completion or a stream."""

    turn_index: int
    turn: ScriptedTurn
    content: str | None
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage


class _Loose(BaseModel):
    # Clients send many fields the server ignores; only the shape it reads is checked.
    model_config = ConfigDict(extra="allow")


class _Message(_Loose):
    role: str
    content: str | list[dict[str, Any]] | None = None


class _Function(_Loose):
    name: str


class _Tool(_Loose):
    function: _Function | None = None
    """Absent for non-function tools, which scripted tool calls can never resolve to."""


class _ChatRequest(_Loose):
    model: str
    messages: list[_Message] = Field(min_length=1)
    tools: list[_Tool] | None = None


_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


def _invalid(message: str, code: str, param: str | None = None) -> Failure:
    return Failure(
        status=400, message=message, type="invalid_request_error", code=code, param=param
    )


def _scripted_failure(spec: ErrorSpec) -> Failure | Malformed:
    if spec.malformed or spec.status is None:
        return MALFORMED
    status = spec.status
    headers: dict[str, str] = {}
    if spec.retry_after is not None:
        seconds = spec.retry_after
        headers["retry-after"] = str(int(seconds)) if seconds.is_integer() else str(seconds)
        headers["retry-after-ms"] = str(round(seconds * 1000))
    default_type = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "api_error")
    return Failure(
        status=status,
        message=spec.message or HTTPStatus(status).phrase,
        type=spec.type or default_type,
        code=spec.code or ("rate_limit_exceeded" if status == 429 else None),
        headers=headers,
    )


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    return content or ""


def _param(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


class Replayer:
    """Answers chat requests from a ``Script``; safe to share between threads."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self._lock = threading.Condition()
        self._requests: list[dict[str, Any]] = []
        self._hits: dict[tuple[str | None, int], int] = {}
        self._served = 0

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of every chat request body received, oldest first."""
        with self._lock:
            return list(self._requests)

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(body)
            self._lock.notify_all()

    def wait_for_requests(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """Block until ``count`` requests were received; ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"waited {timeout}s for {count} request(s), got {len(self._requests)}"
                    )
                self._lock.wait(left)
            return list(self._requests)

    def reset(self) -> None:
        """Forget received requests and rewind every ``errors_before`` counter."""
        with self._lock:
            self._requests.clear()
            self._hits.clear()
            self._served = 0

    def next_completion_id(self) -> str:
        with self._lock:
            self._served += 1
            return f"chatcmpl-scripted-{self._served}"

    def answer(self, body: dict[str, Any]) -> Answer | Failure | Malformed:
        """Pick the turn for ``body`` and produce what the server should send."""
        try:
            request = _ChatRequest.model_validate(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            param = _param(tuple(first["loc"]))
            return _invalid(f"invalid request at '{param}': {first['msg']}", "invalid_value", param)
        picked = self._pick(request)
        if isinstance(picked, Failure):
            return picked
        index, turn = picked
        key = (request.model if request.model in self.script.by_model else None, index)
        with self._lock:
            hits = self._hits.get(key, 0)
            self._hits[key] = hits + 1
        if hits < len(turn.errors_before):
            return _scripted_failure(turn.errors_before[hits])
        return self._reply(index, turn, request, body)

    def _pick(self, request: _ChatRequest) -> tuple[int, ScriptedTurn] | Failure:
        turns = self.script.turns_for(request.model)
        if not turns:
            return Failure(
                status=404,
                message=f"the script has no turns for model {request.model!r} "
                f"(by_model has {len(self.script.by_model)} model(s), turns is empty)",
                type="invalid_request_error",
                code="model_not_found",
                param="model",
            )
        if self.script.mode == "sequence":
            index = sum(1 for m in request.messages if m.role == "assistant")
            if index >= len(turns):
                return _invalid(
                    f"script exhausted: the conversation has {index} assistant message(s) "
                    f"but the script has only {len(turns)} turn(s)",
                    "script_exhausted",
                )
            return index, turns[index]
        last = request.messages[-1]
        text = _text(last.content)
        for index, turn in enumerate(turns):
            if turn.match is not None and turn.match.fits(last.role, text):
                return index, turn
        return _invalid(
            f"no scripted turn matches the last message (role {last.role!r}): {text[:200]!r}",
            "no_matching_turn",
        )

    def _reply(
        self, index: int, turn: ScriptedTurn, request: _ChatRequest, body: dict[str, Any]
    ) -> Answer | Failure:
        offered = [tool.function.name for tool in request.tools or [] if tool.function]
        calls: list[ToolCall] = []
        for i, scripted in enumerate(turn.reply.tool_calls):
            wire = scripted.name.replace(".", "__")
            name = scripted.name if scripted.name in offered else wire
            if name not in offered and not self.script.strict_tools:
                name = wire  # a made-up tool, as a model may send one
            elif name not in offered:
                return _invalid(
                    f"turn {index} calls tool {scripted.name!r} but the request offers "
                    f"{sorted(offered) or 'no tools'}",
                    "tool_not_offered",
                    "tools",
                )
            calls.append(
                ToolCall(id=f"call_{index}_{i}", name=name, arguments=scripted.arguments_json())
            )
        reply = turn.reply
        prompt = prompt_tokens(body)
        if reply.cached_tokens > prompt:
            return _invalid(
                f"turn {index} reports {reply.cached_tokens} cached tokens but the prompt has "
                f"only {prompt}",
                "cached_tokens_exceed_prompt",
            )
        completion = completion_tokens(
            reply.content, [(c.name, c.arguments) for c in calls], reply.reasoning_tokens
        )
        return Answer(
            turn_index=index,
            turn=turn,
            content=reply.content,
            tool_calls=calls,
            finish_reason=reply.effective_finish_reason(),
            usage=Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                cached_tokens=reply.cached_tokens,
                reasoning_tokens=reply.reasoning_tokens,
            ),
        )
