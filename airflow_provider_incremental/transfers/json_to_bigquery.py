"""Chargebee-style JSON list exports into BigQuery ``customers`` and ``subscriptions``, exactly once."""

from __future__ import annotations

import glob
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from airflow_provider_incremental.exceptions import TooManyBadRecordsError
from airflow_provider_incremental.links import (
    BigQueryConsoleDatasetLink,
    BigQueryConsoleJobLink,
    OpenLineageMixin,
    dataset_url,
    job_url,
)
from airflow_provider_incremental.version_compat import BaseOperator

if TYPE_CHECKING:
    from airflow_provider_incremental.core.transform import Progress, TransformResult
    from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook
    from airflow_provider_incremental.version_compat import Context

WRITE_MODES = ("merge", "append", "replace")
ON_DELETED = ("soft", "hard")
#: Version order of a Chargebee record: the newest ``updated_at``, then ``resource_version``, wins.
VERSION_ORDER = ("updated_at", "resource_version")


class JsonEpochToBigQueryOperator(OpenLineageMixin, BaseOperator):
    """Load Chargebee-style list exports into BigQuery ``customers`` and ``subscriptions`` tables.

    Reads ``{"list": [{"subscription": ..., "customer": ..., "card": ...}], "next_offset": ...}`` files in
    one streaming pass, converts epoch timestamps to UTC TIMESTAMPs, validates every record (rejects go
    to a quarantine table with their reason), deduplicates customers by id, writes newline-delimited
    JSON and loads it with load jobs into per-run staging tables, then MERGEs into the targets so that
    an older record never overwrites a newer one. Retries and re-runs leave the same tables: job ids
    are derived from the DAG, task, run and the data, so a retried task reattaches to finished jobs.
    Cards are never loaded or logged.

    :param source_path: a local path, a glob, ``gs://bucket/object``, ``gs://bucket/prefix*`` or a list
        of those: the pages of one export, loaded as one batch (templated).
    :param dataset_id: the BigQuery dataset of the tables (templated).
    :param project_id: the project of the dataset; the connection's project by default (templated).
    :param customers_table: the customers table.
    :param subscriptions_table: the subscriptions table.
    :param quarantine_table: the table that receives rejected records with their reason.
    :param epoch_unit: unit of the epoch timestamps: ``s`` (Chargebee), ``ms``, ``us`` or ``auto``
        (by magnitude: only 13-digit values are milliseconds).
    :param allow_python_literals: repair exports written as Python literals (single quotes,
        ``True/False/None``) with a tokenizer; strict JSON otherwise.
    :param write_mode: ``merge`` (upsert, newest wins), ``append`` (insert every row) or ``replace``
        (truncate the tables and load this batch).
    :param on_deleted: ``soft`` keeps ``deleted = true`` records (the ``deleted`` column), ``hard``
        removes them from the target after the merge.
    :param max_bad_records: how many records may be quarantined before the task fails (after writing
        the quarantine, before touching the targets): a count (int) or a fraction of the records read
        (float below 1).
    :param gcp_conn_id: the Google Cloud connection.
    :param location: the BigQuery location of jobs and datasets.
    :param impersonation_chain: service account(s) to impersonate, as in the Google provider.
    :param labels: labels added to every BigQuery job.
    :param progress_interval: seconds between progress lines while reading.
    """

    template_fields: Sequence[str] = (
        "source_path",
        "dataset_id",
        "project_id",
        "customers_table",
        "subscriptions_table",
        "quarantine_table",
        "labels",
        "impersonation_chain",
    )
    ui_color = "#e3f1fd"
    operator_extra_links = (BigQueryConsoleDatasetLink(), BigQueryConsoleJobLink())

    def __init__(
        self,
        *,
        source_path: str | Sequence[str],
        dataset_id: str,
        project_id: str | None = None,
        customers_table: str = "customers",
        subscriptions_table: str = "subscriptions",
        quarantine_table: str = "load_rejects",
        epoch_unit: str = "s",
        allow_python_literals: bool = False,
        write_mode: str = "merge",
        on_deleted: str = "soft",
        max_bad_records: int | float = 0.05,
        gcp_conn_id: str = "google_cloud_default",
        location: str | None = None,
        impersonation_chain: str | Sequence[str] | None = None,
        labels: dict[str, str] | None = None,
        progress_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_path = source_path
        self.dataset_id = dataset_id
        self.project_id = project_id
        self.customers_table = customers_table
        self.subscriptions_table = subscriptions_table
        self.quarantine_table = quarantine_table
        self.epoch_unit = epoch_unit
        self.allow_python_literals = allow_python_literals
        self.write_mode = write_mode
        self.on_deleted = on_deleted
        self.max_bad_records = max_bad_records
        self.gcp_conn_id = gcp_conn_id
        self.location = location
        self.impersonation_chain = impersonation_chain
        self.labels = labels
        self.progress_interval = progress_interval

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_incremental.core.chargebee import (
            CLUSTER_FIELDS,
            CUSTOMER_SCHEMA,
            PARTITION_FIELD,
            QUARANTINE_SCHEMA,
            SUBSCRIPTION_SCHEMA,
        )
        from airflow_provider_incremental.core.epoch import validate_unit
        from airflow_provider_incremental.core.sql import TableRef
        from airflow_provider_incremental.core.transform import transform_exports
        from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook, make_labels

        validate_unit(self.epoch_unit)
        if self.write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode must be one of {WRITE_MODES}, got {self.write_mode!r}")
        if self.on_deleted not in ON_DELETED:
            raise ValueError(f"on_deleted must be one of {ON_DELETED}, got {self.on_deleted!r}")
        # Every job of the task carries these labels (and the cost guard): INFORMATION_SCHEMA, DDL, loads.
        labels = make_labels(self.labels, **{"airflow-dag": self.dag_id, "airflow-task": self.task_id})
        hook = IncrementalBigQueryHook(
            gcp_conn_id=self.gcp_conn_id,
            location=self.location,
            impersonation_chain=self.impersonation_chain,
            labels=labels,
        )
        project = self.project_id or hook.project_id
        tables = {
            "customers": (TableRef(project, self.dataset_id, self.customers_table), CUSTOMER_SCHEMA),
            "subscriptions": (
                TableRef(project, self.dataset_id, self.subscriptions_table),
                SUBSCRIPTION_SCHEMA,
            ),
            "rejects": (TableRef(project, self.dataset_id, self.quarantine_table), QUARANTINE_SCHEMA),
        }
        run = _run_identity(context, self.dag_id, self.task_id)

        with tempfile.TemporaryDirectory(prefix="json-epoch-") as tmp:
            sources = self._sources(Path(tmp) / "in")
            self.log.info("Reading %d file(s): %s", len(sources), ", ".join(name for name, _ in sources[:5]))
            result = transform_exports(
                sources,
                Path(tmp) / "out",
                unit=self.epoch_unit,
                now=run["now"],
                load_id=run["load_id"],
                allow_python_literals=self.allow_python_literals,
                progress=self._log_progress,
                progress_interval=self.progress_interval,
            )
            self._report(result)
            job_ids: list[str] = []
            # The destination is part of the job identity: the same DAG, task, run and data loaded into
            # another project or dataset must not reattach to (and reuse) the jobs of the first one.
            destination = hashlib.blake2b(f"{project}.{self.dataset_id}".encode(), digest_size=6).hexdigest()

            def job_id(table: str, step: str) -> str:
                from airflow_provider_incremental.hooks.bigquery import make_job_id

                return make_job_id("airflow", run["key"], table, step, f"{result.digest[:12]}_{destination}")

            rejects_ref, rejects_schema = tables["rejects"]
            if result.quarantined:
                hook.ensure_table(rejects_ref, rejects_schema, partition_field="rejected_at")
                job = hook.load_ndjson(
                    str(result.files["rejects"]),
                    rejects_ref,
                    rejects_schema,
                    job_id=job_id(rejects_ref.table, "quarantine"),
                    write_disposition="WRITE_APPEND",
                    labels=labels,
                )
                job_ids.append(job.job_id)
                self.log.warning("Quarantined %d record(s) into %s", result.quarantined, rejects_ref)
            self._check_bad_records(result)

            for name in ("customers", "subscriptions"):
                ref, schema = tables[name]
                path = result.files[name]
                if path.stat().st_size == 0 and self.write_mode != "replace":
                    continue
                hook.ensure_table(ref, schema, partition_field=PARTITION_FIELD, cluster_fields=CLUSTER_FIELDS)
                job_ids += self._load(hook, name, str(path), ref, schema, job_id, labels)

        BigQueryConsoleDatasetLink().persist(context, dataset_url(project, self.dataset_id))
        if job_ids:
            BigQueryConsoleJobLink().persist(context, job_url(project, job_ids[-1], self.location))
        self._lineage = (
            [_source_dataset(name) for name in result.sources],
            [("bigquery", str(tables[name][0])) for name in ("customers", "subscriptions", "rejects")],
        )
        summary = result.summary() | {
            "job_ids": job_ids,
            "write_mode": self.write_mode,
            "load_id": run["load_id"],
        }
        self.log.info(
            "Loaded %d entries: %d customers, %d subscriptions, %d quarantined (%s)",
            result.entries_read,
            summary["customers_rows"],
            summary["subscriptions_rows"],
            result.quarantined,
            dict(result.reasons) or "no rejects",
        )
        return summary

    def _load(
        self,
        hook: IncrementalBigQueryHook,
        name: str,
        path: str,
        target: Any,
        schema: Sequence[dict[str, Any]],
        job_id: Callable[[str, str], str],
        labels: dict[str, str],
    ) -> list[str]:
        """Load one entity's NDJSON file by ``write_mode``; return the job ids."""
        from airflow_provider_incremental.core.sql import hard_delete_sql, staging_merge_script

        if self.write_mode != "merge":
            disposition = "WRITE_APPEND" if self.write_mode == "append" else "WRITE_TRUNCATE"
            job = hook.load_ndjson(
                path,
                target,
                schema,
                job_id=job_id(target.table, self.write_mode),
                write_disposition=disposition,
                labels=labels,
            )
            if self.on_deleted != "hard":
                return [str(job.job_id)]
            delete = hook.query_job(
                hard_delete_sql(target), job_id=job_id(target.table, "hard_delete"), labels=labels
            )
            return [str(job.job_id), str(delete.job_id)]
        run_hash = hashlib.blake2b(job_id(target.table, "stage").encode(), digest_size=8).hexdigest()
        staging = target.sibling(f"_staging_{target.table}_{run_hash}")
        load = hook.load_ndjson(
            path,
            staging,
            schema,
            job_id=job_id(target.table, "stage"),
            write_disposition="WRITE_TRUNCATE",
            labels=labels,
        )
        columns = [field["name"] for field in schema]
        script = staging_merge_script(staging, target, columns, ["id"], list(VERSION_ORDER))
        if self.on_deleted == "hard":
            script += "\n" + hard_delete_sql(target)
        merge = hook.query_job(script, job_id=job_id(target.table, "merge"), labels=labels)
        self.log.info("Merged %s into %s (job %s)", name, target, merge.job_id)
        return [str(load.job_id), str(merge.job_id)]

    def _sources(self, download_dir: Path) -> list[tuple[str, Callable[[], BinaryIO]]]:
        """Expand ``source_path`` into ``(name, open)`` pairs, downloading ``gs://`` objects first."""
        paths = [self.source_path] if isinstance(self.source_path, str) else list(self.source_path)
        sources: list[tuple[str, Callable[[], BinaryIO]]] = []
        for path in paths:
            if path.startswith("gs://"):
                sources += self._gcs_sources(path, download_dir)
                continue
            matches = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
            if not matches or not all(os.path.isfile(m) for m in matches):
                raise FileNotFoundError(f"No export file at {path!r} (source_path of task {self.task_id!r})")
            sources += [(m, _opener(m)) for m in matches]
        if not sources:
            raise FileNotFoundError(f"source_path {self.source_path!r} names no file")
        return sources

    def _gcs_sources(self, uri: str, download_dir: Path) -> list[tuple[str, Callable[[], BinaryIO]]]:
        from airflow.providers.google.cloud.hooks.gcs import GCSHook

        bucket, _, name = uri.removeprefix("gs://").partition("/")
        gcs = GCSHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)
        objects = sorted(gcs.list(bucket, match_glob=name)) if glob.has_magic(name) else [name]
        if not objects:
            raise FileNotFoundError(f"No object matches {uri!r}")
        download_dir.mkdir(parents=True, exist_ok=True)
        sources: list[tuple[str, Callable[[], BinaryIO]]] = []
        for index, obj in enumerate(objects):
            local = download_dir / f"{index:05d}.json"
            gcs.download(bucket_name=bucket, object_name=obj, filename=str(local))
            sources.append((f"gs://{bucket}/{obj}", _opener(str(local))))
        return sources

    def _log_progress(self, progress: Progress) -> None:
        self.log.info(
            "%s: %d entries, %.1f MB read (%.1f MB/s)",
            progress.source,
            progress.entries,
            progress.mb,
            progress.mb_per_s,
        )

    def _report(self, result: TransformResult) -> None:
        if result.next_offsets:
            for source, offset in result.next_offsets.items():
                self.log.warning(
                    "%s has next_offset %s: it is a non-final page of a paginated export; loading it anyway",
                    source,
                    offset,
                )
        if result.unknown_fields:
            self.log.warning(
                "Schema drift: fields not in the table schema were kept in the extra_fields JSON column: %s",
                ", ".join(sorted(result.unknown_fields)[:50]),
            )
        self.log.info(
            "Read %d entries (%.1f MB) in %.1f s; record counts: %s",
            result.entries_read,
            result.bytes_read / 1e6,
            result.seconds,
            {name: vars(c) for name, c in result.counts.items()},
        )

    def _check_bad_records(self, result: TransformResult) -> None:
        records = sum(c.read for c in result.counts.values())
        limit = self.max_bad_records
        allowed = limit * records if isinstance(limit, float) and limit < 1 else limit
        if result.quarantined > allowed:
            top = ", ".join(f"{reason} ({n})" for reason, n in result.reasons.most_common(3))
            raise TooManyBadRecordsError(
                f"{result.quarantined} of {records} records were quarantined, more than max_bad_records="
                f"{limit}. Top reasons: {top}. The rejects are in the quarantine table "
                f"{self.dataset_id}.{self.quarantine_table}; the target tables were not changed."
            )


def _run_identity(context: Context, dag_id: str, task_id: str) -> dict[str, Any]:
    """The run's stable identity: same on every try of the task (job ids, load id, reference time)."""
    dag_run = context.get("dag_run")
    run_id = str(context.get("run_id") or getattr(dag_run, "run_id", "manual"))
    ti = context.get("ti")
    map_index = getattr(ti, "map_index", -1)
    now = getattr(dag_run, "run_after", None) or context.get("logical_date") or datetime.now(timezone.utc)
    key = f"{dag_id}__{task_id}__{run_id}__{map_index}"
    return {"key": key, "load_id": f"{dag_id}/{task_id}/{run_id}/{map_index}", "now": now}


def _opener(path: str) -> Callable[[], BinaryIO]:
    """Open ``path`` for binary reading when called (files are opened one at a time)."""
    return lambda: open(path, "rb")


def _source_dataset(name: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of an input file."""
    if name.startswith("gs://"):
        bucket, _, path = name.removeprefix("gs://").partition("/")
        return f"gs://{bucket}", path
    return "file", os.path.abspath(name)
