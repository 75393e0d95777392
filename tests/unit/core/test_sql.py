from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest

from airflow_provider_incremental.core import sql
from airflow_provider_incremental.core.sql import Cursor, TableRef, choose_cursor, quote_column
from airflow_provider_incremental.core.window import Window
from airflow_provider_incremental.exceptions import CursorColumnError, IdentifierError

UTC = timezone.utc
START = datetime(2024, 3, 1, 0, 0, 7, tzinfo=UTC)
END = datetime(2024, 3, 1, 1, 0, 13, tzinfo=UTC)
WINDOW = Window(START, END)
SRC = TableRef("test-project", "src", "customers")
DST = TableRef("test-project", "dw", "customers")
STATE = DST.sibling("_incremental_state")
AUDIT = DST.sibling("_incremental_audit")
COLUMNS = ["id", "name", "created_at", "updated_at", "resource_version", "deleted", "created_date"]
CURSOR = Cursor(("updated_at", "created_at"), ("TIMESTAMP", "TIMESTAMP"))
HOSTILE_RUN_ID = "manual__2024-03-01T01:00:00+00:00'; DROP TABLE x; --"

HOSTILE = [
    "",
    "a`b",
    "a;b",
    "t; DROP TABLE x; --",
    "tbl\n",
    "tb\nl",
    "tbl ",
    " tbl",
    "t b",
    "tablé",
    "表",
    "tbl$20240101",
    "tbl'",
    'tbl"',
    "t.b",
    "t*",
    "x" * 1025,
]


def assert_no_values_in(text: str, params: dict[str, Any]) -> None:
    """No parameter value appears in the SQL text: values travel only as @parameters.

    (The ``cursor`` parameter records the cursor expression, which the SQL naturally contains.)
    """
    for name, value in params.items():
        assert f"@{name}" in text, name
        if name == "cursor":
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, datetime):
                forms = {item.isoformat(), item.strftime("%Y-%m-%d %H:%M:%S"), item.strftime("%H:%M:%S")}
            else:
                forms = {str(item)}
            for form in forms:
                assert form not in text, (name, form)


@pytest.mark.parametrize(
    "name", ["customers", "Customers_2024", "a", "x" * 1024, "customer-events", "_t", "0t"]
)
def test_valid_table_ids(name: str) -> None:
    assert sql.validate_identifier("table", name) == name


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_table_ids(name: str) -> None:
    with pytest.raises(IdentifierError, match="invalid table"):
        sql.validate_identifier("table", name)


@pytest.mark.parametrize("name", ["id", "_id", "updated_at", "A1", "x" * 300])
def test_valid_columns(name: str) -> None:
    assert quote_column(name) == f"`{name}`"


@pytest.mark.parametrize("name", [*HOSTILE, "1col", "a-b", "x" * 301])
def test_hostile_columns(name: str) -> None:
    with pytest.raises(IdentifierError, match="invalid column"):
        quote_column(name)


@pytest.mark.parametrize("name", ["test-project", "local-project", "my-proj-123", "example.com:my-project"])
def test_valid_projects(name: str) -> None:
    assert sql.validate_identifier("project", name) == name


@pytest.mark.parametrize("name", [*HOSTILE, "Test-Project", "proj", "1project", "project-", "a" * 31, "x.y:"])
def test_hostile_projects(name: str) -> None:
    with pytest.raises(IdentifierError, match="invalid project"):
        sql.validate_identifier("project", name)


@pytest.mark.parametrize("name", ["dw", "Raw_Data_2", "x" * 1024])
def test_valid_datasets(name: str) -> None:
    assert sql.validate_identifier("dataset", name) == name


@pytest.mark.parametrize("name", [*HOSTILE, "my-dataset"])
def test_hostile_datasets(name: str) -> None:
    with pytest.raises(IdentifierError, match="invalid dataset"):
        sql.validate_identifier("dataset", name)


