"""Helpers for integration tests: run an operator's ``execute`` with an Airflow-like context."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook

UTC = timezone.utc


def context(
    *,
    run_id: str = "manual__test",
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    run_after: datetime | None = None,
    map_index: int = -1,
    try_number: int = 1,
) -> dict[str, Any]:
    """A minimal task context (what the operators read from it), as ``execute`` gets it."""
    run_after = run_after or data_interval_end or datetime.now(UTC)
    dag_run = SimpleNamespace(run_id=run_id, run_after=run_after, logical_date=data_interval_start)
    ti = SimpleNamespace(map_index=map_index, try_number=try_number)
    ctx: dict[str, Any] = {
        "run_id": run_id,
        "dag_run": dag_run,
        "ti": ti,
        "logical_date": data_interval_start,
    }
    if data_interval_start is not None:
        ctx["data_interval_start"] = data_interval_start
        ctx["data_interval_end"] = data_interval_end
    return ctx


def run(operator: Any, **kwargs: Any) -> Any:
    """Render nothing, just ``execute`` the operator with :func:`context` (its kwargs)."""
    return operator.execute(context(**kwargs))


def query(sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run SQL against the test BigQuery (the ``google_cloud_default`` connection)."""
    return IncrementalBigQueryHook().run_query(sql, params)
