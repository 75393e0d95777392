"""IncrementalBigQueryOperator end to end against the local BigQuery emulator (issue 4, "Done means").

Every test builds a small source table with SQL, runs the public operator's ``execute`` with an
Airflow-like context (fixed 2024 data intervals, so ``now - lag`` never clamps the window) and compares
the destination, the state table and the returned summary with what the rows say they must be.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, cast

import pytest
from google.api_core.exceptions import NotFound
from google.cloud.bigquery import QueryJob
from pytest_mock import MockerFixture

from airflow_provider_incremental.core import sql as core_sql
from airflow_provider_incremental.exceptions import CursorColumnError, IdentifierError
from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook
from airflow_provider_incremental.local import LocalBigQuery
from airflow_provider_incremental.operators.bigquery import IncrementalBigQueryOperator
from tests.integration.helpers import context, query

if TYPE_CHECKING:
    from airflow_provider_incremental.version_compat import Context

pytestmark = pytest.mark.integration
UTC = timezone.utc
DAY = datetime(2024, 3, 1, tzinfo=UTC)
TYPES = {
    "id": "STRING",
    "created_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "amount": "INT64",
    "resource_version": "INT64",
    "deleted": "BOOL",
}
COLUMNS = tuple(TYPES)
SCHEMA = ", ".join(f"{name} {kind}" for name, kind in TYPES.items())
SUMMARY_KEYS = {
    "source_table",
    "destination_table",
    "cursor",
    "window_start",
    "window_end",
    "rows_selected",
    "rows_inserted",
    "rows_updated",
    "watermark_before",
    "watermark_after",
    "job_ids",
}
BOTH = "COALESCE(`updated_at`, `created_at`)"

Row = dict[str, Any]


# -- helpers ------------------------------------------------------------------------------------


def at(hour: float, minute: int = 0) -> datetime:
    """A fixed time on 2024-03-01 (UTC); hours past 23 run into the next day."""
    return DAY + timedelta(hours=hour, minutes=minute)


def row(
    key: str,
    created: datetime | None,
    updated: datetime | None = None,
    *,
    amount: int = 0,
    version: int = 1,
    deleted: bool = False,
) -> Row:
    return {
        "id": key,
        "created_at": created,
        "updated_at": updated,
        "amount": amount,
        "resource_version": version,
        "deleted": deleted,
    }


def cursor_of(r: Mapping[str, Any]) -> datetime | None:
    return r.get("updated_at") or r.get("created_at")


def insert_sql(
    table: str, rows: Sequence[Mapping[str, Any]], types: Mapping[str, str] = TYPES
) -> tuple[str, dict[str, Any]]:
    """INSERT rows into ``dataset.table``; every value is a typed query parameter."""
    names = list(rows[0])
    params: dict[str, Any] = {}
    tuples = []
    for i, r in enumerate(rows):
        for name in names:
            params[f"p{i}_{name}"] = (types[name], r[name])
        tuples.append("(" + ", ".join(f"@p{i}_{name}" for name in names) + ")")
    return f"INSERT INTO `{table}` ({', '.join(names)}) VALUES {', '.join(tuples)}", params


def insert(table: str, rows: Sequence[Mapping[str, Any]], types: Mapping[str, str] = TYPES) -> None:
    query(*insert_sql(table, rows, types))


def create(
    table: str,
    rows: Sequence[Mapping[str, Any]] = (),
    *,
    schema: str = SCHEMA,
    options: str = "",
    types: Mapping[str, str] = TYPES,
) -> None:
    """Create ``dataset.table`` (and its dataset) and fill it, in one script."""
    IncrementalBigQueryHook().ensure_dataset(None, table.partition(".")[0])
    sql, params = f"CREATE TABLE `{table}` ({schema}){options}", dict[str, Any]()
    if rows:
        statement, params = insert_sql(table, rows, types)
        sql = f"{sql};\n{statement}"
    query(sql, params)


def read(table: str, columns: Iterable[str] = COLUMNS) -> list[Row]:
    """All rows of a table, in a stable order."""
    names = list(columns)
    order = [c for c in ("id", "updated_at", "created_at", "resource_version") if c in names]
    return query(f"SELECT {', '.join(names)} FROM `{table}` ORDER BY {', '.join(order)}")


def state(dataset: str, table: str = "_incremental_state") -> list[Row]:
    """The watermark rows (empty when the state table does not exist)."""
    try:
        return query(
            f"SELECT destination, source, watermark, run_id FROM `{dataset}.{table}` ORDER BY destination"
        )
    except NotFound:
        return []


def audit(dataset: str) -> list[Row]:
    try:
        return query(
            f"SELECT run_id, window_start, window_end, rows_selected, rows_inserted, rows_updated,"
            f" rows_deleted, watermark_before, watermark_after, job_ids FROM `{dataset}._incremental_audit`"
            " ORDER BY at, run_id"
        )
    except NotFound:
        return []


def exists(table: str) -> bool:
    hook = IncrementalBigQueryHook()
    try:
        hook.client().get_table(f"{hook.project_id}.{table}")
    except NotFound:
        return False
    return True


def newest(rows: Iterable[Mapping[str, Any]], end: datetime, start: datetime | None = None) -> list[Row]:
    """Ground truth: the newest version of each key whose cursor is in ``[start, end)`` or NULL."""
    best: dict[str, Row] = {}
    for r in rows:
        cursor = cursor_of(r)
        if cursor is not None and (cursor >= end or (start is not None and cursor < start)):
            continue
        old = best.get(r["id"])
        if old is None or _order(old) < _order(r):
            best[r["id"]] = dict(r)
    return sorted(best.values(), key=_sort_key)


def _order(r: Mapping[str, Any]) -> tuple[datetime, int]:
    cursor = cursor_of(r)
    return (cursor or datetime.min.replace(tzinfo=UTC), r.get("resource_version") or 0)


def _sort_key(r: Mapping[str, Any]) -> tuple[Any, ...]:
    """Same order as :func:`read` (NULLs first, as in BigQuery ``ORDER BY ... ASC``)."""
    low = datetime.min.replace(tzinfo=UTC)
    return (
        r["id"],
        r.get("updated_at") or low,
        r.get("created_at") or low,
        r.get("resource_version") or 0,
    )


def operator(dataset: str, **kwargs: Any) -> IncrementalBigQueryOperator:
    kwargs.setdefault("task_id", "incremental")
    kwargs.setdefault("source_table", f"{dataset}.src")
    kwargs.setdefault("destination_table", f"{dataset}.dst")
    return IncrementalBigQueryOperator(**kwargs)


def execute(op: IncrementalBigQueryOperator, **kwargs: Any) -> dict[str, Any]:
    """Run the operator with an Airflow-like context (:func:`helpers.context` takes ``kwargs``)."""
    return op.execute(cast("Context", context(**kwargs)))


def hourly(
    op: IncrementalBigQueryOperator, hour: int, *, run_id: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Execute the run of the hourly data interval ``[hour, hour + 1)``."""
    run_id = run_id or f"scheduled__{at(hour).isoformat()}"
    return execute(op, run_id=run_id, data_interval_start=at(hour), data_interval_end=at(hour + 1), **kwargs)