def test_identifier_error_names_the_value_and_the_rule() -> None:
    with pytest.raises(IdentifierError) as error:
        sql.validate_identifier("table", "events$20240101")
    assert "'events$20240101'" in str(error.value) and "decorators" in str(error.value)
    with pytest.raises(IdentifierError, match=r"\.\.\. \(1025 chars\)"):
        sql.validate_identifier("table", "x" * 1025)


@pytest.mark.parametrize(
    ("text", "default_project", "expected"),
    [
        ("test-project.src.customers", None, ("test-project", "src", "customers")),
        ("src.customers", None, (None, "src", "customers")),
        ("src.customers", "local-project", ("local-project", "src", "customers")),
        ("other-project.src.customers", "local-project", ("other-project", "src", "customers")),
        ("`test-project.src.customers`", None, ("test-project", "src", "customers")),
        ("`test-project`.`src`.`customers`", None, ("test-project", "src", "customers")),
        ("`test-project`.src.`customer-events`", None, ("test-project", "src", "customer-events")),
        ("example.com:my-project.src.t", None, ("example.com:my-project", "src", "t")),
        ("`example.com:my-project`.src.t", None, ("example.com:my-project", "src", "t")),
    ],
)
def test_table_ref_parse(
    text: str, default_project: str | None, expected: tuple[str | None, str, str]
) -> None:
    ref = TableRef.parse(text, default_project)
    assert (ref.project, ref.dataset, ref.table) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "customers",
        "`customers`",
        "ds.t`; DROP TABLE x; --",
        "ds.t; DROP TABLE x; --",
        "ds.t\n",
        "ds..t",
        ".ds.t",
        "ds.t.",
        "`ds.t",
        "ds.`t",
        "ds.t`",
        "d`s.t",
        "a.b.c.d",
        "proj.ds.t",
        "test-project.ds.t$20240101",
        "test-project.ds.t$__UNPARTITIONED__",
        "test-project.ds.tablé",
        "test-project.my-ds.t",
        "test-project.ds.t x",
        "test-project.ds.*",
    ],
)
def test_table_ref_parse_rejects(text: str) -> None:
    with pytest.raises(IdentifierError):
        TableRef.parse(text)


def test_table_ref_rendering() -> None:
    ref = TableRef.parse("test-project.src.customers")
    assert ref.sql == "`test-project`.`src`.`customers`"
    assert ref.dataset_sql == "`test-project`.`src`"
    assert str(ref) == "test-project.src.customers"
    assert TableRef.parse("src.customers").sql == "`src`.`customers`"
    assert str(TableRef.parse("src.customers")) == "src.customers"
    assert ref.sibling("state") == TableRef("test-project", "src", "state")
    assert TableRef.parse(ref.sql) == ref and TableRef.parse(str(ref)) == ref


def test_table_ref_constructor_validates() -> None:
    with pytest.raises(IdentifierError, match="invalid table"):
        TableRef("test-project", "ds", "t`; DROP TABLE x")
    with pytest.raises(IdentifierError, match="invalid dataset"):
        TableRef(None, "d s", "t")
    with pytest.raises(IdentifierError, match="invalid project"):
        TableRef("P", "ds", "t")
    with pytest.raises(IdentifierError, match="invalid table"):
        DST.sibling("x$1")


