"""Run the example pipeline end to end on the local BigQuery emulator (``make demo``).

Sets up a throw-away Airflow home (SQLite), starts the emulator, runs the example DAG with
``airflow dags test`` and prints what landed; the emulator is always stopped afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_incremental.local.emulator import LocalBigQuery

DEFAULT_DAG = "example_local_connection"


def _airflow(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run([airflow, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"`airflow {' '.join(args)}` failed with exit code {result.returncode}")
    return result


def _run_state(output: str) -> str:
    """The final state of the run that ``airflow dags test`` printed."""
    found = re.findall(r"DagRun Finished: .*?, state=(\w+)", output)
    return found[-1] if found else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dags-folder", default=str(Path.cwd() / "example_dags"))
    parser.add_argument("--dag-id", default=DEFAULT_DAG)
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="airflow-incremental-demo-"))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": args.dags_folder,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    started = time.monotonic()
    try:
        print(f"[demo] Airflow home {home}; migrating the SQLite metadata DB ...", flush=True)
        _airflow(["db", "migrate"], env)
        with LocalBigQuery() as bq:
            print(f"[demo] local BigQuery emulator at {bq.endpoint} (project {bq.project})", flush=True)
            env.update(bq.airflow_env())
            result = _airflow(["dags", "test", args.dag_id], env)
            state = _run_state(result.stdout + result.stderr)
            print(f"[demo] {args.dag_id}: run {state}", flush=True)
            if state != "success":
                sys.stderr.write(result.stdout[-6000:])
                return 1
        print(f"[demo] done in {time.monotonic() - started:.0f} s; the emulator is stopped.")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
