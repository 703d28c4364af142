"""With a broker configured, new runs go to Celery: ``POST /v1/runs`` sends
``execute_run(run_id)`` to the runs queue (and the sweeper would re-send it if unclaimed)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from kombu import Connection

from meshclaw.api.app import create_app
from meshclaw.config import Settings
from meshclaw.store.models import Run
from meshclaw.workers.celery_app import EXECUTE_RUN, CeleryDispatcher, celery_config
from meshclaw.workers.dispatch import broker_dispatcher
from meshclaw.workers.leases import Leases
from tests.conftest import World, agent_yaml


def test_an_api_run_is_sent_to_the_broker(
    broker_url: str, queue: str, make_world: Callable[..., World]
) -> None:
    world = make_world()
    world.save_agent(agent_yaml())
    settings = world.platform.settings.model_copy(update={"broker_url": broker_url})
    dispatcher = CeleryDispatcher(settings, Leases(world.platform.db), queue=queue)
    token = world.platform.accounts.issue_token(world.alice.user_id, "t")
    try:
        with TestClient(create_app(world.platform, dispatcher)) as client:
            response = client.post(
                "/v1/runs",
                json={"agent": "helper", "input": "hi"},
                headers={"Authorization": f"Bearer {token}"},
            )
    finally:
        dispatcher.close()
    assert response.status_code == 202
    run_id = response.json()["id"]
    with Connection(broker_url) as conn:
        messages = conn.SimpleQueue(queue)
        message = messages.get(timeout=10)
        message.ack()
        messages.close()
    assert message.headers["task"] == EXECUTE_RUN
    assert message.payload[0] == [run_id]
    with world.platform.db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None and run.status == "queued"
        assert run.lease_expires_at is not None  # re-sent by the sweeper if never claimed


def test_the_celery_settings_make_a_killed_worker_lose_nothing() -> None:
    redis = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0", lease_seconds=30))
    assert redis["task_acks_late"] and redis["task_reject_on_worker_lost"]
    assert redis["worker_prefetch_multiplier"] == 1
    assert redis["broker_transport_options"] == {"visibility_timeout": 60}
    amqp = celery_config(Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//"))
    assert "broker_transport_options" not in amqp
    assert set(amqp["beat_schedule"]) == {
        "meshclaw-sweep", "meshclaw-cron", "meshclaw-outcomes-recheck",
        "meshclaw-notifications", "meshclaw-usage-rollup", "meshclaw-audit-checkpoint",
        "meshclaw-integrity-scan",
    }  # fmt: skip
    assert amqp["beat_schedule"]["meshclaw-outcomes-recheck"]["schedule"] == 900
    assert amqp["beat_schedule"]["meshclaw-notifications"]["schedule"] == 30
    off = celery_config(
        Settings(broker_url="redis://x", outcomes_recheck_seconds=0, notify_seconds=0)
    )
    assert "meshclaw-outcomes-recheck" not in off["beat_schedule"]
    assert "meshclaw-notifications" not in off["beat_schedule"]


def test_without_a_broker_runs_stay_in_process(make_world: Callable[..., World]) -> None:
    assert broker_dispatcher(make_world().platform) is None
