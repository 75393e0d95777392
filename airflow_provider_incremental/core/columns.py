"""Does a table have the timestamp columns a load depends on? (pure: the sensor and trigger share it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

REQUIRE_MODES = ("any", "all")


@dataclass(frozen=True)
class ColumnCheck:
    """The outcome of one look at a table's columns.

    :param satisfied: the required columns are there with an allowed type.
    :param found: the wanted columns present with an allowed type, ``{name: type}``.
    :param missing: the wanted columns not in the table.
    :param wrong_type: wanted columns present with a type that is not allowed, ``{name: type}``.
    :param table_exists: whether the table has any column at all (missing tables have none).
    :param message: one line for the log, saying what is there and what is awaited.
    """

    satisfied: bool
    found: dict[str, str]
    missing: tuple[str, ...]
    wrong_type: dict[str, str]
    table_exists: bool
    message: str


def check_columns(
    table: str,
    table_columns: Mapping[str, str],
    columns: Sequence[str],
    *,
    require: str = "any",
    allowed_types: Sequence[str] = ("TIMESTAMP", "DATETIME"),
) -> ColumnCheck:
    """Check ``table_columns`` (``{name: data_type}`` from INFORMATION_SCHEMA) for the wanted ``columns``.

    Column names compare case-insensitively, as BigQuery's do.

    :param table: the table name, for the message.
    :param table_columns: the table's columns; empty when the table does not exist (yet).
    :param columns: the wanted columns, e.g. ``("created_at", "updated_at")``.
    :param require: ``any`` (one wanted column is enough) or ``all``.
    :param allowed_types: accepted data types; a parameterised type (``STRING(30)``) matches its base name
        (``STRING``), but ``DATE`` does not admit ``DATETIME``.
    """
    if isinstance(columns, str):  # one column, not its letters
        columns = (columns,)
    if require not in REQUIRE_MODES:
        raise ValueError(f"require must be one of {REQUIRE_MODES}, got {require!r}")
    if not columns:
        raise ValueError("columns must name at least one column")
    by_lower = {name.lower(): (name, data_type) for name, data_type in table_columns.items()}
    allowed = tuple(t.upper() for t in allowed_types)
    found: dict[str, str] = {}
    wrong: dict[str, str] = {}
    missing: list[str] = []
    for wanted in columns:
        hit = by_lower.get(wanted.lower())
        if hit is None:
            missing.append(wanted)
        elif _base_type(hit[1]) in allowed:
            found[wanted] = hit[1]
        else:
            wrong[wanted] = hit[1]
    satisfied = bool(found) if require == "any" else len(found) == len(columns)
    if not table_columns:
        message = f"table {table} does not exist yet"
    else:
        have = ", ".join(f"{n} {t}" for n, t in found.items()) or "none of the wanted columns"
        message = f"table {table} has {have}"
        if wrong:
            kinds = "/".join(allowed)
            message += "; wrong type: " + ", ".join(f"{n} is {t}, not {kinds}" for n, t in wrong.items())
        if not satisfied and missing:
            message += f"; waiting for {' or '.join(missing) if require == 'any' else ' and '.join(missing)}"
    return ColumnCheck(satisfied, found, tuple(missing), wrong, bool(table_columns), message)


def _base_type(data_type: str) -> str:
    """``STRING(30)`` -> ``STRING``, ``ARRAY<TIMESTAMP>`` -> ``ARRAY``, ``timestamp`` -> ``TIMESTAMP``."""
    return data_type.split("(", 1)[0].split("<", 1)[0].strip().upper()
