"""``gs://`` sources through the Google provider's GCS hook, against the gcp-storage-emulator (PyPI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_incremental.local.emulator import free_port, stop_process_group
from airflow_provider_incremental.transfers.json_to_bigquery import JsonEpochToBigQueryOperator

from .helpers import context, query

pytestmark = pytest.mark.integration
BUCKET = "exports"


@pytest.fixture(scope="module")
def storage_endpoint() -> Iterator[str]:
    exe = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent))
    assert exe, "gcp-storage-emulator is a dev dependency"
    port = free_port()
    process = subprocess.Popen(
        [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/storage/v1/b?project=p", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (
                    "storage emulator did not start"
                )
                time.sleep(0.1)
        yield endpoint
    finally:
        stop_process_group(process.pid)


@pytest.fixture
def bucket(storage_endpoint: str, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> str:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_endpoint)
    client = storage.Client(project="local-project", credentials=AnonymousCredentials())
    bucket = client.bucket(BUCKET)
    if not bucket.exists():
        client.create_bucket(BUCKET)
    for hour in ("20240301T00", "20240301T01"):
        bucket.blob(f"chargebee/{hour}.json").upload_from_filename(str(data_dir / "small.json"))
    bucket.blob("other/ignored.json").upload_from_string(b"not json")
    return BUCKET


def test_gcs_object_and_prefix_glob(bucket: str, dataset: str) -> None:
    single = JsonEpochToBigQueryOperator(
        task_id="gcs_single", source_path=f"gs://{bucket}/chargebee/20240301T00.json", dataset_id=dataset
    )
    summary = single.execute(context(run_id="gcs_single"))
    assert summary["entries_read"] == 20 and summary["quarantined"]["total"] == 0
    lineage = single.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        (f"gs://{bucket}", "chargebee/20240301T00.json")
    ]

    pages = JsonEpochToBigQueryOperator(
        task_id="gcs_glob", source_path=f"gs://{bucket}/chargebee/2024*", dataset_id=dataset
    )
    summary = pages.execute(context(run_id="gcs_glob"))
    assert summary["entries_read"] == 40, "both pages, and not the object outside the prefix"
    assert sorted(summary["next_offset"]["by_source"]) == [
        f"gs://{bucket}/chargebee/20240301T00.json",
        f"gs://{bucket}/chargebee/20240301T01.json",
    ]
    counts = query(
        f"SELECT (SELECT COUNT(*) FROM `{dataset}`.`subscriptions`) AS s, "
        f"(SELECT COUNT(*) FROM `{dataset}`.`customers`) AS c"
    )
    assert counts == [{"s": 20, "c": 18}], "the same records twice: merged, not duplicated"


def test_missing_gcs_objects_fail_clearly(bucket: str, dataset: str) -> None:
    op = JsonEpochToBigQueryOperator(
        task_id="gcs_none", source_path=f"gs://{bucket}/nothing/*", dataset_id=dataset
    )
    with pytest.raises(FileNotFoundError, match=r"No object matches 'gs://exports/nothing/\*'"):
        op.execute(context(run_id="gcs_none"))
