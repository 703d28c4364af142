"""The agent builder's form: posted fields to a spec and back, errors to fields.

The form has a field for each main part of a spec (name, model, instructions, tools,
budget, outcomes). Nested parts that are rarely edited (model parameters, a tool's
argument constraints, an outcome's verification settings, triggers) are small YAML
fields, so the form can show and save every valid spec without losing anything.

The mapping it builds is validated by ``spec.loader.validate_spec``, the same check as
``meshclaw agent validate``, so the messages are the same; each ``SpecIssue`` path
(``tools[1].scope``) is mapped back to the field the user has to fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from io import StringIO
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from meshclaw.errors import SpecError, SpecIssue
from meshclaw.spec.loader import validate_spec
from meshclaw.spec.models import AgentSpec

MAX_ROWS = 50
"""Tool and outcome rows read from one post; more is not a form a person filled in."""
SPARE_TOOLS = 2
SPARE_OUTCOMES = 1
BUDGET_FIELDS = ("max_steps", "max_tokens_per_run", "max_cost_usd_per_run", "timeout_seconds")
_TOOL_FIELDS = ("name", "scope", "targets", "arguments")
_TOP_FIELDS = ("name", "description", "owner", "team", "instructions", "triggers")
_PATH_PART = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


@dataclass(kw_only=True)
class ToolRow:
    name: str = ""
    scope: str = "read"
    targets: str = ""
    """Comma-separated globs; empty means every target (``*``)."""
    arguments: str = ""
    """Argument constraints as a YAML (or JSON) mapping; empty means none."""


@dataclass(kw_only=True)
class OutcomeRow:
    type: str = ""
    description: str = ""
    verification: str = ""
    """The outcome's other settings (``durability_hours``, ...) as a YAML mapping."""


