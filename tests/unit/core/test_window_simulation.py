"""A month of hourly incremental runs against a simulated source, in pure Python.

The source is a table keyed by ``pk`` whose rows change over time. Every change (a *version*) has a cursor
(its ``updated_at``, NULL for legacy rows) and becomes visible to readers only at ``visible_at``, up to
``MAX_DELAY`` after its cursor (replication lag, late-arriving rows). Runs are hourly, but some start late
(scheduler outages), some fail and are retried, some are cleared and re-run, and one day is backfilled
days later in reverse order.

Each run reads the source *as visible when it runs*, selects the rows whose cursor falls in its window
(plus the NULL-cursor rows), and applies the upsert rule of ``core.sql.upsert_script`` (replace only by a
strictly newer version; hard-delete rows flagged deleted). The watermark algorithm of ``core.window`` must
end with the destination equal to the ground truth; the naive "last 60 minutes at run time" window, and the
watermark without overlap, must lose rows on the same history.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from airflow_provider_incremental.core.window import Window, compute_window, next_watermark

UTC = timezone.utc
MONTH_START = datetime(2024, 3, 1, tzinfo=UTC)
HOURS = 31 * 24
MAX_DELAY = timedelta(minutes=30)
LAG = timedelta(minutes=5)
OVERLAP = timedelta(minutes=25)  # LAG + OVERLAP >= MAX_DELAY: every late row is re-read in time.
SEED = 20240301


@dataclass(frozen=True)
class Version:
    pk: int
    version: int
    cursor: datetime | None
    deleted: bool
    visible_at: datetime


@dataclass(frozen=True)
class Execution:
    interval_start: datetime
    interval_end: datetime
    now: datetime
    succeeds: bool


def order(row: Version) -> tuple[bool, datetime, int]:
    """The version order of upsert_script: (cursor, version), NULL cursor lowest."""
    return (row.cursor is not None, row.cursor or MONTH_START, row.version)


def build_history(rng: random.Random) -> dict[int, list[Version]]:
    """Versions per key, in write order; visibility is monotone per key (replication keeps key order)."""
    history: dict[int, list[Version]] = {}

    def write(
        pk: int, cursor: datetime | None, deleted: bool = False, delay: timedelta | None = None
    ) -> None:
        versions = history.setdefault(pk, [])
        if delay is None:
            roll = rng.random()
            if roll < 0.70:
                delay = timedelta(seconds=rng.randint(0, 60))
            elif roll < 0.90:
                delay = timedelta(seconds=rng.randint(60, 600))
            else:
                delay = timedelta(seconds=rng.randint(600, int(MAX_DELAY.total_seconds())))
        visible_at = (cursor or MONTH_START - timedelta(days=30)) + delay
        if versions:
            visible_at = max(visible_at, versions[-1].visible_at)
        versions.append(Version(pk, len(versions) + 1, cursor, deleted, visible_at))

    # Before the month: rows from February, and legacy rows without timestamps (NULL cursor).
    for pk in range(200):
        write(pk, MONTH_START - timedelta(minutes=rng.randint(60, 28 * 24 * 60)))
    for pk in range(200, 230):
        write(pk, None, delay=timedelta(0))
    next_pk, live = 230, list(range(230))
    # During the month (events stop 2 h before the end so that everything is visible to the last run).
    for hour in range(HOURS - 2):
        base = MONTH_START + timedelta(hours=hour)
        moments = sorted(base + timedelta(seconds=rng.randint(0, 3599)) for _ in range(rng.randint(2, 9)))
        for moment in moments:
            roll = rng.random()
            if roll < 0.35:
                write(next_pk, moment)
                live.append(next_pk)
                next_pk += 1
                continue
            pk = rng.choice(live)
            last = history[pk][-1].cursor
            if last is not None and last >= moment:
                continue
            write(pk, moment, deleted=roll >= 0.95)
            if roll >= 0.95:
                live.remove(pk)
    return history


def build_executions(rng: random.Random) -> list[Execution]:
    """Hourly runs with outages, failed-then-retried runs, cleared re-runs and a reverse backfill."""
    outages = {(5 * 24 + 10, 5 * 24 + 15), (17 * 24 + 2, 17 * 24 + 3), (23 * 24 + 20, 24 * 24 + 2)}
    backfilled_day = range(9 * 24, 10 * 24)  # paused on March 10th, backfilled on the 20th
    executions: list[Execution] = []
    for hour in range(HOURS):
        start = MONTH_START + timedelta(hours=hour)
        end = start + timedelta(hours=1)
        if hour in backfilled_day:
            continue
        now = end + timedelta(seconds=rng.randint(20, 300))
        for first, last in outages:
            if first <= hour < last:
                now = MONTH_START + timedelta(hours=last, minutes=7, seconds=hour - first)
        roll = rng.random()
        if roll < 0.05:  # fails (nothing committed), retried 5-30 min later
            executions.append(Execution(start, end, now, succeeds=False))
            now += timedelta(minutes=rng.randint(5, 30))
        elif roll < 0.08:  # succeeds, and is cleared and re-run 1-48 h later: the same window twice
            executions.append(Execution(start, end, now + timedelta(hours=rng.randint(1, 48)), succeeds=True))
        executions.append(Execution(start, end, now, succeeds=True))
    for index, hour in enumerate(reversed(backfilled_day)):
        start = MONTH_START + timedelta(hours=hour)
        backfill_at = MONTH_START + timedelta(days=19, hours=12, minutes=index)
        executions.append(Execution(start, start + timedelta(hours=1), backfill_at, succeeds=True))
    return sorted(executions, key=lambda execution: execution.now)


def visible(history: dict[int, list[Version]], now: datetime) -> dict[int, Version]:
    """The source table as a reader sees it at ``now``: the last visible version of each key."""
    rows = {}
    for pk, versions in history.items():
        for row in reversed(versions):
            if row.visible_at <= now:
                rows[pk] = row
                break
    return rows


def upsert(destination: dict[int, Version], batch: list[Version]) -> None:
    """The rule of upsert_script with on_deleted="hard": replace only by a strictly newer version."""
    for row in batch:
        current = destination.get(row.pk)
        if current is not None and order(current) >= order(row):
            continue
        if row.deleted:
            destination.pop(row.pk, None)
        else:
            destination[row.pk] = row


def replay(
    history: dict[int, list[Version]], executions: list[Execution], choose: Callable[[Execution], Window]
) -> dict[int, Version]:
    destination: dict[int, Version] = {}
    for execution in executions:
        if not execution.succeeds:
            continue
        window = choose(execution)
        source = visible(history, execution.now)
        batch = [row for row in source.values() if row.cursor is None or window.contains(row.cursor)]
        upsert(destination, batch)
    return destination


def watermark_algorithm(overlap: timedelta) -> tuple[Callable[[Execution], Window], list[datetime]]:
    watermarks: list[datetime] = []

    def choose(execution: Execution) -> Window:
        before = watermarks[-1] if watermarks else None
        window = compute_window(
            watermark=before,
            initial_value=None,
            interval_start=execution.interval_start,
            interval_end=execution.interval_end,
            run_after=execution.interval_end,
            now=execution.now,
            lag=LAG,
            overlap=overlap,
        )
        watermarks.append(next_watermark(before, window))  # committed with the upsert
        return window

    return choose, watermarks


def naive_window(execution: Execution) -> Window:
    return Window(execution.now - timedelta(minutes=60), execution.now)


def lost_rows(destination: dict[int, Version], truth: dict[int, Version]) -> int:
    return sum(destination.get(pk) != row for pk, row in truth.items()) + len(
        destination.keys() - truth.keys()
    )


def simulate() -> tuple[dict[int, list[Version]], list[Execution], dict[int, Version]]:
    rng = random.Random(SEED)
    history = build_history(rng)
    executions = build_executions(rng)
    assert executions[-1].now > max(v.visible_at for versions in history.values() for v in versions)
    final = visible(history, executions[-1].now)
    truth = {pk: row for pk, row in final.items() if not row.deleted}
    return history, executions, truth


def test_the_simulation_covers_the_hard_cases() -> None:
    history, executions, truth = simulate()
    versions = [v for vs in history.values() for v in vs]
    late = [v for v in versions if v.cursor is not None and v.visible_at - v.cursor > timedelta(minutes=20)]
    assert len(late) > 50
    assert sum(v.cursor is None for v in versions) == 30
    assert sum(v.deleted for v in versions) > 20
    assert sum(not e.succeeds for e in executions) > 10
    windows = [(e.interval_start, e.interval_end) for e in executions if e.succeeds]
    assert len(windows) - len(set(windows)) > 10  # cleared and re-run: the same window twice
    assert sum(e.now - e.interval_end > timedelta(hours=2) for e in executions) > 30  # late and backfilled
    backfill = [e for e in executions if e.now.day == 20 and e.interval_start.day == 10]
    assert len(backfill) == 24 and backfill[0].interval_start > backfill[-1].interval_start  # reverse order
    assert len(truth) > 1000


def test_watermark_window_loses_nothing() -> None:
    history, executions, truth = simulate()
    choose, watermarks = watermark_algorithm(OVERLAP)
    destination = replay(history, executions, choose)
    assert lost_rows(destination, truth) == 0
    assert destination == truth
    assert all(after >= before for before, after in itertools.pairwise(watermarks))
    assert watermarks[-1] <= executions[-1].now - LAG


def test_replaying_every_run_twice_changes_nothing() -> None:
    history, executions, truth = simulate()
    doubled = sorted(
        executions
        + [
            Execution(e.interval_start, e.interval_end, e.now + timedelta(seconds=1), e.succeeds)
            for e in executions
        ],
        key=lambda e: e.now,
    )
    choose, _ = watermark_algorithm(OVERLAP)
    assert replay(history, doubled, choose) == truth


def test_naive_last_60_minutes_loses_rows() -> None:
    history, executions, truth = simulate()
    lost = lost_rows(replay(history, executions, naive_window), truth)
    assert lost > 0
    assert lost > len(truth) // 100  # not a corner case: more than 1 % of the table is wrong


def test_without_overlap_late_rows_are_lost() -> None:
    history, executions, truth = simulate()
    choose, _ = watermark_algorithm(timedelta(0))
    assert lost_rows(replay(history, executions, choose), truth) > 0
