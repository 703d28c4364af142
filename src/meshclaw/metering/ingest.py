"""``meshclaw ingest``: usage history from other gateways, mapped onto event format v1.

Two sources:

- **OpenTelemetry GenAI spans** as OTLP JSON (an ``ExportTraceServiceRequest`` document,
  or the collector file exporter's JSON Lines of them). ``chat`` (and other inference)
  spans become ``llm_call`` events, ``execute_tool`` spans ``tool_call`` events and
  ``invoke_agent`` spans ``run`` events. The agent, run, user and team of a span come
  from its own attributes, else from the ``invoke_agent`` span of its trace.
- **LiteLLM spend logs** (the ``LiteLLM_SpendLogs`` table exported as JSON, JSON Lines or
  CSV): each row becomes an ``llm_call`` with LiteLLM's ``spend`` as ``cost_usd``.

Every event is validated against format v1 before it is written through
``meshclaw.events.EventWriter``. A record that cannot be mapped is reported with its
position (line, or path in the document), skipped and counted, never silently dropped.
People are pseudonymised by default (``u_`` + 16 hex digits of SHA-256 of the source id),
so a history can be analysed without carrying the source's user names along.

Big spend-log exports in JSON Lines are mapped a chunk at a time by worker processes
(``_ingest_parallel``), with the same output and report as here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from meshclaw.events import Event, EventWriter
from meshclaw.metering import _ingest_litellm as litellm
from meshclaw.metering._ingest_base import MAX_PROBLEMS, Defaults, IngestReport
from meshclaw.metering._ingest_otel import _otel_events

__all__ = ["MAX_PROBLEMS", "Defaults", "Format", "IngestReport", "ingest"]

Format = Literal["otel", "litellm"]


def ingest(
    source: Path,
    fmt: Format,
    dest: Path,
    defaults: Defaults | None = None,
    *,
    jobs: int | None = None,
) -> IngestReport:
    """Map ``source`` onto event format v1 in ``dest`` (JSON Lines); returns the report.

    ``jobs``: processes mapping a big LiteLLM JSON Lines export (``None``: one per CPU, up
    to 8; ``1``: this process only). The output and the report are the same either way.
    """
    # Imported here: that module builds on this one's mapping functions.
    from meshclaw.metering import _ingest_parallel as parallel

    defaults = defaults or Defaults()
    report = IngestReport()
    jobs = parallel.default_jobs() if jobs is None else jobs
    if fmt == "litellm" and parallel.worth_it(source, jobs):
        parallel.write_parallel(source, dest, defaults, report, jobs=jobs, chunk_size=litellm.CHUNK)
        return report
    events: Iterator[Event | dict[str, Any]] = (
        _otel_events(source, defaults, report)
        if fmt == "otel"
        else litellm._litellm_events(source, defaults, report)
    )
    with EventWriter(dest) as writer:
        for event in events:
            writer.write(event)
        report.events = writer.count
    return report
