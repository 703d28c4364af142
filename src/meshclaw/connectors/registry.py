"""Connectors by name; the gateway resolves ``connector.tool`` here.

A registry may outlive many runs (the in-process worker keeps one gateway), so tool
listings are cached only briefly (``ttl_seconds``): long enough to list a connector once
per run, short enough that an approval or a blocked rug pull shows in the next run. A
``resolve`` callable finds connectors added after the registry was built (``meshclaw
connector add`` while the server runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from meshclaw.connectors.base import Connector, ToolDefinition
from meshclaw.errors import ConfigError

Resolve = Callable[[str], Connector | None]


class ConnectorRegistry:
    def __init__(
        self,
        connectors: list[Connector] | None = None,
        *,
        resolve: Resolve | None = None,
        ttl_seconds: float = 5.0,
    ) -> None:
        self._connectors: dict[str, Connector] = {}
        self._tools: dict[str, tuple[float, dict[str, ToolDefinition]]] = {}
        self._resolve = resolve
        self._ttl = ttl_seconds
        for connector in connectors or []:
            self.add(connector)

    def add(self, connector: Connector) -> None:
        if "." in connector.name or "__" in connector.name:
            raise ConfigError(f"connector name {connector.name!r} may not contain '.' or '__'")
        self._connectors[connector.name] = connector
        self._tools.pop(connector.name, None)

    def names(self) -> list[str]:
        return sorted(self._connectors)

    def get(self, name: str) -> Connector | None:
        connector = self._connectors.get(name)
        if connector is None and self._resolve is not None:
            connector = self._resolve(name)
            if connector is not None:
                self.add(connector)
        return connector

    async def tools(self, connector_name: str) -> dict[str, ToolDefinition]:
        """Tool definitions of a connector, listed at most once per ``ttl_seconds``."""
        cached = self._tools.get(connector_name)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        connector = self.get(connector_name)
        if connector is None:
            return {}
        listed = {t.name: t for t in await connector.list_tools()}
        self._tools[connector_name] = (time.monotonic(), listed)
        return listed

    async def aclose(self) -> None:
        """Close connectors that hold connections (MCP sessions, server processes)."""
        self._tools.clear()
        for connector in self._connectors.values():
            close = getattr(connector, "aclose", None)
            if close is not None:
                await close()
