"""Imports every module that defines tables, so ``Base.metadata`` is complete.

Alembic's environment and the schema test import this. A package that adds tables
keeps them in its own ``models.py`` (on ``meshclaw.store.models.Base``) and adds one
import line here.
"""

from __future__ import annotations

from meshclaw.accounts import models as account_models
from meshclaw.analytics import models as analytics_models
from meshclaw.audit import models as audit_models
from meshclaw.connectors import models as connector_models
from meshclaw.integrity import models as integrity_models
from meshclaw.metering import models as metering_models
from meshclaw.metering import price_models
from meshclaw.notify import models as notify_models
from meshclaw.outcomes import models as outcome_models
from meshclaw.policy import models as policy_models
from meshclaw.store import models as core_models
from meshclaw.store.models import Base
from meshclaw.triggers import models as trigger_models

__all__ = [
    "Base",
    "account_models",
    "analytics_models",
    "audit_models",
    "connector_models",
    "core_models",
    "integrity_models",
    "metering_models",
    "notify_models",
    "outcome_models",
    "policy_models",
    "price_models",
    "trigger_models",
]
