"""AgentDojo (the ``agentdojo`` package) replayed through MeshClaw's policy gate, no LLM.

Layers: ``catalog`` says what each suite tool is (read or write, whether its results
come from outside, which arguments steer it); ``server`` serves a suite's tools as a
real MCP server (stdio, the official ``mcp`` SDK); ``scopes`` writes a least-privilege
agent spec for each user task from what the task itself involves; ``attacks`` holds the
injected calls; ``replay`` decides every call with ``CedarAuthorizer`` and counts.
"""
