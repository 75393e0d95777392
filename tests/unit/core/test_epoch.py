from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_incremental.core.epoch import (
    EPOCH_UNITS,
    MIN_DATETIME,
    EpochError,
    detect_unit,
    epoch_bounds,
    max_datetime,
    to_datetime,
    validate_unit,
)

UTC = timezone.utc
NOW = datetime(2025, 6, 15, 12, 0, 0, tzinfo=UTC)
MAX = datetime(2035, 6, 15, 12, 0, 0, tzinfo=UTC)  # NOW + 10 years
MAX_S = int(MAX.timestamp())
Y2K_S = 946_684_800  # 2000-01-01T00:00:00Z


@pytest.mark.parametrize("unit", EPOCH_UNITS)
def test_validate_unit_accepts(unit: str) -> None:
    assert validate_unit(unit) == unit


@pytest.mark.parametrize("unit", ["", "sec", "S", "millis", "ns", "auto "])
def test_validate_unit_rejects_and_lists_allowed(unit: str) -> None:
    with pytest.raises(ValueError, match=r"'s', 'ms', 'us', 'auto'") as info:
        validate_unit(unit)
    assert repr(unit) in str(info.value)


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        (0, "s"),
        (1, "s"),
        (1_688_626_242, "s"),
        (9_999_999_999, "s"),  # 10 digits
        (1_000_000_000_000, "ms"),  # 13 digits
        (1_717_658_346_224, "ms"),
        (9_999_999_999_999, "ms"),
        (1_000_000_000_000_000, "us"),  # 16 digits
        (1_717_658_346_224_123, "us"),
        (9_999_999_999_999_999, "us"),
    ],
)
def test_detect_unit(value: int, unit: str) -> None:
    assert detect_unit(value) == unit


@pytest.mark.parametrize(
    "value",
    [
        -1,
        -1_688_626_242,
        10_000_000_000,  # 11 digits
        253_402_300_800,  # 12 digits: year 10000 in seconds
        10_000_000_000_000,  # 14 digits
        100_000_000_000_000,  # 15 digits
        10_000_000_000_000_000,  # 17 digits
    ],
)
def test_detect_unit_rejects_ambiguous(value: int) -> None:
    with pytest.raises(EpochError) as info:
        detect_unit(value)
    assert info.value.reason_code == "epoch_out_of_range"
    assert str(value) in str(info.value)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (1_688_626_242, "s", datetime(2023, 7, 6, 6, 50, 42, tzinfo=UTC)),
        (1_688_626_242, "auto", datetime(2023, 7, 6, 6, 50, 42, tzinfo=UTC)),
        (1_717_658_346_224, "ms", datetime(2024, 6, 6, 7, 19, 6, 224_000, tzinfo=UTC)),
        (1_717_658_346_224, "auto", datetime(2024, 6, 6, 7, 19, 6, 224_000, tzinfo=UTC)),
        (1_717_658_346_224_123, "us", datetime(2024, 6, 6, 7, 19, 6, 224_123, tzinfo=UTC)),
        (1_717_658_346_224_123, "auto", datetime(2024, 6, 6, 7, 19, 6, 224_123, tzinfo=UTC)),
        # lower boundary, inclusive, in every unit
        (Y2K_S, "s", MIN_DATETIME),
        (Y2K_S * 1000, "ms", MIN_DATETIME),
        (Y2K_S * 1_000_000, "us", MIN_DATETIME),
        # upper boundary (now + 10 years), inclusive
        (MAX_S, "s", MAX),
        (MAX_S * 1000, "ms", MAX),
        (MAX_S * 1_000_000, "us", MAX),
        # an integral float is the integer it holds
        (1_688_626_242.0, "s", datetime(2023, 7, 6, 6, 50, 42, tzinfo=UTC)),
        (1_717_658_346_224.0, "ms", datetime(2024, 6, 6, 7, 19, 6, 224_000, tzinfo=UTC)),
    ],
)
def test_to_datetime(value: object, unit: str, expected: datetime) -> None:
    result = to_datetime(value, unit, now=NOW)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        (Y2K_S - 1, "s"),  # 1999-12-31T23:59:59Z
        (Y2K_S * 1000 - 1, "ms"),
        (Y2K_S * 1_000_000 - 1, "us"),
        (MAX_S + 1, "s"),
        (MAX_S * 1000 + 1, "ms"),
        (MAX_S * 1_000_000 + 1, "us"),
        (0, "s"),  # 1970
        (0, "auto"),
        (-1, "s"),
        (-1_688_626_242, "auto"),
        (253_402_300_800, "s"),  # year 10000: beyond datetime.max
        (253_402_300_800, "auto"),
        (1_717_658_346_224, "s"),  # milliseconds read as seconds: year 56000+
        (1_717_658_346_224_123, "ms"),  # microseconds read as milliseconds
        (1_688_626_242, "ms"),  # seconds read as milliseconds: 1970
        (1_688_626_242, "us"),
        (10**30, "s"),
        (1e20, "s"),
    ],
)
def test_to_datetime_out_of_range(value: object, unit: str) -> None:
    with pytest.raises(EpochError) as info:
        to_datetime(value, unit, now=NOW)
    assert info.value.reason_code == "epoch_out_of_range"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "value",
    [True, False, 1_688_626_242.5, float("nan"), float("inf"), "1688626242", "", None, [1], {"s": 1}],
)
@pytest.mark.parametrize("unit", EPOCH_UNITS)
def test_to_datetime_not_integer(value: object, unit: str) -> None:
    with pytest.raises(EpochError) as info:
        to_datetime(value, unit, now=NOW)
    assert info.value.reason_code == "epoch_not_integer"
    assert repr(value) in str(info.value)


def test_error_message_names_the_value() -> None:
    with pytest.raises(EpochError, match="99999999999"):
        to_datetime(99_999_999_999, "s", now=NOW)


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(EpochError) as info:
        to_datetime("x" * 500, "s", now=NOW)
    assert len(str(info.value)) < 120


def test_default_now_is_the_current_time() -> None:
    current = int(time.time())
    assert to_datetime(current, "s") == datetime.fromtimestamp(current, UTC)
    with pytest.raises(EpochError):
        to_datetime(current + 11 * 366 * 86400, "s")


def test_unknown_unit_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="epoch unit must be one of"):
        to_datetime(1_688_626_242, "minutes", now=NOW)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        to_datetime(1_688_626_242, "s", now=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (NOW, MAX),
        (datetime(2024, 2, 29, 8, tzinfo=UTC), datetime(2034, 2, 28, 8, tzinfo=UTC)),
    ],
)
def test_max_datetime(now: datetime, expected: datetime) -> None:
    assert max_datetime(now) == expected


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("s", (Y2K_S, MAX_S)),
        ("ms", (Y2K_S * 1000, MAX_S * 1000)),
        ("us", (Y2K_S * 1_000_000, MAX_S * 1_000_000)),
    ],
)
def test_epoch_bounds(unit: str, expected: tuple[int, int]) -> None:
    assert epoch_bounds(unit, NOW) == expected


def test_epoch_bounds_needs_a_fixed_unit() -> None:
    with pytest.raises(ValueError, match="fixed unit"):
        epoch_bounds("auto", NOW)
