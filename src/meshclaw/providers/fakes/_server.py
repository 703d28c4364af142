"""The provider fakes run on the shared loopback server (``meshclaw._loopback``)."""

from __future__ import annotations

from meshclaw._loopback import LoopbackServer as FakeServer

__all__ = ["FakeServer"]
