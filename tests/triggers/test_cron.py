"""Cron triggers: expressions, and one firing per minute across scheduler replicas."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from meshclaw.store.models import AuditEvent, Run
from meshclaw.triggers.cron import CronExpr, CronFirer
from meshclaw.triggers.models import CronFiring, SchedulerLease
from tests.conftest import World, agent_yaml
from tests.triggers.storedown import runs_refused

CRON_AGENT = agent_yaml(name="nightly").replace(
    "budget:", "triggers:\n  - {type: cron, schedule: '*/5 * * * *', input: tidy up}\nbudget:"
)
T0 = datetime(2026, 11, 27, 9, 0, 20, tzinfo=UTC)  # a Friday


def test_cron_expressions_match_like_cron() -> None:
    weekdays_9_to_5 = CronExpr.parse("*/15 9-17 * * 1-5")
    assert weekdays_9_to_5.matches(datetime(2026, 11, 27, 9, 45, tzinfo=UTC))  # Friday
    assert not weekdays_9_to_5.matches(datetime(2026, 11, 28, 9, 45, tzinfo=UTC))  # Saturday
    assert not weekdays_9_to_5.matches(datetime(2026, 11, 27, 9, 44, tzinfo=UTC))
    sundays = CronExpr.parse("0 0 * * 0")
    assert sundays.matches(datetime(2026, 11, 29, 0, 0, tzinfo=UTC))
    assert CronExpr.parse("30 6 1 jan *").matches(datetime(2027, 1, 1, 6, 30, tzinfo=UTC))


def cron_runs(world: World) -> list[Run]:
    with world.platform.db.session() as session:
        return list(session.scalars(select(Run).where(Run.trigger == "cron")).all())


def firer(world: World, owner: str, clock: list[datetime]) -> CronFirer:
    return CronFirer(world.platform, dispatch=None, owner=owner, clock=lambda: clock[0])


def test_two_scheduler_replicas_fire_a_schedule_once(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    world.save_agent(CRON_AGENT)
    now = [T0]
    first, second = firer(world, "scheduler-a", now), firer(world, "scheduler-b", now)

    fired = first.tick() + second.tick()  # both replicas tick in the same minute
    assert len(fired) == 1
    (run,) = cron_runs(world)
    assert (run.trigger, run.input, run.status) == ("cron", "tidy up", "queued")
    assert second.tick() == [] and first.tick() == []  # the minute does not fire again

    now[0] = T0 + timedelta(minutes=3)
    assert first.tick() + second.tick() == []  # 09:03 is not due
    now[0] = T0 + timedelta(minutes=5)
    assert len(second.tick() + first.tick()) == 1  # 09:05: the leader fires it once
    assert len(cron_runs(world)) == 2


def test_a_new_leader_takes_over_and_a_stale_leader_still_cannot_fire_twice(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    world.save_agent(CRON_AGENT)
    now = [T0]
    leader, standby = firer(world, "scheduler-a", now), firer(world, "scheduler-b", now)
    assert len(leader.tick()) == 1
    # The leader dies; after its lease expires the standby leads and catches up on 09:05.
    now[0] = T0 + timedelta(minutes=6)
    assert len(standby.tick()) == 1  # 09:05, missed while nobody led
    with world.platform.db.session() as session:
        owner = session.scalar(select(SchedulerLease.owner))
    assert owner == "scheduler-b"
    assert len(cron_runs(world)) == 2
    # Both believe they lead (a paused leader wakes up): the firing row still wins once.
    with world.platform.db.session() as session:
        session.execute(update(SchedulerLease).values(owner="scheduler-a", watermark=T0))
    assert leader.tick() == []
    with world.platform.db.session() as session:
        assert len(session.scalars(select(CronFiring)).all()) == 2


def test_a_firing_whose_run_could_not_be_created_is_retried_within_the_catch_up(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    world.save_agent(CRON_AGENT)
    now = [T0]
    leader = firer(world, "scheduler-a", now)
    with runs_refused(world.platform.db):
        assert leader.tick() == []  # 09:00 is due; its run cannot be created
        now[0] = T0 + timedelta(minutes=1)
        assert leader.tick() == []
    assert cron_runs(world) == []
    now[0] = T0 + timedelta(minutes=2)
    assert len(leader.tick()) == 1  # the store is back: 09:00 fires, late, once
    assert leader.tick() == []
    (run,) = cron_runs(world)
    with world.platform.db.session() as session:
        (firing,) = session.scalars(select(CronFiring)).all()
    assert (firing.fire_at.replace(tzinfo=UTC), firing.run_id) == (T0.replace(second=0), run.id)

    # A failure that outlasts the catch-up window is dropped, not retried for ever.
    now[0] = T0 + timedelta(minutes=5)
    with runs_refused(world.platform.db):
        assert leader.tick() == []  # 09:05
    now[0] = T0 + timedelta(minutes=16)
    assert len(leader.tick()) == 2  # 09:10 and 09:15 are in the window; 09:05 is not
    assert leader.tick() == []
    with world.platform.db.session() as session:
        minutes = sorted(f.fire_at.minute for f in session.scalars(select(CronFiring)))
    assert minutes == [0, 10, 15] and len(cron_runs(world)) == 3
    (dropped,) = dropped_records(world)  # ...and never silently
    assert dropped.details == {
        "trigger": "cron",
        "schedule": "*/5 * * * *",
        "minutes": 1,
        "first": "2026-11-27T09:05:00+00:00",
        "last": "2026-11-27T09:05:00+00:00",
        "reason": (
            "not fired within the 10-minute catch-up: its run could not be created, "
            "or no scheduler was running"
        ),
    }
    assert dropped.outcome == "error" and dropped.resource.startswith("agent:")


def test_minutes_missed_while_no_scheduler_ran_are_audited_once_when_dropped(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    world.save_agent(CRON_AGENT)
    now = [T0]
    leader = firer(world, "scheduler-a", now)
    assert len(leader.tick()) == 1  # 09:00
    now[0] = T0 + timedelta(hours=1)  # every scheduler was down for an hour
    assert len(leader.tick()) == 2  # 09:55 and 10:00 are within the catch-up
    assert leader.tick() == []
    now[0] = T0 + timedelta(hours=1, minutes=5)
    assert len(leader.tick()) == 1  # 10:05
    (dropped,) = dropped_records(world)  # 09:05 to 09:50, once
    assert (dropped.details["minutes"], dropped.details["first"], dropped.details["last"]) == (
        10, "2026-11-27T09:05:00+00:00", "2026-11-27T09:50:00+00:00",
    )  # fmt: skip


def dropped_records(world: World) -> list[AuditEvent]:
    with world.platform.db.session() as session:
        query = select(AuditEvent).where(AuditEvent.action == "trigger.dropped")
        return list(session.scalars(query).all())
