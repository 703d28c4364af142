"""Cron triggers: expressions, and one firing per minute across scheduler replicas."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from meshclaw.store.db import Database
from meshclaw.store.models import AuditEvent, Run
from meshclaw.triggers.cron import CronExpr, CronFirer
from meshclaw.triggers.models import CronFiring, SchedulerLease
from tests.conftest import World, agent_yaml
from tests.triggers.storedown import runs_refused

CRON_AGENT = agent_yaml(name="nightly").replace(
    "budget:", "triggers:\n  - {type: cron, schedule: '*/5 * * * *', input: tidy up}\nbudget:"
)
EVERY_MINUTE = agent_yaml(name="ticker").replace(
    "budget:", "triggers:\n  - {type: cron, schedule: '* * * * *', input: tick}\nbudget:"
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


@contextmanager
def minute_refused(db: Database, agent_id: str, at: datetime) -> Iterator[None]:
    """The store fails every run that would fire minute ``at`` of the agent, and no other:
    an ``INSERT`` trigger on ``cron_firings`` that raises (the firing row is written in the
    run's own transaction, so the run cannot be created), on SQLite or PostgreSQL."""
    sqlite = db.engine.dialect.name == "sqlite"
    if sqlite:
        statements = [
            "CREATE TRIGGER minute_down BEFORE INSERT ON cron_firings "
            f"WHEN NEW.agent_id = '{agent_id}' "
            f"AND strftime('%Y-%m-%d %H:%M', NEW.fire_at) = '{at:%Y-%m-%d %H:%M}' "
            "BEGIN SELECT RAISE(ABORT, 'store unavailable'); END"
        ]
    else:
        statements = [
            "CREATE FUNCTION minute_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.agent_id = '{agent_id}' "
            f"AND NEW.fire_at = TIMESTAMPTZ '{at:%Y-%m-%d %H:%M}:00+00' THEN "
            "RAISE EXCEPTION 'store unavailable'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER minute_down BEFORE INSERT ON cron_firings "
            "FOR EACH ROW EXECUTE FUNCTION minute_down()",
        ]
    with db.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(
                "DROP TRIGGER minute_down" + ("" if sqlite else " ON cron_firings")
            )
            if not sqlite:
                conn.exec_driver_sql("DROP FUNCTION minute_down()")


def fired_minutes(world: World, agent_id: str) -> list[tuple[int, bool]]:
    """The minutes (past 09:00) of the agent's firing rows, and whether each started a run."""
    with world.platform.db.session() as session:
        query = select(CronFiring).where(CronFiring.agent_id == agent_id)
        rows = session.scalars(query.order_by(CronFiring.fire_at)).all()
    return [(row.fire_at.minute, row.run_id is not None) for row in rows]


def ticking(world: World, now: list[datetime]) -> Callable[[int], int]:
    """Two scheduler replicas; ``tick(m)``: both tick twice at 09:00:20 + m minutes, as
    beat does every few seconds; how many runs they started."""
    replicas = [firer(world, "scheduler-a", now), firer(world, "scheduler-b", now)]

    def tick(minutes: int) -> int:
        now[0] = T0 + timedelta(minutes=minutes)
        return sum(len(replica.tick()) for replica in replicas + replicas)

    return tick


def test_a_failing_minute_does_not_hold_back_the_later_minutes_of_its_schedule(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    nightly = world.save_agent(CRON_AGENT)  # */5
    ticker = world.save_agent(EVERY_MINUTE)
    tick = ticking(world, [T0])
    with minute_refused(world.platform.db, nightly, T0):  # 09:00 of nightly never starts
        assert [tick(m) for m in range(10)] == [1, 1, 1, 1, 1, 2, 1, 1, 1, 1]  # 09:05 on time
        assert dropped_records(world) == []  # 09:00 is tried at every tick until 09:09...
        assert [tick(m) for m in range(10, 16)] == [2, 1, 1, 1, 1, 2]  # ...dropped at 09:10
    assert tick(16) == 1  # and stays dropped when the store is back
    assert fired_minutes(world, nightly) == [(5, True), (10, True), (15, True)]
    assert fired_minutes(world, ticker) == [(m, True) for m in range(17)]
    assert len(cron_runs(world)) == 20
    (dropped,) = dropped_records(world)  # once, though the watermark passed it at 09:10
    assert dropped.resource == f"agent:{nightly}"
    assert (dropped.details["minutes"], dropped.details["first"], dropped.details["last"]) == (
        1, "2026-11-27T09:00:00+00:00", "2026-11-27T09:00:00+00:00",
    )  # fmt: skip


def test_a_failing_minute_fires_late_once_the_store_is_back_and_later_ones_once(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    nightly = world.save_agent(CRON_AGENT)
    tick = ticking(world, [T0])
    with minute_refused(world.platform.db, nightly, T0):
        assert [tick(m) for m in range(7)] == [0, 0, 0, 0, 0, 1, 0]  # 09:05 on time
    assert tick(7) == 1  # 09:00, late, within the catch-up; 09:05 does not fire again
    assert [tick(m) for m in range(8, 21)] == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    assert fired_minutes(world, nightly) == [(m, True) for m in (0, 5, 10, 15, 20)]
    assert len(cron_runs(world)) == 5 and dropped_records(world) == []


def test_a_refused_minute_is_settled_not_retried_and_holds_nothing_back(
    database_url: str, make_world: Callable[..., World]
) -> None:
    world = make_world(database_url=database_url)
    nightly = world.save_agent(CRON_AGENT)
    tick = ticking(world, [T0])
    world.platform.policies.load(
        '@id("org.no-runs")\nforbid (principal, action == Action::"run.start", resource);\n'
    )
    assert tick(0) == 0  # 09:00 is refused: the owner may not start runs
    world.platform.policies.load("")
    assert [tick(m) for m in range(1, 12)] == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    assert fired_minutes(world, nightly) == [(0, False), (5, True), (10, True)]
    assert len(cron_runs(world)) == 2 and dropped_records(world) == []


def test_a_run_that_cannot_be_handed_to_a_worker_stays_queued_and_the_tick_goes_on(
    make_world: Callable[..., World],
) -> None:
    """The broker is down: each minute's run is still created once (queued, for the lease
    sweeper to send on), and the tick does not stop at the first one."""
    world = make_world()
    world.save_agent(CRON_AGENT)
    world.save_agent(EVERY_MINUTE)
    sent: list[str] = []

    def broker_down(run_id: str) -> None:
        sent.append(run_id)
        raise ConnectionError("broker unreachable")

    now = [T0]
    leader = CronFirer(world.platform, dispatch=broker_down, owner="a", clock=lambda: now[0])
    started = leader.tick()
    assert len(started) == 2 and sorted(started) == sorted(sent)  # both agents' 09:00
    assert {r.status for r in cron_runs(world)} == {"queued"}
    assert leader.tick() == []  # once each
