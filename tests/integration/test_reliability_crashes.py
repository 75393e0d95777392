"""Crashes (issue 7): a task SIGKILLed mid-way converges, on retry, to the tables of an uninterrupted run.

Each task try runs in a child process (:func:`tests.integration.crashrunner.run`, forked: the imports are
paid once) that pauses at the crash point (a hook call with a matching job id) and tells the parent,
which then SIGKILLs it: no ``finally``, no clean-up, like an OOM kill or a lost worker. The crash hits
the second hour, so that the merges carry updates of earlier rows. The retry is another child with the
same run id (try 2). The reference is the session's fault-free run
(the ``reference`` fixture of ``tests/integration/conftest.py``), which ran the same tasks in the same order.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import crashrunner
from tests.integration.helpers import query
from tests.integration.reliability import (
    RAW_TABLES,
    Hour,
    Reference,
    diff,
    drop_datasets,
    load_operator,
    merge_operator,
    rows,
    run_task,
    watermarks,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHILD_TIMEOUT = 180.0
_FORK = multiprocessing.get_context("fork")
#: the incremental crash tests move this table (map index 1 of merge_into_analytics)
TABLE, MAP_INDEX = "subscriptions", 1
POINTS = ("before_upsert", "after_upsert_before_finish")


@pytest.fixture(scope="module")
def after_first_hour(exports: list[Hour], reference: Reference) -> Iterator[tuple[str, dict[str, str]]]:
    """A raw dataset and, per crash point, an analytics dataset as the pipeline leaves them after hour 0
    (then the raw dataset gets hour 1): what the second hour's merge task starts from."""
    suffix = uuid.uuid4().hex[:8]
    raw = f"crash_raw_{suffix}"
    first, second = exports[0], exports[1]
    run_task(load_operator(raw, first), first)
    analytics = {point: f"crash_analytics_{suffix}_{i}" for i, point in enumerate(POINTS)}
    for dataset in analytics.values():
        run_task(merge_operator(raw, dataset, TABLE), first, map_index=MAP_INDEX)
    run_task(load_operator(raw, second), second)
    yield raw, analytics
    drop_datasets(raw, *analytics.values())


