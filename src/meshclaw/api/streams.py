"""Live streams over server-sent events (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
