"""BigQueryTimestampColumnSensor: plain (poke / reschedule) and deferrable, side by side."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_incremental.sensors.bigquery import BigQueryTimestampColumnSensor

with DAG(
    dag_id="example_timestamp_column_sensor",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2024, 3, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["example"],
) as dag:
    # Occupies a worker slot only while poking (reschedule mode).
    plain = BigQueryTimestampColumnSensor(
        task_id="wait_for_columns",
        table="billing_raw.subscriptions",
        columns=("created_at", "updated_at"),
        require="all",
        mode="reschedule",
        poke_interval=60,
        timeout=3600,
    )
    # Waits in the triggerer, and also until the data of the interval has arrived.
    deferred = BigQueryTimestampColumnSensor(
        task_id="wait_for_fresh_data",
        table="billing_raw.customers",
        fresh_through="{{ data_interval_end }}",
        deferrable=True,
        poll_interval=60,
        timeout=3600,
    )
