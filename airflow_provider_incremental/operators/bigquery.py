"""Move only new or updated rows of a BigQuery table, with a persisted watermark and an atomic commit."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_incremental.links import (
    BigQueryConsoleJobLink,
    BigQueryConsoleTableLink,
    OpenLineageMixin,
    job_url,
    table_url,
)
from airflow_provider_incremental.version_compat import BaseOperator

if TYPE_CHECKING:
    from airflow_provider_incremental.core.sql import Cursor, TableRef
    from airflow_provider_incremental.core.window import Window
    from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook
    from airflow_provider_incremental.version_compat import Context

MODES = ("merge", "append", "count")
NULL_POLICIES = ("include", "exclude", "fail")
STATE_TABLE = "_incremental_state"
AUDIT_TABLE = "_incremental_audit"


class IncrementalBigQueryOperator(OpenLineageMixin, BaseOperator):
    """Copy the new and updated rows of ``source_table`` into ``destination_table``, exactly once.

    The cursor is found through ``INFORMATION_SCHEMA.COLUMNS``: ``COALESCE(updated_at, created_at)``
    when both exist, else the one that exists. Each run reads the window ``[watermark - overlap, high)``
    with ``high = min(data interval end (or run_after when the interval is empty), now - lag)``; the
    watermark is persisted per (destination, source) in a state table beside the destination, so late,
    retried and backfilled runs lose nothing. The upsert (newest row per key wins, never overwritten by
    an older one), the watermark and an audit row are committed in one transaction.

    Returns (XCom) ``source_table``, ``destination_table``, ``cursor``, ``window_start``, ``window_end``,
    ``rows_selected``, ``rows_inserted``, ``rows_updated``, ``rows_deleted``, ``watermark_before``,
    ``watermark_after``, ``job_ids``.

    :param source_table: ``project.dataset.table`` or ``dataset.table`` (templated).
    :param destination_table: ``project.dataset.table`` or ``dataset.table``; created from the source's
        schema, partitioning and clustering if missing (templated).
    :param primary_key: the key column(s).
    :param cursor_columns: candidate cursor columns, in priority order.
    :param mode: ``merge`` (upsert), ``append`` (keep every version once: a change log) or ``count``
        (report how many rows the window holds; writes nothing, leaves the watermark).
    :param initial_value: where the first run starts (datetime or ISO string; default: everything).
    :param lag: how far behind ``now`` the window stops, for sources that commit late.
    :param overlap: how far before the watermark each window starts again, to catch late rows.
    :param state_table: the watermark table (default ``<destination dataset>._incremental_state``); the
        audit table ``_incremental_audit`` sits beside it (templated).
    :param on_null_cursor: rows whose cursor is NULL: ``include`` (in every window; idempotent),
        ``exclude`` (counted and logged, not moved) or ``fail``.
    :param on_deleted: ``soft`` keeps ``deleted = true`` rows, ``hard`` removes them from the destination.
    :param version_column: tie-breaker after the cursor when it exists in the source.
    :param deleted_column: the boolean deleted flag (for ``on_deleted="hard"``).
    :param epoch_unit: unit of an INT64 epoch cursor column (``s``, ``ms``, ``us``).
    :param maximum_bytes_billed: passed to every query job.
    :param gcp_conn_id: the Google Cloud connection.
    :param location: the BigQuery location.
    :param impersonation_chain: service account(s) to impersonate.
    :param labels: labels added to every BigQuery job (with ``airflow-dag`` and ``airflow-task``).
    """

    template_fields: Sequence[str] = (
        "source_table",
        "destination_table",
        "state_table",
        "initial_value",
        "labels",
        "impersonation_chain",
    )
    ui_color = "#d6eaf8"
    operator_extra_links = (BigQueryConsoleTableLink(), BigQueryConsoleJobLink())

    def __init__(
        self,
        *,
        source_table: str,
        destination_table: str,
        primary_key: str | Sequence[str] = "id",
        cursor_columns: Sequence[str] = ("updated_at", "created_at"),
        mode: str = "merge",
        initial_value: datetime | str | None = None,
        lag: timedelta | float | str = timedelta(0),
        overlap: timedelta | float | str = timedelta(hours=1),
        state_table: str | None = None,
        on_null_cursor: str = "include",
        on_deleted: str = "soft",
        version_column: str | None = "resource_version",
        deleted_column: str = "deleted",
        epoch_unit: str | None = None,
        maximum_bytes_billed: int | None = None,
        gcp_conn_id: str = "google_cloud_default",
        location: str | None = None,
        impersonation_chain: str | Sequence[str] | None = None,
        labels: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_table = source_table
        self.destination_table = destination_table
        self.primary_key = primary_key
        self.cursor_columns = cursor_columns
        self.mode = mode
        self.initial_value = initial_value
        self.lag = lag
        self.overlap = overlap
        self.state_table = state_table
        self.on_null_cursor = on_null_cursor
        self.on_deleted = on_deleted
        self.version_column = version_column
        self.deleted_column = deleted_column
        self.epoch_unit = epoch_unit
        self.maximum_bytes_billed = maximum_bytes_billed
        self.gcp_conn_id = gcp_conn_id
        self.location = location
        self.impersonation_chain = impersonation_chain
        self.labels = labels

    def _validate(self) -> None:
        from airflow_provider_incremental.core.sql import validate_identifier

        for name, value, allowed in (
            ("mode", self.mode, MODES),
            ("on_null_cursor", self.on_null_cursor, NULL_POLICIES),
            ("on_deleted", self.on_deleted, ("soft", "hard")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        # Column names are identifiers too: reject hostile ones before any SQL is sent.
        keys = [self.primary_key] if isinstance(self.primary_key, str) else list(self.primary_key)
        for column in [*keys, *self.cursor_columns, self.version_column, self.deleted_column]:
            if column is not None:
                validate_identifier("column", column)
        self._initial_value()  # a bad (templated) initial_value fails before any query too

    def _initial_value(self) -> datetime | None:
        initial = self.initial_value
        if isinstance(initial, str):
            try:
                initial = datetime.fromisoformat(initial) if initial.strip() else None
            except ValueError:
                raise ValueError(f"initial_value must be an ISO 8601 timestamp, got {initial!r}") from None
        if initial is not None and initial.tzinfo is None:
            raise ValueError(f"initial_value must carry a time zone, got {initial.isoformat()!r}")
        return initial

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_incremental.core.sql import TableRef, choose_cursor
        from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook, make_labels

        self._validate()
        # Every job of the task carries these labels (and the cost guard): INFORMATION_SCHEMA, DDL, loads.
        labels = make_labels(self.labels, **{"airflow-dag": self.dag_id, "airflow-task": self.task_id})
        hook = IncrementalBigQueryHook(
            gcp_conn_id=self.gcp_conn_id,
            location=self.location,
            impersonation_chain=self.impersonation_chain,
            labels=labels,
            maximum_bytes_billed=self.maximum_bytes_billed,
        )
        # Identifiers are validated here, before any SQL is sent.
        source = hook.resolve(TableRef.parse(self.source_table))
        destination = hook.resolve(TableRef.parse(self.destination_table))
        state = (
            hook.resolve(TableRef.parse(self.state_table))
            if self.state_table
            else destination.sibling(STATE_TABLE)
        )
        audit = state.sibling(AUDIT_TABLE)
        keys = [self.primary_key] if isinstance(self.primary_key, str) else list(self.primary_key)

        columns = hook.get_columns([source, destination])
        source_columns = columns[source]
        if not source_columns:
            raise ValueError(f"Source table {source} does not exist (or has no columns)")
        cursor = choose_cursor(
            source_columns, self.cursor_columns, table=str(source), epoch_unit=self.epoch_unit
        )
        self.log.info("Cursor of %s: %s", source, cursor.expression)
        missing_keys = [k for k in keys if k.lower() not in {c.lower() for c in source_columns}]
        if missing_keys:
            raise ValueError(
                f"Primary key column(s) {missing_keys} not in {source}: it has {list(source_columns)}"
            )
        version = self.version_column if self.version_column in source_columns else None

        watermark = self._read_watermark(hook, state, destination, source, labels)
        window = self._window(context, watermark)
        self.log.info(
            "Window of %s: [%s, %s) (watermark %s, overlap %s, lag %s)",
            source,
            window.start or "beginning",
            window.end,
            watermark,
            self.overlap,
            self.lag,
        )
        BigQueryConsoleTableLink().persist(
            context, table_url(str(destination.project), destination.dataset, destination.table)
        )
        self._lineage = (
            [("bigquery", str(source))],
            [] if self.mode == "count" else [("bigquery", str(destination))],
        )
        summary: dict[str, Any] = {
            "source_table": str(source),
            "destination_table": str(destination),
            "mode": self.mode,
            "cursor": cursor.expression,
            "window_start": window.start.isoformat() if window.start else None,
            "window_end": window.end.isoformat(),
            "watermark_before": watermark.isoformat() if watermark else None,
        }
        if self.mode == "count":
            # Count mode never moves the watermark.
            summary |= {"watermark_after": summary["watermark_before"], "rows_deleted": 0}
            return summary | self._count(hook, source, cursor, window, source_columns, keys, version, labels)
        if window.empty:
            self.log.info("Empty window: nothing to move, watermark stays at %s", watermark)
            return summary | {
                "rows_selected": 0,
                "rows_inserted": 0,
                "rows_updated": 0,
                "rows_deleted": 0,
                "watermark_after": summary["watermark_before"],
                "job_ids": [],
            }
        return summary | self._upsert(
            hook,
            context,
            source,
            destination,
            state,
            audit,
            cursor,
            window,
            watermark,
            list(source_columns),
            columns[destination],
            keys,
            version,
            labels,
        )

    def _read_watermark(
        self,
        hook: IncrementalBigQueryHook,
        state: TableRef,
        destination: TableRef,
        source: TableRef,
        labels: dict[str, str] | None = None,
    ) -> datetime | None:
        from google.api_core.exceptions import NotFound

        from airflow_provider_incremental.core.sql import read_watermark_sql

        sql, params = read_watermark_sql(state, destination=destination, source=source)
        try:
            rows = hook.run_query(sql, params, labels=labels, maximum_bytes_billed=self.maximum_bytes_billed)
        except NotFound:
            return None
        return rows[0]["watermark"] if rows else None

    def _window(self, context: Context, watermark: datetime | None) -> Window:
        from airflow_provider_incremental.core.window import compute_window, parse_duration

        dag_run = context.get("dag_run")
        initial = self._initial_value()
        return compute_window(
            watermark=watermark,
            initial_value=initial,
            interval_start=context.get("data_interval_start"),
            interval_end=context.get("data_interval_end"),
            run_after=getattr(dag_run, "run_after", None),
            now=datetime.now(timezone.utc),
            lag=parse_duration(self.lag),
            overlap=parse_duration(self.overlap),
        )

    def _count(
        self,
        hook: IncrementalBigQueryHook,
        source: TableRef,
        cursor: Cursor,
        window: Window,
        columns: dict[str, str],
        keys: list[str],
        version: str | None,
        labels: dict[str, str],
    ) -> dict[str, Any]:
        from airflow_provider_incremental.core.sql import choose_cursor, count_sql

        created = (
            choose_cursor(columns, ("created_at",), table=str(source), epoch_unit=self.epoch_unit)
            if "created_at" in columns
            else None
        )
        sql, params = count_sql(
            source,
            cursor,
            window,
            columns=list(columns),
            primary_key=keys,
            version_column=version,
            null_policy="exclude" if self.on_null_cursor == "fail" else self.on_null_cursor,  # type: ignore[arg-type]
            created=created,
        )
        job = hook.query_job(sql, params, labels=labels, maximum_bytes_billed=self.maximum_bytes_billed)
        row = next(dict(r.items()) for r in job.result(retry=hook.retry))
        self.log.info(
            "%s: %s row(s) in the window (%s new, %s changed); %s with a NULL cursor",
            source,
            row["rows_selected"],
            row["rows_new"],
            row["rows_changed"],
            row["null_cursor_rows"],
        )
        if self.on_null_cursor == "fail" and row["null_cursor_rows"]:
            raise ValueError(
                f"{source} has {row['null_cursor_rows']} row(s) whose cursor is NULL (on_null_cursor=fail)"
            )
        return dict(row) | {"rows_inserted": 0, "rows_updated": 0, "job_ids": [job.job_id]}

    def _upsert(
        self,
        hook: IncrementalBigQueryHook,
        context: Context,
        source: TableRef,
        destination: TableRef,
        state: TableRef,
        audit: TableRef,
        cursor: Cursor,
        window: Window,
        watermark: datetime | None,
        columns: list[str],
        destination_columns: dict[str, str],
        keys: list[str],
        version: str | None,
        labels: dict[str, str],
    ) -> dict[str, Any]:
        from airflow_provider_incremental.core.sql import audit_table_ddl, state_table_ddl, upsert_script
        from airflow_provider_incremental.core.window import next_watermark
        from airflow_provider_incremental.exceptions import ReconciliationError
        from airflow_provider_incremental.hooks.bigquery import make_job_id

        if not destination_columns:
            self.log.info("Creating %s like %s", destination, source)
            hook.create_table_like(source, destination)
            # Created like the source: same columns, no second INFORMATION_SCHEMA query.
            destination_columns = dict.fromkeys(columns, "")
        missing = [c for c in columns if c.lower() not in {d.lower() for d in destination_columns}]
        if missing:
            raise ValueError(
                f"Destination {destination} lacks the source column(s) {missing}; add them first"
            )
        hook.ensure_dataset(state.project, state.dataset)
        hook.run_ddl([state_table_ddl(state), audit_table_ddl(audit)])
        partition = hook.partition_field(destination)
        mutable = (
            {c.lower() for c in cursor.columns[:-1]}
            if len(cursor.columns) > 1
            else {cursor.columns[0].lower()}
        )
        prune = partition if partition and partition.lower() not in mutable and partition in columns else None

        run_id = str(context.get("run_id") or "manual")
        ti = context.get("ti")
        map_index = getattr(ti, "map_index", -1)
        new_watermark = next_watermark(watermark, window)
        base_id = make_job_id(
            "airflow", self.dag_id, self.task_id, run_id, str(map_index), str(source), "upsert"
        )
        script, params = upsert_script(
            source=source,
            destination=destination,
            state=state,
            audit=audit,
            cursor=cursor,
            window=window,
            watermark=new_watermark,
            columns=columns,
            primary_key=keys,
            run_id=run_id,
            job_ids=[base_id],
            version_column=version,
            null_policy=self.on_null_cursor,  # type: ignore[arg-type]
            on_deleted=self.on_deleted,  # type: ignore[arg-type]
            deleted_column=self.deleted_column if self.on_deleted == "hard" else None,
            partition_column=prune,
            mode=self.mode,  # type: ignore[arg-type]
        )
        # Same work -> same job id: a retried task reattaches instead of running it twice.
        work = hashlib.blake2b(f"{script}{sorted(params.items())}".encode(), digest_size=6).hexdigest()
        job = hook.query_job(
            script,
            params,
            job_id=f"{base_id}_{work}",
            labels=labels,
            maximum_bytes_billed=self.maximum_bytes_billed,
        )
        row = next(iter(job.result(retry=hook.retry)))
        result = {key: row[key] for key in row.keys()}
        if result["rows_expected"] != result["rows_reconciled"]:
            raise ReconciliationError(
                f"{destination}: {result['rows_expected']} distinct key(s) selected from {source} in the window, "
                f"but {result['rows_reconciled']} are in the destination after the merge"
            )
        self.log.info(
            "%s -> %s: %s selected, %s inserted, %s updated, %s deleted; watermark %s -> %s (job %s)",
            source,
            destination,
            result["rows_selected"],
            result["rows_inserted"],
            result["rows_updated"],
            result["rows_deleted"],
            result["watermark_before"],
            result["watermark_after"],
            job.job_id,
        )
        BigQueryConsoleJobLink().persist(
            context, job_url(str(destination.project), job.job_id, self.location)
        )
        return {
            "rows_selected": result["rows_selected"],
            "rows_inserted": result["rows_inserted"],
            "rows_updated": result["rows_updated"],
            "rows_deleted": result["rows_deleted"],
            "watermark_after": result["watermark_after"].isoformat() if result["watermark_after"] else None,
            "job_ids": [job.job_id],
        }
