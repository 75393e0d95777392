from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_incremental.core.window import Window, compute_window, next_watermark, parse_duration

UTC = timezone.utc
H = timedelta(hours=1)
M = timedelta(minutes=1)


def at(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2024, 3, day, hour, minute, tzinfo=UTC)


def window(
    *,
    watermark: datetime | None = None,
    initial_value: datetime | None = None,
    interval: tuple[datetime, datetime] | None = (at(0), at(1)),
    run_after: datetime | None = at(1),
    now: datetime = at(1, 5),
    lag: timedelta = timedelta(0),
    overlap: timedelta = timedelta(0),
) -> Window:
    return compute_window(
        watermark=watermark,
        initial_value=initial_value,
        interval_start=interval[0] if interval else None,
        interval_end=interval[1] if interval else None,
        run_after=run_after,
        now=now,
        lag=lag,
        overlap=overlap,
    )


@pytest.mark.parametrize(
    ("case", "kwargs", "expected"),
    [
        ("first run reads everything", {}, Window(None, at(1))),
        ("first run from initial_value", {"initial_value": at(0, day=1)}, Window(at(0), at(1))),
        ("watermark is the start", {"watermark": at(0, 30)}, Window(at(0, 30), at(1))),
        (
            "watermark beats initial_value",
            {"watermark": at(0, 30), "initial_value": at(0)},
            Window(at(0, 30), at(1)),
        ),
        (
            "overlap re-reads before the watermark",
            {"watermark": at(0, 30), "overlap": 20 * M},
            Window(at(0, 10), at(1)),
        ),
        (
            "zero-width interval falls back to run_after",
            {"watermark": at(0), "interval": (at(1), at(1)), "run_after": at(1, 2), "now": at(1, 4)},
            Window(at(0), at(1, 2)),
        ),
        (
            "no interval: run_after",
            {"watermark": at(0), "interval": None, "run_after": at(0, 45)},
            Window(at(0), at(0, 45)),
        ),
        (
            "no interval, no run_after: now",
            {"watermark": at(0), "interval": None, "run_after": None},
            Window(at(0), at(1, 5)),
        ),
        (
            "lag clamps an on-time run",
            {"watermark": at(0), "now": at(1, 5), "lag": 15 * M},
            Window(at(0), at(0, 50)),
        ),
        ("a late run stops at the interval end", {"watermark": at(0), "now": at(9)}, Window(at(0), at(1))),
        (
            "a late run after an outage still reads from the watermark",
            {"watermark": at(0), "interval": (at(5), at(6)), "run_after": at(6), "now": at(9)},
            Window(at(0), at(6)),
        ),
        (
            "watermark ahead of high: empty window at high",
            {"watermark": at(3), "interval": (at(0), at(1)), "now": at(4)},
            Window(at(1), at(1)),
        ),
        ("watermark equal to high: empty", {"watermark": at(1)}, Window(at(1), at(1))),
        (
            "backfill of an old interval re-reads only the overlap slice",
            {"watermark": at(1, 10), "overlap": 30 * M, "now": at(9)},
            Window(at(0, 40), at(1)),
        ),
        ("initial_value past high: empty", {"initial_value": at(2)}, Window(at(1), at(1))),
    ],
)
def test_compute_window(case: str, kwargs: dict[str, object], expected: Window) -> None:
    assert window(**kwargs) == expected, case  # type: ignore[arg-type]


def test_window_empty_and_contains() -> None:
    assert Window(at(1), at(1)).empty
    assert not Window(None, at(1)).empty
    assert not Window(at(0), at(1)).empty
    w = Window(at(0), at(1))
    assert w.contains(at(0)) and w.contains(at(0, 59)) and not w.contains(at(1))
    assert Window(None, at(1)).contains(datetime(1970, 1, 1, tzinfo=UTC))


def test_compute_window_converts_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    w = window(
        watermark=datetime(2024, 3, 1, 2, 0, tzinfo=plus2), now=datetime(2024, 3, 1, 3, 5, tzinfo=plus2)
    )
    assert w.start is not None and w.start.tzinfo == UTC and w.end.tzinfo == UTC
    assert w == Window(at(0), at(1))


@pytest.mark.parametrize("name", ["watermark", "initial_value", "interval", "run_after", "now"])
def test_naive_datetimes_are_rejected(name: str) -> None:
    naive = datetime(2024, 3, 1, 0, 0)
    kwargs: dict[str, object] = {name: (naive, at(1)) if name == "interval" else naive}
    with pytest.raises(ValueError, match="naive"):
        window(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("lag", "overlap"), [(-M, timedelta(0)), (timedelta(0), -M)])
def test_negative_lag_or_overlap_is_rejected(lag: timedelta, overlap: timedelta) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        window(lag=lag, overlap=overlap)


@pytest.mark.parametrize(
    ("before", "w", "expected"),
    [
        (None, Window(None, at(1)), at(1)),
        (at(0), Window(at(0), at(1)), at(1)),
        (at(0, 30), Window(at(0), at(1)), at(1)),
        (at(3), Window(at(1), at(1)), at(3)),
        (at(3), Window(at(2, 30), at(2, 45)), at(3)),
    ],
)
def test_next_watermark(before: datetime | None, w: Window, expected: datetime) -> None:
    assert next_watermark(before, w) == expected


def test_next_watermark_never_moves_backwards_nor_past_the_window() -> None:
    points = [at(h) for h in range(4)]
    for before, start, end in itertools.product([None, *points], [None, *points], points):
        w = Window(start, end)
        after = next_watermark(before, w)
        assert before is None or after >= before
        assert after == max(before or end, end)


def test_next_watermark_checks_max_cursor_seen() -> None:
    w = Window(at(0), at(1))
    assert next_watermark(at(0), w, at(0, 59)) == at(1)
    with pytest.raises(ValueError, match="not restricted to the window"):
        next_watermark(at(0), w, at(1))
    with pytest.raises(ValueError, match="naive"):
        next_watermark(datetime(2024, 3, 1), w)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(minutes=5), timedelta(minutes=5)),
        (90, timedelta(seconds=90)),
        (1.5, timedelta(seconds=1.5)),
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", H),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("PT1H", H),
        ("PT15M", timedelta(minutes=15)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        (" 10m ", timedelta(minutes=10)),
        (0, timedelta(0)),
    ],
)
def test_parse_duration(value: timedelta | int | float | str, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize("value", ["", "PT", "15", "m15", "1 hour", "-5m", "1h-5m", "P"])
def test_parse_duration_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="cannot read duration"):
        parse_duration(value)


def test_parse_duration_rejects_negative_and_other_types() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(-1)
    with pytest.raises(TypeError):
        parse_duration(True)
    with pytest.raises(TypeError):
        parse_duration([1])  # type: ignore[arg-type]