@pytest.mark.parametrize(
    ("columns", "kwargs", "expression", "data_type"),
    [
        (
            {"id": "STRING", "updated_at": "TIMESTAMP", "created_at": "TIMESTAMP"},
            {},
            "COALESCE(`updated_at`, `created_at`)",
            "TIMESTAMP",
        ),
        ({"id": "STRING", "updated_at": "TIMESTAMP"}, {}, "`updated_at`", "TIMESTAMP"),
        ({"id": "STRING", "created_at": "TIMESTAMP"}, {}, "`created_at`", "TIMESTAMP"),
        ({"Updated_At": "timestamp"}, {}, "`Updated_At`", "TIMESTAMP"),
        ({"updated_at": "DATETIME"}, {}, "TIMESTAMP(`updated_at`)", "DATETIME"),
        (
            {"updated_at": "DATETIME", "created_at": "TIMESTAMP"},
            {},
            "COALESCE(TIMESTAMP(`updated_at`), `created_at`)",
            "DATETIME",
        ),
        ({"updated_at": "INT64"}, {"epoch_unit": "seconds"}, "TIMESTAMP_SECONDS(`updated_at`)", "INT64"),
        ({"updated_at": "INT64"}, {"epoch_unit": "ms"}, "TIMESTAMP_MILLIS(`updated_at`)", "INT64"),
        ({"updated_at": "INT64"}, {"epoch_unit": "microseconds"}, "TIMESTAMP_MICROS(`updated_at`)", "INT64"),
        (
            {"modified": "TIMESTAMP", "updated_at": "TIMESTAMP"},
            {"cursor_columns": ("modified",)},
            "`modified`",
            "TIMESTAMP",
        ),
    ],
)
def test_choose_cursor(
    columns: dict[str, str], kwargs: dict[str, Any], expression: str, data_type: str
) -> None:
    cursor = choose_cursor(columns, table="ds.t", **kwargs)
    assert cursor.expression == expression
    assert cursor.data_type == data_type
    assert "SAFE." not in cursor.expression


def test_choose_cursor_without_candidates_lists_the_columns() -> None:
    with pytest.raises(CursorColumnError) as error:
        choose_cursor({"id": "STRING", "name": "STRING"}, table="src.plans")
    message = str(error.value)
    assert "src.plans" in message and "'id'" in message and "'name'" in message and "updated_at" in message


@pytest.mark.parametrize(
    ("columns", "kwargs", "match"),
    [
        ({"updated_at": "STRING"}, {}, "'updated_at' has type STRING"),
        ({"updated_at": "DATE"}, {}, "'updated_at' has type DATE"),
        ({"updated_at": "INT64"}, {}, "pass epoch_unit"),
        ({"updated_at": "TIMESTAMP", "created_at": "INT64"}, {}, "'created_at' has type INT64"),
    ],
)
def test_choose_cursor_wrong_type(columns: dict[str, str], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(CursorColumnError, match=match) as error:
        choose_cursor(columns, table="src.subs", **kwargs)
    assert "src.subs" in str(error.value)


def test_cursor_rejects_unknown_epoch_unit_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="epoch_unit"):
        Cursor(("updated_at",), ("INT64",), "minutes")
    with pytest.raises(ValueError, match="one data type per column"):
        Cursor(("updated_at",), ())
    with pytest.raises(IdentifierError):
        Cursor(("updated at",), ("TIMESTAMP",))


def test_cursor_sql_qualifies_columns() -> None:
    assert CURSOR.sql("t") == "COALESCE(t.`updated_at`, t.`created_at`)"


def test_columns_query_one_dataset() -> None:
    text, params = sql.columns_query([SRC, SRC.sibling("subscriptions"), SRC])
    assert params == {"tables": ["customers", "subscriptions"]}
    assert text.count("SELECT") == 1 and "UNION ALL" not in text
    assert "FROM `test-project`.`src`.INFORMATION_SCHEMA.COLUMNS WHERE table_name IN UNNEST(@tables)" in text
    for column in ("table_name", "column_name", "data_type", "ordinal_position"):
        assert column in text


def test_columns_query_several_datasets() -> None:
    text, params = sql.columns_query([SRC, DST, SRC.sibling("subscriptions"), TableRef(None, "raw", "x")])
    assert params == {
        "tables_0": ["customers", "subscriptions"],
        "tables_1": ["customers"],
        "tables_2": ["x"],
    }
    assert text.count("UNION ALL") == 2
    assert "`test-project`.`dw`.INFORMATION_SCHEMA.COLUMNS WHERE table_name IN UNNEST(@tables_1)" in text
    assert "`raw`.INFORMATION_SCHEMA.COLUMNS" in text
    with pytest.raises(ValueError):
        sql.columns_query([])


def select(**kwargs: Any) -> str:
    defaults: dict[str, Any] = {"columns": COLUMNS, "primary_key": ["id"]}
    return sql.window_select_sql(SRC, CURSOR, **(defaults | kwargs))


