"""Connectors by name; the gateway resolves ``connector.tool`` here, for one org.

Two kinds of connector live here. *Shared* ones (the built-ins, or whatever a test hands
the constructor) serve every org. *Org* connectors are found through ``resolve(org_id,
name)``: a run sees only the connectors of its agent's org, so two orgs may each have
a ``mail`` and neither can reach the other's.

A registry may outlive many runs (the in-process worker keeps one gateway), so tool
listings are cached only briefly (``ttl_seconds``): long enough to list a connector once
per run, short enough that an approval, a blocked rug pull, or a connector added,
changed or removed (``meshclaw connector add`` while the server runs) shows in the next
run. Listings are per run owner: an MCP server is listed with the owner's delegated
credential (``ListsToolsAs``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from meshclaw.connectors.base import Connector, ListsToolsAs, ToolDefinition
from meshclaw.errors import ConfigError

Resolve = Callable[[str, str], Connector | None]
"""``(org_id, name)`` -> that org's connector, or None if it has none of that name."""
_Listing = tuple[float, dict[str, ToolDefinition]]


class ConnectorRegistry:
    def __init__(
        self,
        connectors: list[Connector] | None = None,
        *,
        resolve: Resolve | None = None,
        ttl_seconds: float = 5.0,
    ) -> None:
        self._shared: dict[str, Connector] = {}
        self._org: dict[tuple[str, str], Connector] = {}
        self._tools: dict[tuple[str | None, str, str | None], _Listing] = {}
        self._resolve = resolve
        self._ttl = ttl_seconds
        self._retired: list[Connector] = []
        """Org connectors replaced or removed since: closed with the registry, not while
        a run may still be calling them."""
        for connector in connectors or []:
            self.add(connector)

    def add(self, connector: Connector) -> None:
        """A connector every org's runs may use (built-ins, test doubles)."""
        _check(connector.name)
        self._shared[connector.name] = connector
        self._tools = {k: v for k, v in self._tools.items() if k[1] != connector.name}

    def names(self, org_id: str | None = None) -> list[str]:
        """Shared connectors, and those of ``org_id`` resolved so far."""
        own = {name for org, name in self._org if org == org_id}
        return sorted(own | set(self._shared))

    def get(self, name: str, *, org_id: str | None = None) -> Connector | None:
        """The shared connector ``name``, else ``org_id``'s (None outside any org)."""
        shared = self._shared.get(name)
        if shared is not None or org_id is None:
            return shared
        connector = self._org.get((org_id, name))
        if connector is None:
            connector = self._lookup(org_id, name)
        return connector

    async def tools(
        self, connector_name: str, *, org_id: str | None = None, user_id: str | None = None
    ) -> dict[str, ToolDefinition]:
        """Tool definitions of a connector as ``user_id`` sees them, at most once per TTL."""
        key = (org_id, connector_name, user_id)
        cached = self._tools.get(key)
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        connector = self._shared.get(connector_name)
        if connector is None and org_id is not None:
            connector = self._lookup(org_id, connector_name)  # again: it may have changed
        if connector is None:
            self._tools.pop(key, None)
            return {}
        if isinstance(connector, ListsToolsAs):
            listed = await connector.list_tools_as(user_id)
        else:
            listed = await connector.list_tools()
        definitions = {t.name: t for t in listed}
        self._tools[key] = (time.monotonic(), definitions)
        return definitions

    def _lookup(self, org_id: str, name: str) -> Connector | None:
        """Ask ``resolve`` for the org's connector now; keep the one held if unchanged."""
        held = self._org.get((org_id, name))
        found = self._resolve(org_id, name) if self._resolve is not None else None
        if found is not None and held is not None and _same(found, held):
            return held  # keep its open connections
        if held is not None:
            self._retired.append(held)
            del self._org[(org_id, name)]
        if found is not None:
            _check(found.name)
            self._org[(org_id, name)] = found
        return found

    async def aclose(self) -> None:
        """Close connectors that hold connections (MCP sessions, server processes)."""
        self._tools.clear()
        connectors = [*self._shared.values(), *self._org.values(), *self._retired]
        self._retired = []
        for connector in connectors:
            close = getattr(connector, "aclose", None)
            if close is not None:
                await close()


def _check(name: str) -> None:
    if "." in name or "__" in name:
        raise ConfigError(f"connector name {name!r} may not contain '.' or '__'")


def _same(a: Connector, b: Connector) -> bool:
    """Whether two resolutions describe the same server (then the held one stays)."""
    config_a, config_b = getattr(a, "config", None), getattr(b, "config", None)
    return config_a is not None and config_a == config_b