def job_of(hook: IncrementalBigQueryHook, job_id: str) -> QueryJob:
    job = hook.client().get_job(job_id)
    assert isinstance(job, QueryJob)
    return job


@pytest.fixture
def hook(local_bigquery: LocalBigQuery) -> IncrementalBigQueryHook:
    return IncrementalBigQueryHook()


# -- windows: late, retried, backfilled, zero-width ----------------------------------------------


def test_late_row_in_the_overlap_is_picked_up_and_the_summary_reports_it(
    dataset: str, hook: IncrementalBigQueryHook
) -> None:
    rows = [row("a", at(9, 10), at(10, 20), amount=1), row("b", at(10, 40))]
    create(f"{dataset}.src", rows)
    op = operator(dataset)  # overlap defaults to one hour
    first = hourly(op, 10)
    assert read(f"{dataset}.dst") == newest(rows, at(11))

    # After the run: rows committed late with cursors below the watermark.
    late = [
        row("c", at(10, 50)),  # inside [watermark - overlap, watermark): must be picked up
        row("d", at(9, 30)),  # older than the overlap: out of reach by design
    ]
    insert(f"{dataset}.src", late)
    # A correction with the same cursor but a higher resource_version (clock tie).
    query(f"UPDATE `{dataset}.src` SET amount = 9, resource_version = 2 WHERE id = 'a'")

    summary = hourly(op, 11, run_id="scheduled__11")
    got = {r["id"]: r for r in read(f"{dataset}.dst")}
    assert sorted(got) == ["a", "b", "c"], "c arrived late inside the overlap; d is older than it"
    assert (got["a"]["amount"], got["a"]["resource_version"]) == (9, 2)

    # The summary (XCom) of both runs.
    assert SUMMARY_KEYS <= set(summary) and SUMMARY_KEYS <= set(first)
    project = hook.project_id
    assert summary["source_table"] == f"{project}.{dataset}.src"
    assert summary["destination_table"] == f"{project}.{dataset}.dst"
    assert summary["cursor"] == first["cursor"] == BOTH
    assert (first["window_start"], first["window_end"]) == (None, at(11).isoformat())
    assert (summary["window_start"], summary["window_end"]) == (at(10).isoformat(), at(12).isoformat())
    assert (first["rows_selected"], first["rows_inserted"], first["rows_updated"]) == (2, 2, 0)
    # a (corrected), b (re-read through the overlap, unchanged) and c (late, new); not d.
    assert (summary["rows_selected"], summary["rows_inserted"], summary["rows_updated"]) == (3, 1, 1)
    assert first["watermark_before"] is None
    assert summary["watermark_before"] == first["watermark_after"] == at(11).isoformat()
    assert summary["watermark_after"] == at(12).isoformat()
    assert len(summary["job_ids"]) == 1 and summary["job_ids"] != first["job_ids"]
    job = job_of(hook, summary["job_ids"][0])
    assert job.state == "DONE" and job.error_result is None
    last = audit(dataset)[-1]
    assert last["run_id"] == "scheduled__11"
    assert (last["rows_selected"], last["rows_inserted"], last["rows_updated"]) == (3, 1, 1)
    assert (last["window_start"], last["window_end"], last["watermark_after"]) == (at(10), at(12), at(12))


