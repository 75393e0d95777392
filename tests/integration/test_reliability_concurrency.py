"""Concurrency (issue 7): runs of different intervals at once, and the same run twice at once.

Tasks start together (a barrier) in threads of this process, each with its own hook and client, like
two Airflow workers. No table is created beforehand: concurrent first-time creations are part of the
test. The result must equal the session's sequential, fault-free reference run, row for row: no lost,
no duplicated rows. Jobs that fail on a transaction conflict are re-run by the hook under
``<job id>_<n>``; the number of such retries is read from the job ids and printed.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from google.api_core.exceptions import NotFound

from airflow_provider_incremental.core.sql import TableRef
from airflow_provider_incremental.hooks.bigquery import _CONFLICT, IncrementalBigQueryHook, make_job_id
from tests.integration.helpers import query
from tests.integration.reliability import (
    RAW_TABLES,
    TABLES,
    Hour,
    Reference,
    diff,
    ids,
    load_operator,
    merge_operator,
    rows,
    run_task,
    watermarks,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
#: a job id re-run by the hook after a conflict ends in _<n> after the 12-hex data/work hash
RETRIED = re.compile(r"[0-9a-f]{12}_(\d{1,2})$")


def at_once(*tasks: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the tasks in threads released together; their results, or the first error (all reported)."""
    barrier = threading.Barrier(len(tasks), timeout=60)
    results: list[Any] = [None] * len(tasks)

    def work(index: int, task: Callable[[], dict[str, Any]]) -> None:
        barrier.wait()
        try:
            results[index] = task()
        except BaseException as err:
            results[index] = err

    threads = [threading.Thread(target=work, args=(i, t)) for i, t in enumerate(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise AssertionError(
            f"{len(errors)} of {len(tasks)} concurrent task(s) failed: {errors}"
        ) from errors[0]
    assert all(isinstance(r, dict) for r in results), results
    return results


def conflict_retries(summaries: list[dict[str, Any]]) -> int:
    """How many times the hook re-ran a job after a conflict (the ``_<n>`` suffix of the final job ids)."""
    return sum(int(m[1]) for s in summaries for j in s["job_ids"] if (m := RETRIED.search(j)))


def raw_snapshot(raw: str) -> dict[str, list[str]]:
    return {f"raw.{t}": rows(raw, t) for t in RAW_TABLES}


def without_run_id(lines: list[str]) -> list[str]:
    """Watermark lines without the run id: which run committed last is up to the race."""
    return [line.rsplit(" ", 1)[0] for line in lines]


def test_json_loads_of_two_intervals_at_once(exports: list[Hour], reference: Reference, dataset: str) -> None:
    raw = f"{dataset}_raw"
    summaries = at_once(*(lambda h=h: run_task(load_operator(raw, h), h) for h in exports))
    got = raw_snapshot(raw)
    expected = {k: reference.snapshot[k] for k in got}
    print(
        f"\nJSON loads of {len(exports)} intervals at once: conflict retries {conflict_retries(summaries)}, "
        f"rows compared {sum(len(v) for v in got.values())}"
    )
    assert got == expected, diff(expected, got)
    for table in TABLES:
        assert max(ids(raw, table).values()) == 1


def test_the_same_json_load_twice_at_once(exports: list[Hour], reference: Reference, dataset: str) -> None:
    raw = f"{dataset}_raw"
    retries = 0
    for hour in exports:
        first, second = at_once(*(lambda: run_task(load_operator(raw, hour), hour) for _ in range(2)))
        # Both tries ran the same jobs: one submitted each job, the other reattached to it.
        assert first["job_ids"] == second["job_ids"]
        retries += conflict_retries([first])
    got = raw_snapshot(raw)
    expected = {k: reference.snapshot[k] for k in got}
    print(
        f"\nsame JSON load twice at once: conflict retries {retries}, rows compared {sum(map(len, got.values()))}"
    )
    assert got == expected, diff(expected, got)


def test_incremental_runs_of_two_intervals_at_once(
    exports: list[Hour], reference: Reference, dataset: str
) -> None:
    """Both tables, both intervals: four merges at once into one analytics dataset and state table."""
    analytics = f"{dataset}_analytics"
    tasks = [
        lambda h=h, i=i, t=t: run_task(merge_operator(reference.raw, analytics, t), h, map_index=i)
        for h in exports
        for i, t in enumerate(TABLES)
    ]
    summaries = at_once(*tasks)
    got = {f"analytics.{t}": rows(analytics, t) for t in TABLES}
    expected = {k: reference.snapshot[k] for k in got}
    print(
        f"\nincremental runs of {len(exports)} intervals x {len(TABLES)} tables at once: conflict retries "
        f"{conflict_retries(summaries)}, rows compared {sum(map(len, got.values()))}, "
        f"watermarks {watermarks(analytics)}"
    )
    assert got == expected, diff(expected, got)
    assert without_run_id(watermarks(analytics)) == without_run_id(reference.snapshot["watermarks"])


def test_the_same_incremental_run_twice_at_once(
    exports: list[Hour], reference: Reference, dataset: str
) -> None:
    analytics, table, map_index = f"{dataset}_analytics", "subscriptions", 1
    summaries = []
    for hour in exports:
        summaries += at_once(
            *(
                lambda: run_task(merge_operator(reference.raw, analytics, table), hour, map_index=map_index)
                for _ in range(2)
            )
        )
    got = rows(analytics, table)
    expected = reference.snapshot[f"analytics.{table}"]
    print(
        f"\nsame incremental run twice at once: conflict retries {conflict_retries(summaries)}, "
        f"rows compared {len(got)}"
    )
    assert got == expected, diff({table: expected}, {table: got})
    assert watermarks(analytics) == [w for w in reference.snapshot["watermarks"] if w.startswith(f"{table} ")]


def test_a_transaction_conflict_is_retried_under_a_new_job_id(dataset: str) -> None:
    """A transaction that loses a write-write conflict at COMMIT is re-run (``<id>_1``) and applies once.

    The slow transaction deletes and re-inserts ``a``, then spends a second or two computing; meanwhile
    a fast transaction rewrites ``a`` and commits first, so the slow one fails at its COMMIT.
    """
    table = TableRef(None, dataset, "t")
    hook = IncrementalBigQueryHook()
    hook.ensure_dataset(None, dataset)
    query(f"CREATE TABLE {table.sql} (id STRING, v INT64); INSERT INTO {table.sql} VALUES ('a', 0), ('b', 0)")
    slow_id, fast_id = make_job_id("rel", dataset, "slow"), make_job_id("rel", dataset, "fast")
    busy = "SELECT COUNT(*) FROM UNNEST(GENERATE_ARRAY(1, 8000)) AS x, UNNEST(GENERATE_ARRAY(1, 8000)) AS y"
    slow_sql = (
        f"DECLARE n INT64; BEGIN TRANSACTION; DELETE FROM {table.sql} WHERE id = 'a'; "
        f"SET n = ({busy} WHERE MOD(x * y, 7) = 3); INSERT INTO {table.sql} VALUES ('a', 1); COMMIT TRANSACTION;"
    )
    fast_sql = (
        f"BEGIN TRANSACTION; DELETE FROM {table.sql} WHERE id = 'a'; "
        f"INSERT INTO {table.sql} VALUES ('a', 2); COMMIT TRANSACTION;"
    )
    result: dict[str, Any] = {}

    def slow() -> None:
        try:
            result["job"] = IncrementalBigQueryHook().query_job(slow_sql, job_id=slow_id)
        except BaseException as err:
            result["job"] = err

    thread = threading.Thread(target=slow)
    thread.start()
    deadline = time.monotonic() + 30
    while True:  # wait until the slow transaction runs
        try:
            hook.client().get_job(slow_id)
            break
        except NotFound:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert hook.query_job(fast_sql, job_id=fast_id).job_id == fast_id
    thread.join(timeout=120)

    first = hook.client().get_job(slow_id)
    assert first.error_result and _CONFLICT.search(first.error_result["message"]), first.error_result
    assert not isinstance(result["job"], BaseException), result["job"]
    assert result["job"].job_id == f"{slow_id}_1"
    assert query(f"SELECT id, v FROM {table.sql} ORDER BY id") == [{"id": "a", "v": 1}, {"id": "b", "v": 0}]
