"""OpenTelemetry GenAI spans and Prometheus metrics for every run, model call and tool call.

``Telemetry`` is fed by the gateway (after each call is metered) and the executor (run
start and end). Spans follow the GenAI semantic conventions: ``invoke_agent`` per run,
``chat`` per model call and ``execute_tool`` per tool call, with ``gen_ai.*`` attributes
plus ``meshclaw.*`` ones for user, team, run status and cost. Metrics are labelled by
org, team and agent, never by user (cardinality and privacy); ``/metrics`` serves a
person only their org's series (``Telemetry.exposition``).
"""

from __future__ import annotations

from meshclaw.telemetry._telemetry import Telemetry, build_telemetry

__all__ = ["Telemetry", "build_telemetry"]
