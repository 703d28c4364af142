"""The integrity engine: find gaming of usage metrics, with evidence, for a human to review.

``scan_file(path)`` / ``scan_frame(frame)`` run every detector (``detectors``) over an
event format v1 history and return a ``ScanResult``: every person with a combined
score in [0, 1], ``flagged`` at ``ScanConfig.threshold``, and the findings (detector
name and evidence) that contributed. Detectors compare each person with their own
history and their peers (same team and role) using robust statistics; none uses a
fixed token threshold. See ``docs/integrity.md``.
"""

from __future__ import annotations

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
