"""The example pipeline, run end to end by real Airflow (`airflow dags test`) against the emulator."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airflow_provider_incremental.local import LocalBigQuery
from airflow_provider_incremental.local.demo import DAG_ID, _airflow, _finished
from airflow_provider_incremental.local.generate import write_hourly_exports

from .helpers import query

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLES = Path(__file__).parents[2] / "example_dags"
START = datetime(2024, 3, 1, tzinfo=timezone.utc)


def rows(table: str) -> list[str]:
    return [
        r["j"]
        for r in query(f"SELECT TO_JSON_STRING(t) AS j FROM `{table.replace('.', '`.`')}` AS t ORDER BY j")
    ]


def test_pipeline_end_to_end(local_bigquery: LocalBigQuery, dataset: str, tmp_path: Path) -> None:
    manifest = write_hourly_exports(tmp_path, start=START, hours=2, entries_per_hour=12, seed=5)
    assert manifest[1]["late_ids"] and manifest[0]["bad_records"] and manifest[1]["bad_records"]
    raw, analytics = f"{dataset}_raw", f"{dataset}_analytics"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "INCREMENTAL_EXPORT_DIR": str(tmp_path / "exports"),
        "INCREMENTAL_RAW_DATASET": raw,
        "INCREMENTAL_ANALYTICS_DATASET": analytics,
    }
    _airflow(["db", "migrate"], env)
    for hour in range(2):
        output = _airflow(["dags", "test", DAG_ID, (START + timedelta(hours=hour + 1)).isoformat()], env)
        assert _finished(output)[1] == "success", output[-4000:]

    # The late record of hour 1 (its updated_at lies in hour 0) reached analytics, in its latest version.
    for late_id in manifest[1]["late_ids"]:
        got = query(f"SELECT updated_at FROM `{analytics}`.`subscriptions` WHERE id = @id", {"id": late_id})
        assert len(got) == 1
        assert START <= got[0]["updated_at"] < START + timedelta(hours=1), "a late record: updated in hour 0"
    # Every bad record is quarantined with its reason, file and index; nothing else is.
    rejects = query(f"SELECT source, record_index, reason_code FROM `{raw}`.`load_rejects`")
    expected = {
        (str(tmp_path / hour["file"]), bad["index"], bad["reason"])
        for hour in manifest
        for bad in hour["bad_records"]
    }
    assert {(r["source"], r["record_index"], r["reason_code"]) for r in rejects} == expected
    # Analytics holds exactly the raw rows, and the row counts are the generator's.
    for table in ("customers", "subscriptions"):
        assert rows(f"{analytics}.{table}") == rows(f"{raw}.{table}")
        assert len(rows(f"{analytics}.{table}")) == manifest[-1]["cumulative"][table]
