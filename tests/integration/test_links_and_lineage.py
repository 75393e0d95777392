"""Extra links (BigQuery console URLs pushed to XCom) and OpenLineage datasets of the operators."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_incremental.links import (
    BigQueryConsoleDatasetLink,
    BigQueryConsoleJobLink,
    BigQueryConsoleTableLink,
    job_url,
)
from airflow_provider_incremental.local import LocalBigQuery
from airflow_provider_incremental.operators.bigquery import IncrementalBigQueryOperator
from airflow_provider_incremental.transfers.json_to_bigquery import JsonEpochToBigQueryOperator

from .helpers import context

pytestmark = pytest.mark.integration


class RecordingTI(SimpleNamespace):
    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_links_and_lineage(local_bigquery: LocalBigQuery, dataset: str, data_dir: Path) -> None:
    ctx = context(run_id="links_run")
    ctx["ti"] = RecordingTI(map_index=-1, try_number=1, pushed={})
    load = JsonEpochToBigQueryOperator(
        task_id="load", source_path=str(data_dir / "small.json"), dataset_id=dataset
    )
    summary = load.execute(ctx)
    pushed = ctx["ti"].pushed
    project = local_bigquery.project
    assert pushed[BigQueryConsoleDatasetLink().xcom_key] == (
        f"https://console.cloud.google.com/bigquery?project={project}&p={project}&d={dataset}&page=dataset"
    )
    assert pushed[BigQueryConsoleJobLink().xcom_key] == job_url(project, summary["job_ids"][-1], None)
    lineage = load.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("file", str((data_dir / "small.json").resolve()))
    ]
    assert {d.name for d in lineage.outputs} == {
        f"{project}.{dataset}.customers",
        f"{project}.{dataset}.subscriptions",
        f"{project}.{dataset}.load_rejects",
    }

    merge = IncrementalBigQueryOperator(
        task_id="merge", source_table=f"{dataset}.customers", destination_table=f"{dataset}_out.customers"
    )
    merge.execute(ctx)
    assert pushed[BigQueryConsoleTableLink().xcom_key].endswith(f"&d={dataset}_out&t=customers&page=table")
    lineage = merge.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == [f"{project}.{dataset}.customers"]
    assert [d.name for d in lineage.outputs] == [f"{project}.{dataset}_out.customers"]
