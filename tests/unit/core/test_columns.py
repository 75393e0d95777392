"""check_columns: does a table have the timestamp columns a load depends on (pure, table-style)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from airflow_provider_incremental.core.columns import ColumnCheck, check_columns

BOTH = ("created_at", "updated_at")
FULL = {"id": "STRING", "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}
CREATED_ONLY = {"id": "STRING", "created_at": "TIMESTAMP"}
NEITHER = {"id": "STRING", "amount": "INT64"}
FULL_FOUND = {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}


@pytest.mark.parametrize(
    ("table_columns", "columns", "require", "satisfied", "found", "missing"),
    [
        pytest.param(FULL, BOTH, "any", True, FULL_FOUND, (), id="any-both"),
        pytest.param(FULL, BOTH, "all", True, FULL_FOUND, (), id="all-both"),
        pytest.param(CREATED_ONLY, BOTH, "any", True, {"created_at": "TIMESTAMP"}, ("updated_at",), id="any-one"),
        pytest.param(CREATED_ONLY, BOTH, "all", False, {"created_at": "TIMESTAMP"}, ("updated_at",), id="all-one"),
        pytest.param(NEITHER, BOTH, "any", False, {}, BOTH, id="any-none"),
        pytest.param(NEITHER, BOTH, "all", False, {}, BOTH, id="all-none"),
        pytest.param({}, BOTH, "any", False, {}, BOTH, id="any-missing-table"),
        pytest.param({}, BOTH, "all", False, {}, BOTH, id="all-missing-table"),
        pytest.param(
            {"id": "STRING", "updated_at": "DATETIME"}, BOTH, "any", True, {"updated_at": "DATETIME"}, ("created_at",),
            id="any-datetime-second",
        ),
        pytest.param(
            {"Created_At": "TIMESTAMP", "UPDATED_AT": "DATETIME"}, BOTH, "all", True,
            {"created_at": "TIMESTAMP", "updated_at": "DATETIME"}, (), id="case-insensitive-table-names",
        ),
        pytest.param(
            FULL, ("CREATED_AT", "Updated_At"), "all", True,
            {"CREATED_AT": "TIMESTAMP", "Updated_At": "TIMESTAMP"}, (), id="case-insensitive-wanted-names",
        ),
        pytest.param(CREATED_ONLY, ["created_at"], "all", True, {"created_at": "TIMESTAMP"}, (), id="single-column-list"),
    ],
)  # fmt: skip
def test_any_all_and_missing(
    table_columns: Mapping[str, str],
    columns: Sequence[str],
    require: str,
    satisfied: bool,
    found: dict[str, str],
    missing: tuple[str, ...],
) -> None:
    check = check_columns("ds.t", table_columns, columns, require=require)
    assert isinstance(check, ColumnCheck)
    assert check.satisfied is satisfied
    assert check.found == found
    assert check.missing == missing
    assert check.wrong_type == {}
    assert check.table_exists is bool(table_columns)


@pytest.mark.parametrize(
    ("table_columns", "columns", "require", "allowed_types", "satisfied", "found", "wrong_type"),
    [
        pytest.param(
            {"created_at": "STRING", "updated_at": "TIMESTAMP"}, BOTH, "any", ("TIMESTAMP", "DATETIME"), True,
            {"updated_at": "TIMESTAMP"}, {"created_at": "STRING"}, id="any-one-wrong-one-right",
        ),
        pytest.param(
            {"created_at": "STRING", "updated_at": "TIMESTAMP"}, BOTH, "all", ("TIMESTAMP", "DATETIME"), False,
            {"updated_at": "TIMESTAMP"}, {"created_at": "STRING"}, id="all-one-wrong",
        ),
        pytest.param(
            {"created_at": "STRING"}, BOTH, "any", ("TIMESTAMP", "DATETIME"), False,
            {}, {"created_at": "STRING"}, id="any-only-wrong",
        ),
        pytest.param(
            {"created_at": "INT64", "updated_at": "DATE"}, BOTH, "any", ("TIMESTAMP", "DATETIME"), False,
            {}, {"created_at": "INT64", "updated_at": "DATE"}, id="int-and-date-are-wrong",
        ),
        pytest.param(
            {"created_at": "DATETIME"}, ("created_at",), "all", ("TIMESTAMP",), False,
            {}, {"created_at": "DATETIME"}, id="datetime-not-allowed",
        ),
        pytest.param(
            {"created_at": "DATETIME"}, ("created_at",), "all", ("DATE",), False,
            {}, {"created_at": "DATETIME"}, id="date-does-not-admit-datetime",
        ),
        pytest.param(
            {"created_at": "DATE"}, ("created_at",), "all", ("date",), True,
            {"created_at": "DATE"}, {}, id="allowed-types-case-insensitive",
        ),
        pytest.param(
            {"created_at": "timestamp"}, ("created_at",), "all", ("TIMESTAMP",), True,
            {"created_at": "timestamp"}, {}, id="data-type-case-insensitive",
        ),
        pytest.param(
            {"created_at": "STRING(30)"}, ("created_at",), "all", ("STRING",), True,
            {"created_at": "STRING(30)"}, {}, id="parameterised-type-matches-base",
        ),
        pytest.param(
            {"created_at": "STRUCT<ts TIMESTAMP>"}, ("created_at",), "all", ("TIMESTAMP", "DATETIME"), False,
            {}, {"created_at": "STRUCT<ts TIMESTAMP>"}, id="struct-is-wrong",
        ),
    ],
)  # fmt: skip
def test_types(
    table_columns: Mapping[str, str],
    columns: Sequence[str],
    require: str,
    allowed_types: Sequence[str],
    satisfied: bool,
    found: dict[str, str],
    wrong_type: dict[str, str],
) -> None:
    check = check_columns("ds.t", table_columns, columns, require=require, allowed_types=allowed_types)
    assert check.satisfied is satisfied
    assert check.found == found
    assert check.wrong_type == wrong_type
    assert check.table_exists


@pytest.mark.parametrize(
    ("table_columns", "columns", "require", "message"),
    [
        pytest.param(CREATED_ONLY, BOTH, "all", "table x has created_at TIMESTAMP; waiting for updated_at", id="all-one"),
        pytest.param(CREATED_ONLY, BOTH, "any", "table x has created_at TIMESTAMP", id="any-one-says-nothing-awaited"),
        pytest.param(FULL, BOTH, "all", "table x has created_at TIMESTAMP, updated_at TIMESTAMP", id="all-both"),
        pytest.param(
            NEITHER, BOTH, "any", "table x has none of the wanted columns; waiting for created_at or updated_at",
            id="any-none",
        ),
        pytest.param(
            NEITHER, BOTH, "all", "table x has none of the wanted columns; waiting for created_at and updated_at",
            id="all-none",
        ),
        pytest.param({}, BOTH, "any", "table x does not exist yet", id="missing-table"),
        pytest.param(
            {"created_at": "STRING"}, BOTH, "any",
            "table x has none of the wanted columns; wrong type: created_at is STRING, not TIMESTAMP/DATETIME; "
            "waiting for updated_at",
            id="wrong-type",
        ),
        pytest.param(
            {"created_at": "STRING", "updated_at": "DATETIME"}, BOTH, "all",
            "table x has updated_at DATETIME; wrong type: created_at is STRING, not TIMESTAMP/DATETIME",
            id="wrong-type-all",
        ),
    ],
)  # fmt: skip
def test_messages(
    table_columns: Mapping[str, str], columns: Sequence[str], require: str, message: str
) -> None:
    assert check_columns("x", table_columns, columns, require=require).message == message


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"columns": BOTH, "require": "some"}, r"require must be one of \('any', 'all'\), got 'some'", id="require"),
        pytest.param({"columns": BOTH, "require": "ALL"}, "require must be one of", id="require-is-case-sensitive"),
        pytest.param({"columns": ()}, "columns must name at least one column", id="no-columns"),
    ],
)  # fmt: skip
def test_rejects_bad_arguments(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        check_columns("x", FULL, **kwargs)  # type: ignore[arg-type]


def test_a_bare_string_is_one_column_not_its_letters() -> None:
    check = check_columns("x", CREATED_ONLY, "created_at", require="all")
    assert check.satisfied
    assert check.found == {"created_at": "TIMESTAMP"}