@dataclass(kw_only=True)
class AgentForm:
    """What the builder shows: every value as the text in its field."""

    name: str = ""
    description: str = ""
    owner: str = ""
    team: str = ""
    provider: str = ""
    model: str = ""
    parameters: str = ""
    instructions: str = ""
    tools: list[ToolRow] = field(default_factory=list)
    budget: dict[str, str] = field(default_factory=lambda: {"max_steps": "20"})
    outcomes: list[OutcomeRow] = field(default_factory=list)
    triggers: str = "- type: manual\n"

    @classmethod
    def blank(cls, owner: str) -> AgentForm:
        budget = {"max_steps": "20", "timeout_seconds": "300"}
        return cls(owner=owner, provider="scripted", budget=budget).with_spare_rows()

    @classmethod
    def from_spec(cls, spec: AgentSpec) -> AgentForm:
        budget = spec.budget.model_dump(mode="json", exclude_none=True)
        return cls(
            name=spec.name,
            description=spec.description,
            owner=spec.owner,
            team=spec.team or "",
            provider=spec.model.provider,
            model=spec.model.model,
            parameters=_yaml_text(spec.model.parameters) if spec.model.parameters else "",
            instructions=spec.instructions,
            tools=[
                ToolRow(
                    name=t.name,
                    scope=t.scope.value,
                    targets=", ".join(t.targets),
                    arguments=json.dumps(t.arguments) if t.arguments is not None else "",
                )
                for t in spec.tools
            ],
            budget={k: str(v) for k, v in budget.items()},
            outcomes=[
                _outcome_row(o.model_dump(mode="json", exclude_none=True)) for o in spec.outcomes
            ],
            triggers=_yaml_text(
                [t.model_dump(mode="json", exclude_none=True) for t in spec.triggers]
            ),
        )

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> AgentForm:
        """The form as posted (browsers send CRLF line ends in textareas)."""

        def get(name: str) -> str:
            return fields.get(name, "").replace("\r\n", "\n")

        return cls(
            name=get("name").strip(),
            description=get("description").strip(),
            owner=get("owner").strip(),
            team=get("team").strip(),
            provider=get("model-provider").strip(),
            model=get("model-model").strip(),
            parameters=get("model-parameters"),
            instructions=get("instructions"),
            tools=[
                ToolRow(
                    name=get(f"tools-{i}-name").strip(),
                    scope=get(f"tools-{i}-scope").strip() or "read",
                    targets=get(f"tools-{i}-targets").strip(),
                    arguments=get(f"tools-{i}-arguments").strip(),
                )
                for i in _row_numbers(fields, "tools", "name")
            ],
            budget={k: get(f"budget-{k}").strip() for k in BUDGET_FIELDS},
            outcomes=[
                OutcomeRow(
                    type=get(f"outcomes-{i}-type").strip(),
                    description=get(f"outcomes-{i}-description").strip(),
                    verification=get(f"outcomes-{i}-verification").strip(),
                )
                for i in _row_numbers(fields, "outcomes", "type")
            ],
            triggers=get("triggers"),
        )

    def with_spare_rows(
        self, tools: int = SPARE_TOOLS, outcomes: int = SPARE_OUTCOMES
    ) -> AgentForm:
        """Blank rows to fill in: the page needs no JavaScript to add a tool."""
        return replace(
            self,
            tools=[*(t for t in self.tools if t.name), *(ToolRow() for _ in range(tools))],
            outcomes=[
                *(o for o in self.outcomes if o.type),
                *(OutcomeRow() for _ in range(outcomes)),
            ],
        )

    def to_spec(self) -> AgentSpec:
        """Validate the form as a spec; ``FormErrors`` says what to fix in which field."""
        problems: list[tuple[str, str]] = []
        doc: dict[str, Any] = {}
        for key in ("name", "description", "owner", "team", "instructions"):
            if getattr(self, key).strip():
                doc[key] = getattr(self, key)
        model: dict[str, Any] = {}
        if self.provider:
            model["provider"] = self.provider
        if self.model:
            model["model"] = self.model
        if self.parameters.strip():
            _put(model, "parameters", self.parameters, "model-parameters", problems)
        doc["model"] = model
        # Rows with an empty name are not part of the spec (that is how one is removed).
        tool_rows = [i for i, t in enumerate(self.tools) if t.name]
        doc["tools"] = [self._tool(i, problems) for i in tool_rows]
        doc["budget"] = {k: v for k, v in self.budget.items() if v}
        outcome_rows = [i for i, o in enumerate(self.outcomes) if o.type]
        doc["outcomes"] = [self._outcome(i, problems) for i in outcome_rows]
        if self.triggers.strip():
            _put(doc, "triggers", self.triggers, "triggers", problems)
        spec: AgentSpec | None = None
        issues: list[SpecIssue] = []
        try:
            spec = validate_spec(doc)
        except SpecError as exc:
            issues = exc.issues
        errors = self.errors_for(issues)
        for name, message in problems:
            errors.add(name, message)
        if spec is None or errors:
            raise errors
        return spec

    def errors_for(self, issues: list[SpecIssue]) -> FormErrors:
        """Spec issues as form errors (list indices in the spec become form rows)."""
        tool_rows = [i for i, t in enumerate(self.tools) if t.name]
        outcome_rows = [i for i, o in enumerate(self.outcomes) if o.type]
        return FormErrors.of(issues, tool_rows, outcome_rows)

    def _tool(self, row: int, problems: list[tuple[str, str]]) -> dict[str, Any]:
        tool = self.tools[row]
        grant: dict[str, Any] = {"name": tool.name, "scope": tool.scope}
        if tool.targets:
            grant["targets"] = [t.strip() for t in tool.targets.split(",") if t.strip()]
        if tool.arguments:
            _put(grant, "arguments", tool.arguments, f"tools-{row}-arguments", problems)
        return grant

    def _outcome(self, row: int, problems: list[tuple[str, str]]) -> dict[str, Any]:
        outcome = self.outcomes[row]
        claim: dict[str, Any] = {}
        name = f"outcomes-{row}-verification"
        if outcome.verification:
            extra: dict[str, Any] = {}
            _put(extra, "settings", outcome.verification, name, problems)
            settings = extra.get("settings", {})
            if not isinstance(settings, dict):
                problems.append((name, "must be a YAML mapping, e.g. durability_hours: 48"))
            elif {"type", "description"} & settings.keys():
                problems.append((name, "set the type and description in their own fields"))
            else:
                claim.update(settings)
        claim["type"] = outcome.type
        if outcome.description:
            claim["description"] = outcome.description
        return claim


