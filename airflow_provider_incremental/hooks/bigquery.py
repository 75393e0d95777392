"""The provider's BigQuery hook: every BigQuery API call the operators make goes through it."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

from airflow_provider_incremental.core.columns import check_columns
from airflow_provider_incremental.core.sql import TableRef, columns_query, max_columns_sql

if TYPE_CHECKING:
    from google.api_core.client_options import ClientOptions
    from google.api_core.retry import Retry
    from google.cloud.bigquery import Client
    from google.cloud.bigquery.job import LoadJob, QueryJob

#: BigQuery's messages for concurrent DML on the same table; retrying later succeeds.
_CONFLICT = re.compile(
    r"concurrent update|could not serialize access|transaction is aborted|aborted due to concurrent"
    r"|failed to commit|conflict on update",  # the local emulator's (DuckDB) words for a write-write conflict
    re.I,
)
_JOB_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_LABEL_UNSAFE = re.compile(r"[^a-z0-9_-]+")


def make_job_id(*parts: str) -> str:
    """A BigQuery job id (letters, digits, ``_``, ``-``; at most 1024 chars) built from ``parts``.

    Too long an id keeps its head and its last part and gets a hash of the whole in between, so two
    different ids never collide by truncation.
    """
    job_id = _JOB_ID_UNSAFE.sub("_", "__".join(parts))
    if len(job_id) <= 1000:
        return job_id
    digest = hashlib.blake2b(job_id.encode(), digest_size=16).hexdigest()
    tail = _JOB_ID_UNSAFE.sub("_", parts[-1])[-200:]
    return f"{job_id[:700]}__{digest}__{tail}"


def make_labels(labels: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """BigQuery labels: lowercase ``[a-z0-9_-]``, at most 63 chars for keys and values."""
    merged = {**(labels or {}), **extra}
    return {
        _LABEL_UNSAFE.sub("_", k.lower())[:63]: _LABEL_UNSAFE.sub("_", str(v).lower())[:63]
        for k, v in merged.items()
    }


def query_parameters(params: Mapping[str, Any]) -> list[Any]:
    """Turn ``{name: value}`` into BigQuery query parameters, typed from the Python value.

    ``None`` needs a type: pass ``(type_name, None)``; any ``(type_name, value)`` tuple forces the type.
    Lists become ARRAY parameters.
    """
    from google.cloud.bigquery import ArrayQueryParameter, ScalarQueryParameter

    def type_of(value: Any) -> str:
        if isinstance(value, bool):
            return "BOOL"
        if isinstance(value, int):
            return "INT64"
        if isinstance(value, float):
            return "FLOAT64"
        if isinstance(value, datetime):
            return "TIMESTAMP" if value.tzinfo else "DATETIME"
        if isinstance(value, date):
            return "DATE"
        if isinstance(value, str):
            return "STRING"
        raise TypeError(f"Unsupported query parameter value of type {type(value).__name__}")

    out: list[Any] = []
    for name, value in params.items():
        if isinstance(value, tuple):
            out.append(ScalarQueryParameter(name, value[0], value[1]))
        elif isinstance(value, list | frozenset | set):
            items = sorted(value) if isinstance(value, frozenset | set) else value
            out.append(ArrayQueryParameter(name, type_of(items[0]) if items else "STRING", items))
        else:
            out.append(ScalarQueryParameter(name, type_of(value), value))
    return out


def _bound_request_timeout(client: Client, limit: float) -> None:
    """Make every HTTP request of ``client`` time out after at most ``limit`` seconds.

    The BigQuery client sends ``timeout=None`` (wait forever) unless each call passes one, and
    ``job.result(timeout=...)`` reuses the whole job timeout per request: a response that never
    comes would hang the task, as the retry deadline is only checked between attempts. Capping the
    session makes such a request fail with a retryable ``requests`` timeout instead.
    """
    session = client._http
    send = session.request

    def bounded(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(limit if v is None else min(v, limit) for v in value)
        return limit if value is None or not isinstance(value, int | float) else min(value, limit)

    def request(*args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = bounded(kwargs.get("timeout"))
        return send(*args, **kwargs)

    session.request = request


class IncrementalBigQueryHook(BigQueryHook):
    """BigQuery hook with an endpoint override, job reattachment and the calls the operators need.

    Behaves like :class:`~airflow.providers.google.cloud.hooks.bigquery.BigQueryHook` against real
    BigQuery. Connection extras added on top of the Google connection:

    * ``api_endpoint``: the BigQuery REST endpoint (e.g. ``http://127.0.0.1:9050`` for the local emulator);
    * ``is_anonymous``: anonymous credentials (the emulator), already understood by the Google hook.

    :param api_endpoint: overrides the connection's ``api_endpoint`` extra.
    :param retry_deadline: seconds a single API call may retry transient errors (5xx, 429, resets).
    :param maximum_bytes_billed: default cost guard of every query job of this hook.
    :param labels: (from ``BigQueryHook``) default labels of every job of this hook.
    :param request_timeout: seconds one HTTP request may wait for its response (connect and read)
        before it is abandoned and retried; caps every request of the client, so a hung server costs
        seconds, not forever (the BigQuery client sends no timeout by default).
    :param job_timeout: seconds to wait for one job to finish.
    """

    hook_name = "Google BigQuery (incremental)"

    def __init__(
        self,
        *,
        api_endpoint: str | None = None,
        retry_deadline: float = 60.0,
        request_timeout: float = 30.0,
        job_timeout: float = 3600.0,
        maximum_bytes_billed: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("use_legacy_sql", False)
        super().__init__(**kwargs)
        self.maximum_bytes_billed = maximum_bytes_billed
        self._api_endpoint = api_endpoint
        self.retry_deadline = retry_deadline
        self.request_timeout = request_timeout
        self.job_timeout = job_timeout

    # -- connection ------------------------------------------------------------------------------

    @property
    def api_endpoint(self) -> str | None:
        endpoint = self._api_endpoint or self._get_field("api_endpoint")
        return str(endpoint) if endpoint else None

    def get_client_options(self, api_endpoint_override: str | None = None) -> ClientOptions:
        return super().get_client_options(api_endpoint_override or self.api_endpoint)

    @property
    def retry(self) -> Retry:
        from google.cloud.bigquery import DEFAULT_RETRY

        return DEFAULT_RETRY.with_deadline(self.retry_deadline).with_timeout(self.retry_deadline)

    def client(self, location: str | None = None) -> Client:
        """A client for the connection's project, cached per hook."""
        cached: Client | None = getattr(self, "_client", None)
        if cached is None:
            cached = self.get_client(project_id=self.project_id, location=location or self.location)
            _bound_request_timeout(cached, self.request_timeout)
            self._client = cached
        return cached

    def check_connection(self, timeout: float = 10.0) -> None:
        """Fail fast (within ``timeout`` seconds) with a message naming project, endpoint and connection."""
        try:
            list(
                self.client().list_datasets(
                    max_results=1, retry=self.retry.with_deadline(timeout), timeout=timeout
                )
            )
        except Exception as err:
            endpoint = self.api_endpoint or "https://bigquery.googleapis.com (default)"
            raise ConnectionError(
                f"Cannot reach BigQuery for project {self.project_id!r} at {endpoint} "
                f"(Airflow connection {self.gcp_conn_id!r}): {type(err).__name__}: {err}"
            ) from err

    # -- metadata ---------------------------------------------------------------------------------

    def get_columns(self, tables: Sequence[TableRef]) -> dict[TableRef, dict[str, str]]:
        """Columns ``{name: data_type}`` of several tables with ONE ``INFORMATION_SCHEMA.COLUMNS`` query.

        A table (or dataset) that does not exist maps to an empty dict.
        """
        from google.api_core.exceptions import NotFound

        resolved = [self.resolve(t) for t in tables]
        found: dict[TableRef, dict[str, str]] = {t: {} for t in resolved}
        sql, params = columns_query(resolved)
        try:
            rows = self.run_query(sql, params)
        except NotFound:
            if len({(t.project, t.dataset) for t in resolved}) == 1:
                return found
            # One of several datasets is missing: ask dataset by dataset.
            for table in resolved:
                found[table] = self.get_columns([table])[table]
            return found
        for row in rows:
            for table in resolved:
                if (
                    row.get("table_schema", table.dataset) == table.dataset
                    and row["table_name"] == table.table
                ):
                    found[table][row["column_name"]] = row["data_type"]
        return found

    def check_timestamp_columns(
        self,
        table: TableRef,
        columns: Sequence[str],
        *,
        require: str = "any",
        allowed_types: Sequence[str] = ("TIMESTAMP", "DATETIME"),
        fresh_through: datetime | None = None,
    ) -> dict[str, Any]:
        """Does ``table`` have the wanted timestamp columns (and data up to ``fresh_through``)?

        One ``INFORMATION_SCHEMA.COLUMNS`` query, plus one ``MAX`` query when ``fresh_through`` is set and
        the columns are there. A missing table or dataset is "not yet", not an error.

        :return: ``satisfied``, ``message``, ``columns`` (found ``{name: type}``), ``wrong_type``,
            ``max_cursor`` (ISO string or ``None``).
        """
        table = self.resolve(table)
        check = check_columns(
            str(table),
            self.get_columns([table])[table],
            columns,
            require=require,
            allowed_types=allowed_types,
        )
        result: dict[str, Any] = {
            "satisfied": check.satisfied,
            "message": check.message,
            "columns": check.found,
            "wrong_type": check.wrong_type,
            "max_cursor": None,
        }
        if check.satisfied and fresh_through is not None:
            sql = max_columns_sql(table, list(check.found))
            values = [v for v in self.run_query(sql)[0].values() if v is not None]
            # DATETIME comes back naive (read as UTC), DATE (if allowed) as a date: midnight UTC
            stamps = [
                v if isinstance(v, datetime) else datetime.combine(v, datetime.min.time()) for v in values
            ]
            latest = max((v if v.tzinfo else v.replace(tzinfo=timezone.utc) for v in stamps), default=None)
            result["max_cursor"] = latest.isoformat() if latest else None
            if latest is None or latest < fresh_through:
                result["satisfied"] = False
                result["message"] += (
                    f"; newest {'/'.join(check.found)} is {latest.isoformat() if latest else 'NULL (no rows)'}, "
                    f"waiting for data through {fresh_through.isoformat()}"
                )
            else:
                result["message"] += f"; data is fresh through {latest.isoformat()}"
        return result

    def resolve(self, table: TableRef) -> TableRef:
        """The table with the connection's project filled in."""
        return table if table.project else TableRef(self.project_id, table.dataset, table.table)

    def ensure_dataset(self, project: str | None, dataset: str, location: str | None = None) -> None:
        from google.cloud.bigquery import Dataset, DatasetReference

        ref = DatasetReference(project or self.project_id, dataset)
        obj = Dataset(ref)
        obj.location = location or self.location
        self._create(
            lambda: self.client().create_dataset(obj, exists_ok=True, retry=self.retry),
            lambda: self.client().get_dataset(ref, retry=self.retry),
        )

    def ensure_table(
        self,
        table: TableRef,
        schema: Sequence[Mapping[str, Any]],
        *,
        partition_field: str | None = None,
        cluster_fields: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Create the table (and its dataset) if missing, with schema, day partitioning and clustering."""
        from google.cloud.bigquery import SchemaField, Table, TimePartitioning

        table = self.resolve(table)
        self.ensure_dataset(table.project, table.dataset)
        obj = Table(f"{table.project}.{table.dataset}.{table.table}")
        obj.schema = [SchemaField.from_api_repr(dict(field)) for field in schema]
        if partition_field:
            obj.time_partitioning = TimePartitioning(field=partition_field)
        if cluster_fields:
            obj.clustering_fields = list(cluster_fields)
        if labels:
            obj.labels = dict(labels)
        self._create(
            lambda: self.client().create_table(obj, exists_ok=True, retry=self.retry),
            lambda: self.client().get_table(obj.reference, retry=self.retry),
        )

    def partition_field(self, table: TableRef) -> str | None:
        """The column a table is time-partitioned on, if any."""
        table = self.resolve(table)
        obj = self.client().get_table(f"{table.project}.{table.dataset}.{table.table}", retry=self.retry)
        return obj.time_partitioning.field if obj.time_partitioning else None

    def create_table_like(self, source: TableRef, destination: TableRef) -> None:
        """Create ``destination`` (if missing) with the schema, partitioning and clustering of ``source``."""
        from google.cloud.bigquery import Table

        source, destination = self.resolve(source), self.resolve(destination)
        self.ensure_dataset(destination.project, destination.dataset)
        src = self.client().get_table(f"{source.project}.{source.dataset}.{source.table}", retry=self.retry)
        obj = Table(f"{destination.project}.{destination.dataset}.{destination.table}", schema=src.schema)
        obj.time_partitioning = src.time_partitioning
        obj.clustering_fields = src.clustering_fields
        self._create(
            lambda: self.client().create_table(obj, exists_ok=True, retry=self.retry),
            lambda: self.client().get_table(obj.reference, retry=self.retry),
        )

    def run_ddl(self, statements: Sequence[str], attempts: int = 5) -> None:
        """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS`` ...) as one script.

        Mapped sibling tasks create the same tables at the same time: a run that loses that race (a
        concurrent-update error, or "Already Exists") is run again, which then finds the tables.
        """
        from google.api_core.exceptions import Conflict, GoogleAPICallError

        script = ";\n".join(s.rstrip(";") for s in statements) + ";"
        for attempt in range(attempts):
            try:
                self.run_query(script)
                return
            except GoogleAPICallError as err:
                if attempt + 1 == attempts or not (isinstance(err, Conflict) or _CONFLICT.search(str(err))):
                    raise
                self.log.warning("DDL lost a race with a concurrent creation; running it again: %s", err)
                time.sleep(0.2 * (attempt + 1))

    def _create(self, create: Callable[[], Any], get: Callable[[], Any], attempts: int = 5) -> None:
        """Create an object that may be created concurrently by a mapped sibling task.

        ``exists_ok`` covers a 409; a concurrent creation can also fail with another error while the
        object ends up existing (the local emulator answers 400 "Failed to commit"): then it is done.
        """
        from google.api_core.exceptions import GoogleAPICallError, NotFound

        for attempt in range(attempts):
            try:
                create()
                return
            except GoogleAPICallError as err:
                try:
                    get()
                    return
                except NotFound:
                    if attempt + 1 == attempts or not _CONFLICT.search(str(err)):
                        raise err from None
                    time.sleep(0.2 * (attempt + 1))

    def delete_table(self, table: TableRef) -> None:
        table = self.resolve(table)
        self.client().delete_table(f"{table.project}.{table.dataset}.{table.table}", not_found_ok=True)

    # -- jobs ---------------------------------------------------------------------------------------

    def load_ndjson(
        self,
        path: str,
        table: TableRef,
        schema: Sequence[Mapping[str, Any]],
        *,
        job_id: str,
        write_disposition: str = "WRITE_TRUNCATE",
        labels: Mapping[str, str] | None = None,
    ) -> LoadJob:
        """Load a newline-delimited JSON file with a load job under a deterministic job id.

        If a job with that id already succeeded (a retried task), it is reused, not run again.
        """
        from google.cloud.bigquery import LoadJobConfig, SchemaField, SourceFormat

        table = self.resolve(table)
        self.ensure_dataset(table.project, table.dataset)
        config = LoadJobConfig(
            source_format=SourceFormat.NEWLINE_DELIMITED_JSON,
            schema=[SchemaField.from_api_repr(dict(field)) for field in schema],
            write_disposition=write_disposition,
            create_disposition="CREATE_IF_NEEDED",
            labels=dict(self.labels if labels is None else labels),
        )
        destination = f"{table.project}.{table.dataset}.{table.table}"

        def submit(attempt_id: str) -> Any:
            with open(path, "rb") as fp:
                return self.client().load_table_from_file(
                    fp, destination, job_id=attempt_id, job_config=config, rewind=True
                )

        job: LoadJob = self._run_job(job_id, submit)
        return job

    def run_query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        maximum_bytes_billed: int | None = None,
    ) -> list[dict[str, Any]]:
        """Run a (possibly multi-statement, transactional) query with named parameters; return its rows.

        With ``job_id`` the job is deterministic: a retried task reattaches to a running job or reuses a
        finished one instead of running the statements again. Jobs that fail on concurrent DML are
        re-submitted (under ``<job_id>_<n>``) with backoff.
        """
        job = self.query_job(
            sql, params, job_id=job_id, labels=labels, maximum_bytes_billed=maximum_bytes_billed
        )
        return [dict(row.items()) for row in job.result(retry=self.retry, timeout=self.job_timeout)]

    def query_job(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        job_id: str | None = None,
        labels: Mapping[str, str] | None = None,
        maximum_bytes_billed: int | None = None,
    ) -> QueryJob:
        from google.cloud.bigquery import QueryJobConfig

        config = QueryJobConfig(
            query_parameters=query_parameters(params or {}),
            use_legacy_sql=False,
            labels=dict(self.labels if labels is None else labels),
        )
        if maximum_bytes_billed is None:
            maximum_bytes_billed = self.maximum_bytes_billed
        if maximum_bytes_billed is not None:
            config.maximum_bytes_billed = maximum_bytes_billed

        def submit(attempt_id: str) -> Any:
            # A job id is retried by _run_job (BigQuery cannot re-run a failed job under the same id).
            return self.client().query(
                sql,
                job_config=config,
                job_id=attempt_id,
                retry=self.retry,
                job_retry=None,
                location=self.location,
            )

        if job_id is None:
            # job_retry=None: the client's default job retry wraps jobs.insert in a 10-minute retry of
            # its own (and re-runs failed queries for up to 40 minutes), whatever retry_deadline says.
            job: QueryJob = self.client().query(
                sql, job_config=config, retry=self.retry, job_retry=None, location=self.location
            )
            job.result(retry=self.retry, timeout=self.job_timeout)
            return job
        job = self._run_job(job_id, submit)
        return job

    def _run_job(self, job_id: str, submit: Callable[[str], Any], max_attempts: int = 8) -> Any:
        """Run a job under ``job_id`` (then ``<job_id>_1`` ...), reusing an earlier one where it is safe.

        * no job with the id: submit it (a ``Conflict`` means it was submitted meanwhile: reattach; any
          other error may hide a job that was created before its response was lost: reattach if it
          exists);
        * a job with the id is running or succeeded: reattach and return it, never run it twice;
        * it failed in an earlier task try: go on with the next id;
        * it fails now on concurrent DML: back off and go on with the next id.
        """
        from google.api_core.exceptions import Conflict, GoogleAPICallError, NotFound

        client = self.client()
        for attempt in range(max_attempts):
            attempt_id = job_id if attempt == 0 else f"{job_id}_{attempt}"
            try:
                job = client.get_job(attempt_id, location=self.location, retry=self.retry)
            except NotFound:
                try:
                    job = submit(attempt_id)
                    self.log.info("Submitted BigQuery job %s", attempt_id)
                except Conflict:
                    job = client.get_job(attempt_id, location=self.location, retry=self.retry)
                except Exception as err:
                    # E.g. the last request of an upload was applied, its response lost, and its retry
                    # refused: the job exists although submitting "failed".
                    try:
                        job = client.get_job(attempt_id, location=self.location, retry=self.retry)
                    except NotFound:
                        raise err from None
                    self.log.warning(
                        "Submitting BigQuery job %s failed (%s), but the job exists: reattaching",
                        attempt_id,
                        type(err).__name__,
                    )
            else:
                if job.state == "DONE" and job.error_result:
                    self.log.info("BigQuery job %s failed in an earlier try; using a new job id", attempt_id)
                    continue
                self.log.info("Reattaching to existing BigQuery job %s (state %s)", attempt_id, job.state)
            try:
                job.result(retry=self.retry, timeout=self.job_timeout)
            except GoogleAPICallError as err:
                if attempt + 1 < max_attempts and _CONFLICT.search(str(err)):
                    delay = min(2.0**attempt, 30.0) * 0.5
                    self.log.warning(
                        "BigQuery job %s hit concurrent DML; retrying in %.1f s", attempt_id, delay
                    )
                    time.sleep(delay)
                    continue
                raise
            return job
        raise RuntimeError(f"BigQuery job {job_id} did not succeed after {max_attempts} attempts")
