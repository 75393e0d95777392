"""Every SQL string the provider sends to BigQuery is built here.

Rules: identifiers are validated and backtick-quoted (:class:`TableRef`, :func:`quote_column`); values are
never interpolated, they travel as named query parameters (``@name``) returned beside the SQL; column lists
are always explicit. The statements are BigQuery Standard SQL that also runs on the local emulator
(``local-bigquery`` 0.3.2): no MERGE inside a transaction, no ``SAFE.TIMESTAMP_*`` functions, no
``SET (a, b) = (SELECT AS STRUCT ...)``.

Version order: a row is *newer* than another with the same primary key when its ``(cursor, version)`` is
greater, compared left to right, NULL lowest. A write never replaces a row by an older or equal one, so
re-running a window changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_incremental.exceptions import CursorColumnError, IdentifierError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from airflow_provider_incremental.core.window import Window

NullPolicy = Literal["include", "exclude", "fail"]
"""Rows whose cursor is NULL: ``include`` them in every window (they are re-read each run, harmlessly),
``exclude`` them (``count_sql`` still reports how many), or ``fail`` the run while any exist."""

OnDeleted = Literal["soft", "hard"]
WriteMode = Literal["merge", "append"]
"""Rows flagged deleted: ``soft`` keeps them with their flag, ``hard`` removes them from the destination."""

_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "project": (
        re.compile(r"(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"),
        "6-30 lowercase letters, digits or dashes, starting with a letter and not ending with a dash,"
        " optionally domain-scoped as 'example.com:project'",
    ),
    "dataset": (re.compile(r"[A-Za-z0-9_]{1,1024}"), "1-1024 ASCII letters, digits or underscores"),
    "table": (
        re.compile(r"[A-Za-z0-9_-]{1,1024}"),
        "1-1024 ASCII letters, digits, underscores or dashes (no spaces, no '$' partition decorators)",
    ),
    "column": (
        re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}"),
        "1-300 ASCII letters, digits or underscores, not starting with a digit",
    ),
}
_QUOTED_PATH = re.compile(r"(?:`[^`]*`|[^`.]+)(?:\.(?:`[^`]*`|[^`.]+))*")
_EPOCH_FUNCTIONS = {
    "s": "TIMESTAMP_SECONDS",
    "seconds": "TIMESTAMP_SECONDS",
    "ms": "TIMESTAMP_MILLIS",
    "milliseconds": "TIMESTAMP_MILLIS",
    "us": "TIMESTAMP_MICROS",
    "microseconds": "TIMESTAMP_MICROS",
}


def validate_identifier(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid identifier of ``kind``, else raise :class:`IdentifierError`.

    :param kind: ``project``, ``dataset``, ``table`` or ``column``.
    :param value: the identifier, without backticks.
    """
    pattern, rule = _RULES[kind]
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        shown = repr(value) if len(str(value)) <= 80 else f"{str(value)[:80]!r}... ({len(value)} chars)"
        raise IdentifierError(f"invalid {kind} {shown}: a {kind} name is {rule}")
    return value


def quote_column(name: str) -> str:
    """Validate a column name and return it backtick-quoted.

    :param name: the column name.
    """
    return f"`{validate_identifier('column', name)}`"


@dataclass(frozen=True)
class TableRef:
    """A validated ``project.dataset.table`` reference (``project`` ``None``: the client's project).

    :param project: the project id, or ``None``.
    :param dataset: the dataset id.
    :param table: the table id.
    """

    project: str | None
    dataset: str
    table: str

    def __post_init__(self) -> None:
        if self.project is not None:
            validate_identifier("project", self.project)
        validate_identifier("dataset", self.dataset)
        validate_identifier("table", self.table)

    @classmethod
    def parse(cls, text: str, default_project: str | None = None) -> TableRef:
        """Read ``project.dataset.table`` or ``dataset.table``, backticked or not.

        :param text: the reference, e.g. ``"proj.ds.tbl"``, ``"`proj.ds.tbl`"`` or ``"`proj`.`ds`.`tbl`"``.
        :param default_project: the project used when ``text`` names none.
        """
        if not isinstance(text, str) or _QUOTED_PATH.fullmatch(text) is None:
            raise IdentifierError(
                f"invalid table reference {text!r}: write project.dataset.table or dataset.table,"
                " optionally backtick-quoted"
            )
        parts = text.replace("`", "").split(".")
        if len(parts) < 2:
            raise IdentifierError(f"invalid table reference {text!r}: it needs at least dataset.table")
        project = ".".join(parts[:-2]) or default_project
        return cls(project, parts[-2], parts[-1])

    @property
    def sql(self) -> str:
        """The reference quoted for SQL: ``"`proj`.`ds`.`tbl`"``."""
        return f"{self.dataset_sql}.`{self.table}`"

    @property
    def dataset_sql(self) -> str:
        """The dataset quoted for SQL: ``"`proj`.`ds`"``."""
        return f"`{self.dataset}`" if self.project is None else f"`{self.project}`.`{self.dataset}`"

    def sibling(self, table: str) -> TableRef:
        """A table in the same dataset (state, audit and staging tables live beside the destination).

        :param table: the other table's id.
        """
        return TableRef(self.project, self.dataset, table)

    def __str__(self) -> str:
        return ".".join(part for part in (self.project, self.dataset, self.table) if part is not None)


