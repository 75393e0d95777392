"""The same pipeline shape built from the Google provider's operators (parse-cost baseline only)."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from airflow.providers.google.cloud.sensors.bigquery import BigQueryTableExistenceSensor
from airflow.sdk import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

TABLES = ("customers", "subscriptions")

with DAG(
    dag_id="google_provider_pipeline",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2024, 3, 1, tzinfo=timezone.utc),
    catchup=False,
) as dag:
    load = BigQueryInsertJobOperator(
        task_id="load_exports",
        configuration={
            "load": {
                "sourceUris": ["gs://bucket/{{ data_interval_start.strftime('%Y%m%dT%H') }}.json"],
                "destinationTable": {"projectId": "p", "datasetId": "billing_raw", "tableId": "staging"},
                "sourceFormat": "NEWLINE_DELIMITED_JSON",
            }
        },
    )
    wait = BigQueryTableExistenceSensor.partial(
        task_id="wait_for_tables", project_id="p", dataset_id="billing_raw"
    ).expand(table_id=list(TABLES))
    merge = BigQueryInsertJobOperator.partial(task_id="merge_into_analytics").expand(
        configuration=[
            {"query": {"query": f"MERGE analytics.{t} USING billing_raw.{t} ON FALSE", "useLegacySql": False}}
            for t in TABLES
        ]
    )
    load >> wait >> merge
