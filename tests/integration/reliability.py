"""The customers/subscriptions pipeline, run task by task, for the reliability tests (issue 7).

The DAG ``customers_subscriptions_pipeline`` without Airflow's scheduler: per hourly interval, the JSON
load of the hour's generated export into a raw dataset, then the incremental merge of each raw table
into an analytics dataset; Airflow task retries are emulated by calling ``execute`` again with the same
run id. The results are compared as ``TO_JSON_STRING`` of every row, ordered.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook
from airflow_provider_incremental.local import LocalBigQuery
from airflow_provider_incremental.local.generate import write_hourly_exports
from airflow_provider_incremental.operators.bigquery import IncrementalBigQueryOperator
from airflow_provider_incremental.transfers.json_to_bigquery import JsonEpochToBigQueryOperator
from tests.integration.helpers import context, query

UTC = timezone.utc
START = datetime(2024, 3, 1, tzinfo=UTC)
TABLES = ("customers", "subscriptions")
RAW_TABLES = (*TABLES, "load_rejects")
#: hours of the shared input (2024-03-01 00:00 to 02:00) and entries per hourly export
HOURS = 2
ENTRIES_PER_HOUR = 24


@dataclass(frozen=True)
class Hour:
    """One hourly data interval and its export file."""

    index: int
    start: datetime
    path: str
    manifest: dict[str, Any]

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=1)

    @property
    def run_id(self) -> str:
        return f"scheduled__{self.start.isoformat()}"

    def context(self, *, map_index: int = -1, try_number: int = 1) -> dict[str, Any]:
        return context(
            run_id=self.run_id,
            data_interval_start=self.start,
            data_interval_end=self.end,
            map_index=map_index,
            try_number=try_number,
        )


def hourly_exports(out_dir: Path, *, hours: int = 3, entries_per_hour: int = 24, seed: int = 7) -> list[Hour]:
    """Generate ``hours`` hourly exports (new records, updates, late and bad records) from 2024-03-01."""
    manifest = write_hourly_exports(
        out_dir, start=START, hours=hours, entries_per_hour=entries_per_hour, seed=seed, pretty=False
    )
    return [
        Hour(i, START + timedelta(hours=i), str(out_dir / entry["file"]), entry)
        for i, entry in enumerate(manifest)
    ]


def load_operator(raw: str, hour: Hour, conn_id: str = "google_cloud_default") -> JsonEpochToBigQueryOperator:
    return JsonEpochToBigQueryOperator(
        task_id="load_exports",
        source_path=hour.path,
        dataset_id=raw,
        max_bad_records=10,
        gcp_conn_id=conn_id,
    )


def merge_operator(
    raw: str, analytics: str, table: str, conn_id: str = "google_cloud_default"
) -> IncrementalBigQueryOperator:
    return IncrementalBigQueryOperator(
        task_id="merge_into_analytics",
        source_table=f"{raw}.{table}",
        destination_table=f"{analytics}.{table}",
        overlap=timedelta(hours=2),
        gcp_conn_id=conn_id,
    )


@dataclass
class TaskLog:
    """What the emulated Airflow task retries did: every failed try with its error."""

    tries: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def retries(self) -> int:
        return len(self.failures)

    def kinds(self) -> Counter[str]:
        return Counter(f.split(":", 1)[0] for f in self.failures)


def run_task(
    operator: Any,
    hour: Hour,
    *,
    map_index: int = -1,
    tries: int = 1,
    log: TaskLog | None = None,
) -> dict[str, Any]:
    """``execute`` the operator like Airflow would: up to ``tries`` tries of the same run, same run id."""
    log = log if log is not None else TaskLog()
    for try_number in range(1, tries + 1):
        log.tries += 1
        try:
            summary: dict[str, Any] = operator.execute(
                hour.context(map_index=map_index, try_number=try_number)
            )
            return summary
        except Exception as err:
            log.failures.append(f"{type(err).__name__}: {operator.task_id}[{map_index}] {str(err)[:300]}")
            if try_number == tries:
                raise
    raise AssertionError("unreachable")


def run_hour(
    hour: Hour,
    raw: str,
    analytics: str,
    *,
    conn_id: str = "google_cloud_default",
    tries: int = 1,
    log: TaskLog | None = None,
) -> dict[str, Any]:
    """One DAG run: load the hour's export, then merge both raw tables into analytics."""
    summaries: dict[str, Any] = {
        "load": run_task(load_operator(raw, hour, conn_id), hour, tries=tries, log=log)
    }
    for index, table in enumerate(TABLES):
        op = merge_operator(raw, analytics, table, conn_id)
        summaries[table] = run_task(op, hour, map_index=index, tries=tries, log=log)
    return summaries