class FormErrors(Exception):
    """Validation problems by field name; ``general`` for those no field stands for."""

    def __init__(self) -> None:
        super().__init__("the agent form has errors")
        self.fields: dict[str, list[str]] = {}
        self.general: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.fields or self.general)

    def add(self, name: str | None, message: str) -> None:
        if name is None:
            self.general.append(message)
        else:
            self.fields.setdefault(name, []).append(message)

    @classmethod
    def of(
        cls, issues: list[SpecIssue], tool_rows: list[int], outcome_rows: list[int]
    ) -> FormErrors:
        """Errors from spec issues; ``*_rows`` map a list index in the spec to a form row."""
        errors = cls()
        for issue in issues:
            name = field_for(issue.path, tool_rows, outcome_rows)
            message = issue.message if name else str(issue)
            errors.add(name, message)
        return errors

    def count(self) -> int:
        return len(self.general) + sum(len(v) for v in self.fields.values())


def field_for(path: str, tool_rows: list[int], outcome_rows: list[int]) -> str | None:
    """The form field that holds the spec value at ``path`` (e.g. ``tools[1].scope``)."""
    parts: list[str | int] = [
        int(index) if index else key for index, key in _PATH_PART.findall(path)
    ]
    if not parts:
        return None
    head, rest = parts[0], [*parts[1:], None, None]
    if head in _TOP_FIELDS:
        return str(head)
    if head == "model":
        return f"model-{rest[0] if rest[0] in ('model', 'parameters') else 'provider'}"
    if head == "budget":
        return f"budget-{rest[0]}" if rest[0] in BUDGET_FIELDS else "budget"
    if head in ("tools", "outcomes"):
        rows = tool_rows if head == "tools" else outcome_rows
        index, sub = rest[0], rest[1]
        if not isinstance(index, int) or index >= len(rows):
            return str(head)
        if head == "tools":
            return f"tools-{rows[index]}-{sub if sub in _TOOL_FIELDS else 'name'}"
        if sub in ("type", "description"):
            return f"outcomes-{rows[index]}-{sub}"
        return f"outcomes-{rows[index]}-{'verification' if sub else 'type'}"
    return None


def field_label(name: str) -> str:
    """How the error summary names a field: ``tools-0-scope`` is "Tool 1 scope"."""
    row = re.match(r"^(tools|outcomes)-(\d+)-(\w+)$", name)
    if row:
        group, index, sub = row.groups()
        return f"{group[:-1].capitalize()} {int(index) + 1} {sub.replace('_', ' ')}"
    return name.replace("-", " ").replace("_", " ").capitalize()


def _row_numbers(fields: dict[str, str], group: str, key: str) -> list[int]:
    pattern = re.compile(rf"^{group}-(\d{{1,3}})-{key}$")
    numbers = {int(m.group(1)) for name in fields if (m := pattern.match(name))}
    return sorted(numbers)[:MAX_ROWS]


def _put(
    target: dict[str, Any], key: str, text: str, name: str, problems: list[tuple[str, str]]
) -> None:
    """Set ``target[key]`` from a YAML field; a syntax error is reported like the CLI's."""
    try:
        value = YAML(typ="safe", pure=True).load(StringIO(text))
    except YAMLError as exc:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problems.append((name, f"YAML: {problem}{where}"))
        return
    target[key] = value


def _yaml_text(value: Any) -> str:
    out = StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(value, out)
    return out.getvalue()


def _outcome_row(data: dict[str, Any]) -> OutcomeRow:
    extra = {k: v for k, v in data.items() if k not in ("type", "description") and v != []}
    return OutcomeRow(
        type=data["type"],
        description=data.get("description") or "",
        verification=json.dumps(extra) if extra else "",
    )