@dataclass(frozen=True)
class Cursor:
    """The cursor of a table: its columns, their BigQuery types, and a TIMESTAMP expression over them.

    :param columns: the cursor columns, first non-NULL wins (``COALESCE``).
    :param data_types: the BigQuery type of each column: TIMESTAMP, DATETIME (read as UTC), or INT64
        (epoch, needs ``epoch_unit``).
    :param epoch_unit: unit of INT64 columns: ``seconds``/``s``, ``milliseconds``/``ms`` or
        ``microseconds``/``us``.
    """

    columns: tuple[str, ...]
    data_types: tuple[str, ...]
    epoch_unit: str | None = None

    def __post_init__(self) -> None:
        if not self.columns or len(self.columns) != len(self.data_types):
            raise ValueError("a cursor needs at least one column and one data type per column")
        if self.epoch_unit is not None and self.epoch_unit not in _EPOCH_FUNCTIONS:
            raise ValueError(f"epoch_unit {self.epoch_unit!r} is not one of {sorted(_EPOCH_FUNCTIONS)}")
        for column, data_type in zip(self.columns, self.data_types, strict=True):
            validate_identifier("column", column)
            if data_type not in ("TIMESTAMP", "DATETIME") and not (data_type == "INT64" and self.epoch_unit):
                hint = " (pass epoch_unit for an integer epoch column)" if data_type == "INT64" else ""
                raise CursorColumnError(
                    f"cursor column {column!r} has type {data_type}: use a TIMESTAMP or DATETIME column{hint}"
                )

    @property
    def data_type(self) -> str:
        """The BigQuery type of the first cursor column (:attr:`expression` is always a TIMESTAMP)."""
        return self.data_types[0]

    @property
    def expression(self) -> str:
        """The cursor as an unqualified TIMESTAMP expression: ``COALESCE(`updated_at`, `created_at`)``."""
        return self.sql()

    def sql(self, alias: str | None = None) -> str:
        """The cursor as a TIMESTAMP expression, its columns qualified by ``alias`` if given.

        :param alias: a table alias such as ``t``.
        """
        terms = [
            _as_timestamp(_column(c, alias), t, self.epoch_unit)
            for c, t in zip(self.columns, self.data_types, strict=True)
        ]
        return terms[0] if len(terms) == 1 else f"COALESCE({', '.join(terms)})"


def _as_timestamp(column_sql: str, data_type: str, epoch_unit: str | None) -> str:
    """Convert a cursor column to TIMESTAMP (DATETIME is read as UTC).

    :param column_sql: the quoted column.
    :param data_type: its BigQuery type.
    :param epoch_unit: the epoch unit of INT64 columns.
    """
    if data_type == "DATETIME":
        return f"TIMESTAMP({column_sql})"
    if data_type == "INT64" and epoch_unit is not None:
        return f"{_EPOCH_FUNCTIONS[epoch_unit]}({column_sql})"
    return column_sql