def test_rerun_and_retry_of_a_run_add_no_duplicates(dataset: str, mocker: MockerFixture) -> None:
    rows = [
        row("a", at(5, 10), amount=1),
        row("a", at(5, 10), at(5, 40), amount=2, version=2),  # history source: two versions of a
        row("b", at(5, 20)),
        row("c", at(4), at(5, 30), amount=3),
    ]
    create(f"{dataset}.src", rows)
    op = operator(dataset)
    expected = newest(rows, at(6))

    first = hourly(op, 5)
    assert read(f"{dataset}.dst") == expected
    after_first = state(dataset)

    again = hourly(op, 5)  # the same run, cleared and run again
    assert (again["rows_inserted"], again["rows_updated"]) == (0, 0)
    assert again["rows_selected"] == first["rows_selected"] == 3
    assert read(f"{dataset}.dst") == expected
    assert state(dataset) == after_first

    # Try 1 of another run dies after its job committed (worker lost before XCom); try 2 runs again.
    insert(f"{dataset}.src", [row("d", at(6, 5))])
    expected = newest([*rows, row("d", at(6, 5))], at(7))
    real = IncrementalBigQueryHook.query_job

    def commit_then_die(self: IncrementalBigQueryHook, *args: Any, **kwargs: Any) -> Any:
        job = real(self, *args, **kwargs)
        if kwargs.get("job_id"):
            raise ConnectionResetError("worker lost after the job committed")
        return job

    patched = mocker.patch.object(IncrementalBigQueryHook, "query_job", commit_then_die)
    with pytest.raises(ConnectionResetError):
        hourly(op, 6, try_number=1)
    mocker.stop(patched)
    retry = hourly(op, 6, try_number=2)
    assert (retry["rows_inserted"], retry["rows_updated"]) == (0, 0), "try 1 already committed"
    got = read(f"{dataset}.dst")
    assert got == expected
    assert len(got) == len({r["id"] for r in got})
    assert [r["watermark"] for r in state(dataset)] == [at(7)]


def test_retry_that_read_the_old_watermark_reattaches_instead_of_rerunning(
    dataset: str, mocker: MockerFixture
) -> None:
    rows = [row("a", at(1, 10)), row("b", at(1, 20))]
    create(f"{dataset}.src", rows)
    op = operator(dataset)
    first = hourly(op, 1)
    # Try 2 started while try 1's job was still running, so it read the watermark from before the job.
    mocker.patch.object(IncrementalBigQueryOperator, "_read_watermark", return_value=None)
    retry = hourly(op, 1, try_number=2)
    assert retry["job_ids"] == first["job_ids"], "same work -> same deterministic job id"
    assert len(audit(dataset)) == 1, "the job was reattached, not run a second time"
    assert read(f"{dataset}.dst") == newest(rows, at(2))


