"""Load agent specs from YAML with every problem reported by field path and line.

ruamel.yaml keeps the line of every key and list item, so a Pydantic error location
such as ``('tools', 1, 'scope')`` can be pointed at the line the user has to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from io import StringIO
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from meshclaw.errors import SpecError, SpecIssue
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
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return str(node) if not isinstance(node, str) else str(node)


def _locate(doc: Any, loc: tuple[int | str, ...]) -> tuple[str, int | None]:
    """Turn a Pydantic error location into (``a.b[2].c``, 1-based line)."""
    node: Any = doc
    line: int | None = 1
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


def parse_spec(text: str, source: str | None = None) -> AgentSpec:
    """Parse and validate YAML text; raise ``SpecError`` listing every problem."""
    try:
        doc = _yaml().load(StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError([SpecIssue(path="", message=f"YAML: {problem}", line=line)], source) from None
    if not isinstance(doc, Mapping):
        raise SpecError([SpecIssue(path="", message="a spec must be a YAML mapping", line=1)], source)
    return validate_spec(doc, source)


def validate_spec(doc: Mapping[str, Any], source: str | None = None) -> AgentSpec:
    """Validate an already-parsed mapping (YAML nodes keep their line numbers)."""
    try:
        return AgentSpec.model_validate(_plain(doc))
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            path, line = _locate(doc, tuple(err["loc"]))
            message = err["msg"].removeprefix("Value error, ")
            issues.append(SpecIssue(path=path, message=message, line=line))
        raise SpecError(issues, source) from None


def load_spec(path: str | Path) -> AgentSpec:
    """Read a spec file; a missing or unreadable file is a ``SpecError`` too."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([SpecIssue(path="", message=f"cannot read file: {exc}")], str(file)) from None
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