def choose_cursor(
    columns: Mapping[str, str],
    cursor_columns: Sequence[str] = ("updated_at", "created_at"),
    *,
    table: str,
    epoch_unit: str | None = None,
) -> Cursor:
    """Pick the cursor of a table from its columns: every candidate present, in order, COALESCEd.

    With the defaults: ``COALESCE(`updated_at`, `created_at`)`` when both exist, else the one that exists.
    Names match case-insensitively, as in BigQuery.

    :param columns: the table's columns, name -> BigQuery data type (from INFORMATION_SCHEMA.COLUMNS).
    :param cursor_columns: the candidate cursor columns, most specific first.
    :param table: the table name, for error messages.
    :param epoch_unit: unit of INT64 epoch cursor columns; without it INT64 columns are rejected.
    """
    by_lower = {name.lower(): name for name in columns}
    found = [by_lower[c.lower()] for c in cursor_columns if c.lower() in by_lower]
    if not found:
        raise CursorColumnError(
            f"table {table} has none of the cursor columns {list(cursor_columns)}; its columns are"
            f" {sorted(columns)}: pass cursor_columns naming a TIMESTAMP or DATETIME column"
        )
    try:
        return Cursor(tuple(found), tuple(columns[c].upper() for c in found), epoch_unit)
    except CursorColumnError as error:
        raise CursorColumnError(f"table {table}: {error}") from None


def param_type(value: object) -> str:
    """The BigQuery type of a query parameter value, e.g. ``TIMESTAMP`` or ``ARRAY<STRING>``.

    :param value: a value from the params dict of a builder.
    """
    if isinstance(value, (list, tuple)):
        return f"ARRAY<{param_type(value[0]) if value else 'STRING'}>"
    for kind, name in ((bool, "BOOL"), (int, "INT64"), (float, "FLOAT64"), (str, "STRING")):
        if isinstance(value, kind):
            return name
    if isinstance(value, datetime):
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, date):
        return "DATE"
    raise TypeError(f"no BigQuery parameter type for {value!r}")


def _column(name: str, alias: str | None = None) -> str:
    """A quoted column, qualified by ``alias`` if given.

    :param name: the column name.
    :param alias: the table alias.
    """
    return quote_column(name) if alias is None else f"{alias}.{quote_column(name)}"


def _columns(names: Sequence[str], alias: str | None = None) -> str:
    """A comma-separated list of quoted columns.

    :param names: the column names.
    :param alias: the table alias.
    """
    return ", ".join(_column(name, alias) for name in names)


def _same_key(primary_key: Sequence[str], left: str, right: str) -> str:
    """``left.k = right.k AND ...`` over the primary key.

    :param primary_key: the key columns.
    :param left: alias of one table.
    :param right: alias of the other table.
    """
    return " AND ".join(f"{_column(k, left)} = {_column(k, right)}" for k in primary_key)


def _newer(old: Sequence[str], new: Sequence[str]) -> str:
    """``new`` is strictly greater than ``old``, compared left to right, NULL lowest (never NULL itself).

    :param old: the order expressions of the existing row.
    :param new: the order expressions of the candidate row.
    """
    condition = ""
    for o, n in reversed(list(zip(old, new, strict=True))):
        less = f"COALESCE({o} < {n}, {o} IS NULL AND {n} IS NOT NULL)"
        condition = less if not condition else f"({less} OR ({o} IS NOT DISTINCT FROM {n} AND {condition}))"
    return condition


def _order(cursor: Cursor, version_column: str | None, alias: str | None = None) -> list[str]:
    """The version order of a row: its cursor, then its version column if any.

    :param cursor: the cursor.
    :param version_column: e.g. ``resource_version``.
    :param alias: the table alias.
    """
    return [cursor.sql(alias)] + ([_column(version_column, alias)] if version_column else [])


def _dedup(
    source_sql: str,
    columns: Sequence[str],
    primary_key: Sequence[str],
    order: Sequence[str],
    where: str,
    *,
    versions: bool = False,
) -> str:
    """``SELECT columns FROM source WHERE ...`` keeping the newest row per primary key.

    :param source_sql: the quoted source table.
    :param columns: the columns to select.
    :param primary_key: the key columns.
    :param order: the version order expressions, newest first after DESC.
    :param where: the row filter.
    :param versions: keep one row per version (key and ``order`` values) instead of one per key.
    """
    partition = [_columns(primary_key), *order] if versions else [_columns(primary_key)]
    return (
        f"SELECT {_columns(columns)} FROM {source_sql} WHERE {where}\n"
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY {', '.join(partition)}"
        f" ORDER BY {', '.join(f'{o} DESC' for o in order)}) = 1"
    )


