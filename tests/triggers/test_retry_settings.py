"""``triggers.retry_hours``: how long a chat or mail message whose run could not be created
is retried, from the environment or the TOML file; the back-off between tries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from meshclaw.config import Settings
from meshclaw.triggers._deliveries import backoff


def test_retry_hours_from_the_toml_file_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "meshclaw.toml"
    monkeypatch.setenv("MESHCLAW_CONFIG", str(config))
    monkeypatch.delenv("MESHCLAW_TRIGGERS__RETRY_HOURS", raising=False)
    assert Settings().triggers.retry_hours == 24  # the default
    config.write_text("[triggers]\nretry_hours = 6\n")
    assert Settings().triggers.retry_hours == 6
    monkeypatch.setenv("MESHCLAW_TRIGGERS__RETRY_HOURS", "0.5")
    assert Settings().triggers.retry_hours == 0.5
    monkeypatch.setenv("MESHCLAW_TRIGGERS__RETRY_HOURS", "-1")
    with pytest.raises(ValidationError, match="retry_hours"):
        Settings()


def test_retries_back_off_from_a_minute_doubling_to_at_most_an_hour() -> None:
    waits = [backoff(n) for n in range(1, 10)]
    assert [w // timedelta(minutes=1) for w in waits] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff(10_000) == timedelta(hours=1)