def test_24_hourly_runs_backfilled_in_shuffled_order_equal_one_clean_run(dataset: str) -> None:
    rows = [row("z", None, None, amount=-1)]  # NULL cursor: included (the default policy)
    for hour in range(24):
        key = f"k{hour % 5}"  # five keys updated all day long (a history source)
        rows.append(row(key, at(hour % 5), at(hour, 15), amount=hour, version=hour))
        rows.append(row(f"n{hour}", at(hour, 30), amount=100 + hour))  # one new key per hour
    rows.append(row("k0", at(0), at(23, 59), amount=999, version=0))  # newest k0, lowest version
    rows.append(row("next_day", at(24, 30)))  # past the last interval: in neither destination
    rows.append(row("k1", at(1), at(24, 1), amount=-5, version=99))  # newer, but past the last interval
    create(f"{dataset}.src", rows)

    hours = list(range(24))
    random.Random(20240301).shuffle(hours)
    assert hours != sorted(hours) and hours[0] != 23
    # A wide overlap makes many of the older intervals, run after newer ones, re-read older versions
    # of the k* keys: they must never overwrite the newer rows already merged.
    backfill = operator(dataset, destination_table=f"{dataset}.backfill", overlap="6h")
    moved = [hourly(backfill, hour) for hour in hours]
    assert sum(bool(s["job_ids"]) for s in moved) > 8, "most shuffled runs must really merge something"

    clean = operator(dataset, destination_table=f"{dataset}.clean")
    execute(clean, run_id="clean", data_interval_start=at(0), data_interval_end=at(24))

    expected = newest(rows, at(24))
    assert read(f"{dataset}.backfill") == read(f"{dataset}.clean") == expected
    assert {r["destination"].rsplit(".", 1)[1]: r["watermark"] for r in state(dataset)} == {
        "backfill": at(24),
        "clean": at(24),
    }


def test_zero_width_interval_falls_back_to_run_after(dataset: str) -> None:
    rows = [row("a", at(1)), row("b", at(4, 59)), row("c", at(5)), row("d", at(6))]
    create(f"{dataset}.src", rows)
    op = operator(dataset)
    # Airflow 3 cron schedule: data_interval_start == data_interval_end == the logical date.
    first = execute(op, run_id="r1", data_interval_start=at(0), data_interval_end=at(0), run_after=at(5))
    assert first["window_end"] == at(5).isoformat()
    assert [r["id"] for r in read(f"{dataset}.dst")] == ["a", "b"]

    second = execute(op, run_id="r2", data_interval_start=at(0), data_interval_end=at(0), run_after=at(7))
    assert (second["window_start"], second["window_end"]) == (at(4).isoformat(), at(7).isoformat())
    assert read(f"{dataset}.dst") == newest(rows, at(7))
    assert [r["watermark"] for r in state(dataset)] == [at(7)]


# -- cursor detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_type", "expression"), [("TIMESTAMP", "`created_at`"), ("DATETIME", "TIMESTAMP(`created_at`)")]
)
def test_only_created_at_is_the_cursor(dataset: str, data_type: str, expression: str) -> None:
    types = {"id": "STRING", "created_at": data_type, "amount": "INT64"}
    schema = ", ".join(f"{name} {kind}" for name, kind in types.items())

    def value(moment: datetime) -> datetime:
        return moment if data_type == "TIMESTAMP" else moment.replace(tzinfo=None)

    rows = [
        {"id": "a", "created_at": value(at(0, 30)), "amount": 1},
        {"id": "b", "created_at": value(at(1, 59)), "amount": 2},
        {"id": "c", "created_at": value(at(2)), "amount": 3},
    ]
    create(f"{dataset}.src", rows, schema=schema, types=types)
    summary = hourly(operator(dataset), 1)
    assert summary["cursor"] == expression
    assert read(f"{dataset}.dst", types) == rows[:2]


def test_no_cursor_column_is_an_error_naming_the_table_and_its_columns(dataset: str) -> None:
    create(f"{dataset}.src", schema="id STRING, name STRING, amount INT64")
    with pytest.raises(CursorColumnError) as error:
        hourly(operator(dataset), 1)
    message = str(error.value)
    assert f"{dataset}.src" in message
    for column in ("id", "name", "amount", "updated_at", "created_at"):
        assert column in message
    assert not exists(f"{dataset}.dst")
    assert state(dataset) == []