def _check_columns(columns: Sequence[str], **required: str | Sequence[str] | None) -> None:
    """Check that the named columns are among ``columns``.

    :param columns: the columns of the source schema.
    :param required: role -> column name(s) that must exist.
    """
    known = {validate_identifier("column", c).lower() for c in columns}
    for role, names in required.items():
        for name in [names] if isinstance(names, str) else names or ():
            if validate_identifier("column", name).lower() not in known:
                raise ValueError(f"{role} column {name!r} is not among the columns {list(columns)}")


def _window_params(window: Window) -> dict[str, Any]:
    """The ``@window_start`` (omitted when the window has no start) and ``@window_end`` parameters.

    :param window: the window.
    """
    params: dict[str, Any] = {"window_end": window.end}
    if window.start is not None:
        params["window_start"] = window.start
    return params


def window_select_sql(
    source: TableRef,
    cursor: Cursor,
    *,
    columns: Sequence[str],
    primary_key: Sequence[str],
    version_column: str | None = None,
    null_policy: NullPolicy = "include",
    has_start: bool = True,
    versions: bool = False,
) -> str:
    """Select the rows of the window ``@window_start <= cursor < @window_end``, newest row per key.

    :param source: the source table.
    :param cursor: the cursor.
    :param columns: the columns to select (the source schema).
    :param primary_key: the key columns.
    :param version_column: tie-breaker after the cursor, e.g. ``resource_version``.
    :param null_policy: whether rows whose cursor is NULL are selected (``include``) or not.
    :param has_start: ``False`` when the window has no start (reads from the beginning, no ``@window_start``).
    :param versions: one row per version (key, cursor, version column) instead of per key (append mode).
    """
    if not primary_key:
        raise ValueError(f"a primary key is needed to deduplicate the rows of {source}")
    _check_columns(columns, primary_key=primary_key, version=version_column, cursor=cursor.columns)
    expression = cursor.sql()
    where = f"{expression} < @window_end"
    if has_start:
        where = f"{expression} >= @window_start AND {where}"
    if null_policy == "include":
        where = f"({where}) OR {expression} IS NULL"
    return _dedup(source.sql, columns, primary_key, _order(cursor, version_column), where, versions=versions)


def count_sql(
    source: TableRef,
    cursor: Cursor,
    window: Window,
    *,
    columns: Sequence[str],
    primary_key: Sequence[str],
    version_column: str | None = None,
    null_policy: NullPolicy = "include",
    created: Cursor | None = None,
) -> tuple[str, dict[str, Any]]:
    """Count what a run of ``window`` would select (count mode, and the ``fail`` NULL policy).

    Returns one row: ``rows_selected`` (distinct keys), ``rows_new`` (created inside the window; NULL
    without ``created``), ``rows_changed`` (the others) and ``null_cursor_rows`` (whole table).

    :param source: the source table.
    :param cursor: the cursor.
    :param window: the window.
    :param columns: the source columns.
    :param primary_key: the key columns.
    :param version_column: tie-breaker after the cursor.
    :param null_policy: the NULL-cursor policy.
    :param created: the creation time as a cursor, e.g. ``choose_cursor(cols, ("created_at",), table=...)``.
    """
    select = window_select_sql(
        source,
        cursor,
        columns=columns,
        primary_key=primary_key,
        version_column=version_column,
        null_policy=null_policy,
        has_start=window.start is not None,
    )
    new = "CAST(NULL AS INT64)"
    if created is not None:
        _check_columns(columns, created=created.columns)
        expression = created.sql()
        lower = (
            f"{expression} >= @window_start AND "
            if window.start is not None
            else f"{expression} IS NOT NULL AND "
        )
        new = f"COUNTIF({lower}{expression} < @window_end)"
    sql = (
        f"SELECT COUNT(*) AS rows_selected, {new} AS rows_new, COUNT(*) - {new} AS rows_changed,\n"
        f"  (SELECT COUNTIF({cursor.sql()} IS NULL) FROM {source.sql}) AS null_cursor_rows\n"
        f"FROM (\n{select}\n)"
    )
    return sql, _window_params(window)


