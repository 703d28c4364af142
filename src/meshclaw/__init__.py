"""MeshClaw: workplace AI agents measured by verified outcomes, not tokens."""

__version__ = "0.1.0"