# -- NULL cursors and deletes -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["include", "exclude", "fail"])
def test_null_cursor_policy(dataset: str, policy: str) -> None:
    rows = [row("a", at(1, 10)), row("n", None, None, amount=7)]
    create(f"{dataset}.src", rows)
    op = operator(dataset, on_null_cursor=policy)
    if policy == "fail":
        with pytest.raises(Exception, match="cursor is NULL"):
            hourly(op, 1)
        with pytest.raises(ValueError, match="1 row"):
            hourly(operator(dataset, mode="count", on_null_cursor=policy), 1)
        assert not exists(f"{dataset}.dst") or read(f"{dataset}.dst") == []
        assert state(dataset) == []
        return
    summary = hourly(op, 1)
    ids = [r["id"] for r in read(f"{dataset}.dst")]
    if policy == "exclude":
        assert ids == ["a"]
        assert summary["rows_selected"] == 1
        return
    assert ids == ["a", "n"]
    assert summary["rows_selected"] == 2
    again = hourly(op, 2)  # NULL-cursor rows are in every window: re-read, never duplicated
    assert (again["rows_selected"], again["rows_inserted"], again["rows_updated"]) == (2, 0, 0)
    assert read(f"{dataset}.dst") == newest(rows, at(3))


@pytest.mark.parametrize("on_deleted", ["soft", "hard"])
def test_deleted_rows(dataset: str, on_deleted: str) -> None:
    create(f"{dataset}.src", [row("a", at(1, 10), amount=1), row("b", at(1, 20), amount=2)])
    op = operator(dataset, on_deleted=on_deleted)
    hourly(op, 1)
    assert [r["id"] for r in read(f"{dataset}.dst")] == ["a", "b"]

    query(
        f"UPDATE `{dataset}.src` SET deleted = TRUE, updated_at = @at, resource_version = 2 WHERE id = 'a'",
        {"at": at(2, 10)},
    )
    insert(f"{dataset}.src", [row("c", at(2, 20), deleted=True)])  # born deleted
    summary = hourly(op, 2)
    got = {r["id"]: r for r in read(f"{dataset}.dst")}
    if on_deleted == "soft":
        assert sorted(got) == ["a", "b", "c"]
        assert (got["a"]["deleted"], got["a"]["updated_at"], got["b"]["deleted"]) == (True, at(2, 10), False)
        assert got["c"]["deleted"] is True
        assert summary["rows_deleted"] == 0
        return
    assert sorted(got) == ["b"]
    assert summary["rows_deleted"] == 1
    again = hourly(op, 3)  # the deleted rows are re-read through the overlap: they stay deleted
    assert again["rows_inserted"] == 0 and sorted(r["id"] for r in read(f"{dataset}.dst")) == ["b"]


# -- atomicity ------------------------------------------------------------------------------------


def test_crash_between_the_upsert_and_the_state_update_rolls_back_and_the_retry_converges(
    dataset: str, mocker: MockerFixture
) -> None:
    rows = [row("a", at(1, 10), amount=1), row("b", at(1, 20), amount=2)]
    create(f"{dataset}.src", rows)
    op = operator(dataset)
    hourly(op, 1)
    before = (read(f"{dataset}.dst"), state(dataset), audit(dataset))

    changes = [row("b", at(1, 20), at(2, 10), amount=20, version=2), row("c", at(2, 20), amount=3)]
    query(f"DELETE FROM `{dataset}.src` WHERE id = 'b'")
    insert(f"{dataset}.src", changes)
    real = core_sql.upsert_script

    def crashing(**kwargs: Any) -> tuple[str, dict[str, Any]]:
        script, params = real(**kwargs)
        marker = ";\nSET watermark_before"
        head, tail = script.split(marker)
        assert f"INSERT INTO {kwargs['destination'].sql}" in head, "the crash must come after the upsert"
        return f"{head};\nSELECT ERROR('simulated crash before the state update'){marker}{tail}", params

    patched = mocker.patch.object(core_sql, "upsert_script", side_effect=crashing)
    with pytest.raises(Exception, match="simulated crash"):
        hourly(op, 2)
    assert patched.called
    assert (read(f"{dataset}.dst"), state(dataset), audit(dataset)) == before, "all or nothing"

    mocker.stop(patched)
    retry = hourly(op, 2, try_number=2)
    assert (retry["rows_inserted"], retry["rows_updated"]) == (1, 1)
    assert read(f"{dataset}.dst") == newest([rows[0], *changes], at(3))
    assert [r["watermark"] for r in state(dataset)] == [at(3)]
    assert len(audit(dataset)) == 2


