"""``meshclaw worker`` / ``scheduler`` need a broker; ``meshclaw run --detach`` sends to it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kombu import Connection
from typer.testing import CliRunner, Result

from meshclaw.cli.main import app
from meshclaw.workers.celery_app import EXECUTE_RUN, RUN_QUEUE

Invoke = Callable[..., Result]


@pytest.fixture
def meshclaw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world_store: str | None) -> Invoke:
    monkeypatch.chdir(tmp_path)
    env = {
        "MESHCLAW_HOME": str(tmp_path / "var"),
        "MESHCLAW_EMBEDDED_MODEL_SERVER": "false",
        "MESHCLAW_DATABASE_URL": world_store,
        "MESHCLAW_BROKER_URL": None,
        "MESHCLAW_CONFIG": None,
        "MESHCLAW_TOKEN": None,
    }

    def invoke(*args: str, env_extra: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(app, list(args), env=env | (env_extra or {}))

    return invoke


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_scale_out_processes_refuse_to_start_without_a_broker(
    meshclaw: Invoke, command: str
) -> None:
    result = meshclaw(command)
    assert result.exit_code == 2
    assert "MESHCLAW_BROKER_URL" in result.output


def test_run_detach_sends_the_run_to_the_broker(meshclaw: Invoke, redis_url: str) -> None:
    broker = redis_url.rsplit("/", 1)[0] + "/14"  # a database of the test's own
    with Connection(broker) as conn:
        conn.default_channel.queue_delete(RUN_QUEUE)
    assert meshclaw("demo", "seed").exit_code == 0
    result = meshclaw(
        "run", "daily-notes", "--detach", "--json", env_extra={"MESHCLAW_BROKER_URL": broker}
    )
    assert result.exit_code == 0, result.output
    run_id = result.output.split('"id": "', 1)[1].split('"', 1)[0]
    with Connection(broker) as conn:
        messages = conn.SimpleQueue(RUN_QUEUE)
        message = messages.get(timeout=10)
        message.ack()
        messages.close()
        conn.default_channel.queue_delete(RUN_QUEUE)
    assert message.headers["task"] == EXECUTE_RUN
    assert message.payload[0] == [run_id]


def test_worker_ping_fails_when_no_worker_answers(meshclaw: Invoke, redis_url: str) -> None:
    broker = redis_url.rsplit("/", 1)[0] + "/14"
    result = meshclaw("worker", "--ping", "--json", env_extra={"MESHCLAW_BROKER_URL": broker})
    assert result.exit_code == 1
    assert '"workers": 0' in result.output