def test_window_select_sql() -> None:
    text = select(version_column="resource_version", null_policy="exclude")
    cursor = "COALESCE(`updated_at`, `created_at`)"
    assert text.startswith("SELECT `id`, `name`, `created_at`, `updated_at`, `resource_version`, `deleted`,")
    assert "FROM `test-project`.`src`.`customers`" in text
    assert f"WHERE {cursor} >= @window_start AND {cursor} < @window_end\n" in text
    assert (
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY `id` ORDER BY {cursor} DESC, `resource_version` DESC) = 1"
        in text
    )
    assert "IS NULL" not in text and "*" not in text


@pytest.mark.parametrize(
    ("kwargs", "where"),
    [
        ({}, "WHERE (`c` >= @window_start AND `c` < @window_end) OR `c` IS NULL\n"),
        ({"null_policy": "exclude"}, "WHERE `c` >= @window_start AND `c` < @window_end\n"),
        ({"null_policy": "fail"}, "WHERE `c` >= @window_start AND `c` < @window_end\n"),
        ({"has_start": False}, "WHERE (`c` < @window_end) OR `c` IS NULL\n"),
        ({"has_start": False, "null_policy": "exclude"}, "WHERE `c` < @window_end\n"),
    ],
)
def test_window_select_sql_null_policy_and_start(kwargs: dict[str, Any], where: str) -> None:
    text = sql.window_select_sql(
        SRC, Cursor(("c",), ("TIMESTAMP",)), columns=["id", "c"], primary_key=["id"], **kwargs
    )
    assert where in text
    assert "ORDER BY `c` DESC) = 1" in text


def test_window_select_sql_composite_key_and_checks() -> None:
    assert "PARTITION BY `id`, `name` ORDER BY" in select(primary_key=["id", "name"])
    with pytest.raises(ValueError, match="primary key"):
        select(primary_key=[])
    with pytest.raises(ValueError, match="primary_key column 'uid'"):
        select(primary_key=["uid"])
    with pytest.raises(ValueError, match="version column"):
        select(version_column="rv")
    with pytest.raises(IdentifierError):
        select(columns=[*COLUMNS, "x; DROP TABLE y"])


def test_count_sql() -> None:
    created = Cursor(("created_at",), ("TIMESTAMP",))
    text, params = sql.count_sql(SRC, CURSOR, WINDOW, columns=COLUMNS, primary_key=["id"], created=created)
    assert params == {"window_start": START, "window_end": END}
    assert_no_values_in(text, params)
    assert "COUNTIF(`created_at` >= @window_start AND `created_at` < @window_end) AS rows_new" in text
    assert (
        "COUNTIF(COALESCE(`updated_at`, `created_at`) IS NULL) FROM `test-project`.`src`.`customers`" in text
    )
    text, params = sql.count_sql(SRC, CURSOR, Window(None, END), columns=COLUMNS, primary_key=["id"])
    assert params == {"window_end": END} and "@window_start" not in text
    assert "CAST(NULL AS INT64) AS rows_new" in text


def upsert(**kwargs: Any) -> tuple[str, dict[str, Any]]:
    defaults: dict[str, Any] = {
        "source": SRC,
        "destination": DST,
        "state": STATE,
        "audit": AUDIT,
        "cursor": CURSOR,
        "window": WINDOW,
        "watermark": END,
        "columns": COLUMNS,
        "primary_key": ["id"],
        "run_id": HOSTILE_RUN_ID,
        "job_ids": ["job-columns-1", "job-count-2"],
        "version_column": "resource_version",
    }
    return sql.upsert_script(**(defaults | kwargs))


def statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]