def _merge(
    target: TableRef,
    using: str,
    columns: Sequence[str],
    primary_key: Sequence[str],
    order: Callable[[str | None], list[str]],
) -> str:
    """``MERGE target USING (using)``: insert new keys, update a key only with a strictly newer row.

    :param target: the table written.
    :param using: the SELECT of candidate rows, one per key.
    :param columns: the columns written.
    :param primary_key: the key columns.
    :param order: alias -> the version order expressions of that side.
    """
    keys = {k.lower() for k in primary_key}
    updates = ", ".join(f"{_column(c)} = {_column(c, 's')}" for c in columns if c.lower() not in keys)
    matched = (
        f"WHEN MATCHED AND {_newer(order('t'), order('s'))} THEN UPDATE SET {updates}\n" if updates else ""
    )
    return (
        f"MERGE {target.sql} AS t\nUSING (\n{using}\n) AS s\nON {_same_key(primary_key, 't', 's')}\n{matched}"
        f"WHEN NOT MATCHED THEN INSERT ({_columns(columns)}) VALUES ({_columns(columns, 's')})"
    )


def merge_sql(
    source: TableRef,
    destination: TableRef,
    cursor: Cursor,
    window: Window,
    *,
    columns: Sequence[str],
    primary_key: Sequence[str],
    version_column: str | None = None,
    null_policy: NullPolicy = "include",
) -> tuple[str, dict[str, Any]]:
    """A plain MERGE of the window into the destination, for callers outside a transaction.

    :param source: the source table.
    :param destination: the destination table (same column names as the source).
    :param cursor: the cursor.
    :param window: the window.
    :param columns: the source columns.
    :param primary_key: the key columns.
    :param version_column: tie-breaker after the cursor.
    :param null_policy: the NULL-cursor policy (``fail`` is the caller's check, see :func:`count_sql`).
    """
    select = window_select_sql(
        source,
        cursor,
        columns=columns,
        primary_key=primary_key,
        version_column=version_column,
        null_policy=null_policy,
        has_start=window.start is not None,
    )
    merge = _merge(
        destination, select, columns, primary_key, lambda alias: _order(cursor, version_column, alias)
    )
    return merge, _window_params(window)


def staging_merge_script(
    staging: TableRef,
    target: TableRef,
    columns: Sequence[str],
    primary_key: Sequence[str],
    order_by: Sequence[str],
) -> str:
    """MERGE a loaded staging table into the target, newest row per key, then drop the staging table.

    :param staging: the per-run staging table (same schema as the target).
    :param target: the target table.
    :param columns: the columns written.
    :param primary_key: the key columns, e.g. ``["id"]``.
    :param order_by: the version order columns, e.g. ``["updated_at", "resource_version"]``.
    """
    if not order_by:
        raise ValueError("order_by needs at least one column: it decides which version of a key is newest")
    _check_columns(columns, primary_key=primary_key, order_by=order_by)

    def order(alias: str | None) -> list[str]:
        return [_column(c, alias) for c in order_by]

    merge = _merge(
        target, _dedup(staging.sql, columns, primary_key, order(None), "TRUE"), columns, primary_key, order
    )
    return f"{merge};\nDROP TABLE IF EXISTS {staging.sql};"


_STATE_SCHEMA = {
    "destination": "STRING",
    "source": "STRING",
    "cursor": "STRING",
    "watermark": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "run_id": "STRING",
}
_AUDIT_SCHEMA = {
    "run_id": "STRING",
    "destination": "STRING",
    "source": "STRING",
    "window_start": "TIMESTAMP",
    "window_end": "TIMESTAMP",
    "rows_selected": "INT64",
    "rows_inserted": "INT64",
    "rows_updated": "INT64",
    "rows_deleted": "INT64",
    "watermark_before": "TIMESTAMP",
    "watermark_after": "TIMESTAMP",
    "job_ids": "ARRAY<STRING>",
    "at": "TIMESTAMP",
}
_STATE_COLUMNS = tuple(_STATE_SCHEMA)
_AUDIT_COLUMNS = tuple(_AUDIT_SCHEMA)


