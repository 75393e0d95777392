"""Test-wide set-up: a throw-away AIRFLOW_HOME (before Airflow is imported) and shared fixtures.

The ``local_bigquery`` fixture (a local BigQuery emulator per test session) comes from the
provider's own pytest plugin, ``airflow_provider_incremental.local.pytest_plugin``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_HOME = tempfile.mkdtemp(prefix="airflow-home-tests-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(_HOME) / "dags"))

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def dataset(local_bigquery: object) -> Iterator[str]:
    """A fresh dataset name per test (created by whatever the test runs), dropped afterwards.

    Dropped with every dataset named after it (``<name>_raw``, ``<name>_out``...): each query of the
    local emulator gets slower with every table it holds, so leftovers would slow the whole session.
    """
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook

    client = IncrementalBigQueryHook().client()
    for item in client.list_datasets():
        if item.dataset_id.startswith(name):
            client.delete_dataset(item.reference, delete_contents=True, not_found_ok=True)
