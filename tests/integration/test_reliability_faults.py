"""Fault injection (issue 7): the pipeline survives 5xx/429, lost and slow responses and dropped connections.

Every request of the faulty runs goes through :class:`~tests.integration.faultproxy.FaultProxy`, a loopback
proxy in front of the emulator, through a second Airflow connection (``faulty``). The hooks run with a
short per-request timeout (so that "slow" responses are abandoned) and a bounded retry deadline; failed
task tries are retried like Airflow does (same run id). The result must equal a fault-free run of the
same input, row for row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core.exceptions import RetryError, ServiceUnavailable

from airflow_provider_incremental.core.sql import TableRef
from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook, make_job_id
from airflow_provider_incremental.local import LocalBigQuery
from tests.integration.faultproxy import KINDS, FaultProxy
from tests.integration.helpers import query
from tests.integration.reliability import (
    TABLES,
    Hour,
    Reference,
    TaskLog,
    connection_env,
    diff,
    hook_defaults,
    ids,
    rows_compared,
    run_pipeline,
    snapshot,
)

pytestmark = pytest.mark.integration

FAULT_RATE = 0.2
SEED = 2024
#: per-request timeout of the faulty runs' hooks; "slow" responses are held back longer than that
REQUEST_TIMEOUT = 3.0
SLOW_DELAY = 4.0
RETRY_DEADLINE = 20.0
TASK_TRIES = 4
SCHEMA = [
    {"name": "id", "type": "STRING", "mode": "REQUIRED"},
    {"name": "n", "type": "INT64"},
]


@pytest.fixture
def faulty(local_bigquery: LocalBigQuery, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    """A fault proxy (no random faults until ``rate`` is set) behind the ``faulty`` connection."""
    hook_defaults(monkeypatch, retry_deadline=RETRY_DEADLINE, request_timeout=REQUEST_TIMEOUT)
    with FaultProxy(local_bigquery.endpoint, rate=0.0, seed=SEED, slow_delay=SLOW_DELAY) as proxy:
        monkeypatch.setenv("AIRFLOW_CONN_FAULTY", connection_env(local_bigquery, proxy.url))
        yield proxy


@pytest.mark.slow
def test_reference_run_loads_what_the_exports_hold(exports: list[Hour], reference: Reference) -> None:
    """The comparison below is only as good as the reference: it holds every record of the input once."""
    ref = reference.snapshot
    expected = exports[-1].manifest["cumulative"]
    assert len(ref["raw.subscriptions"]) == expected["subscriptions"] > 0
    assert len(ref["raw.customers"]) == expected["customers"] > 0
    assert ref["analytics.subscriptions"] == ref["raw.subscriptions"]
    assert ref["analytics.customers"] == ref["raw.customers"]
    assert len(ref["raw.load_rejects"]) == sum(h.manifest["expected"]["quarantined"] for h in exports) > 0
    end, run_id = exports[-1].end.isoformat(), exports[-1].run_id
    assert [w.split(" ", 1)[0] for w in ref["watermarks"]] == list(TABLES)
    assert all(w.endswith(f" {end} {run_id}") for w in ref["watermarks"]), ref["watermarks"]


@pytest.mark.slow
def test_pipeline_under_faults_equals_a_fault_free_run(
    exports: list[Hour], reference: Reference, faulty: FaultProxy, dataset: str
) -> None:
    raw, analytics = f"{dataset}_raw", f"{dataset}_analytics"
    log = TaskLog()
    # One fault of each kind for sure, where it hurts most (lost job submissions above all), then ~20%
    # of all requests at random.
    faulty.arm("drop_after", _is_job_insert)
    faulty.arm("drop_after", _is_upload)
    faulty.arm("slow", _is_job_insert)
    faulty.arm("http_500", lambda method, path: method == "GET" and "/jobs/" in path)
    faulty.arm("http_503", lambda method, path: method == "GET" and "/queries/" in path)
    faulty.arm("http_429", lambda method, path: method == "POST" and path.split("?")[0].endswith("/tables"))
    faulty.arm("drop_before", _is_upload)
    faulty.rate = FAULT_RATE
    started = time.monotonic()
    run_pipeline(exports, raw, analytics, conn_id="faulty", tries=TASK_TRIES, log=log)
    seconds = time.monotonic() - started
    faulty.rate = 0.0

    got = snapshot(raw, analytics)
    lost = [
        e
        for e in faulty.events
        if e.kind in ("drop_after", "slow")
        and (_is_job_insert(e.method, e.path) or _is_upload(e.method, e.path))
    ]
    print(
        f"\nfaults: {faulty.summary()}, of which {len(lost)} lost the response of an applied job submission; "
        f"Airflow task retries {log.retries} of {log.tries} tries {dict(log.kinds())}; "
        f"rows compared {rows_compared(got)}; {seconds:.1f} s"
    )
    for failure in log.failures:
        print("  task retry after:", failure[:200])
    assert faulty.armed() == 0 and set(faulty.counts) == set(KINDS), faulty.counts
    assert len(lost) >= 3, "the armed lost submissions (a query job, an upload, a slow one)"
    assert faulty.total >= 0.15 * faulty.requests > 0
    assert got == reference.snapshot, diff(reference.snapshot, got)
    for table in TABLES:
        assert max(ids(analytics, table).values()) == 1, f"duplicate rows in {analytics}.{table}"


def _ndjson(path: Path, n: int, tag: str) -> str:
    path.write_text("".join(json.dumps({"id": f"{tag}{i}", "n": i}) + "\n" for i in range(n)))
    return str(path)


def _count(table: TableRef) -> int:
    return int(query(f"SELECT COUNT(*) AS n FROM `{table.dataset}.{table.table}`")[0]["n"])


def _is_upload(method: str, path: str) -> bool:
    """The request that creates a load job: the last PUT of a resumable upload, or a multipart POST."""
    if not path.startswith("/upload/bigquery/v2/"):
        return False
    return method == "PUT" or (method == "POST" and "uploadType=multipart" in path)


def _is_job_insert(method: str, path: str) -> bool:
    return (
        method == "POST"
        and path.startswith("/bigquery/v2/")
        and path.split("?", maxsplit=1)[0].endswith("/jobs")
    )


@pytest.mark.parametrize("kind", ["drop_after", "slow"])
def test_a_job_whose_response_is_lost_is_not_applied_twice(
    faulty: FaultProxy, dataset: str, tmp_path: Path, kind: str
) -> None:
    """The emulator applies the job, the client never hears back and submits it again: reattach, no rerun.

    Both jobs are non-idempotent on purpose (WRITE_APPEND load, INSERT): a second run would add rows.
    """
    hook = IncrementalBigQueryHook(gcp_conn_id="faulty")
    table = TableRef(None, dataset, "events")
    hook.ensure_table(table, SCHEMA)

    faulty.arm(kind, _is_upload)
    load = hook.load_ndjson(
        _ndjson(tmp_path / "a.ndjson", 5, "a"),
        table,
        SCHEMA,
        job_id=make_job_id("rel", dataset, "load"),
        write_disposition="WRITE_APPEND",
    )
    uploads = [status for method, path, status in faulty.log if _is_upload(method, path)]
    # Applied, response lost, resent: the emulator refuses the finished upload session (404).
    assert uploads[0] == 200 and len(uploads) == 2, f"the load must reach the emulator twice: {uploads}"
    assert load.job_id == make_job_id("rel", dataset, "load")
    assert _count(table) == 5

    faulty.arm(kind, _is_job_insert)
    insert = hook.query_job(
        f"INSERT INTO {table.sql} (id, n) SELECT CONCAT(id, '_copy'), n FROM {table.sql}",
        job_id=make_job_id("rel", dataset, "insert"),
    )
    inserts = [status for method, path, status in faulty.log if _is_job_insert(method, path)]
    assert inserts[-2:] == [200, 409], "the query job must reach the emulator twice"
    assert insert.job_id == make_job_id("rel", dataset, "insert")
    assert _count(table) == 10
    assert faulty.counts[kind] == 2 and faulty.armed() == 0


def test_a_hung_response_costs_the_request_timeout_not_forever(
    faulty: FaultProxy, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response that does not come within ``request_timeout`` is abandoned and the call retried."""
    faulty.slow_delay = 60.0
    hook = IncrementalBigQueryHook(gcp_conn_id="faulty", request_timeout=1.0, retry_deadline=30.0)
    faulty.arm("slow", lambda method, path: method == "POST" and "/datasets" in path)
    started = time.monotonic()
    hook.ensure_dataset(None, dataset)
    elapsed = time.monotonic() - started
    assert faulty.counts["slow"] == 1
    assert elapsed < 10, f"a hung response blocked the call for {elapsed:.1f} s"
    assert hook.client().get_dataset(dataset).dataset_id == dataset


def test_persistent_errors_give_up_after_the_retry_deadline(faulty: FaultProxy) -> None:
    """Transient errors are retried within ``retry_deadline``, then the call fails: no 10-minute hang."""
    faulty.kinds, faulty.weights, faulty.rate = ["http_503"], [1.0], 1.0
    hook = IncrementalBigQueryHook(gcp_conn_id="faulty", retry_deadline=4.0)
    started = time.monotonic()
    with pytest.raises((RetryError, ServiceUnavailable)):
        hook.run_query("SELECT 1 AS x")
    elapsed = time.monotonic() - started
    assert faulty.counts["http_503"] >= 2, "the error must have been retried"
    assert elapsed < 15, f"gave up after {elapsed:.1f} s, the deadline is 4 s"
