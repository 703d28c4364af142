"""Protocol-level fakes of vendor model APIs, served over real HTTP on loopback.

Each fake speaks one vendor's wire format (paths, JSON shapes, streaming framing,
error bodies) as published in its API reference, and replays a list of ``FakeTurn``\\ s,
so MeshClaw's providers are exercised through the vendors' own SDKs with nothing
mocked. Layers: ``_turns`` (what to answer, shared) → ``anthropic`` / ``bedrock`` (the
vendor's wire) → ``_server`` (uvicorn on a background thread, OS-assigned port).

- ``FakeAnthropic``: ``POST /v1/messages`` (plain JSON, or server-sent events with
  ``stream: true``), usage in ``message_start`` / ``message_delta``.
- ``FakeBedrock``: ``POST /model/{modelId}/converse`` and ``/converse-stream``
  (``application/vnd.amazon.eventstream`` binary frames), usage in ``metadata``.
"""

from __future__ import annotations

from meshclaw.providers.fakes._server import FakeServer
from meshclaw.providers.fakes._turns import FakeCall, FakeError, FakeTurn, FakeUsage
from meshclaw.providers.fakes.anthropic import FakeAnthropic
from meshclaw.providers.fakes.bedrock import FakeBedrock

__all__ = [
    "FakeAnthropic",
    "FakeBedrock",
    "FakeCall",
    "FakeError",
    "FakeServer",
    "FakeTurn",
    "FakeUsage",
]