def upsert_script(
    *,
    source: TableRef,
    destination: TableRef,
    state: TableRef,
    audit: TableRef,
    cursor: Cursor,
    window: Window,
    watermark: datetime,
    columns: Sequence[str],
    primary_key: Sequence[str],
    run_id: str,
    job_ids: Sequence[str] = (),
    version_column: str | None = None,
    null_policy: NullPolicy = "include",
    on_deleted: OnDeleted = "soft",
    deleted_column: str | None = None,
    partition_column: str | None = None,
    mode: WriteMode = "merge",
) -> tuple[str, dict[str, Any]]:
    """One script that upserts the window and commits the watermark and an audit row atomically.

    ``mode="append"`` keeps every version instead: the batch holds one row per version (same key, cursor
    and version column) in the window, not only the newest per key, and a batch row is inserted unless
    the destination already holds that exact version, so the destination is a change log, re-running a
    window still adds nothing, and hourly runs give the same log as one run over the whole period.

    Reconciliation: after the writes, ``rows_reconciled`` counts the batch rows the destination now
    covers (a row at least as new for ``merge``, the same version for ``append``), and
    ``rows_expected`` the batch rows it must cover (all but hard-deleted ones). The caller fails the
    task when they differ.

    Semantics, per primary key, with the batch row ``b`` (newest in the window) and the destination row
    ``t``: no ``t`` -> insert ``b``; ``t`` strictly older than ``b`` -> replace it (DELETE + INSERT: the
    emulator rejects MERGE inside a transaction); ``t`` equal or newer -> keep ``t``. Re-running a window
    is therefore a no-op, and a newer row is never overwritten. With ``on_deleted="hard"`` a batch row
    flagged ``deleted_column`` removes its key (unless ``t`` is newer) and is not inserted, and rows of the
    batch keys already flagged deleted in the destination are removed. The stored watermark becomes
    ``GREATEST(stored, @watermark)``: it never moves backwards. The last statement returns one row:
    ``rows_selected, rows_inserted, rows_updated, rows_deleted, watermark_before, watermark_after``.

    With ``partition_column`` the destination DML is limited to the partition range of the batch, which
    is correct only when that column never changes for a key (e.g. ``created_at``, never ``updated_at``).

    :param source: the source table.
    :param destination: the destination table (same column names as the source).
    :param state: the state table (:func:`state_table_ddl`).
    :param audit: the audit table (:func:`audit_table_ddl`).
    :param cursor: the cursor.
    :param window: the window read.
    :param watermark: the watermark to store (see ``core.window.next_watermark``).
    :param columns: the source columns, all written.
    :param primary_key: the key columns.
    :param run_id: the Airflow run id, stored in the state and audit rows.
    :param job_ids: BigQuery job ids to record in the audit row.
    :param version_column: tie-breaker after the cursor, e.g. ``resource_version``.
    :param null_policy: the NULL-cursor policy; ``fail`` makes the script stop before writing when the source
        has NULL-cursor rows.
    :param on_deleted: ``soft`` keeps rows flagged deleted, ``hard`` removes them.
    :param deleted_column: the boolean deleted flag, needed for ``hard``.
    :param partition_column: the destination's partitioning column, to prune the DML.
    :param mode: ``merge`` (upsert, newest wins) or ``append`` (keep every version once).
    """
    if mode not in ("merge", "append"):
        raise ValueError(f"mode must be 'merge' or 'append', got {mode!r}")
    if on_deleted == "hard" and deleted_column is None:
        raise ValueError('on_deleted="hard" needs deleted_column (e.g. "deleted")')
    _check_columns(columns, deleted=deleted_column, partition=partition_column)
    select = window_select_sql(
        source,
        cursor,
        columns=columns,
        primary_key=primary_key,
        version_column=version_column,
        null_policy=null_policy,
        has_start=window.start is not None,
        versions=mode == "append",
    )
    target, same = destination.sql, _same_key(primary_key, "t", "b")
    newer = _newer(_order(cursor, version_column, "t"), _order(cursor, version_column, "b"))
    hard_deleted = deleted_column if on_deleted == "hard" else None
    live = "" if hard_deleted is None else f" AND {_column(hard_deleted, 'b')} IS NOT TRUE"
    head = [
        "DECLARE rows_selected, rows_inserted, rows_updated, rows_deleted INT64 DEFAULT 0",
        "DECLARE rows_expected, rows_reconciled INT64 DEFAULT 0",
        "DECLARE watermark_before, watermark_after TIMESTAMP",
    ]
    prune, batch_range = "", []
    if partition_column is not None:
        part = _column(partition_column)
        head.append(f"DECLARE part_low, part_high DEFAULT (SELECT MIN({part}) FROM {target} WHERE FALSE)")
        batch_range = [
            f"SET part_low = (SELECT MIN({part}) FROM _batch)",
            f"SET part_high = (SELECT MAX({part}) FROM _batch)",
        ]
        prune = f" AND (t.{part} BETWEEN part_low AND part_high OR t.{part} IS NULL)"
    if null_policy == "fail":
        head.append(
            f"ASSERT (SELECT COUNTIF({cursor.sql()} IS NULL) FROM {source.sql}) = 0"
            f" AS 'table {source} has rows whose cursor is NULL (null_policy=fail)'"
        )
    in_target = f"EXISTS (SELECT 1 FROM {target} AS t WHERE {same}{prune})"
    older_in_target = f"EXISTS (SELECT 1 FROM {target} AS t WHERE {same}{prune} AND {newer})"
    present = f"(SELECT COUNT(*) FROM _batch AS b WHERE {in_target})"
    upsert = [
        f"SET rows_inserted = (SELECT COUNT(*) FROM _batch AS b WHERE NOT {in_target}{live})",
        f"SET rows_updated = (SELECT COUNT(*) FROM _batch AS b WHERE {older_in_target}{live})",
        f"DELETE FROM {target} AS t WHERE EXISTS (SELECT 1 FROM _batch AS b WHERE {same} AND {newer}){prune}",
        f"INSERT INTO {target} ({_columns(columns)})\n"
        f"SELECT {_columns(columns, 'b')} FROM _batch AS b WHERE NOT {in_target}{live}",
    ]
    covered = f"EXISTS (SELECT 1 FROM {target} AS t WHERE {same}{prune} AND NOT ({newer}))"
    if mode == "append":
        same_version = " AND ".join(
            f"{o} IS NOT DISTINCT FROM {n}"
            for o, n in zip(
                _order(cursor, version_column, "t"), _order(cursor, version_column, "b"), strict=True
            )
        )
        covered = f"EXISTS (SELECT 1 FROM {target} AS t WHERE {same}{prune} AND {same_version})"
        upsert = [
            f"SET rows_inserted = (SELECT COUNT(*) FROM _batch AS b WHERE NOT {covered}{live})",
            f"INSERT INTO {target} ({_columns(columns)})\n"
            f"SELECT {_columns(columns, 'b')} FROM _batch AS b WHERE NOT {covered}{live}",
        ]
    if hard_deleted is not None and mode == "merge":
        flagged = f"{_column(hard_deleted, 't')} IS TRUE"
        upsert[2:2] = [f"SET rows_deleted = {present}"]
        upsert += [
            f"DELETE FROM {target} AS t"
            f" WHERE {flagged}{prune} AND EXISTS (SELECT 1 FROM _batch AS b WHERE {same})",
            f"SET rows_deleted = rows_deleted + rows_inserted - {present}",
        ]
    upsert += [
        f"SET rows_expected = (SELECT COUNT(*) FROM _batch AS b WHERE TRUE{live})",
        f"SET rows_reconciled = (SELECT COUNT(*) FROM _batch AS b WHERE {covered}{live})",
    ]
    key = "`destination` = @destination AND `source` = @source"
    window_start = "NULL" if window.start is None else "@window_start"
    # Concurrent runs must conflict (one is aborted and retried) also on the first run, when there is no
    # state row yet: otherwise both insert the same new keys (neither sees the other's inserts) and the
    # destination gets duplicates. A state row (watermark NULL until the commit) to delete guarantees it.
    seed = (
        f"INSERT INTO {state.sql} ({_columns(_STATE_COLUMNS)})\n"
        "SELECT @destination, @source, @cursor, CAST(NULL AS TIMESTAMP), CURRENT_TIMESTAMP(), @run_id"
        f" FROM UNNEST([1]) WHERE NOT EXISTS (SELECT 1 FROM {state.sql} WHERE {key})"
    )
    statements = [
        *head,
        seed,
        "BEGIN TRANSACTION",
        f"CREATE TEMP TABLE _batch AS\n{select}",
        *batch_range,
        "SET rows_selected = (SELECT COUNT(*) FROM _batch)",
        *upsert,
        f"SET watermark_before = (SELECT MAX(`watermark`) FROM {state.sql} WHERE {key})",
        "SET watermark_after = IF(watermark_before > @watermark, watermark_before, @watermark)",
        f"DELETE FROM {state.sql} WHERE {key}",
        f"INSERT INTO {state.sql} ({_columns(_STATE_COLUMNS)})\n"
        "VALUES (@destination, @source, @cursor, watermark_after, CURRENT_TIMESTAMP(), @run_id)",
        f"INSERT INTO {audit.sql} ({_columns(_AUDIT_COLUMNS)})\n"
        f"VALUES (@run_id, @destination, @source, {window_start}, @window_end, rows_selected, rows_inserted,"
        " rows_updated, rows_deleted, watermark_before, watermark_after, @job_ids, CURRENT_TIMESTAMP())",
        "COMMIT TRANSACTION",
        "SELECT rows_selected, rows_inserted, rows_updated, rows_deleted, watermark_before, watermark_after,"
        " rows_expected, rows_reconciled",
    ]
    script = ";\n".join(statements) + ";"
    params = _window_params(window) | {
        "destination": str(destination),
        "source": str(source),
        "cursor": cursor.expression,
        "watermark": watermark,
        "run_id": run_id,
        "job_ids": list(job_ids),
    }
    return script, params


