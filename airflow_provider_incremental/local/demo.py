"""Run the example pipeline end to end on the local BigQuery emulator (``make demo``).

1. generates a few hours of Chargebee-format exports (new, updated, late, deleted and bad records);
2. sets up a throw-away Airflow home (SQLite) and starts the local BigQuery emulator;
3. runs ``customers_subscriptions_pipeline`` for consecutive hourly intervals with ``airflow dags test``;
4. prints one line per run (entries read, loaded, quarantined, rows merged, watermark) and the final
   row counts next to what the generator's manifest expects; then stops the emulator.

Exits non-zero when a run fails or a final count differs from the manifest.
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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow_provider_incremental.local.emulator import LocalBigQuery
from airflow_provider_incremental.local.generate import write_hourly_exports

DAG_ID = "customers_subscriptions_pipeline"
RAW, ANALYTICS = "billing_raw", "analytics"


def _airflow(args: list[str], env: dict[str, str]) -> str:
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run([airflow, *args], env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        sys.stderr.write(output[-6000:])
        raise SystemExit(f"`airflow {' '.join(args)}` failed with exit code {result.returncode}")
    return output


def _finished(output: str) -> tuple[str, str]:
    """(run_id, state) of the run that ``airflow dags test`` printed."""
    found = re.findall(r"DagRun Finished: .*?run_id=([^,]+), .*?state=(\w+)", output)
    return found[-1] if found else ("?", "unknown")


def _xcoms(dag_id: str, run_id: str) -> dict[tuple[str, int], Any]:
    """The return values of a run's tasks, read from the metadata DB: {(task_id, map_index): value}."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "return_value")
            .all()
        )
        return {(row.task_id, row.map_index): XComModel.deserialize_value(row) for row in rows}


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(str(cell).rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _run_line(hour: datetime, xcoms: dict[tuple[str, int], Any], seconds: float) -> list[str]:
    load = xcoms.get(("load_exports", -1)) or {}
    merges = {
        value["source_table"].rsplit(".", 1)[-1]: value
        for (task, _), value in xcoms.items()
        if task == "merge_into_analytics"
    }
    reasons = load.get("quarantined", {}).get("by_reason", {})

    def merged(name: str) -> str:
        value = merges.get(name, {})
        return f"+{value.get('rows_inserted', '?')}/~{value.get('rows_updated', '?')}"

    watermark = (merges.get("subscriptions") or {}).get("watermark_after") or "-"
    return [
        hour.strftime("%Y-%m-%d %H:00"),
        str(load.get("entries_read", "?")),
        str(load.get("customers_rows", "?")),
        str(load.get("subscriptions_rows", "?")),
        f"{load.get('quarantined', {}).get('total', '?')} {','.join(sorted(reasons))}".strip(),
        merged("customers"),
        merged("subscriptions"),
        str(watermark)[:16],
        f"{seconds:.0f}s",
    ]


def _final_counts() -> dict[str, int]:
    from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook

    hook = IncrementalBigQueryHook()
    counts = {}
    for table in (
        f"{RAW}.customers",
        f"{RAW}.subscriptions",
        f"{RAW}.load_rejects",
        f"{ANALYTICS}.customers",
        f"{ANALYTICS}.subscriptions",
    ):
        counts[table] = int(
            hook.run_query(f"SELECT COUNT(*) AS n FROM `{table.replace('.', '`.`')}`")[0]["n"]
        )
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dags-folder", default=str(Path.cwd() / "example_dags"))
    parser.add_argument("--hours", type=int, default=4)
    parser.add_argument("--entries-per-hour", type=int, default=40)
    parser.add_argument("--start", default="2024-03-01T00:00:00+00:00")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    start = datetime.fromisoformat(args.start).astimezone(timezone.utc)

    home = Path(tempfile.mkdtemp(prefix="airflow-incremental-demo-"))
    manifest = write_hourly_exports(
        home, start=start, hours=args.hours, entries_per_hour=args.entries_per_hour, seed=args.seed
    )
    print(
        f"[demo] generated {args.hours} hourly exports in {home / 'exports'} "
        f"({sum(h['entries'] for h in manifest)} entries, "
        f"{sum(h['late'] for h in manifest)} late, {sum(h['bad'] for h in manifest)} bad)"
    )
    env = {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": args.dags_folder,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "INCREMENTAL_EXPORT_DIR": str(home / "exports"),
        "INCREMENTAL_RAW_DATASET": RAW,
        "INCREMENTAL_ANALYTICS_DATASET": ANALYTICS,
    }
    os.environ.update(env)  # before Airflow is imported here (XCom reads, final counts)
    env = {**os.environ}
    try:
        print("[demo] migrating the SQLite metadata DB ...", flush=True)
        _airflow(["db", "migrate"], env)
        with LocalBigQuery() as bq:
            print(f"[demo] local BigQuery emulator at {bq.endpoint} (project {bq.project})", flush=True)
            print(
                "[demo] per run: entries read, rows loaded into raw, records quarantined (reasons), rows merged"
                " into analytics (+inserted/~updated), watermark after the run",
                flush=True,
            )
            os.environ.update(bq.airflow_env())
            env.update(bq.airflow_env())
            rows = [
                [
                    "interval start",
                    "read",
                    "customers",
                    "subscr.",
                    "quarantined",
                    "merged cust.",
                    "merged subs.",
                    "watermark",
                    "time",
                ]
            ]
            for hour in range(args.hours):
                interval_start = start + timedelta(hours=hour)
                t0 = time.monotonic()
                output = _airflow(
                    ["dags", "test", DAG_ID, (interval_start + timedelta(hours=1)).isoformat()], env
                )
                run_id, state = _finished(output)
                if state != "success":
                    sys.stderr.write(output[-8000:])
                    print(f"[demo] run for {interval_start} ended {state}", file=sys.stderr)
                    return 1
                rows.append(_run_line(interval_start, _xcoms(DAG_ID, run_id), time.monotonic() - t0))
                print(_table(rows).splitlines()[-1] if hour else _table(rows), flush=True)
            counts = _final_counts()
        expected = manifest[-1]["cumulative"]
        want = {
            f"{RAW}.customers": expected["customers"],
            f"{RAW}.subscriptions": expected["subscriptions"],
            f"{RAW}.load_rejects": sum(h["bad"] for h in manifest),
            f"{ANALYTICS}.customers": expected["customers"],
            f"{ANALYTICS}.subscriptions": expected["subscriptions"],
        }
        print("\n[demo] what landed:")
        table = [["table", "rows", "expected", ""]]
        table += [
            [name, str(n), str(want[name]), "ok" if n == want[name] else "MISMATCH"]
            for name, n in counts.items()
        ]
        print(_table(table))
        ok = all(counts[name] == want[name] for name in counts)
        print(
            f"[demo] {'all counts match' if ok else 'COUNTS DIFFER'}; done in {time.monotonic() - started:.0f} s;"
            " the emulator is stopped."
        )
        return 0 if ok else 1
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