def test_upsert_script_structure() -> None:
    script, params = upsert()
    assert set(params) == {
        "window_start",
        "window_end",
        "destination",
        "source",
        "cursor",
        "watermark",
        "run_id",
        "job_ids",
    }
    assert (
        params["destination"] == "test-project.dw.customers"
        and params["source"] == "test-project.src.customers"
    )
    assert params["job_ids"] == ["job-columns-1", "job-count-2"]
    assert_no_values_in(script, params)
    kinds = [statement.split()[0] for statement in statements(script)]
    assert kinds == [
        "DECLARE",
        "DECLARE",
        "DECLARE",
        "INSERT",
        "BEGIN",
        "CREATE",
        "SET",
        "SET",
        "SET",
        "DELETE",
        "INSERT",
        "SET",
        "SET",
        "SET",
        "SET",
        "DELETE",
        "INSERT",
        "INSERT",
        "COMMIT",
        "SELECT",
    ]
    assert script.endswith(";")
    assert "MERGE" not in script and "SAFE." not in script
    assert "INSERT INTO `test-project`.`dw`.`customers` (`id`, `name`, `created_at`," in script
    assert "SELECT b.`id`, b.`name`, b.`created_at`," in script
    assert "DELETE FROM `test-project`.`dw`.`_incremental_state` WHERE `destination` = @destination" in script
    assert "IF(watermark_before > @watermark, watermark_before, @watermark)" in script
    t_cursor, b_cursor = CURSOR.sql("t"), CURSOR.sql("b")
    newer = (
        f"(COALESCE({t_cursor} < {b_cursor}, {t_cursor} IS NULL AND {b_cursor} IS NOT NULL)"
        f" OR ({t_cursor} IS NOT DISTINCT FROM {b_cursor}"
        " AND COALESCE(t.`resource_version` < b.`resource_version`,"
        " t.`resource_version` IS NULL AND b.`resource_version` IS NOT NULL)))"
    )
    same_key = "t.`id` = b.`id`"
    delete = (
        f"DELETE FROM {DST.sql} AS t WHERE EXISTS (SELECT 1 FROM _batch AS b WHERE {same_key} AND {newer})"
    )
    assert delete in statements(script)


def test_upsert_script_options() -> None:
    script, params = upsert(
        window=Window(None, END), null_policy="fail", on_deleted="hard", deleted_column="deleted"
    )
    assert "window_start" not in params and "@window_start" not in script
    assert "VALUES (@run_id, @destination, @source, NULL, @window_end," in script
    assert statements(script)[3].startswith(
        "ASSERT (SELECT COUNTIF(COALESCE(`updated_at`, `created_at`) IS NULL)"
    )
    assert "b.`deleted` IS NOT TRUE" in script
    assert "WHERE t.`deleted` IS TRUE AND EXISTS" in script
    assert "SET rows_deleted = rows_deleted + rows_inserted -" in script

    script, _ = upsert(partition_column="created_date")
    declare = f"DECLARE part_low, part_high DEFAULT (SELECT MIN(`created_date`) FROM {DST.sql} WHERE FALSE)"
    assert declare in statements(script)
    assert "SET part_low = (SELECT MIN(`created_date`) FROM _batch)" in script
    prune = "AND (t.`created_date` BETWEEN part_low AND part_high OR t.`created_date` IS NULL)"
    assert script.count(prune) == 5  # counts (2), DELETE, INSERT, reconciliation
    assert statements(script).index("BEGIN TRANSACTION") < statements(script).index(
        "SET part_low = (SELECT MIN(`created_date`) FROM _batch)"
    )


def test_upsert_script_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="deleted_column"):
        upsert(on_deleted="hard")
    with pytest.raises(ValueError, match="partition column"):
        upsert(partition_column="day")
    with pytest.raises(IdentifierError):
        upsert(destination=TableRef.parse("dw.`t; DROP`"))


def test_merge_sql() -> None:
    text, params = sql.merge_sql(
        SRC, DST, CURSOR, WINDOW, columns=COLUMNS, primary_key=["id"], version_column="resource_version"
    )
    assert params == {"window_start": START, "window_end": END}
    assert_no_values_in(text, params)
    assert text.startswith("MERGE `test-project`.`dw`.`customers` AS t\nUSING (\nSELECT `id`,")
    assert "ON t.`id` = s.`id`\nWHEN MATCHED AND (COALESCE(COALESCE(t.`updated_at`, t.`created_at`) <" in text
    assert "THEN UPDATE SET `name` = s.`name`," in text and "`id` = s.`id`," not in text
    insert = f"WHEN NOT MATCHED THEN INSERT ({sql._columns(COLUMNS)}) VALUES ({sql._columns(COLUMNS, 's')})"
    assert text.endswith(insert)
    assert "s.`created_date`)" in insert


