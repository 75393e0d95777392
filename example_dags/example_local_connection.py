"""Check the BigQuery connection the provider's operators use (the local emulator or real BigQuery)."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2024, 1, 1, tzinfo=timezone.utc), catchup=False, tags=["example"])
def example_local_connection() -> None:
    @task
    def check_connection() -> list[str]:
        from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook

        hook = IncrementalBigQueryHook(gcp_conn_id="google_cloud_default")
        hook.check_connection()
        return [d.dataset_id for d in hook.client().list_datasets()]

    check_connection()


example_local_connection()
