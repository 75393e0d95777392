"""Watermark and window maths for incremental loads (dlt vocabulary: cursor, initial_value, lag).

A run reads the half-open window ``[start, end)`` of cursor values, where

* ``end`` (the *high* mark) is ``min(data interval end, now - lag)``; when the data interval is missing or
  zero-width (Airflow 3 cron schedules), ``run_after`` stands in for the interval end;
* ``start`` is ``watermark - overlap`` once a watermark exists, else ``initial_value`` (``None``: from the
  beginning of the table).

After a successful run the watermark moves to ``end`` and never backwards (see :func:`next_watermark`).
Everything here is pure and works on timezone-aware UTC datetimes only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone


@dataclass(frozen=True)
class Window:
    """A half-open window ``start <= cursor < end`` of cursor values.

    :param start: inclusive lower bound; ``None`` means from the beginning of the table.
    :param end: exclusive upper bound (the *high* mark of the run).
    """

    start: datetime | None
    end: datetime

    @property
    def empty(self) -> bool:
        """True when no cursor value can fall inside the window."""
        return self.start is not None and self.start >= self.end

    def contains(self, cursor: datetime) -> bool:
        """Whether a (non-NULL) cursor value falls inside the window.

        :param cursor: the cursor value of a row.
        """
        return (self.start is None or self.start <= cursor) and cursor < self.end


def _utc(value: datetime, name: str) -> datetime:
    """Return ``value`` converted to UTC; naive datetimes are rejected.

    :param value: the datetime to check.
    :param name: the argument name, for the error message.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}={value.isoformat()} is naive: pass a timezone-aware (UTC) datetime")
    return value.astimezone(timezone.utc)


def _utc_or_none(value: datetime | None, name: str) -> datetime | None:
    """Like :func:`_utc`, passing ``None`` through.

    :param value: the datetime to check, or ``None``.
    :param name: the argument name, for the error message.
    """
    return None if value is None else _utc(value, name)


def compute_window(
    *,
    watermark: datetime | None,
    initial_value: datetime | None,
    interval_start: datetime | None,
    interval_end: datetime | None,
    run_after: datetime | None,
    now: datetime,
    lag: timedelta,
    overlap: timedelta,
) -> Window:
    """Compute the window a run reads.

    ``high = min(upper, now - lag)`` where ``upper`` is ``interval_end`` when the data interval has a width,
    else ``run_after``, else ``now``. ``start = watermark - overlap`` when a watermark exists, else
    ``initial_value`` (``None`` = from the beginning). When ``start >= high`` (the watermark is already past
    this run's high mark, e.g. an old interval backfilled after newer runs) the window is empty:
    ``Window(high, high)``, which selects no rows.

    :param watermark: the persisted watermark (``None`` before the first successful run).
    :param initial_value: where the first run starts; ``None`` reads from the beginning.
    :param interval_start: the run's data interval start, if any.
    :param interval_end: the run's data interval end, if any.
    :param run_after: when the run was due (``dag_run.run_after``), used when the interval is missing or
        zero-width.
    :param now: the current time.
    :param lag: how long the source may take to make rows visible; rows newer than ``now - lag`` wait.
    :param overlap: how far before the watermark to re-read, to pick up rows arriving later than ``lag``.
    """
    if lag < timedelta(0) or overlap < timedelta(0):
        raise ValueError(f"lag ({lag}) and overlap ({overlap}) must not be negative")
    watermark = _utc_or_none(watermark, "watermark")
    initial_value = _utc_or_none(initial_value, "initial_value")
    interval_start = _utc_or_none(interval_start, "interval_start")
    interval_end = _utc_or_none(interval_end, "interval_end")
    run_after = _utc_or_none(run_after, "run_after")
    now_utc = _utc(now, "now")
    upper = now_utc
    if interval_end is not None and (interval_start is None or interval_end > interval_start):
        upper = interval_end
    elif run_after is not None:
        upper = run_after
    high = min(upper, now_utc - lag)
    start = watermark - overlap if watermark is not None else initial_value
    if start is not None and start >= high:
        return Window(high, high)
    return Window(start, high)


def next_watermark(
    before: datetime | None, window: Window, max_cursor_seen: datetime | None = None
) -> datetime:
    """The watermark to persist after a successful run of ``window``.

    It is ``window.end``, not the largest cursor seen: given ``lag``, every row with a cursor below
    ``window.end`` was visible when the run read, so ``[start, end)`` is complete; rows with a cursor in
    ``[end, ...)`` are read by the next run, and rows arriving later than ``lag`` are re-read through
    ``overlap``. Taking the largest cursor seen instead would re-read ``[max_seen, end)`` for nothing, and
    an empty window would never advance. It never moves backwards: when ``before`` is already past
    ``window.end`` (an old interval re-run or backfilled) ``before`` is kept.

    :param before: the watermark before the run (``None`` on the first run).
    :param window: the window the run read.
    :param max_cursor_seen: the largest cursor value selected, used only as a consistency check: a value
        at or past ``window.end`` means the query did not apply the window.
    """
    if max_cursor_seen is not None and _utc(max_cursor_seen, "max_cursor_seen") >= window.end:
        raise ValueError(
            f"max_cursor_seen={max_cursor_seen.isoformat()} is not below window.end={window.end.isoformat()}:"
            " the selected rows were not restricted to the window"
        )
    if before is None:
        return window.end
    return max(_utc(before, "before"), window.end)


_COMPACT = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_ISO = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


def parse_duration(value: timedelta | int | float | str) -> timedelta:
    """Read a lag or overlap: a timedelta, seconds, ``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"`` or ``"PT1H"``.

    :param value: the duration; negative values are rejected.
    """
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip()
        match = _COMPACT.fullmatch(text.lower()) or _ISO.fullmatch(text.upper())
        if not text or match is None or not any(match.groups()):
            raise ValueError(f"cannot read duration {value!r}: use seconds, '15m', '1h30m', '2d' or 'PT1H'")
        days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
        result = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    else:
        raise TypeError(f"duration must be a timedelta, a number of seconds or a string, not {value!r}")
    if result < timedelta(0):
        raise ValueError(f"duration {value!r} must not be negative")
    return result
