"""Event format v1: typed models, a streaming reader and writer, and columnar loading.

The whole public surface (see ``../shared/DESIGN.md``, "Event format v1"):

- ``EventReader(source)``: iterate typed events (``Run``, ``LlmCall``, ``ToolCall``,
  ``Outcome``, ``Feedback``) from a JSON Lines file or binary stream, in constant
  memory; ``reader.report`` lists every skipped line with its number and reason.
  ``read_events`` / ``loads`` read everything into a list.
- ``EventWriter`` / ``write_events``: write typed events or wire-form dicts.
- ``load_frame(path, columns=...)``: the whole history as one Polars ``DataFrame``
  (fast, for analytics over millions of events) plus the same ``ReadReport``;
  ``iter_frames`` yields it block by block and ``map_frames`` runs a reduction on each
  block as it is read (memory of one block). ``columns`` projects any of them.
- ``fingerprint`` / ``similarity``: what texts become (``TextPrint``) and how two are
  compared. Texts are dropped after fingerprinting unless ``retain_texts=True``.

``events.simulate`` builds labelled synthetic org histories for tests and benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshclaw.events._fingerprint import fingerprint, similarity
from meshclaw.events._models import (
    KINDS,
    UNDOING_VERDICTS,
    Event,
    Feedback,
    LlmCall,
    Outcome,
    Run,
    TextPrint,
    ToolCall,
)
from meshclaw.events._reader import (
    EventReader,
    EventWriter,
    LineProblem,
    ReadReport,
    event_to_dict,
    loads,
    read_events,
    write_events,
)

if TYPE_CHECKING:
    from meshclaw.events._frame import (
        BLOCK_BYTES,
        FRAME_COLUMNS,
        iter_frames,
        load_frame,
        map_frames,
        report_duplicates,
    )

_COLUMNAR = frozenset(
    ("BLOCK_BYTES", "FRAME_COLUMNS", "iter_frames", "load_frame", "map_frames", "report_duplicates")
)
"""Imported on first use: the columnar reader needs Polars, which the typed reader and
writer (every ingest worker, most CLI commands) do not."""


def __getattr__(name: str) -> Any:
    if name in _COLUMNAR:
        from meshclaw.events import _frame

        return getattr(_frame, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BLOCK_BYTES",
    "FRAME_COLUMNS",
    "KINDS",
    "UNDOING_VERDICTS",
    "Event",
    "EventReader",
    "EventWriter",
    "Feedback",
    "LineProblem",
    "LlmCall",
    "Outcome",
    "ReadReport",
    "Run",
    "TextPrint",
    "ToolCall",
    "event_to_dict",
    "fingerprint",
    "iter_frames",
    "load_frame",
    "loads",
    "map_frames",
    "read_events",
    "report_duplicates",
    "similarity",
    "write_events",
]