def _create_table(ref: TableRef, schema: Mapping[str, str]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` with the given columns.

    :param ref: the table.
    :param schema: column -> type.
    """
    body = ",\n  ".join(f"{quote_column(name)} {data_type}" for name, data_type in schema.items())
    return f"CREATE TABLE IF NOT EXISTS {ref.sql} (\n  {body}\n)"


def state_table_ddl(ref: TableRef) -> str:
    """DDL of the watermark state table: one row per (destination, source).

    :param ref: the state table.
    """
    return _create_table(ref, _STATE_SCHEMA)


def audit_table_ddl(ref: TableRef) -> str:
    """DDL of the audit table: one row per committed run.

    :param ref: the audit table.
    """
    return _create_table(ref, _AUDIT_SCHEMA)


def read_watermark_sql(
    state: TableRef, *, destination: TableRef, source: TableRef
) -> tuple[str, dict[str, Any]]:
    """Read the stored watermark of (destination, source): columns watermark, cursor, run_id, updated_at.

    :param state: the state table.
    :param destination: the destination table.
    :param source: the source table.
    """
    sql = (
        f"SELECT `watermark`, `cursor`, `run_id`, `updated_at` FROM {state.sql}\n"
        "WHERE `destination` = @destination AND `source` = @source ORDER BY `watermark` DESC LIMIT 1"
    )
    return sql, {"destination": str(destination), "source": str(source)}


def columns_query(tables: Sequence[TableRef]) -> tuple[str, dict[str, Any]]:
    """One query reading the columns of several tables from INFORMATION_SCHEMA.COLUMNS.

    Tables of one dataset share a ``table_name IN UNNEST(@tables)`` filter; several datasets are combined
    with UNION ALL (parameters ``@tables_0``, ``@tables_1``, ...). Rows: table_catalog, table_schema,
    table_name, column_name, data_type, ordinal_position.

    :param tables: the tables.
    """
    if not tables:
        raise ValueError("columns_query needs at least one table")
    groups: dict[str, list[str]] = {}  # quoted dataset -> table names
    for ref in tables:
        names = groups.setdefault(ref.dataset_sql, [])
        if ref.table not in names:
            names.append(ref.table)
    selects, params = [], {}
    for index, (dataset_sql, names) in enumerate(groups.items()):
        name = "tables" if len(groups) == 1 else f"tables_{index}"
        params[name] = names
        selects.append(
            "SELECT table_catalog, table_schema, table_name, column_name, data_type, ordinal_position\n"
            f"FROM {dataset_sql}.INFORMATION_SCHEMA.COLUMNS WHERE table_name IN UNNEST(@{name})"
        )
    sql = "\nUNION ALL\n".join(selects) + "\nORDER BY table_schema, table_name, ordinal_position"
    return sql, params


def max_columns_sql(table: TableRef, columns: Sequence[str]) -> str:
    """``SELECT MAX(col) AS c0, MAX(col2) AS c1 ...`` over the table (the sensor's freshness check).

    :param table: the table.
    :param columns: the timestamp columns.
    """
    if not columns:
        raise ValueError("max_columns_sql needs at least one column")
    maxima = ", ".join(f"MAX({quote_column(c)}) AS `c{i}`" for i, c in enumerate(columns))
    return f"SELECT {maxima} FROM {table.sql}"


def hard_delete_sql(target: TableRef, deleted_column: str = "deleted") -> str:
    """Remove the rows flagged deleted (after a merge, for ``on_deleted="hard"``).

    :param target: the table.
    :param deleted_column: the boolean deleted flag.
    """
    return f"DELETE FROM {target.sql} WHERE {quote_column(deleted_column)} IS TRUE;"
