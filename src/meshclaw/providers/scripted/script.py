"""The script file the scripted model server replays, and its loader.

A script is YAML or JSON. Every field is optional except ``turns`` (or ``by_model``,
below) and each turn's ``reply``; unknown keys are rejected so a typo fails loudly
instead of being ignored.

.. code-block:: yaml

    models: [scripted-small, scripted-large]  # listed by GET /v1/models; default [scripted]
    mode: sequence          # or: match
    api_key: null           # if set, requests must send "Authorization: Bearer <key>"
    strict_tools: true      # false: also send calls to tools the request does not offer
    turns:
      - reply:
          content: "Let me check the time."
          tool_calls:
            - name: clock.now            # resolved against the request's tools, see below
              arguments: {tz: UTC}       # a mapping is sent as JSON; a string is sent as-is
          reasoning_tokens: 0            # added to completion_tokens and reported in details
          cached_tokens: 0               # reported in prompt_tokens_details (<= prompt tokens)
          finish_reason: null            # default: "tool_calls" with tool calls, else "stop"
        delay_ms: 0                      # wait before replying; streamed replies spread it
        errors_before:                   # the first N requests reaching this turn get these
          - {status: 429, message: "rate limited", retry_after: 0}
          - {status: 500}
          - {malformed: true}            # HTTP 200 whose body is not a valid completion
      - match: {last_user: "(?i)deploy"}  # match mode only; or {last_tool: REGEX} or {any: true}
        reply: {content: "Done."}

**Sequence mode** is stateless per conversation: a request is answered with
``turns[k]`` where ``k`` is the number of ``assistant`` messages already in it, so
concurrent conversations stay deterministic. **Match mode** answers with the first turn
whose matcher fits the conversation's last message: a ``user`` message is tested against
``last_user`` regexes, a ``tool`` message against ``last_tool`` regexes (both with
``re.search``), and ``{any: true}`` fits every message.

Scripted tool names use MeshClaw's ``connector.tool`` form; the server also accepts the
wire form (``.`` encoded as ``__``), whichever the request offers. ``strict_tools:
false`` sends a call to a tool the request does not offer anyway (in the wire form), as
a model that makes a tool name up would.

**Per-model turns** (``by_model``): one server can hold many different conversations.
A request whose ``model`` is a key of ``by_model`` is answered from that key's own
turns (with the script's ``mode``), any other request from ``turns``:

.. code-block:: yaml

    by_model:
      agent-a: [{reply: {content: "I am A."}}]
      agent-b:
        - reply: {tool_calls: [{name: clock.now}]}
        - reply: {content: "B is done."}
"""

from __future__ import annotations

import json
import os
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from meshclaw.errors import ConfigError, SpecIssue

