"""IncrementalBigQueryHook round trips against the local BigQuery emulator."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_provider_incremental.core.sql import TableRef
from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook, make_job_id, make_labels
from airflow_provider_incremental.local import LocalBigQuery

pytestmark = pytest.mark.integration
UTC = timezone.utc
SCHEMA = [
    {"name": "id", "type": "STRING", "mode": "REQUIRED"},
    {"name": "created_at", "type": "TIMESTAMP"},
    {"name": "updated_at", "type": "TIMESTAMP"},
    {"name": "amount", "type": "INT64"},
]


@pytest.fixture
def hook(local_bigquery: LocalBigQuery) -> IncrementalBigQueryHook:
    return IncrementalBigQueryHook(gcp_conn_id="google_cloud_default")


def _ndjson(path: Path, rows: list[dict[str, object]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rows(n: int, *, amount: int = 1, hour: int = 0) -> list[dict[str, object]]:
    base = datetime(2024, 3, 1, hour, tzinfo=UTC)
    return [
        {
            "id": f"id{i}",
            "created_at": (base + timedelta(minutes=i)).isoformat(),
            "updated_at": (base + timedelta(minutes=i)).isoformat(),
            "amount": amount,
        }
        for i in range(n)
    ]


def test_connection_project_and_endpoint_come_from_the_connection(
    hook: IncrementalBigQueryHook, local_bigquery: LocalBigQuery
) -> None:
    assert hook.api_endpoint == local_bigquery.endpoint
    assert hook.project_id == local_bigquery.project
    hook.check_connection()


def test_round_trip(hook: IncrementalBigQueryHook, dataset: str, tmp_path: Path) -> None:
    table = TableRef(None, dataset, "events")
    hook.ensure_table(table, SCHEMA, partition_field="created_at", cluster_fields=["id"])
    hook.ensure_table(table, SCHEMA, partition_field="created_at", cluster_fields=["id"])  # idempotent
    bq_table = hook.client().get_table(f"{hook.project_id}.{dataset}.events")
    assert bq_table.time_partitioning is not None and bq_table.time_partitioning.field == "created_at"
    assert bq_table.clustering_fields == ["id"]

    job = hook.load_ndjson(
        _ndjson(tmp_path / "a.ndjson", _rows(5)),
        table,
        SCHEMA,
        job_id=make_job_id("test", dataset, "load"),
        write_disposition="WRITE_APPEND",
        labels=make_labels(None, airflow_dag="My DAG", airflow_task="t.1"),
    )
    assert job.output_rows == 5

    got = hook.run_query(
        f"SELECT COUNT(*) AS n, MIN(created_at) AS first FROM {table.sql} WHERE created_at >= @since",
        {"since": datetime(2024, 3, 1, 0, 2, tzinfo=UTC)},
    )
    assert got == [{"n": 3, "first": datetime(2024, 3, 1, 0, 2, tzinfo=UTC)}]

    other = TableRef(None, dataset, "other")
    hook.ensure_table(other, SCHEMA[:2])
    missing = TableRef(None, dataset, "missing")
    columns = hook.get_columns([table, other, missing])
    assert columns[hook.resolve(table)] == {
        "id": "STRING",
        "created_at": "TIMESTAMP",
        "updated_at": "TIMESTAMP",
        "amount": "INT64",
    }
    assert columns[hook.resolve(other)] == {"id": "STRING", "created_at": "TIMESTAMP"}
    assert columns[hook.resolve(missing)] == {}


def test_columns_of_missing_dataset_is_empty(hook: IncrementalBigQueryHook) -> None:
    table = TableRef(None, "no_such_dataset_xyz", "t")
    assert hook.get_columns([table]) == {hook.resolve(table): {}}


def test_same_job_id_is_not_applied_twice(
    hook: IncrementalBigQueryHook, dataset: str, tmp_path: Path
) -> None:
    table = TableRef(None, dataset, "appended")
    path = _ndjson(tmp_path / "a.ndjson", _rows(4))
    job_id = make_job_id("test", dataset, "append")
    first = hook.load_ndjson(path, table, SCHEMA, job_id=job_id, write_disposition="WRITE_APPEND")
    again = hook.load_ndjson(path, table, SCHEMA, job_id=job_id, write_disposition="WRITE_APPEND")
    assert first.job_id == again.job_id == job_id
    assert hook.run_query(f"SELECT COUNT(*) AS n FROM {table.sql}") == [{"n": 4}]


def test_merge_script_and_transactional_upsert(
    hook: IncrementalBigQueryHook, dataset: str, tmp_path: Path
) -> None:
    target = TableRef(None, dataset, "target")
    staging = TableRef(None, dataset, "staging")
    hook.ensure_table(target, SCHEMA)
    hook.load_ndjson(
        _ndjson(tmp_path / "t.ndjson", _rows(3)), target, SCHEMA, job_id=make_job_id(dataset, "t")
    )
    newer = _rows(4, amount=2, hour=1)
    hook.load_ndjson(_ndjson(tmp_path / "s.ndjson", newer), staging, SCHEMA, job_id=make_job_id(dataset, "s"))

    merge = f"""
    MERGE {target.sql} T USING {staging.sql} S ON T.id = S.id
    WHEN MATCHED AND S.updated_at > T.updated_at THEN UPDATE SET amount = S.amount, updated_at = S.updated_at
    WHEN NOT MATCHED THEN INSERT (id, created_at, updated_at, amount)
      VALUES (S.id, S.created_at, S.updated_at, S.amount);
    SELECT COUNT(*) AS n, SUM(amount) AS total FROM {target.sql};
    """
    assert hook.run_query(merge) == [{"n": 4, "total": 8}]

    upsert = f"""
    BEGIN TRANSACTION;
    DELETE FROM {target.sql} T WHERE EXISTS (
      SELECT 1 FROM {staging.sql} S WHERE S.id = T.id AND S.updated_at >= T.updated_at);
    INSERT INTO {target.sql} (id, created_at, updated_at, amount)
      SELECT id, created_at, updated_at, amount + @bump FROM {staging.sql} S
      WHERE NOT EXISTS (SELECT 1 FROM {target.sql} T WHERE T.id = S.id);
    COMMIT TRANSACTION;
    SELECT COUNT(*) AS n, SUM(amount) AS total FROM {target.sql};
    """
    assert hook.run_query(upsert, {"bump": 10}, job_id=make_job_id(dataset, "upsert")) == [
        {"n": 4, "total": 48}
    ]
    # Same job id: reattached, not applied again.
    assert hook.run_query(upsert, {"bump": 10}, job_id=make_job_id(dataset, "upsert")) == [
        {"n": 4, "total": 48}
    ]


def test_failed_job_is_rerun_under_a_new_id(hook: IncrementalBigQueryHook, dataset: str) -> None:
    table = TableRef(None, dataset, "later")
    job_id = make_job_id(dataset, "later")
    with pytest.raises(Exception, match="later"):
        hook.run_query(f"SELECT COUNT(*) AS n FROM {table.sql}", job_id=job_id)
    hook.ensure_table(table, SCHEMA)
    job = hook.query_job(f"SELECT COUNT(*) AS n FROM {table.sql}", job_id=job_id)
    assert job.job_id == f"{job_id}_1"


def test_unreachable_endpoint_fails_fast_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = {
        "conn_type": "google_cloud_platform",
        "extra": {"project": "p-unreachable", "api_endpoint": "http://127.0.0.1:9", "is_anonymous": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", json.dumps(conn))
    hook = IncrementalBigQueryHook(gcp_conn_id="nowhere")
    started = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        hook.check_connection(timeout=3)
    assert time.monotonic() - started < 20
    message = str(err.value)
    assert "p-unreachable" in message and "http://127.0.0.1:9" in message and "'nowhere'" in message
