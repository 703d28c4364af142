"""What a notification listing accepts: kept apart from the service (which needs the
store), so the CLI can name them in its help without importing SQLAlchemy."""

from __future__ import annotations

STATUSES = ("pending", "sent", "failed", "unsent")
"""pending (to send), sent, failed (gave up after retries, or refused by policy), unsent
(no usable channel)."""
MAX_PAGE = 200
