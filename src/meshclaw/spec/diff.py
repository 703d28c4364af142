"""Unified diffs between two spec versions, on their canonical YAML."""

from __future__ import annotations

import difflib


def diff_specs(old_yaml: str, new_yaml: str, old_label: str, new_label: str) -> str:
    lines = difflib.unified_diff(
        old_yaml.splitlines(keepends=True),
        new_yaml.splitlines(keepends=True),
        fromfile=old_label,
        tofile=new_label,
    )
    return "".join(lines)
