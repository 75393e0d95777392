"""BigQueryTimestampColumnSensor and its trigger against the local BigQuery emulator.

Poke, reschedule and deferrable mode each complete once a column is added (ALTER TABLE from a background
thread); the trigger runs for real (asyncio, emulator, no mocks) from its serialized form.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow.triggers.base import TriggerEvent

from airflow_provider_incremental.core.sql import TableRef
from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook
from airflow_provider_incremental.local import LocalBigQuery
from airflow_provider_incremental.sensors.bigquery import BigQueryTimestampColumnSensor
from airflow_provider_incremental.triggers.bigquery import BigQueryTimestampColumnTrigger
from tests.integration.helpers import context, query

pytestmark = pytest.mark.integration
UTC = timezone.utc
BOTH = ("created_at", "updated_at")
POKE = 0.2  # seconds between pokes / trigger polls
DELAY = 0.5  # seconds before the background thread changes the table
ID = {"name": "id", "type": "STRING"}


@pytest.fixture
def hook(local_bigquery: LocalBigQuery) -> IncrementalBigQueryHook:
    return IncrementalBigQueryHook(gcp_conn_id="google_cloud_default")


#: Read-only tables shared by the tests of this module, ``{table: {column: type}}`` (besides an ``id``).
SHARED = {
    "both": {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"},
    "created": {"created_at": "TIMESTAMP"},
    "updated_dt": {"updated_at": "DATETIME"},
    "neither": {"amount": "INT64"},
    "mixed_case": {"Created_At": "TIMESTAMP", "UPDATED_AT": "TIMESTAMP"},
    "string_created": {"created_at": "STRING"},
    "string_and_ts": {"created_at": "STRING", "updated_at": "TIMESTAMP"},
}


@pytest.fixture(scope="module")
def shared(local_bigquery: LocalBigQuery) -> str:
    """A dataset holding the :data:`SHARED` tables (created once: fewer emulator round trips)."""
    dataset = f"t_{uuid.uuid4().hex[:12]}"
    IncrementalBigQueryHook().ensure_dataset(None, dataset)
    query(
        "".join(
            f"CREATE TABLE `{dataset}`.{table} (id STRING, "
            + ", ".join(f"{name} {kind}" for name, kind in columns.items())
            + ");\n"
            for table, columns in SHARED.items()
        )
    )
    return dataset


def make_table(hook: IncrementalBigQueryHook, dataset: str, **columns: str) -> str:
    """Create ``dataset.events`` with an ``id`` and the given ``{column: type}``; return ``dataset.events``."""
    schema = [ID, *({"name": name, "type": kind} for name, kind in columns.items())]
    hook.ensure_table(TableRef(None, dataset, "events"), schema)
    return f"{dataset}.events"


def make_sensor(table: str, **kwargs: Any) -> BigQueryTimestampColumnSensor:
    kwargs.setdefault("poke_interval", POKE)
    kwargs.setdefault("poll_interval", POKE)
    kwargs.setdefault("timeout", 20)
    kwargs.setdefault("deferrable", False)
    return BigQueryTimestampColumnSensor(task_id="wait_for_columns", table=table, **kwargs)


def poke(sensor: BigQueryTimestampColumnSensor) -> PokeReturnValue:
    result = sensor.poke(context())
    assert isinstance(result, PokeReturnValue)
    return result


class Later(threading.Thread):
    """Run SQL on the emulator after ``delay`` seconds, from a background thread (the "upstream")."""

    def __init__(self, sql: str, delay: float = DELAY) -> None:
        super().__init__(daemon=True)
        self.sql, self.delay = sql, delay
        self.error: BaseException | None = None
        self.sent_at: float | None = None

    def run(self) -> None:
        time.sleep(self.delay)
        self.sent_at = time.monotonic()
        try:
            query(self.sql)
        except BaseException as err:  # re-raised in the test by finish()
            self.error = err

    def __enter__(self) -> Later:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join(timeout=30)

    def finish(self) -> float:
        """Wait for the SQL to have run; raise its error; return when it was sent (``time.monotonic``).

        Whatever the SQL creates cannot be seen before that moment.
        """
        self.join(timeout=30)
        if self.error is not None:
            raise self.error
        assert self.sent_at is not None, "the background SQL did not run"
        return self.sent_at


def reschedule_context(first_reschedule_date: datetime | None) -> dict[str, Any]:
    """A context whose task instance answers ``get_first_reschedule_date`` (what reschedule mode asks)."""
    ctx = context()
    ctx["ti"].get_first_reschedule_date = lambda _context: first_reschedule_date
    return ctx


def make_trigger(table: str, **kwargs: Any) -> BigQueryTimestampColumnTrigger:
    args: dict[str, Any] = {
        "table": table,
        "columns": BOTH,
        "require": "all",
        "allowed_types": ("TIMESTAMP", "DATETIME"),
        "fresh_through": None,
        "wait_on_wrong_type": False,
        "poll_interval": POKE,
        "gcp_conn_id": "google_cloud_default",
    }
    return BigQueryTimestampColumnTrigger(**{**args, **kwargs})


def rebuild(trigger: BigQueryTimestampColumnTrigger) -> BigQueryTimestampColumnTrigger:
    """What the triggerer does: import the serialized classpath and instantiate it with the kwargs."""
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert isinstance(rebuilt, BigQueryTimestampColumnTrigger)
    return rebuilt


def run_trigger(trigger: BigQueryTimestampColumnTrigger, timeout: float = 20) -> list[TriggerEvent]:
    """Run ``trigger.run()`` to its end (or ``timeout``) on a fresh event loop; return all its events."""

    async def collect() -> list[TriggerEvent]:
        async with asyncio.timeout(timeout):
            return [event async for event in trigger.run()]

    return asyncio.run(collect())


@dataclass
class Check:
    """One ``_check`` of a trigger: when it ran (``time.monotonic``) and what it found."""

    started: float
    ended: float
    result: dict[str, Any]


def record_checks(trigger: BigQueryTimestampColumnTrigger, monkeypatch: pytest.MonkeyPatch) -> list[Check]:
    """Record the trigger's (real) checks as they complete."""
    checks: list[Check] = []
    real_check: Callable[[], dict[str, Any]] = trigger._check

    def timed_check() -> dict[str, Any]:
        started = time.monotonic()
        result = real_check()
        checks.append(Check(started, time.monotonic(), result))
        return result

    monkeypatch.setattr(trigger, "_check", timed_check)
    return checks


