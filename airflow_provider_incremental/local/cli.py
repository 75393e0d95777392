"""``airflow-incremental-local up|down|status``: a local BigQuery emulator for your own DAGs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from airflow_provider_incremental.local.emulator import (
    DEFAULT_PROJECT,
    LocalBigQuery,
    answers,
    cache_dir,
    stop_process_group,
)


def state_file() -> Path:
    return cache_dir() / "local-server.json"


def _read_state() -> dict[str, object] | None:
    try:
        state: dict[str, object] = json.loads(state_file().read_text())
        return state
    except (OSError, ValueError):
        return None


def up(project: str, port: int | None) -> int:
    state = _read_state()
    if state and answers(str(state["endpoint"]), str(state["project"])):
        print(f"Already running at {state['endpoint']} (pid {state['pid']}).")
        return 0
    data_dir = cache_dir() / "local-server-data"
    shutil.rmtree(data_dir, ignore_errors=True)
    os.environ.pop("BIGQUERY_EMULATOR_HOST", None)
    server = LocalBigQuery(project=project, port=port, data_dir=data_dir, detach=True).start()
    state_file().write_text(
        json.dumps(
            {"pid": server.pid, "endpoint": server.endpoint, "project": project, "data_dir": str(data_dir)}
        )
    )
    print(f"Local BigQuery emulator running at {server.endpoint} (pid {server.pid}, project {project}).")
    print("Point Airflow at it with:")
    for key, value in server.airflow_env().items():
        print(f"  export {key}='{value}'")
    return 0


def down() -> int:
    state = _read_state()
    if not state:
        print("No local BigQuery emulator is running.")
        return 0
    stop_process_group(int(str(state["pid"])))
    shutil.rmtree(str(state["data_dir"]), ignore_errors=True)
    state_file().unlink(missing_ok=True)
    print(f"Stopped the local BigQuery emulator at {state['endpoint']}.")
    return 0


def status() -> int:
    state = _read_state()
    if state and answers(str(state["endpoint"]), str(state["project"])):
        print(f"running at {state['endpoint']} (pid {state['pid']}, project {state['project']})")
        return 0
    print("not running")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow-incremental-local", description=__doc__)
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.project, args.port)
    return down() if args.command == "down" else status()


if __name__ == "__main__":
    sys.exit(main())
