"""The scan: load a history, run every detector, combine findings into one score each.

Combination: a person's score is ``1 - prod(1 - strength)`` over the detectors that
found something about them (each strength is in [0.5, 1]), so one confident finding
already reaches the threshold (``ScanConfig.threshold``, 0.5) and independent findings
reinforce each other. Everyone in the history gets a result, most with score 0.

Each finding's evidence also says which credit it concerns (``"scope"``: the period the
scan saw of the person, or a deadline burst's weeks; ``integrity.scope``), which is what
the boards withhold while it is open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from meshclaw.events import BLOCK_BYTES, ReadReport, map_frames, report_duplicates
from meshclaw.integrity._history import (
    HISTORY_COLUMNS,
    History,
    HistoryBuilder,
    ScanConfig,
    build_history,
    reduce_block,
)
from meshclaw.integrity._stats import Finding
from meshclaw.integrity.detectors import DETECTORS
from meshclaw.integrity.scope import SCOPE, scan_scope


@dataclass(frozen=True, kw_only=True)
class UserResult:
    user: str
    flagged: bool
    score: float
    """Combined score in [0, 1]."""
    findings: list[Finding]


@dataclass(kw_only=True)
class ScanResult:
    users: list[UserResult]
    """Everyone in the history, highest score first."""
    report: ReadReport
    threshold: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Exactly ``{"users": [{"user", "flagged", "score", "findings": [...]}]}``."""
        return {
            "users": [
                {
                    "user": u.user,
                    "flagged": u.flagged,
                    "score": u.score,
                    "findings": [
                        {"detector": f.detector, "evidence": f.evidence} for f in u.findings
                    ],
                }
                for u in self.users
            ]
        }

    @property
    def flagged(self) -> list[str]:
        return [u.user for u in self.users if u.flagged]


Step = Callable[[str], None]


def combine(findings: list[Finding]) -> float:
    keep = 1.0
    for f in findings:
        keep *= 1.0 - max(0.0, min(1.0, f.strength))
    return round(1.0 - keep, 4)


def scan_frame(
    frame: pl.DataFrame,
    *,
    config: ScanConfig | None = None,
    report: ReadReport | None = None,
    step: Step | None = None,
) -> ScanResult:
    """Run every detector over a ``load_frame`` result."""
    config = config or ScanConfig()
    t = time.perf_counter()
    history = build_history(frame, config)
    prepare = time.perf_counter() - t
    result = scan_history(history, report=report, step=step)
    result.timings = {"prepare": prepare, **result.timings}
    return result


def scan_history(
    history: History, *, report: ReadReport | None = None, step: Step | None = None
) -> ScanResult:
    """Run every detector over a prepared ``History`` and combine the findings."""
    config = history.config
    timings: dict[str, float] = {}
    by_user: dict[str, list[Finding]] = {}
    for name, detect in DETECTORS.items():
        if step is not None:
            step(name)
        t = time.perf_counter()
        for finding in detect(history):
            by_user.setdefault(finding.user, []).append(finding)
        timings[name] = time.perf_counter() - t
    results = []
    for user, first, last in history.users.select("user", "first_ts", "last_ts").iter_rows():
        findings = sorted(
            (_scoped(f, first, last) for f in by_user.get(user, [])),
            key=lambda f: (-f.strength, f.detector),
        )
        score = combine(findings)
        results.append(
            UserResult(user=user, flagged=score >= config.threshold, score=score, findings=findings)
        )
    results.sort(key=lambda r: (-r.score, r.user))
    return ScanResult(
        users=results, report=report or ReadReport(), threshold=config.threshold, timings=timings
    )


def _scoped(finding: Finding, first: datetime, last: datetime) -> Finding:
    """The finding with the credit it concerns in its evidence (``integrity.scope``)."""
    scope = scan_scope(finding.detector, finding.evidence, first, last)
    return replace(finding, evidence={**finding.evidence, SCOPE: scope})


def scan_file(
    path: str | Path,
    *,
    config: ScanConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    step: Step | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> ScanResult:
    """Scan ``path`` (event format v1), reading it block by block in bounded memory.

    Only the columns the detectors use are kept, and each block is folded into the
    history on the reading threads (``events.map_frames``).

    Skipped lines (malformed, or repeating an earlier id) are in ``result.report``.
    """
    t = time.perf_counter()
    report = ReadReport()
    builder = HistoryBuilder(config)
    ids: list[pl.DataFrame] = []
    blocks = map_frames(
        path,
        _reduce,
        report=report,
        columns=HISTORY_COLUMNS,
        progress=progress,
        block_bytes=block_bytes,
    )
    for block_ids, parts in blocks:
        ids.append(block_ids)
        builder.add_reduced(parts)
    report_duplicates(pl.concat(ids), report)
    history = builder.finish()
    read = time.perf_counter() - t
    result = scan_history(history, report=report, step=step)
    result.timings = {"load": read, **result.timings}
    return result


def _reduce(block: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    return block.select("id", "line"), reduce_block(block)
