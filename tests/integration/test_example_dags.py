"""Every example DAG imports cleanly, and parsing one imports nothing heavy (DAG parse cost)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "example_dags"


def test_example_dags_import_without_errors() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    assert {
        "customers_subscriptions_pipeline",
        "example_json_to_bigquery",
        "example_incremental_bigquery",
        "example_timestamp_column_sensor",
        "example_local_connection",
    } <= set(bag.dag_ids)
    pipeline = bag.dags["customers_subscriptions_pipeline"]
    assert [t.task_id for t in pipeline.topological_sort()] == [
        "load_exports",
        "wait_for_cursor_columns",
        "merge_into_analytics",
    ]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_parsing_a_dag_file_does_not_import_the_bigquery_client(path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import runpy, sys
        runpy.run_path({str(path)!r})
        heavy = [m for m in ("google.cloud.bigquery", "pandas", "google.cloud.storage") if m in sys.modules]
        print("HEAVY=" + ",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    heavy = [line for line in out.stdout.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], f"{path.name} imports {heavy}"
