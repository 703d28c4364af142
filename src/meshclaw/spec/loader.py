"""Load agent specs from YAML with every problem reported by field path and line.

ruamel.yaml keeps the line of every key and list item, so a Pydantic error location
such as ``('tools', 1, 'scope')`` can be pointed at the line the user has to fix.
A validator that checks a whole list can name the offending item by putting a relative
location in its error context as ``at`` (see ``AgentSpec._unique_tools``).

Checks across parts of a valid spec (``spec.checks``: a chat or mail trigger needs a read
grant on its connector) run after the model validates, on new specs only: a stored
version is loaded as it was accepted (``parse_stored_spec``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from io import StringIO
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, StreamMark, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.scalarbool import ScalarBoolean

from meshclaw.errors import SpecError, SpecIssue
from meshclaw.spec.checks import trigger_problems
from meshclaw.spec.models import AgentSpec


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _plain(node: Any) -> Any:
    """Round-trip nodes to plain Python so nothing ruamel-specific reaches Pydantic."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, Sequence) and not isinstance(node, str):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, ScalarBoolean):  # an anchored bool is an int subclass in ruamel
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return str(node)  # str subclasses (quoted scalars), dates, tagged values


def _locate(doc: Any, loc: tuple[int | str, ...]) -> tuple[str, int | None]:
    """Turn a Pydantic error location into (``a.b[2].c``, 1-based line)."""
    node: Any = doc
    # A plain mapping (e.g. JSON from the API) has no lines to point at.
    line: int | None = doc.lc.line + 1 if hasattr(doc, "lc") else None
    path = ""
    for part in loc:
        if isinstance(part, int) and isinstance(node, Sequence) and not isinstance(node, str):
            path += f"[{part}]"
            if 0 <= part < len(node):
                if hasattr(node, "lc"):
                    line = node.lc.item(part)[0] + 1
                node = node[part]
            continue
        key = str(part)
        if isinstance(node, Mapping):
            if key in node:
                if hasattr(node, "lc"):
                    line = node.lc.key(key)[0] + 1
                node = node[key]
            elif node.get("type") == key:
                continue  # a discriminated-union tag, not a field the user wrote
            else:
                path += f".{key}" if path else key
                node = None  # missing: keep the parent's line
                continue
        path += f".{key}" if path else key
    return path, line


def _key_path(node: Node, mark: StreamMark, path: str = "") -> str | None:
    """The field path of the mapping key that starts at ``mark``, if any."""
    if isinstance(node, MappingNode):
        for key, value in node.value:
            name = f"{path}.{key.value}" if path else str(key.value)
            start = key.start_mark
            if (start.line, start.column) == (mark.line, mark.column):
                return name
            found = _key_path(value, mark, name)
            if found is not None:
                return found
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            found = _key_path(item, mark, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _yaml_issue(text: str, exc: MarkedYAMLError) -> SpecIssue:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = exc.problem or exc.context or "invalid YAML"
    path = ""
    if isinstance(exc, DuplicateKeyError) and exc.problem_mark is not None:
        # Composing builds the node tree without the duplicate check, so the
        # duplicate key can be found there by its position.
        root = YAML(typ="rt").compose(StringIO(text))
        path = (_key_path(root, exc.problem_mark) if root is not None else None) or ""
    return SpecIssue(path=path, message=f"YAML: {problem}", line=line)


def parse_spec(text: str, source: str | None = None, *, cross_checks: bool = True) -> AgentSpec:
    """Parse and validate YAML text; raise ``SpecError`` listing every problem.

    ``cross_checks=False`` skips ``spec.checks`` (for versions stored before a check)."""
    try:
        doc = _yaml().load(StringIO(text))
    except MarkedYAMLError as exc:
        raise SpecError([_yaml_issue(text, exc)], source) from None
    except YAMLError as exc:  # e.g. a control character: the reader has no node to mark
        issue = SpecIssue(path="", message=f"YAML: {exc}", line=None)
        raise SpecError([issue], source) from None
    if doc is None:
        raise SpecError([SpecIssue(path="", message="the spec is empty", line=1)], source)
    if not isinstance(doc, Mapping):
        line = doc.lc.line + 1 if hasattr(doc, "lc") else 1
        message = f"a spec must be a YAML mapping, not a {_kind(doc)}"
        raise SpecError([SpecIssue(path="", message=message, line=line)], source)
    return validate_spec(doc, source, cross_checks=cross_checks)


def _kind(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "list"
    return "scalar"


def _message(err: Any) -> str:
    if err["type"] == "union_tag_invalid":
        ctx = err["ctx"]
        return f"unknown type {ctx['tag']!r}; expected one of {ctx['expected_tags']}"
    if err["type"] == "union_tag_not_found":
        return "Field required"
    return str(err["msg"]).removeprefix("Value error, ")


def _location(err: Any) -> tuple[int | str, ...]:
    loc = tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        # Point at the tag (written or missing), not at the whole list item.
        return (*loc, str(ctx.get("discriminator", "type")).strip("'"))
    at = ctx.get("at")
    return (*loc, *at) if isinstance(at, tuple) else loc


def validate_spec(
    doc: Mapping[str, Any], source: str | None = None, *, cross_checks: bool = True
) -> AgentSpec:
    """Validate an already-parsed mapping (YAML nodes keep their line numbers)."""
    try:
        spec = AgentSpec.model_validate(_plain(doc))
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            path, line = _locate(doc, _location(err))
            issues.append(SpecIssue(path=path, message=_message(err), line=line))
        raise SpecError(issues, source) from None
    problems = trigger_problems(spec) if cross_checks else []
    if problems:
        issues = []
        for problem in problems:
            path, line = _locate(doc, ("triggers", problem.index, problem.field))
            issues.append(SpecIssue(path=path, message=problem.message, line=line))
        raise SpecError(issues, source)
    return spec


def load_spec(path: str | Path) -> AgentSpec:
    """Read a spec file; a missing or unreadable file is a ``SpecError`` too."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(
            [SpecIssue(path="", message=f"cannot read file: {exc}")], str(file)
        ) from None
    return parse_spec(text, str(file))


def dump_spec(spec: AgentSpec) -> str:
    """Canonical YAML for storage and diffs: defaults included, keys in model order."""
    data = spec.model_dump(mode="json", exclude_none=True)
    out = StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.dump(data, out)
    return out.getvalue()


@lru_cache(maxsize=1024)
def parse_stored_spec(canonical_yaml: str) -> AgentSpec:
    """A stored spec version, parsed once per process.

    Versions are immutable, so the parsed (frozen) model can be shared; the text itself
    is the cache key. Saves a YAML round-trip parse on every run start. A version is
    loaded as it was accepted: checks added since (``spec.checks``) do not apply.
    """
    return parse_spec(canonical_yaml, cross_checks=False)
