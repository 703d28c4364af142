"""MeshClaw's built-in MCP servers, each a plain MCP server any client can use.

Each module exposes ``build() -> MCPServer`` reading its settings from the environment
(``MESHCLAW_<NAME>_*``; secrets arrive there through a connector's ``credential_env``).
Run one alone with ``meshclaw connector serve NAME`` or ``python -m
meshclaw.connectors.servers NAME`` (stdio), or ``--http PORT`` for streamable HTTP.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from meshclaw.errors import ConfigError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

SERVERS = ("calendar", "chat", "deploy", "docs", "mail", "tickets")
"""Built-in servers by connector name."""


def build_server(name: str) -> MCPServer:
    if name not in SERVERS:
        raise ConfigError(f"no built-in MCP server {name!r}; there are: {', '.join(SERVERS)}")
    from pydantic import ValidationError

    module = importlib.import_module(f"meshclaw.connectors.servers.{name}")
    try:
        server: MCPServer = module.build()
    except ValidationError as exc:
        prefix = f"MESHCLAW_{name.upper()}_"
        problems = ", ".join(
            f"{prefix}{'_'.join(str(p) for p in e['loc']).upper()} ({e['msg'].lower()})"
            for e in exc.errors()
        )
        raise ConfigError(f"the {name} server's settings are incomplete: {problems}") from None
    return server


def serve(name: str, *, http_port: int | None = None, host: str = "127.0.0.1") -> None:
    """Serve over stdio, or over streamable HTTP at ``http://HOST:PORT/mcp``."""
    server = build_server(name)
    if http_port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=http_port)