def test_unwritable_audit_table_rolls_back_the_upsert_and_the_watermark(dataset: str) -> None:
    rows = [row("a", at(1, 10)), row("b", at(1, 20))]
    create(f"{dataset}.src", rows)
    # Hostile setup: an incompatible audit table whose watermark_before is REQUIRED. A first run has
    # no watermark before it, so the audit INSERT, the last statement before COMMIT, fails at run time
    # after the upsert and the state update have run.
    columns = ", ".join(
        f"{name} {kind}{' NOT NULL' if name == 'watermark_before' else ''}"
        for name, kind in core_sql._AUDIT_SCHEMA.items()
    )
    query(f"CREATE TABLE `{dataset}._incremental_audit` ({columns})")
    op = operator(dataset)
    with pytest.raises(Exception, match="watermark_before"):
        hourly(op, 1)
    assert read(f"{dataset}.dst") == [], "the destination rows were rolled back"
    # Only the placeholder row committed before the transaction (watermark NULL: none yet) remains.
    assert [r["watermark"] for r in state(dataset)] in ([], [None]), "the watermark was rolled back"

    query(f"DROP TABLE `{dataset}._incremental_audit`")  # repaired; the operator recreates it
    retry = hourly(op, 1, try_number=2)
    assert retry["rows_inserted"] == 2
    assert read(f"{dataset}.dst") == newest(rows, at(2))
    assert [r["watermark"] for r in state(dataset)] == [at(2)]


# -- modes --------------------------------------------------------------------------------------


def test_count_mode_counts_the_window_and_writes_nothing(dataset: str) -> None:
    rows = [
        row("before", at(1, 30)),
        row("new", at(2, 10)),
        row("changed", at(0, 10), at(2, 20)),
        row("twice", at(2, 30)),
        row("twice", at(2, 30), at(2, 40), version=2),
        row("at_end", at(3)),
        row("null", None, None),
    ]
    create(f"{dataset}.src", rows)
    start, end = at(2), at(3)
    in_window = newest([r for r in rows if cursor_of(r) is not None], end, start)
    created_inside = [r for r in in_window if start <= r["created_at"] < end]
    nulls = sum(cursor_of(r) is None for r in rows)

    excluded = hourly(operator(dataset, mode="count", initial_value=start, on_null_cursor="exclude"), 2)
    assert SUMMARY_KEYS <= set(excluded)
    assert excluded["rows_selected"] == len(in_window) == 3
    assert excluded["rows_new"] == len(created_inside) == 2
    assert excluded["rows_changed"] == len(in_window) - len(created_inside)
    assert excluded["null_cursor_rows"] == nulls
    assert (excluded["window_start"], excluded["window_end"]) == (start.isoformat(), end.isoformat())
    assert excluded["watermark_before"] is None and excluded["watermark_after"] is None

    included = hourly(operator(dataset, mode="count", initial_value=start.isoformat()), 2)
    assert included["rows_selected"] == len(in_window) + nulls

    assert not exists(f"{dataset}.dst")
    assert state(dataset) == [] and audit(dataset) == []


def test_append_mode_keeps_each_version_once_and_is_idempotent(dataset: str) -> None:
    rows = [row("a", at(1, 10), amount=1), row("b", at(1, 20), amount=2)]
    create(f"{dataset}.src", rows)
    op = operator(dataset, mode="append", destination_table=f"{dataset}.log")
    hourly(op, 1)
    assert read(f"{dataset}.log") == rows

    # a changes twice within the next hour (a history source holds both versions), b never again.
    versions = [
        row("a", at(1, 10), at(2, 5), amount=10, version=2),
        row("a", at(1, 10), at(2, 35), amount=11, version=3),
    ]
    insert(f"{dataset}.src", versions)
    second = hourly(op, 2)
    expected = sorted([*rows, *versions], key=_sort_key)
    assert read(f"{dataset}.log") == expected, "every version once; b (re-read by the overlap) once"
    assert second["rows_inserted"] == 2

    again = hourly(op, 2)
    assert again["rows_inserted"] == 0
    assert read(f"{dataset}.log") == expected


