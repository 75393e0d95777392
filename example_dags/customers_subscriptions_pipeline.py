"""Hourly customers/subscriptions pipeline: Chargebee exports -> raw tables -> analytics, exactly once.

Every hour (real, hour-wide data intervals, so ``catchup`` backfills work):

1. ``load_exports`` loads the hour's Chargebee list export (``<export dir>/<YYYYMMDDTHH>.json``) into the
   raw ``customers`` and ``subscriptions`` tables (bad records go to ``load_rejects``);
2. ``wait_for_cursor_columns`` checks that both raw tables have their cursor columns and data through
   the end of the interval;
3. ``merge_into_analytics`` moves only the new and updated rows of each raw table into the analytics
   dataset (mapped: one task per table), with a watermark that late, retried and backfilled runs
   respect.

Runs on the local BigQuery emulator (``make demo``) and on real BigQuery alike: only the
``google_cloud_default`` connection changes. Datasets and the export directory come from environment
variables with local defaults.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_incremental.operators.bigquery import IncrementalBigQueryOperator
from airflow_provider_incremental.sensors.bigquery import BigQueryTimestampColumnSensor
from airflow_provider_incremental.transfers.json_to_bigquery import JsonEpochToBigQueryOperator

EXPORT_DIR = os.environ.get("INCREMENTAL_EXPORT_DIR", "/tmp/chargebee-exports")
RAW_DATASET = os.environ.get("INCREMENTAL_RAW_DATASET", "billing_raw")
ANALYTICS_DATASET = os.environ.get("INCREMENTAL_ANALYTICS_DATASET", "analytics")
TABLES = ("customers", "subscriptions")

with DAG(
    dag_id="customers_subscriptions_pipeline",
    description="Chargebee exports -> BigQuery raw -> analytics, hourly and exactly once",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2024, 3, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["example", "incremental", "bigquery"],
    doc_md=__doc__,
) as dag:
    load_exports = JsonEpochToBigQueryOperator(
        task_id="load_exports",
        source_path=EXPORT_DIR + "/{{ data_interval_start.strftime('%Y%m%dT%H') }}.json",
        dataset_id=RAW_DATASET,
        max_bad_records=10,
    )
    wait_for_cursor_columns = BigQueryTimestampColumnSensor.partial(
        task_id="wait_for_cursor_columns",
        require="all",
        poke_interval=10,
        timeout=600,
        mode="reschedule",
    ).expand(table=[f"{RAW_DATASET}.{table}" for table in TABLES])
    merge_into_analytics = IncrementalBigQueryOperator.partial(
        task_id="merge_into_analytics",
        overlap=timedelta(hours=2),
    ).expand_kwargs(
        [
            {"source_table": f"{RAW_DATASET}.{table}", "destination_table": f"{ANALYTICS_DATASET}.{table}"}
            for table in TABLES
        ]
    )
    load_exports >> wait_for_cursor_columns >> merge_into_analytics
