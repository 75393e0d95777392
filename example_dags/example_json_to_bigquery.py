"""JsonEpochToBigQueryOperator: load one Chargebee list export (or the pages of one) into BigQuery."""

from __future__ import annotations

import os
from datetime import datetime, timezone

from airflow.sdk import DAG

from airflow_provider_incremental.transfers.json_to_bigquery import JsonEpochToBigQueryOperator

EXPORT = os.environ.get("INCREMENTAL_EXAMPLE_EXPORT", "/tmp/chargebee-exports/*.json")

with DAG(
    dag_id="example_json_to_bigquery",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    tags=["example"],
) as dag:
    # Strict JSON, merge (newest record wins), soft deletes; a glob loads every page as one batch.
    load_strict = JsonEpochToBigQueryOperator(
        task_id="load_strict_json",
        source_path=EXPORT,
        dataset_id="billing_raw",
    )
    # A hand-written export in Python-literal syntax, repaired by a tokenizer (never eval).
    load_literals = JsonEpochToBigQueryOperator(
        task_id="load_python_literals",
        source_path=EXPORT,
        dataset_id="billing_raw_literals",
        allow_python_literals=True,
        epoch_unit="auto",
        on_deleted="hard",
    )
    # An export too large for one worker, split into pages: one mapped task per page. Concurrent loads
    # into the same tables stay correct (newest-wins MERGE; conflicting DML is retried).
    load_pages = JsonEpochToBigQueryOperator.partial(
        task_id="load_pages_in_parallel",
        dataset_id="billing_raw",
    ).expand(source_path=[f"/tmp/chargebee-exports/pages/page-{i:03d}.json" for i in range(4)])