def run_pipeline(
    hours: Sequence[Hour],
    raw: str,
    analytics: str,
    *,
    conn_id: str = "google_cloud_default",
    tries: int = 1,
    log: TaskLog | None = None,
) -> list[dict[str, Any]]:
    return [run_hour(h, raw, analytics, conn_id=conn_id, tries=tries, log=log) for h in hours]


def rows(dataset: str, table: str) -> list[str]:
    """Every row of ``dataset.table`` as ``TO_JSON_STRING``, sorted."""
    got = query(f"SELECT TO_JSON_STRING(t) AS j FROM `{dataset}.{table}` AS t")
    return sorted(r["j"] for r in got)


def snapshot(raw: str, analytics: str) -> dict[str, list[str]]:
    """The pipeline's tables (raw targets and rejects, analytics) and watermarks, dataset names removed."""
    out = {f"raw.{t}": rows(raw, t) for t in RAW_TABLES}
    out |= {f"analytics.{t}": rows(analytics, t) for t in TABLES}
    out["watermarks"] = watermarks(analytics)
    return out


def watermarks(analytics: str) -> list[str]:
    """The state table as ``table cursor watermark run_id`` lines (datasets stripped), sorted."""
    got = query(f"SELECT destination, `cursor`, watermark, run_id FROM `{analytics}._incremental_state`")
    return sorted(
        f"{r['destination'].rsplit('.', 1)[-1]} {r['cursor']} "
        f"{r['watermark'].isoformat() if r['watermark'] else None} {r['run_id']}"
        for r in got
    )


def ids(dataset: str, table: str) -> Counter[str]:
    """How many rows each id has in ``dataset.table``."""
    return Counter(r["id"] for r in query(f"SELECT id FROM `{dataset}.{table}`"))


def diff(expected: dict[str, list[str]], got: dict[str, list[str]]) -> str:
    """A short description of how two snapshots differ (empty when equal)."""
    lines = []
    for name, want in expected.items():
        have = got.get(name, [])
        missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
        if missing or extra or len(want) != len(have):
            lines.append(
                f"{name}: {len(want)} expected, {len(have)} got; "
                f"missing {[m[:160] for m in missing[:3]]}; extra {[e[:160] for e in extra[:3]]}"
            )
    return "\n".join(lines)


def drop_datasets(*names: str) -> None:
    """Delete datasets and their tables (the emulator slows down with every table it holds)."""
    client = IncrementalBigQueryHook().client()
    for name in names:
        client.delete_dataset(name, delete_contents=True, not_found_ok=True)


def rows_compared(snap: dict[str, list[str]]) -> int:
    return sum(len(v) for v in snap.values())


def hook_defaults(monkeypatch: pytest.MonkeyPatch, **defaults: float) -> None:
    """Change the defaults of the hooks the operators build (e.g. a short ``request_timeout``)."""
    init: Callable[..., None] = IncrementalBigQueryHook.__init__
    monkeypatch.setattr(init, "__kwdefaults__", {**(init.__kwdefaults__ or {}), **defaults})


def connection_env(local_bigquery: LocalBigQuery, endpoint: str) -> str:
    """``AIRFLOW_CONN_<ID>`` JSON of a connection to the emulator's project through ``endpoint``."""
    conn = local_bigquery.connection()
    conn["extra"] = {**conn["extra"], "api_endpoint": endpoint}
    return json.dumps(conn)


# -- one fault-free reference run per test session, shared by the reliability modules -------------------


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> list[Hour]:
    """The hourly exports every reliability test loads (generated once per session)."""
    return hourly_exports(
        tmp_path_factory.mktemp("reliability-exports"), hours=HOURS, entries_per_hour=ENTRIES_PER_HOUR
    )


@dataclass(frozen=True)
class Reference:
    """The fault-free, sequential, uninterrupted run of the pipeline over :func:`shared_exports`."""

    raw: str
    analytics: str
    snapshot: dict[str, list[str]]


@pytest.fixture(scope="session")
def reference(exports: list[Hour], local_bigquery: LocalBigQuery) -> Reference:
    """The tables of the pipeline run once per session (default connection, no faults, no crash)."""
    suffix = uuid.uuid4().hex[:8]
    raw, analytics = f"ref_raw_{suffix}", f"ref_analytics_{suffix}"
    run_pipeline(exports, raw, analytics)
    return Reference(raw, analytics, snapshot(raw, analytics))
