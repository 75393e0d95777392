"""Epoch unit detection and conversion, with a sane-range guard.

Chargebee sends timestamps as integer epoch seconds (``resource_version`` is milliseconds). A value is
accepted only if it is an integer (or a float with no fractional part: JSON does not tell ``1`` from
``1.0``) and lies between 2000-01-01T00:00:00Z and ``now`` + 10 years, so a unit mix-up never loads as
1970 or as the year 58000.

:func:`to_datetime` is called for millions of fields: it checks the range with integer arithmetic on
bounds cached per ``(unit, now)`` and builds the datetime with one C call. Bulk callers pass one fixed
``now`` for the whole run (which also keeps a run deterministic).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache

EPOCH_UNITS = ("s", "ms", "us", "auto")

UTC = timezone.utc

#: the earliest accepted instant
MIN_DATETIME = datetime(2000, 1, 1, tzinfo=UTC)
#: how far in the future a timestamp may be, in calendar years after ``now``
MAX_YEARS_AHEAD = 10

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}
_ONE_MICROSECOND = timedelta(microseconds=1)
_MIN_MICROS = (MIN_DATETIME - _EPOCH) // _ONE_MICROSECOND
_fromtimestamp = datetime.fromtimestamp


class EpochError(ValueError):
    """An epoch value is not an integer or lies outside the sane range.

    :param reason_code: ``"epoch_not_integer"`` or ``"epoch_out_of_range"``.
    :param message: what is wrong, naming the value.
    """

    def __init__(self, reason_code: str, message: str) -> None:
        self.reason_code = reason_code
        super().__init__(message)


def validate_unit(unit: str) -> str:
    """Return ``unit`` if it is one of :data:`EPOCH_UNITS`, else raise :class:`ValueError`.

    :param unit: the unit to check.
    """
    if unit not in EPOCH_UNITS:
        allowed = ", ".join(repr(u) for u in EPOCH_UNITS)
        raise ValueError(f"epoch unit must be one of {allowed}, got {unit!r}")
    return unit


def detect_unit(value: int) -> str:
    """Guess the unit of a positive epoch integer from its number of digits.

    Up to 10 digits are seconds, exactly 13 digits milliseconds, exactly 16 digits microseconds.
    Anything else (negative, 11, 12, 14, 15 or more than 16 digits) is ambiguous or absurd.

    :param value: the epoch value.
    :raises EpochError: ``epoch_out_of_range`` when no unit fits.
    """
    if 0 <= value < 10**10:
        return "s"
    if 10**12 <= value < 10**13:
        return "ms"
    if 10**15 <= value < 10**16:
        return "us"
    raise EpochError(
        "epoch_out_of_range",
        f"{value} has no recognisable epoch unit (10 digits or fewer = s, 13 = ms, 16 = us)",
    )


def max_datetime(now: datetime) -> datetime:
    """Return the latest accepted instant: ``now`` plus :data:`MAX_YEARS_AHEAD` calendar years.

    :param now: the reference time (tz-aware).
    """
    try:
        return now.replace(year=now.year + MAX_YEARS_AHEAD)
    except ValueError:  # 29 February -> 28 February
        return now.replace(year=now.year + MAX_YEARS_AHEAD, day=28)


@lru_cache(maxsize=64)
def epoch_bounds(unit: str, now: datetime) -> tuple[int, int]:
    """Return the inclusive integer range ``(low, high)`` accepted for ``unit`` at ``now``.

    Cached: with a fixed ``now`` the bounds are computed once per unit.

    :param unit: ``"s"``, ``"ms"`` or ``"us"`` (not ``"auto"``).
    :param now: the reference time (tz-aware).
    :raises ValueError: for another unit or a naive ``now``.
    """
    if unit not in _MICROS_PER_UNIT:
        raise ValueError(f"epoch_bounds needs a fixed unit ('s', 'ms' or 'us'), got {unit!r}")
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    per_unit = _MICROS_PER_UNIT[unit]
    high_micros = (max_datetime(now) - _EPOCH) // _ONE_MICROSECOND
    return -(-_MIN_MICROS // per_unit), high_micros // per_unit


def _as_int(value: object) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise EpochError("epoch_not_integer", f"{shown} is not an integer epoch")


def to_datetime(value: object, unit: str, *, now: datetime | None = None) -> datetime:
    """Convert an epoch value to a tz-aware UTC datetime, checking it is an integer in the sane range.

    Integral floats (``1688626242.0``) are accepted as the integer they hold; booleans, strings,
    ``None`` and floats with a fraction are not.

    :param value: the raw JSON value.
    :param unit: one of :data:`EPOCH_UNITS`; ``"auto"`` picks the unit with :func:`detect_unit`.
    :param now: reference time for the upper bound (default: the current time). Pass a fixed value
        when converting many values.
    :raises EpochError: ``epoch_not_integer`` or ``epoch_out_of_range``.
    :raises ValueError: for an unknown ``unit``.
    """
    validate_unit(unit)
    number = _as_int(value)
    if unit == "auto":
        unit = detect_unit(number)
    low, high = epoch_bounds(unit, datetime.now(UTC) if now is None else now)
    if not low <= number <= high:
        raise EpochError(
            "epoch_out_of_range",
            f"{number} is out of range for epoch unit {unit!r} "
            f"(allowed {low}..{high}: 2000-01-01 to now + {MAX_YEARS_AHEAD} years)",
        )
    if unit == "s":
        return _fromtimestamp(number, UTC)
    return _EPOCH + timedelta(0, 0, number * _MICROS_PER_UNIT[unit])
