"""Run one pipeline task in a child process that the crash tests SIGKILL at a chosen point (issue 7).

:func:`run` takes a spec (a dict; JSON on the command line: ``python -m tests.integration.crashrunner
SPEC``):

* ``task``: ``load`` (``load_exports`` of the hour) or ``merge`` (``merge_into_analytics`` of ``table``);
* ``raw``, ``analytics``, ``table``, ``map_index``, ``try``: what the task works on, and its try number;
* ``hour``: ``index``, ``start`` (ISO) and ``path`` of the hour's export;
* ``crash``: optional ``{"when": "before"|"after", "method": "load_ndjson"|"query_job",
  "job_id": <substring>}``: when the hook method is called with a matching ``job_id``, the child writes
  ``marker`` (before calling it, or after it returned) and sleeps until it is killed;
* ``marker``: the file that tells the parent the child reached the crash point;
* ``out``: where the task's summary (XCom) is written when the task finishes;
* ``log``: optional file that receives the child's stdout and stderr.

Everything else (the connection, ``AIRFLOW_HOME``) comes from the environment, as for a task process.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook
from tests.integration.reliability import Hour, load_operator, merge_operator

CRASH_METHODS = ("load_ndjson", "query_job")


def _pause_at(spec: dict[str, Any]) -> None:
    """Wrap the hook method so that the matching call writes the marker and waits to be killed."""
    crash, marker = spec["crash"], Path(spec["marker"])
    if crash["method"] not in CRASH_METHODS or crash["when"] not in ("before", "after"):
        raise ValueError(f"bad crash point {crash}")
    original = getattr(IncrementalBigQueryHook, crash["method"])

    def hang(job_id: str) -> None:
        marker.write_text(job_id)
        while True:  # the parent SIGKILLs us here
            time.sleep(1)

    @functools.wraps(original)
    def wrapper(self: IncrementalBigQueryHook, *args: Any, **kwargs: Any) -> Any:
        job_id = str(kwargs.get("job_id") or "")
        hit = crash["job_id"] in job_id
        if hit and crash["when"] == "before":
            hang(job_id)
        result = original(self, *args, **kwargs)
        if hit:
            hang(job_id)
        return result

    setattr(IncrementalBigQueryHook, crash["method"], wrapper)


def run(spec: dict[str, Any]) -> None:
    """Run the task of ``spec`` (in this process), pausing at its crash point if it has one."""
    if spec.get("log"):
        log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    if spec.get("crash"):
        _pause_at(spec)
    h = spec["hour"]
    hour = Hour(h["index"], datetime.fromisoformat(h["start"]), h["path"], {})
    if spec["task"] == "load":
        operator: Any = load_operator(spec["raw"], hour)
    else:
        operator = merge_operator(spec["raw"], spec["analytics"], spec["table"])
    summary = operator.execute(hour.context(map_index=spec.get("map_index", -1), try_number=spec["try"]))
    Path(spec["out"]).write_text(json.dumps(summary, default=str))


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
