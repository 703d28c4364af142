"""Connectors by name; the gateway resolves ``connector.tool`` here."""

from __future__ import annotations

from meshclaw.connectors.base import Connector, ToolDefinition
from meshclaw.errors import ConfigError


class ConnectorRegistry:
    def __init__(self, connectors: list[Connector] | None = None) -> None:
        self._connectors: dict[str, Connector] = {}
        self._tools: dict[str, dict[str, ToolDefinition]] = {}
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
        return self._connectors.get(name)

    async def tools(self, connector_name: str) -> dict[str, ToolDefinition]:
        """Tool definitions of a connector, listed once and cached."""
        if connector_name not in self._tools:
            connector = self._connectors.get(connector_name)
            if connector is None:
                return {}
            self._tools[connector_name] = {t.name: t for t in await connector.list_tools()}
        return self._tools[connector_name]
