"""The integrity engine: find gaming of usage metrics, with evidence, for a human to review.

``scan_file(path)`` / ``scan_frame(frame)`` run every detector (``detectors``) over an
event format v1 history and return a ``ScanResult``: every person with a combined
score in [0, 1], ``flagged`` at ``ScanConfig.threshold``, and the findings (detector
name and evidence) that contributed. Detectors compare each person with their own
history and their peers (same team and role) using robust statistics; none uses a
fixed token threshold. See ``docs/integrity.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshclaw.integrity._history import History, HistoryBuilder, ScanConfig, build_history
    from meshclaw.integrity._scan import (
        ScanResult,
        UserResult,
        combine,
        scan_file,
        scan_frame,
        scan_history,
    )
    from meshclaw.integrity._stats import Finding, peer_z
    from meshclaw.integrity.detectors import DETECTORS

_WHERE = {
    **dict.fromkeys(("History", "HistoryBuilder", "ScanConfig", "build_history"), "_history"),
    **dict.fromkeys(
        ("ScanResult", "UserResult", "combine", "scan_file", "scan_frame", "scan_history"),
        "_scan",
    ),
    **dict.fromkeys(("Finding", "peer_z"), "_stats"),
    "DETECTORS": "detectors",
}
"""Name -> the submodule that defines it, imported on first use: the scan needs Polars,
while the platform imports this package only to record and review findings."""


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "DETECTORS",
    "Finding",
    "History",
    "HistoryBuilder",
    "ScanConfig",
    "ScanResult",
    "UserResult",
    "build_history",
    "combine",
    "peer_z",
    "scan_file",
    "scan_frame",
    "scan_history",
]