def run_until(
    trigger: BigQueryTimestampColumnTrigger,
    stop: Callable[[], bool],
    *others: Coroutine[Any, Any, None],
    timeout: float = 20,
) -> list[TriggerEvent]:
    """Run ``trigger.run()`` (and ``others``) until it ends or ``stop()``; return the events it sent."""

    async def main() -> list[TriggerEvent]:
        events: list[TriggerEvent] = []

        async def consume() -> None:
            async for event in trigger.run():
                events.append(event)

        tasks = [asyncio.create_task(consume()), *(asyncio.create_task(other) for other in others)]
        async with asyncio.timeout(timeout):
            while not stop() and not tasks[0].done():
                await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return events

    return asyncio.run(main())


# --- poke -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "require", "done", "found"),
    [
        ("both", "all", True, {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}),
        ("both", "any", True, {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}),
        ("created", "all", False, {"created_at": "TIMESTAMP"}),
        ("created", "any", True, {"created_at": "TIMESTAMP"}),
        ("updated_dt", "any", True, {"updated_at": "DATETIME"}),
        ("neither", "any", False, {}),
        ("neither", "all", False, {}),
    ],
)
def test_poke_any_and_all(shared: str, name: str, require: str, done: bool, found: dict[str, str]) -> None:
    table = f"{shared}.{name}"
    result = poke(make_sensor(table, require=require))
    assert result.is_done is done
    assert result.xcom_value == {"table": table, "columns": found, "max_cursor": None}