__all__ = [
    "ErrorSpec",
    "Match",
    "Reply",
    "Script",
    "ScriptedToolCall",
    "ScriptedTurn",
    "load_script",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScriptedToolCall(_Model):
    """One tool call the scripted model makes."""

    name: str = Field(min_length=1)
    """MeshClaw tool name (``connector.tool``) or its wire form (``connector__tool``)."""
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    """A mapping is serialised to JSON; a string is sent verbatim (to script bad JSON)."""

    def arguments_json(self) -> str:
        """The ``function.arguments`` string as it goes on the wire."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)


class Reply(_Model):
    """What the model answers once a turn is reached and its errors are used up."""

    content: str | None = None
    tool_calls: list[ScriptedToolCall] = Field(default_factory=list)
    reasoning_tokens: int = Field(default=0, ge=0)
    """Hidden reasoning; added to ``completion_tokens`` and reported in its details."""
    cached_tokens: int = Field(default=0, ge=0)
    """Reported as ``prompt_tokens_details.cached_tokens``; must not exceed prompt tokens."""
    finish_reason: FinishReason | None = None
    """``None`` means ``tool_calls`` when there are tool calls, else ``stop``."""

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if self.content is None and not self.tool_calls:
            raise ValueError("a reply needs content or tool_calls (use content: '' for silence)")
        return self

    def effective_finish_reason(self) -> FinishReason:
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"


class ErrorSpec(_Model):
    """A failure served instead of the reply: an HTTP error or a malformed 200."""

    status: int | None = Field(default=None, ge=400, le=599)
    message: str | None = None
    """Defaults to the HTTP reason phrase."""
    type: str | None = None
    """OpenAI error ``type``; defaults by status (e.g. ``server_error`` for 5xx)."""
    code: str | None = None
    retry_after: float | None = Field(default=None, ge=0)
    """Seconds; sent as ``Retry-After`` (and ``retry-after-ms``) headers."""
    malformed: bool = False
    """Answer HTTP 200 with a body that is not a valid completion."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.malformed and self.status is not None:
            raise ValueError("give either status or malformed: true, not both")
        if not self.malformed and self.status is None:
            raise ValueError("give status (400-599) or malformed: true")
        if self.status is not None:
            try:
                HTTPStatus(self.status)
            except ValueError:
                raise ValueError(f"{self.status} is not a known HTTP status") from None
        return self


class Match(_Model):
    """Which conversations a match-mode turn answers; set exactly one field."""

    last_user: str | None = None
    """Regex searched in the text of the last message when it is a user message."""
    last_tool: str | None = None
    """Regex searched in the content of the last message when it is a tool message."""
    any: bool = False
    """Fits every conversation; useful as a final fallback turn."""

    @field_validator("last_user", "last_tool")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [self.last_user is not None, self.last_tool is not None, self.any]
        if sum(given) != 1:
            raise ValueError("set exactly one of last_user, last_tool, any: true")
        return self

    def fits(self, role: str, text: str) -> bool:
        """Whether a conversation whose last message has ``role`` and ``text`` fits."""
        if self.any:
            return True
        if role == "user" and self.last_user is not None:
            return re.search(self.last_user, text) is not None
        if role == "tool" and self.last_tool is not None:
            return re.search(self.last_tool, text) is not None
        return False


class ScriptedTurn(_Model):
    """One model answer, optionally preceded by scripted failures."""

    reply: Reply
    match: Match | None = None
    """Required in match mode, forbidden in sequence mode."""
    delay_ms: int = Field(default=0, ge=0)
    """Wait before the reply (not before errors); streamed replies spread it over chunks."""
    errors_before: list[ErrorSpec] = Field(default_factory=list)
    """Served, in order, to the first requests reaching this turn (per server instance)."""


class Script(_Model):
    """A whole script: which models to list, how to pick turns, and the turns."""

    models: list[str] = Field(default_factory=lambda: ["scripted"], min_length=1)
    """Listed by ``GET /v1/models`` (with the ``by_model`` names); requests may name any
    model, listed or not."""
    mode: Literal["sequence", "match"] = "sequence"
    api_key: SecretStr | None = None
    """When set, requests must send ``Authorization: Bearer <key>`` or get 401."""
    strict_tools: bool = True
    """``False``: a scripted call to a tool the request does not offer is sent anyway
    (in the wire form) instead of answering 400 ``tool_not_offered``."""
    turns: list[ScriptedTurn] = Field(default_factory=list)
    """For requests whose model has no ``by_model`` entry; required without ``by_model``."""
    by_model: dict[str, list[ScriptedTurn]] = Field(default_factory=dict)
    """Model name -> that model's own turns: one server, many different conversations."""

    @model_validator(mode="after")
    def _matchers_fit_mode(self) -> Self:
        # Raised as a ValidationError so each problem carries its own turns[i].match path.
        errors: list[InitErrorDetails] = []
        if not self.turns and not self.by_model:
            errors.append(
                {
                    "type": PydanticCustomError("script_empty", "give turns, by_model or both"),
                    "loc": ("turns",),
                    "input": self.turns,
                }
            )
        lists: list[tuple[tuple[str, ...], list[ScriptedTurn]]] = [(("turns",), self.turns)]
        lists += [(("by_model", name), turns) for name, turns in self.by_model.items()]
        for loc, turns in lists:
            if loc[0] == "by_model" and not turns:
                message = "a model's turns need at least 1 turn"
                errors.append(
                    {
                        "type": PydanticCustomError("script_empty", message),
                        "loc": loc,
                        "input": turns,
                    }
                )
            for index, turn in enumerate(turns):
                if self.mode == "match" and turn.match is None:
                    message = "every turn needs match: in match mode"
                elif self.mode == "sequence" and turn.match is not None:
                    message = "match: is only allowed with mode: match"
                else:
                    continue
                errors.append(
                    {
                        "type": PydanticCustomError("script_mode", message),
                        "loc": (*loc, index, "match"),
                        "input": turn.match,
                    }
                )
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def turns_for(self, model: str) -> list[ScriptedTurn]:
        """The turns that answer requests naming ``model``."""
        return self.by_model.get(model, self.turns)

    def listed_models(self) -> list[str]:
        """What ``GET /v1/models`` lists: ``models``, then the ``by_model`` names."""
        return [*self.models, *(m for m in self.by_model if m not in self.models)]


def _path_of(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _issues(exc: ValidationError) -> list[SpecIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        issues.append(SpecIssue(path=_path_of(tuple(error["loc"])), message=message))
    return issues


def _read(path_or_text: str | os.PathLike[str]) -> tuple[str, str | None]:
    """Return ``(text, source name)``; see ``load_script`` for how the two are told apart."""
    if isinstance(path_or_text, str):
        stripped = path_or_text.strip()
        if "\n" in stripped or stripped.startswith(("{", "[")) or not stripped:
            return path_or_text, None
    path = Path(path_or_text)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise ConfigError(f"cannot read model script {path}: {exc.strerror or exc}") from exc


def _parse(text: str, source: str | None) -> object:
    head = f"{source}: " if source else ""
    if text.lstrip().startswith(("{", "[")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{head}model script is not valid JSON: {exc}") from exc
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ConfigError(f"{head}model script is not valid YAML: {exc}") from exc


def load_script(path_or_text: str | os.PathLike[str]) -> Script:
    """Load and validate a script from a file path or from YAML/JSON text.

    A ``PathLike`` is always a file. A ``str`` is treated as text when it spans several
    lines or starts with ``{`` or ``[`` (one-line JSON), otherwise as a file path.
    Raises ``ConfigError`` naming each bad field's path (e.g. ``turns[0].reply.content``).
    """
    text, source = _read(path_or_text)
    data = _parse(text, source)
    head = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{head}model script must be a mapping, got {type(data).__name__}")
    try:
        return Script.model_validate(data)
    except ValidationError as exc:
        issues = _issues(exc)
        lines = "\n".join(f"  {issue}" for issue in issues)
        raise ConfigError(
            f"{head}invalid model script ({len(issues)} problem(s)):\n{lines}"
        ) from None