def test_missing_destination_is_created_with_the_source_partitioning_and_clustering(
    dataset: str, hook: IncrementalBigQueryHook
) -> None:
    old = row("old", DAY - timedelta(days=3), at(0, 30), amount=1)
    rows = [old, row("a", at(1, 10), amount=2), row("b", DAY - timedelta(days=1), at(1, 20), amount=3)]
    create(f"{dataset}.src", rows, options=" PARTITION BY DATE(created_at) CLUSTER BY id, updated_at")
    op = operator(dataset)
    hourly(op, 1)
    source = hook.client().get_table(f"{hook.project_id}.{dataset}.src")
    destination = hook.client().get_table(f"{hook.project_id}.{dataset}.dst")
    assert destination.time_partitioning is not None
    assert destination.time_partitioning.field == source.time_partitioning.field == "created_at"
    assert destination.time_partitioning.type_ == source.time_partitioning.type_
    assert destination.clustering_fields == source.clustering_fields == ["id", "updated_at"]
    assert [f.name for f in destination.schema] == [f.name for f in source.schema]

    # An update to a row of an older partition: the partition-pruned upsert must still replace it.
    query(
        f"UPDATE `{dataset}.src` SET amount = 30, updated_at = @at, resource_version = 2 WHERE id = 'b'",
        {"at": at(2, 15)},
    )
    updated = [*rows[:2], row("b", DAY - timedelta(days=1), at(2, 15), amount=30, version=2)]
    summary = hourly(op, 2)
    assert (summary["rows_inserted"], summary["rows_updated"]) == (0, 1)
    assert read(f"{dataset}.dst") == newest(updated, at(3))


def test_watermark_never_moves_backwards(dataset: str) -> None:
    rows = [row("a", at(3, 10)), row("b", at(10, 10))]
    create(f"{dataset}.src", rows)
    hourly(operator(dataset), 10)
    assert [r["watermark"] for r in state(dataset)] == [at(11)]

    insert(f"{dataset}.src", [row("late", at(3, 30))])
    # Backfill of an old interval: the window is empty, nothing is written, the watermark stays.
    old = hourly(operator(dataset), 3, run_id="backfill__03")
    assert old["window_start"] == old["window_end"] == at(4).isoformat()
    assert (old["rows_selected"], old["job_ids"]) == (0, [])
    assert old["watermark_before"] == old["watermark_after"] == at(11).isoformat()
    # With an overlap reaching back to that interval the window is real: the late row comes in,
    # and the committed watermark still does not move back to the old interval's end.
    wide = hourly(operator(dataset, overlap="12h"), 3, run_id="backfill__03_wide")
    assert (wide["window_start"], wide["window_end"]) == (at(-1).isoformat(), at(4).isoformat())
    assert wide["rows_inserted"] == 1
    assert wide["watermark_after"] == at(11).isoformat()
    assert [(r["watermark"], r["run_id"]) for r in state(dataset)] == [(at(11), "backfill__03_wide")]
    assert [r["id"] for r in read(f"{dataset}.dst")] == ["a", "b", "late"]


# -- mapping, safety, cost guards -----------------------------------------------------------


def test_mapped_tasks_move_two_tables_sharing_one_state_table(dataset: str) -> None:
    from airflow.sdk import DAG

    customers = [row("c1", at(1, 10)), row("c2", at(1, 20), at(1, 50))]
    subscriptions = [{"id": "s1", "created_at": at(1, 5)}, {"id": "s2", "created_at": at(2, 5)}]
    create(f"{dataset}.customers", customers)
    create(f"{dataset}.subscriptions", subscriptions, schema="id STRING, created_at TIMESTAMP")
    expand: list[dict[str, Any]] = [
        {"source_table": f"{dataset}.customers", "destination_table": f"{dataset}.dw_customers"},
        {"source_table": f"{dataset}.subscriptions", "destination_table": f"{dataset}.dw_subscriptions"},
    ]
    shared: dict[str, Any] = {"task_id": "move", "state_table": f"{dataset}.shared_state"}
    with DAG("incremental_mapped", schedule=None, start_date=DAY):
        mapped = IncrementalBigQueryOperator.partial(**shared).expand_kwargs(expand)
    assert mapped.task_id == "move"

    # What the mapped task instances run: one operator per expanded kwargs, its own map_index.
    summaries = []
    for index, kwargs in enumerate(expand):
        mapped_task = IncrementalBigQueryOperator(**shared, **kwargs)
        summaries.append(
            execute(
                mapped_task, run_id="r1", data_interval_start=at(1), data_interval_end=at(2), map_index=index
            )
        )
    assert [s["cursor"] for s in summaries] == [BOTH, "`created_at`"]
    assert summaries[0]["job_ids"] != summaries[1]["job_ids"]
    assert read(f"{dataset}.dw_customers") == customers
    assert read(f"{dataset}.dw_subscriptions", ["id", "created_at"]) == subscriptions[:1]
    shared_rows = state(dataset, "shared_state")
    assert [(r["destination"].rsplit(".", 1)[1], r["source"].rsplit(".", 1)[1]) for r in shared_rows] == [
        ("dw_customers", "customers"),
        ("dw_subscriptions", "subscriptions"),
    ]
    assert [r["watermark"] for r in shared_rows] == [at(2), at(2)]
    assert not exists(f"{dataset}._incremental_state")