def test_staging_merge_script() -> None:
    staging = DST.sibling("_staging_customers_run1")
    script = sql.staging_merge_script(staging, DST, COLUMNS, ["id"], ["updated_at", "resource_version"])
    assert script.startswith("MERGE `test-project`.`dw`.`customers` AS t\nUSING (\nSELECT `id`,")
    assert f"FROM {staging.sql} WHERE TRUE\nQUALIFY ROW_NUMBER() OVER (PARTITION BY `id`" in script
    assert "ORDER BY `updated_at` DESC, `resource_version` DESC) = 1" in script
    newer = (
        "(COALESCE(t.`updated_at` < s.`updated_at`, t.`updated_at` IS NULL AND s.`updated_at` IS NOT NULL)"
    )
    assert f"WHEN MATCHED AND {newer}" in script
    assert script.endswith(";\nDROP TABLE IF EXISTS `test-project`.`dw`.`_staging_customers_run1`;")
    only_keys = sql.staging_merge_script(
        staging, DST, ["id", "updated_at"], ["id", "updated_at"], ["updated_at"]
    )
    assert "WHEN MATCHED" not in only_keys
    with pytest.raises(ValueError, match="order_by"):
        sql.staging_merge_script(staging, DST, COLUMNS, ["id"], [])
    with pytest.raises(ValueError, match="order_by column"):
        sql.staging_merge_script(staging, DST, COLUMNS, ["id"], ["modified"])


def test_ddl_and_watermark() -> None:
    state = sql.state_table_ddl(STATE)
    assert state.startswith("CREATE TABLE IF NOT EXISTS `test-project`.`dw`.`_incremental_state` (")
    for column in (
        "`destination` STRING",
        "`source` STRING",
        "`cursor` STRING",
        "`watermark` TIMESTAMP",
        "`updated_at` TIMESTAMP",
        "`run_id` STRING",
    ):
        assert column in state
    audit = sql.audit_table_ddl(AUDIT)
    for column in (
        "`run_id` STRING",
        "`window_start` TIMESTAMP",
        "`rows_inserted` INT64",
        "`job_ids` ARRAY<STRING>",
        "`at` TIMESTAMP",
    ):
        assert column in audit
    text, params = sql.read_watermark_sql(STATE, destination=DST, source=SRC)
    assert params == {"destination": "test-project.dw.customers", "source": "test-project.src.customers"}
    assert_no_values_in(text, params)
    assert "FROM `test-project`.`dw`.`_incremental_state`" in text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "BOOL"),
        (3, "INT64"),
        (1.5, "FLOAT64"),
        ("x", "STRING"),
        (START, "TIMESTAMP"),
        (datetime(2024, 3, 1), "DATETIME"),
        (date(2024, 3, 1), "DATE"),
        (["a"], "ARRAY<STRING>"),
        ([], "ARRAY<STRING>"),
        ([START], "ARRAY<TIMESTAMP>"),
    ],
)
def test_param_type(value: object, expected: str) -> None:
    assert sql.param_type(value) == expected


def test_param_type_rejects_none() -> None:
    with pytest.raises(TypeError):
        sql.param_type(None)


def test_upsert_script_append_mode_keeps_versions_and_reconciles() -> None:
    script, _ = upsert(mode="append")
    kinds = [statement.split()[0] for statement in statements(script)]
    assert kinds.count("DELETE") == 1, "append never deletes destination rows (only the state row)"
    assert f"DELETE FROM {DST.sql}" not in script
    assert "t.`resource_version` IS NOT DISTINCT FROM b.`resource_version`" in script
    assert "SET rows_reconciled = " in script and script.rstrip(";").endswith(
        "rows_expected, rows_reconciled"
    )
    with pytest.raises(ValueError, match="mode"):
        upsert(mode="upsert")
