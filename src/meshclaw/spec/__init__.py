"""Agent specs: models, YAML loading with field-path errors, canonical dumps, diffs."""

from meshclaw.spec.diff import diff_specs
from meshclaw.spec.loader import dump_spec, load_spec, parse_spec, validate_spec
from meshclaw.spec.models import AgentSpec, Budget, ModelRef, OutcomeClaim, ToolGrant, ToolScope

__all__ = [
    "AgentSpec",
    "Budget",
    "ModelRef",
    "OutcomeClaim",
    "ToolGrant",
    "ToolScope",
    "diff_specs",
    "dump_spec",
    "load_spec",
    "parse_spec",
    "validate_spec",
]
