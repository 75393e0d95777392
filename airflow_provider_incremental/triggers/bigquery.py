"""Trigger of the deferrable ``BigQueryTimestampColumnSensor``: polls without blocking the triggerer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class BigQueryTimestampColumnTrigger(BaseTrigger):
    """Poll a table until it has the wanted timestamp columns (and data up to ``fresh_through``).

    Every argument is serialized, impersonation, location and endpoint included, so the deferred check
    runs with exactly the settings of the sensor. The blocking BigQuery calls run in a worker thread:
    the triggerer's event loop is never blocked. Yields exactly one event:
    ``{"status": "success" | "error", "message": ..., "result": ...}``; a column with a disallowed type
    ends in ``error`` unless ``wait_on_wrong_type`` is set.

    :param table: ``project.dataset.table`` or ``dataset.table``.
    :param columns: the wanted columns.
    :param require: ``any`` or ``all``.
    :param allowed_types: accepted data types.
    :param fresh_through: ISO timestamp the newest cursor must reach, or ``None``.
    :param wait_on_wrong_type: keep waiting when a column has a disallowed type.
    :param poll_interval: seconds between checks.
    :param gcp_conn_id: the Google Cloud connection.
    :param location: the BigQuery location.
    :param impersonation_chain: service account(s) to impersonate.
    :param api_endpoint: BigQuery endpoint override (else the connection's ``api_endpoint`` extra).
    """

    def __init__(
        self,
        *,
        table: str,
        columns: Sequence[str],
        require: str,
        allowed_types: Sequence[str],
        fresh_through: str | None,
        wait_on_wrong_type: bool,
        poll_interval: float,
        gcp_conn_id: str,
        location: str | None = None,
        impersonation_chain: str | Sequence[str] | None = None,
        api_endpoint: str | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.table = table
        self.columns = [columns] if isinstance(columns, str) else list(columns)
        self.require = require
        self.allowed_types = list(allowed_types)
        self.fresh_through = fresh_through
        self.wait_on_wrong_type = wait_on_wrong_type
        self.poll_interval = poll_interval
        self.gcp_conn_id = gcp_conn_id
        self.location = location
        self.impersonation_chain = impersonation_chain
        self.api_endpoint = api_endpoint

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "table": self.table,
                "columns": self.columns,
                "require": self.require,
                "allowed_types": self.allowed_types,
                "fresh_through": self.fresh_through,
                "wait_on_wrong_type": self.wait_on_wrong_type,
                "poll_interval": self.poll_interval,
                "gcp_conn_id": self.gcp_conn_id,
                "location": self.location,
                "impersonation_chain": self.impersonation_chain,
                "api_endpoint": self.api_endpoint,
            },
        )

    def _check(self) -> dict[str, Any]:
        return probe(
            table=self.table,
            columns=self.columns,
            require=self.require,
            allowed_types=self.allowed_types,
            fresh_through=datetime.fromisoformat(self.fresh_through) if self.fresh_through else None,
            gcp_conn_id=self.gcp_conn_id,
            location=self.location,
            impersonation_chain=self.impersonation_chain,
            api_endpoint=self.api_endpoint,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            while True:
                result = await asyncio.to_thread(self._check)
                if result["satisfied"]:
                    yield TriggerEvent(  # type: ignore[no-untyped-call]
                        {"status": "success", "message": result["message"], "result": result}
                    )
                    return
                if result["wrong_type"] and not self.wait_on_wrong_type:
                    yield TriggerEvent(  # type: ignore[no-untyped-call]
                        {"status": "error", "message": result["message"], "result": result}
                    )
                    return
                self.log.info("%s; next check in %s s", result["message"], self.poll_interval)
                await asyncio.sleep(self.poll_interval)
        except Exception as err:  # one event, whatever happens: the sensor raises on it
            yield TriggerEvent(  # type: ignore[no-untyped-call]
                {"status": "error", "message": f"{type(err).__name__}: {err}", "result": None}
            )


def probe(
    *,
    table: str,
    columns: Sequence[str],
    require: str,
    allowed_types: Sequence[str],
    fresh_through: datetime | None,
    gcp_conn_id: str,
    location: str | None,
    impersonation_chain: str | Sequence[str] | None,
    api_endpoint: str | None,
) -> dict[str, Any]:
    """One look at the table's columns (and freshness): what the sensor pokes and the trigger polls."""
    from airflow_provider_incremental.core.sql import TableRef
    from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook

    hook = IncrementalBigQueryHook(
        gcp_conn_id=gcp_conn_id,
        location=location,
        impersonation_chain=impersonation_chain,
        api_endpoint=api_endpoint,
    )
    return hook.check_timestamp_columns(
        TableRef.parse(table),
        columns,
        require=require,
        allowed_types=allowed_types,
        fresh_through=fresh_through,
    )
