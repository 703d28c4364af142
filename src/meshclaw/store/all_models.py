"""Imports every module that defines tables, so ``Base.metadata`` is complete.

Alembic's environment and the schema test import this. A package that adds tables
keeps them in its own ``models.py`` (on ``meshclaw.store.models.Base``) and adds one
import line here.
"""

from __future__ import annotations

from meshclaw.store import models as core_models
from meshclaw.store.models import Base

__all__ = ["Base", "core_models"]