HOSTILE: list[dict[str, Any]] = [
    {"source_table": "ds.t`; DROP TABLE x; --"},
    {"source_table": "ds.t; DROP TABLE x"},
    {"destination_table": "ds.t` WHERE TRUE; --"},
    {"state_table": "ds.state`; DELETE FROM x WHERE TRUE; --"},
    {"source_table": "Evil Project.ds.t"},
    {"primary_key": "id`; DROP TABLE x; --"},
    {"cursor_columns": ("updated_at) OR TRUE --",)},
    {"version_column": "v`; --"},
    {"deleted_column": "deleted` IS NULL OR TRUE --", "on_deleted": "hard"},
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=[",".join(h) for h in HOSTILE])
def test_hostile_identifiers_fail_before_any_sql(
    local_bigquery: LocalBigQuery, mocker: MockerFixture, hostile: dict[str, Any]
) -> None:
    run_query = mocker.spy(IncrementalBigQueryHook, "run_query")
    query_job = mocker.spy(IncrementalBigQueryHook, "query_job")
    get_client = mocker.spy(IncrementalBigQueryHook, "get_client")
    kwargs = {"source_table": "ds.src", "destination_table": "ds.dst", **hostile}
    with pytest.raises(IdentifierError):
        execute(operator("ds", **kwargs), data_interval_start=at(1), data_interval_end=at(2))
    run_query.assert_not_called()
    query_job.assert_not_called()
    get_client.assert_not_called()


def test_maximum_bytes_billed_and_labels_reach_the_jobs(
    dataset: str, hook: IncrementalBigQueryHook, mocker: MockerFixture
) -> None:
    create(f"{dataset}.src", [row("a", at(1, 10))])
    limit = 10**9 + 7
    labels = {"team": "Data Eng", "cost-center": "42"}
    query_job = mocker.spy(IncrementalBigQueryHook, "query_job")
    merge = hourly(operator(dataset, task_id="Move.Customers", maximum_bytes_billed=limit, labels=labels), 1)
    count = hourly(operator(dataset, mode="count", maximum_bytes_billed=limit, labels=labels), 2)
    wanted = {"team": "data_eng", "cost-center": "42", "airflow-dag": "adhoc_airflow"}

    upsert = next(c for c in query_job.call_args_list if c.kwargs.get("job_id"))
    assert upsert.kwargs["maximum_bytes_billed"] == limit
    assert upsert.kwargs["labels"] == wanted | {"airflow-task": "move_customers"}
    job = job_of(hook, merge["job_ids"][0])
    assert job.job_id == upsert.kwargs["job_id"] or job.job_id.startswith(upsert.kwargs["job_id"])
    assert job.labels == wanted | {"airflow-task": "move_customers"}
    assert int(job.maximum_bytes_billed) == limit
    state_reads = [c for c in query_job.call_args_list if c.args[1].startswith("SELECT `watermark`")]
    assert len(state_reads) == 2
    for read_call in state_reads:
        assert (
            read_call.kwargs["maximum_bytes_billed"] == limit
            and read_call.kwargs["labels"]["team"] == "data_eng"
        )

    assert count["job_ids"], "count mode runs one query job and reports it"
    counted = job_of(hook, count["job_ids"][0])
    assert counted.labels == wanted | {"airflow-task": "incremental"}
    assert int(counted.maximum_bytes_billed) == limit


def test_every_job_carries_the_cost_guards(dataset: str, mocker: MockerFixture) -> None:
    """INFORMATION_SCHEMA, DDL, watermark reads and the upsert: every job the task sends."""
    from google.cloud.bigquery import Client

    create(f"{dataset}.src", [row("a", at(1, 10))])
    sent = mocker.spy(Client, "query")
    hourly(operator(dataset, maximum_bytes_billed=10**9, labels={"team": "x"}), 1)
    assert sent.call_count >= 4
    for call in sent.call_args_list:
        config = call.kwargs["job_config"]
        assert config.maximum_bytes_billed == 10**9, call.args[1][:80]
        assert config.labels == {"team": "x", "airflow-dag": "adhoc_airflow", "airflow-task": "incremental"}
