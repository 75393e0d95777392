"""IncrementalBigQueryOperator: merge, append and count modes, and mapping over many tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_incremental.operators.bigquery import IncrementalBigQueryOperator

with DAG(
    dag_id="example_incremental_bigquery",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2024, 3, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["example"],
) as dag:
    # How many rows would move in this window? Writes nothing, leaves the watermark.
    count = IncrementalBigQueryOperator(
        task_id="count_changes",
        source_table="billing_raw.subscriptions",
        destination_table="analytics.subscriptions",
        mode="count",
    )
    # One task per table (dynamic task mapping), each with its own watermark in the state table.
    merge = IncrementalBigQueryOperator.partial(
        task_id="merge_tables",
        lag=timedelta(minutes=5),
        overlap=timedelta(hours=1),
        maximum_bytes_billed=10 * 1024**3,
    ).expand_kwargs(
        [
            {"source_table": f"billing_raw.{name}", "destination_table": f"analytics.{name}"}
            for name in ("customers", "subscriptions")
        ]
    )
    # Keep every version of every subscription: a change log.
    history = IncrementalBigQueryOperator(
        task_id="append_history",
        source_table="billing_raw.subscriptions",
        destination_table="analytics.subscriptions_history",
        mode="append",
        initial_value="2024-03-01T00:00:00+00:00",
    )
    count >> [merge, history]