def test_poke_logs_what_is_missing(
    shared: str, hook: IncrementalBigQueryHook, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert not poke(make_sensor(f"{shared}.created", require="all"))
    expected = f"table {hook.project_id}.{shared}.created has created_at TIMESTAMP; waiting for updated_at"
    assert expected in capsys.readouterr().out  # Airflow's structlog logs to stdout


def test_column_names_compare_case_insensitively(shared: str) -> None:
    result = poke(make_sensor(f"{shared}.mixed_case", require="all"))
    assert result.is_done
    assert result.xcom_value["columns"] == {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}


def test_a_single_column_may_be_a_plain_string(shared: str) -> None:
    sensor = make_sensor(f"{shared}.updated_dt", columns="updated_at", require="all")
    assert poke(sensor).xcom_value["columns"] == {"updated_at": "DATETIME"}


@pytest.mark.parametrize("missing", ["table", "dataset"])
def test_missing_table_or_dataset_is_not_yet(shared: str, missing: str) -> None:
    dataset = shared if missing == "table" else f"{shared}_not_there"
    result = poke(make_sensor(f"{dataset}.not_there"))
    assert result.is_done is False
    assert result.xcom_value["columns"] == {}


def test_wrong_type_fails_fast_with_a_clear_message(shared: str) -> None:
    sensor = make_sensor(f"{shared}.string_created", timeout=30)
    started = time.monotonic()
    with pytest.raises(AirflowFailException, match=r"created_at is STRING, not TIMESTAMP/DATETIME") as info:
        sensor.execute(context())
    assert time.monotonic() - started < 10  # failed on the first poke, did not wait out the timeout
    assert "Waiting will not fix this" in str(info.value)


def test_wrong_type_keeps_waiting_when_asked(shared: str) -> None:
    result = poke(make_sensor(f"{shared}.string_created", wait_on_wrong_type=True))
    assert result.is_done is False
    assert result.xcom_value["columns"] == {}


def test_wrong_type_does_not_matter_when_another_column_satisfies_any(shared: str) -> None:
    result = poke(make_sensor(f"{shared}.string_and_ts", require="any"))
    assert result.is_done
    assert result.xcom_value["columns"] == {"updated_at": "TIMESTAMP"}


def test_wrong_type_with_soft_fail_skips(shared: str) -> None:
    with pytest.raises(AirflowSkipException):
        make_sensor(f"{shared}.string_created", soft_fail=True).execute(context())


def test_column_added_while_waiting_completes_poke_mode(hook: IncrementalBigQueryHook, dataset: str) -> None:
    table = make_table(hook, dataset, created_at="TIMESTAMP")
    sensor = make_sensor(table, require="all")
    assert not poke(sensor)
    with Later(f"ALTER TABLE `{dataset}`.events ADD COLUMN updated_at TIMESTAMP") as later:
        xcom = sensor.execute(context())
        finished = time.monotonic()
    assert finished >= later.finish()  # it waited for the ALTER TABLE
    assert xcom == {
        "table": table,
        "columns": {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"},
        "max_cursor": None,
    }


# --- reschedule -----------------------------------------------------------------------------------


def test_column_added_while_waiting_completes_reschedule_mode(
    hook: IncrementalBigQueryHook, dataset: str
) -> None:
    table = make_table(hook, dataset, created_at="TIMESTAMP")
    sensor = make_sensor(table, require="all", mode="reschedule", poke_interval=30)
    before = datetime.now(UTC)
    with pytest.raises(AirflowRescheduleException) as info:
        sensor.execute(reschedule_context(None))
    assert (
        before + timedelta(seconds=29)
        <= info.value.reschedule_date
        <= datetime.now(UTC) + timedelta(seconds=31)
    )

    query(f"ALTER TABLE `{dataset}`.events ADD COLUMN updated_at TIMESTAMP")
    xcom = sensor.execute(reschedule_context(before))
    assert xcom["columns"] == {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}


# --- deferrable -----------------------------------------------------------------------------------


def test_column_added_while_waiting_completes_deferrable_mode(
    hook: IncrementalBigQueryHook, dataset: str
) -> None:
    table = make_table(hook, dataset, created_at="TIMESTAMP")
    sensor = make_sensor(table, require="all", deferrable=True, timeout=120)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(context())
    deferred = info.value
    assert isinstance(deferred.trigger, BigQueryTimestampColumnTrigger)
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=120)

    trigger = rebuild(deferred.trigger)
    with Later(f"ALTER TABLE `{dataset}`.events ADD COLUMN updated_at TIMESTAMP") as later:
        events = run_trigger(trigger)
        fired = time.monotonic()
    assert fired >= later.finish()
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    assert "created_at TIMESTAMP, updated_at TIMESTAMP" in payload["message"]

    xcom = sensor.execute_complete(context(), payload)
    assert xcom == {
        "table": table,
        "columns": {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"},
        "max_cursor": None,
    }


def test_deferrable_does_not_defer_when_already_satisfied(shared: str) -> None:
    xcom = make_sensor(f"{shared}.both", require="all", deferrable=True).execute(context())
    assert xcom["columns"] == {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"}


def test_deferrable_wrong_type_fails_before_deferring(shared: str) -> None:
    table = f"{shared}.string_created"
    with pytest.raises(AirflowFailException, match="created_at is STRING"):
        make_sensor(table, deferrable=True).execute(context())
    with pytest.raises(AirflowSkipException):
        make_sensor(table, deferrable=True, soft_fail=True).execute(context())


def test_trigger_waits_for_a_missing_dataset(dataset: str) -> None:
    trigger = make_trigger(f"{dataset}.events", require="any")
    create = f"CREATE SCHEMA `{dataset}`; CREATE TABLE `{dataset}`.events (id STRING, updated_at TIMESTAMP);"
    with Later(create) as later:
        events = run_trigger(trigger)
        fired = time.monotonic()
    assert fired >= later.finish()
    assert [e.payload["status"] for e in events] == ["success"]
    assert events[0].payload["result"]["columns"] == {"updated_at": "TIMESTAMP"}


def test_trigger_does_not_block_the_event_loop(dataset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a BigQuery check runs, the loop keeps running other coroutines (ticks land inside checks)."""
    trigger = make_trigger(f"{dataset}.events", poll_interval=0)
    checks = record_checks(trigger, monkeypatch)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.001)

    assert run_until(trigger, lambda: len(checks) >= 2, ticker()) == []  # a missing table: no event
    inside = [t for t in ticks if any(c.started < t < c.ended for c in checks)]
    assert len(inside) >= len(checks), "the event loop was blocked while BigQuery was queried"


def test_trigger_sends_an_error_event_on_wrong_type_and_execute_complete_raises(shared: str) -> None:
    table = f"{shared}.string_and_ts"
    events = run_trigger(make_trigger(table))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error"
    assert "created_at is STRING, not TIMESTAMP/DATETIME" in payload["message"]

    with pytest.raises(AirflowFailException, match="created_at is STRING"):
        make_sensor(table, deferrable=True).execute_complete(context(), payload)
    # soft_fail: the task runner resumes through resume_execution, which turns failures into skips
    soft = make_sensor(table, deferrable=True, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        soft.resume_execution("execute_complete", {"event": payload}, context())


def test_trigger_keeps_waiting_on_wrong_type_when_asked(shared: str, monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = make_trigger(f"{shared}.string_created", wait_on_wrong_type=True, poll_interval=0.05)
    checks = record_checks(trigger, monkeypatch)
    assert run_until(trigger, lambda: len(checks) >= 2) == []  # checked twice, sent nothing
    assert checks[0].result["wrong_type"] == {"created_at": "STRING"}


def test_trigger_sends_one_error_event_when_the_check_raises(local_bigquery: LocalBigQuery) -> None:
    events = run_trigger(make_trigger("no_dataset_in_this_name"))
    assert len(events) == 1
    assert events[0].payload["status"] == "error"
    assert "invalid table reference" in events[0].payload["message"]


@pytest.mark.parametrize("event", [None, {}, {"status": "error", "message": "boom", "result": None}])
def test_execute_complete_raises_on_anything_but_success(event: dict[str, Any] | None) -> None:
    sensor = make_sensor("ds.t", deferrable=True)
    with pytest.raises(
        AirflowException, match="boom" if event and event.get("message") else "no event"
    ) as info:
        sensor.execute_complete(context(), event)
    assert not isinstance(info.value, AirflowFailException)  # not a wrong type: retries may help


@pytest.mark.parametrize("soft_fail", [False, True])
def test_deferral_timeout_is_a_sensor_timeout(soft_fail: bool) -> None:
    """The triggerer times the deferral out; the task resumes with ``__fail__``, as Airflow sends it."""
    sensor = make_sensor("ds.t", deferrable=True, soft_fail=soft_fail)
    expected = AirflowSkipException if soft_fail else AirflowSensorTimeout
    with pytest.raises(expected):
        sensor.resume_execution("__fail__", {"error": "Trigger timeout"}, context())


# --- serialization --------------------------------------------------------------------------------


@pytest.mark.parametrize("impersonation_chain", [None, "a@p.iam.gserviceaccount.com", ["a@p.iam", "b@p.iam"]])
def test_trigger_serialize_round_trip(impersonation_chain: str | Sequence[str] | None) -> None:
    trigger = make_trigger(
        "proj.ds.events",
        columns=("created_at",),
        require="any",
        allowed_types=("TIMESTAMP",),
        fresh_through="2024-03-02T00:00:00+00:00",
        wait_on_wrong_type=True,
        poll_interval=7.5,
        gcp_conn_id="my_gcp",
        location="EU",
        impersonation_chain=impersonation_chain,
        api_endpoint="http://127.0.0.1:9050",
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_incremental.triggers.bigquery.BigQueryTimestampColumnTrigger"
    assert kwargs == {
        "table": "proj.ds.events",
        "columns": ["created_at"],
        "require": "any",
        "allowed_types": ["TIMESTAMP"],
        "fresh_through": "2024-03-02T00:00:00+00:00",
        "wait_on_wrong_type": True,
        "poll_interval": 7.5,
        "gcp_conn_id": "my_gcp",
        "location": "EU",
        "impersonation_chain": impersonation_chain,
        "api_endpoint": "http://127.0.0.1:9050",
    }
    assert rebuild(trigger).serialize() == (classpath, kwargs)


def test_trigger_takes_a_plain_string_as_one_column() -> None:
    assert make_trigger("p.d.t", columns="created_at").serialize()[1]["columns"] == ["created_at"]


def test_deferred_trigger_keeps_every_sensor_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Impersonation, location and endpoint survive deferral (the existing Google sensors lose them)."""
    sensor = make_sensor(
        "proj.ds.events",
        columns="created_at",  # a plain string: one column, not its letters
        require="all",
        allowed_types=("DATETIME",),
        fresh_through="2024-03-02T00:00:00+01:00",
        wait_on_wrong_type=True,
        deferrable=True,
        poll_interval=12,
        gcp_conn_id="my_gcp",
        location="EU",
        impersonation_chain=["a@p.iam", "b@p.iam"],
        api_endpoint="http://127.0.0.1:9050",
    )
    # the first (synchronous) check says "not yet" without BigQuery: only what is deferred is under test
    not_yet = {"satisfied": False, "message": "not yet", "columns": {}, "wrong_type": {}, "max_cursor": None}
    monkeypatch.setattr(sensor, "_check", lambda: not_yet)
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(context())
    _, kwargs = info.value.trigger.serialize()
    assert kwargs == {
        "table": "proj.ds.events",
        "columns": ["created_at"],
        "require": "all",
        "allowed_types": ["DATETIME"],
        "fresh_through": "2024-03-02T00:00:00+01:00",
        "wait_on_wrong_type": True,
        "poll_interval": 12,
        "gcp_conn_id": "my_gcp",
        "location": "EU",
        "impersonation_chain": ["a@p.iam", "b@p.iam"],
        "api_endpoint": "http://127.0.0.1:9050",
    }


# --- fresh_through --------------------------------------------------------------------------------


def test_fresh_through_waits_for_a_late_enough_row(hook: IncrementalBigQueryHook, dataset: str) -> None:
    table = make_table(hook, dataset, created_at="TIMESTAMP", updated_at="TIMESTAMP")
    sensor = make_sensor(table, require="all", fresh_through="2024-03-02T00:00:00+00:00")

    empty = poke(sensor)
    assert empty.is_done is False
    assert empty.xcom_value["max_cursor"] is None

    query(
        f"INSERT INTO `{dataset}`.events (id, created_at, updated_at) "
        "VALUES ('a', TIMESTAMP '2024-03-01 10:00:00+00', TIMESTAMP '2024-03-01 23:59:59+00')"
    )
    early = poke(sensor)
    assert early.is_done is False
    assert early.xcom_value["max_cursor"] == "2024-03-01T23:59:59+00:00"

    query(
        f"INSERT INTO `{dataset}`.events (id, created_at, updated_at) "
        "VALUES ('b', TIMESTAMP '2024-03-01 11:00:00+00', TIMESTAMP '2024-03-02 00:00:00+00')"
    )
    fresh = poke(sensor)
    assert fresh.is_done is True
    assert fresh.xcom_value == {
        "table": table,
        "columns": {"created_at": "TIMESTAMP", "updated_at": "TIMESTAMP"},
        "max_cursor": "2024-03-02T00:00:00+00:00",
    }


def test_fresh_through_reads_datetime_and_date_columns_as_utc(
    hook: IncrementalBigQueryHook, dataset: str
) -> None:
    table = make_table(hook, dataset, at_dt="DATETIME", day="DATE")
    query(f"INSERT INTO `{dataset}`.events VALUES ('a', DATETIME '2024-03-02 00:00:00', DATE '2024-03-02')")
    for column, kind in [("at_dt", "DATETIME"), ("day", "DATE")]:
        sensor = make_sensor(
            table, columns=(column,), allowed_types=(kind,), fresh_through="2024-03-02T00:00:00Z"
        )
        result = poke(sensor)
        assert result.is_done, kind
        assert result.xcom_value["max_cursor"] == "2024-03-02T00:00:00+00:00", kind
        sensor.fresh_through = "2024-03-02T00:00:01+00:00"
        assert not poke(sensor).is_done, kind


def test_fresh_through_is_templated(hook: IncrementalBigQueryHook, dataset: str) -> None:
    table = make_table(hook, dataset, created_at="TIMESTAMP")
    query(f"INSERT INTO `{dataset}`.events (id, created_at) VALUES ('a', TIMESTAMP '2024-03-01 12:00:00+00')")
    sensor = make_sensor("{{ params.ds }}.events", fresh_through="{{ data_interval_end }}")
    ctx = context(
        data_interval_start=datetime(2024, 3, 1, tzinfo=UTC),
        data_interval_end=datetime(2024, 3, 2, tzinfo=UTC),
    )
    ctx["params"] = {"ds": dataset}
    sensor.render_template_fields(ctx)
    assert sensor.table == table
    result = sensor.poke(ctx)
    assert isinstance(result, PokeReturnValue)
    assert result.is_done is False
    assert result.xcom_value["max_cursor"] == "2024-03-01T12:00:00+00:00"


def test_fresh_through_without_time_zone_is_rejected(shared: str) -> None:
    with pytest.raises(ValueError, match="must carry a time zone"):
        poke(make_sensor(f"{shared}.created", fresh_through="2024-03-02T00:00:00"))


def test_trigger_fresh_through_fires_once_a_late_enough_row_arrives(
    hook: IncrementalBigQueryHook, dataset: str
) -> None:
    table = make_table(hook, dataset, created_at="TIMESTAMP")
    trigger = make_trigger(table, columns=("created_at",), fresh_through="2024-03-02T00:00:00+00:00")
    insert = (
        f"INSERT INTO `{dataset}`.events (id, created_at) VALUES ('a', TIMESTAMP '2024-03-02 00:00:01+00')"
    )
    with Later(insert) as later:
        events = run_trigger(rebuild(trigger))
        fired = time.monotonic()
    assert fired >= later.finish()
    assert len(events) == 1
    assert events[0].payload["status"] == "success"
    assert events[0].payload["result"]["max_cursor"] == "2024-03-02T00:00:01+00:00"


# --- timeout and soft_fail ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("soft_fail", "expected"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)]
)
def test_poke_mode_timeout(shared: str, soft_fail: bool, expected: type[Exception]) -> None:
    sensor = make_sensor(f"{shared}.not_there", timeout=0.3, soft_fail=soft_fail)
    started = time.monotonic()
    with pytest.raises(expected, match="timed out"):
        sensor.execute(context())
    assert 0.3 <= time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("soft_fail", "expected"), [(False, AirflowSensorTimeout), (True, AirflowSkipException)]
)
def test_reschedule_mode_timeout(shared: str, soft_fail: bool, expected: type[Exception]) -> None:
    sensor = make_sensor(f"{shared}.not_there", mode="reschedule", timeout=60, soft_fail=soft_fail)
    first_try = datetime.now(UTC) - timedelta(minutes=5)
    with pytest.raises(expected, match="timed out"):
        sensor.execute(reschedule_context(first_try))
