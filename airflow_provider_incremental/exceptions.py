"""Exceptions of the provider: few classes, built-in bases, messages that say what to change."""

from __future__ import annotations


class SourceFormatError(ValueError):
    """An input file is not a readable Chargebee list export.

    The message names the file and the position (line, column, byte offset) of the problem.

    :param source: the file (local path or ``gs://`` URI) being read.
    :param message: what is wrong and, where possible, how to fix it.
    :param line: 1-based line of the problem, if known.
    :param column: 1-based column of the problem, if known.
    :param byte_offset: 0-based byte offset of the problem, if known.
    """

    def __init__(
        self,
        source: str,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        byte_offset: int | None = None,
    ) -> None:
        self.source = source
        self.reason = message
        self.line = line
        self.column = column
        self.byte_offset = byte_offset
        where = source
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        if byte_offset is not None:
            where += f" (byte {byte_offset})"
        super().__init__(f"{where}: {message}")


class IdentifierError(ValueError):
    """A project, dataset, table or column name is not a valid BigQuery identifier."""


class CursorColumnError(ValueError):
    """A table has no usable cursor column (or it has the wrong type)."""


class TooManyBadRecordsError(RuntimeError):
    """More records were quarantined than ``max_bad_records`` allows (the quarantine is written first)."""


class ReconciliationError(RuntimeError):
    """The rows merged do not match the distinct keys selected from the source window."""
