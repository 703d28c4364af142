"""Scripted model server: the OpenAI-compatible stand-in for a real LLM.

It is the only model MeshClaw's tests and demo use: a real HTTP server on loopback
that replays a YAML/JSON script of turns (see ``script``), reports deterministic token
usage (see ``tokens``) and can inject rate limits, server errors and malformed replies.
"""

from __future__ import annotations

from meshclaw.providers.scripted.script import Script, ScriptedTurn, load_script
from meshclaw.providers.scripted.server import ScriptedServer, create_app
from meshclaw.providers.scripted.tokens import count_tokens

__all__ = [
    "Script",
    "ScriptedServer",
    "ScriptedTurn",
    "count_tokens",
    "create_app",
    "load_script",
]
