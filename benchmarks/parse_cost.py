"""DAG parse cost: what a DAG file costs the DAG processor on top of an already-imported Airflow.

Each sample runs in a fresh process that first imports what the DAG processor already has (``airflow.sdk``,
timetables, DAG serialization), then
times ``runpy.run_path(dag_file)``: imports of the file plus DAG construction. Compares the example
pipeline with a DAG of the same shape built from the Google provider's ``BigQueryInsertJobOperator``
and ``BigQueryTableExistenceSensor``. Target (issue 6): ours <= 0.1x theirs.

Run: ``python benchmarks/parse_cost.py [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILES = {
    "provider pipeline": HERE.parent / "example_dags" / "customers_subscriptions_pipeline.py",
    "google provider": HERE / "dags" / "google_provider_pipeline.py",
}
CHILD = """
import runpy, sys, time
# What the DAG processor has imported before it parses a file: the SDK, timetables, DAG serialization.
import airflow.sdk, airflow.timetables.interval, airflow.serialization.serialized_objects
start = time.perf_counter()
runpy.run_path(sys.argv[1])
print(time.perf_counter() - start)
"""


def sample(path: Path, env: dict[str, str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    env = {
        **os.environ,
        "AIRFLOW_HOME": tempfile.mkdtemp(prefix="parse-cost-"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    times: dict[str, list[float]] = {name: [] for name in FILES}
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        for name, path in FILES.items():
            times[name].append(sample(path, env))
    base = statistics.median(times["google provider"])
    print(f"{'DAG file':<20} {'min ms':>8} {'median ms':>10} {'ratio (median)':>15}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<20} {min(values) * 1e3:>8.1f} {median * 1e3:>10.1f} {median / base:>14.3f}x")
    ratio = statistics.median(times["provider pipeline"]) / base
    print(
        f"target: provider pipeline <= 0.1x google provider -> {'PASS' if ratio <= 0.1 else 'MISS'} ({ratio:.3f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