class Child:
    """Runs tries of one task in forked child processes, logging each to ``tmp_path``."""

    def __init__(self, tmp_path: Path, task: dict[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.task = task
        self.tries = 0

    def _start(self, crash: dict[str, str] | None) -> tuple[Any, dict[str, Any], Path]:
        self.tries += 1
        log = self.tmp_path / f"try-{self.tries}.log"
        spec = self.task | {
            "try": self.tries,
            "crash": crash,
            "marker": str(self.tmp_path / f"marker-{self.tries}"),
            "out": str(self.tmp_path / f"summary-{self.tries}.json"),
            "log": str(log),
        }
        proc = _FORK.Process(target=crashrunner.run, args=(spec,))
        proc.start()
        return proc, spec, log

    def kill_at(self, crash: dict[str, str]) -> str:
        """Run a try until it reaches ``crash``, SIGKILL it; return the job id it stopped at."""
        proc, spec, log = self._start(crash)
        marker = Path(spec["marker"])
        deadline = time.monotonic() + CHILD_TIMEOUT
        try:
            while not marker.exists():
                if not proc.is_alive():
                    pytest.fail(f"the task ended (exit code {proc.exitcode}) before {crash}:\n{_tail(log)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"the task did not reach {crash} in {CHILD_TIMEOUT} s:\n{_tail(log)}")
                time.sleep(0.05)
        finally:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL
        assert not Path(spec["out"]).exists(), "a killed task must not have finished"
        return marker.read_text()

    def run(self) -> dict[str, Any]:
        """Run a try to the end; return its summary (XCom)."""
        proc, spec, log = self._start(None)
        proc.join(timeout=CHILD_TIMEOUT)
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=30)
            pytest.fail(f"the retry did not finish in {CHILD_TIMEOUT} s:\n{_tail(log)}")
        assert proc.exitcode == 0, _tail(log)
        summary: dict[str, Any] = json.loads(Path(spec["out"]).read_text())
        return summary


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:]


def _hour(hour: Hour) -> dict[str, Any]:
    return {"index": hour.index, "start": hour.start.isoformat(), "path": hour.path}


def _raw_snapshot(raw: str) -> dict[str, list[str]]:
    return {f"raw.{t}": rows(raw, t) for t in RAW_TABLES}


def _staging_rows(raw: str, table: str) -> int:
    names = [
        r["table_name"]
        for r in query(f"SELECT table_name FROM `{raw}.INFORMATION_SCHEMA.TABLES`")
        if r["table_name"].startswith(f"_staging_{table}_")
    ]
    return sum(int(query(f"SELECT COUNT(*) AS n FROM `{raw}.{name}`")[0]["n"]) for name in names)


@pytest.mark.parametrize("point", ["after_load_before_merge", "after_merge_before_finish"])
def test_json_load_killed_then_retried_converges(
    exports: list[Hour], reference: Reference, dataset: str, tmp_path: Path, point: str
) -> None:
    raw = f"{dataset}_raw"
    first, second = exports[0], exports[1]
    run_task(load_operator(raw, first), first)
    before = _raw_snapshot(raw)
    child = Child(tmp_path, {"task": "load", "raw": raw, "hour": _hour(second)})

    if point == "after_load_before_merge":
        # Killed once the customers batch is in its staging table, before it is merged.
        stopped = child.kill_at({"when": "after", "method": "load_ndjson", "job_id": "__customers__stage__"})
        assert _staging_rows(raw, "customers") > 0, "the staging load must have happened"
        assert rows(raw, "customers") == before["raw.customers"], "nothing may be merged yet"
        assert rows(raw, "subscriptions") == before["raw.subscriptions"]
    else:
        # Killed once the last MERGE (subscriptions) finished, before the task returns.
        stopped = child.kill_at(
            {"when": "after", "method": "query_job", "job_id": "__subscriptions__merge__"}
        )
        interrupted = _raw_snapshot(raw)
        written = {k: reference.snapshot[k] for k in interrupted}
        assert interrupted == written, "every write was done before the kill: " + diff(written, interrupted)

    summary = child.run()
    got = _raw_snapshot(raw)
    expected = {k: reference.snapshot[k] for k in got}
    print(
        f"\n{point}: killed at job {stopped}; retry summary: read {summary['entries_read']} entries, "
        f"{summary['quarantined']} quarantined; rows compared {sum(len(v) for v in got.values())}"
    )
    assert got == expected, diff(expected, got)
    assert (
        len(got["raw.load_rejects"])
        == len(before["raw.load_rejects"]) + second.manifest["expected"]["quarantined"]
    )


@pytest.mark.parametrize("point", POINTS)
def test_incremental_merge_killed_then_retried_converges(
    exports: list[Hour],
    reference: Reference,
    after_first_hour: tuple[str, dict[str, str]],
    tmp_path: Path,
    point: str,
) -> None:
    raw, datasets = after_first_hour
    analytics = datasets[point]
    before, watermark_before = rows(analytics, TABLE), watermarks(analytics)
    assert [w.split(" ", 1)[0] for w in watermark_before] == [TABLE]
    expected = reference.snapshot[f"analytics.{TABLE}"]
    expected_watermark = [w for w in reference.snapshot["watermarks"] if w.startswith(f"{TABLE} ")]
    task = {"task": "merge", "raw": raw, "analytics": analytics, "table": TABLE, "map_index": MAP_INDEX}
    child = Child(tmp_path, task | {"hour": _hour(exports[1])})

    if point == "before_upsert":
        stopped = child.kill_at({"when": "before", "method": "query_job", "job_id": "__upsert_"})
        assert rows(analytics, TABLE) == before and watermarks(analytics) == watermark_before
    else:
        stopped = child.kill_at({"when": "after", "method": "query_job", "job_id": "__upsert_"})
        # Rows and watermark were committed together before the kill.
        assert rows(analytics, TABLE) == expected
        assert watermarks(analytics) == expected_watermark

    summary = child.run()
    got = rows(analytics, TABLE)
    print(
        f"\n{point}: killed at job {stopped}; retry: window [{summary['window_start']}, "
        f"{summary['window_end']}), {summary['rows_inserted']} inserted, {summary['rows_updated']} updated; "
        f"rows compared {len(got)}"
    )
    assert got == expected, diff({TABLE: expected}, {TABLE: got})
    assert watermarks(analytics) == expected_watermark
    if point == "before_upsert":
        assert summary["rows_inserted"] > 0 and summary["rows_updated"] > 0
    else:
        assert summary["rows_inserted"] == summary["rows_updated"] == 0, "the retry must change nothing"
