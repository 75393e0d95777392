"""Injection and secrets (issue 7): hostile identifiers never reach SQL, hostile values are data, and keys
stay out of logs.

* Every identifier parameter of the three operators (tables, datasets, projects, columns, the state table,
  the sensor's table) is given hostile values, directly and through a template rendered from a run's
  ``dag_run.conf``: each is rejected with :class:`IdentifierError` before any SQL is sent (spies on the
  hook's ``run_query``/``query_job``/``load_ndjson``/``get_columns`` and on ``get_client``: not one call).
* Hostile *values* (SQL in a customer name, a run id, a JSON key, labels) go through both operators
  against the emulator and land verbatim: they travel as data and query parameters, never as SQL text.
* A connection holding a (fake) private key never prints it, nor the cards of the input, in the task logs
  (stdlib records at DEBUG via ``caplog``, Airflow's printed structlog output via ``capfd``).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from airflow_provider_incremental.exceptions import IdentifierError
from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook
from airflow_provider_incremental.local import LocalBigQuery
from airflow_provider_incremental.operators.bigquery import IncrementalBigQueryOperator
from airflow_provider_incremental.sensors.bigquery import BigQueryTimestampColumnSensor
from airflow_provider_incremental.transfers.json_to_bigquery import JsonEpochToBigQueryOperator
from tests.integration.helpers import context, query

pytestmark = pytest.mark.integration
UTC = timezone.utc
RUN_AFTER = datetime(2025, 6, 1, tzinfo=UTC)
HOOK_CALLS = ("run_query", "query_job", "load_ndjson", "get_columns", "get_client")

# -- hostile identifiers ------------------------------------------------------------------------------

HOSTILE = {
    "backtick-drop": "t`; DROP TABLE x; --",
    "semicolon-drop": "t; DROP TABLE x",
    "single-quote-or": "t' OR '1'='1",
    "double-quote-or": 't" OR "1"="1',
    "newline-statement": "t\nDROP TABLE x",
    "comment-union": "t/**/UNION/**/SELECT",
    "backslash": "t\\",
    "space": "t x",
    "partition-decorator": "t$20240101",
    "fullwidth-letters": "\uff54\uff41\uff42\uff4c\uff45",  # fullwidth "table" (NFKC folds it to ASCII)
    "nul": "t\x00",
    "empty": "",
    "too-long": "t" * 1025,
    "jinja": "{{ 7 * 7 }}",
    "other-dataset": "other.t",
}


def _json_op(**kwargs: Any) -> JsonEpochToBigQueryOperator:
    kwargs.setdefault("dataset_id", "ds")
    return JsonEpochToBigQueryOperator(task_id="load", source_path="/nonexistent/export.json", **kwargs)


def _incremental_op(**kwargs: Any) -> IncrementalBigQueryOperator:
    kwargs.setdefault("source_table", "ds.src")
    kwargs.setdefault("destination_table", "ds.dst")
    return IncrementalBigQueryOperator(task_id="move", **kwargs)


def _sensor(**kwargs: Any) -> BigQueryTimestampColumnSensor:
    kwargs.setdefault("table", "ds.src")
    return BigQueryTimestampColumnSensor(task_id="wait", **kwargs)


# (operator factory, parameter, how the hostile string becomes the parameter's value, phrase of the error)
TARGETS: dict[str, tuple[Callable[..., Any], str, Callable[[str], Any], str]] = {
    "json.dataset_id": (_json_op, "dataset_id", str, "invalid dataset"),
    "json.project_id": (_json_op, "project_id", str, "invalid project"),
    "json.customers_table": (_json_op, "customers_table", str, "invalid table"),
    "json.subscriptions_table": (_json_op, "subscriptions_table", str, "invalid table"),
    "json.quarantine_table": (_json_op, "quarantine_table", str, "invalid table"),
    "incremental.source_table": (_incremental_op, "source_table", "ds.{}".format, "invalid table"),
    "incremental.source_dataset": (_incremental_op, "source_table", "my-project.{}.t".format, "invalid"),
    "incremental.source_project": (_incremental_op, "source_table", "{}.ds.t".format, "invalid"),
    "incremental.destination_table": (_incremental_op, "destination_table", "ds.{}".format, "invalid table"),
    "incremental.destination_project": (_incremental_op, "destination_table", "{}.ds.t".format, "invalid"),
    "incremental.state_table": (_incremental_op, "state_table", "ds.{}".format, "invalid table"),
    "incremental.primary_key": (_incremental_op, "primary_key", str, "invalid column"),
    "incremental.primary_key_list": (_incremental_op, "primary_key", lambda h: ["id", h], "invalid column"),
    "incremental.cursor_columns": (_incremental_op, "cursor_columns", lambda h: ["updated_at", h], "invalid column"),
    "incremental.version_column": (_incremental_op, "version_column", str, "invalid column"),
    "incremental.deleted_column": (_incremental_op, "deleted_column", str, "invalid column"),
    "sensor.table": (_sensor, "table", "ds.{}".format, "invalid table"),
    "sensor.project": (_sensor, "table", "{}.ds.t".format, "invalid"),
}  # fmt: skip
# In the table part of a reference a dot separates parts: "ds.other.t" is another table, not an injection.
# An empty project_id means "the connection's project", not an identifier.
NOT_HOSTILE_THERE = {
    ("other-dataset", "incremental.source_table"),
    ("other-dataset", "incremental.destination_table"),
    ("other-dataset", "incremental.state_table"),
    ("other-dataset", "sensor.table"),
    ("empty", "json.project_id"),
}
CASES = [
    pytest.param(target, name, id=f"{target}-{name}")
    for target in TARGETS
    for name in HOSTILE
    if (name, target) not in NOT_HOSTILE_THERE
]


@pytest.fixture
def no_sql(mocker: MockerFixture) -> Iterator[dict[str, Any]]:
    """Spies on every hook method that sends SQL or opens a client; each must stay uncalled."""
    spies = {name: mocker.spy(IncrementalBigQueryHook, name) for name in HOOK_CALLS}
    yield spies
    for name, spy in spies.items():
        assert spy.call_count == 0, f"IncrementalBigQueryHook.{name} was called: {spy.call_args_list}"


def execute(op: Any, ctx: Any) -> Any:
    """What the task runs: ``poke`` for a (non-deferrable) sensor, ``execute`` for an operator."""
    if isinstance(op, BigQueryTimestampColumnSensor):
        return op.poke(ctx)
    return op.execute(ctx)


def run_context(**conf: Any) -> Any:
    """A task context whose ``dag_run.conf`` is ``conf`` (what a run triggered with a config gets)."""
    ctx = context(run_id="manual__hostile", run_after=RUN_AFTER)
    ctx["dag_run"].conf = conf
    ctx["params"] = {}
    return ctx


@pytest.mark.parametrize(("target", "hostile"), CASES)
def test_hostile_identifier_is_rejected_before_any_sql(
    target: str, hostile: str, local_bigquery: LocalBigQuery, no_sql: dict[str, Any]
) -> None:
    factory, parameter, place, phrase = TARGETS[target]
    op = factory(**{parameter: place(HOSTILE[hostile])})
    with pytest.raises(IdentifierError, match=phrase):
        execute(op, run_context())


# Identifier fields that are templated: a run triggered with a config can put anything in them.
TEMPLATED = {
    "json.dataset_id": (_json_op, "dataset_id", "{{ dag_run.conf['value'] }}"),
    "json.project_id": (_json_op, "project_id", "{{ dag_run.conf['value'] }}"),
    "json.customers_table": (_json_op, "customers_table", "{{ dag_run.conf['value'] }}"),
    "json.subscriptions_table": (_json_op, "subscriptions_table", "c_{{ dag_run.conf['value'] }}"),
    "json.quarantine_table": (_json_op, "quarantine_table", "{{ dag_run.conf['value'] }}_rejects"),
    "incremental.source_table": (_incremental_op, "source_table", "ds.{{ dag_run.conf['value'] }}"),
    "incremental.destination_table": (_incremental_op, "destination_table", "{{ dag_run.conf['value'] }}"),
    "incremental.state_table": (_incremental_op, "state_table", "ds.state_{{ dag_run.conf['value'] }}"),
    "sensor.table": (_sensor, "table", "ds.{{ dag_run.conf['value'] }}"),
}
TEMPLATED_PAYLOADS = {
    "backtick-drop": "t`; DROP TABLE x; --",
    "quote-delete": "t'; DELETE FROM ds.customers WHERE TRUE; --",
    "newline-statement": "t\nTRUNCATE TABLE ds.customers",
}


@pytest.mark.parametrize("payload", list(TEMPLATED_PAYLOADS))
@pytest.mark.parametrize("target", list(TEMPLATED))
def test_hostile_templated_identifier_is_rejected_before_any_sql(
    target: str, payload: str, local_bigquery: LocalBigQuery, no_sql: dict[str, Any]
) -> None:
    factory, field, template = TEMPLATED[target]
    op = factory(**{field: template})
    assert field in op.template_fields
    ctx = run_context(value=TEMPLATED_PAYLOADS[payload])
    op.render_template_fields(ctx)
    assert TEMPLATED_PAYLOADS[payload] in getattr(op, field)  # rendered: the hostile text is in the field
    with pytest.raises(IdentifierError):
        execute(op, ctx)


HOSTILE_TIMESTAMP = "2024-01-01'; DROP TABLE ds.customers; --"


def test_hostile_templated_fresh_through_is_rejected_before_any_sql(
    local_bigquery: LocalBigQuery, no_sql: dict[str, Any]
) -> None:
    sensor = _sensor(fresh_through="{{ dag_run.conf['value'] }}")
    ctx = run_context(value=HOSTILE_TIMESTAMP)
    sensor.render_template_fields(ctx)
    assert sensor.fresh_through == HOSTILE_TIMESTAMP
    with pytest.raises(ValueError, match="Invalid isoformat"):
        sensor.poke(ctx)


def test_hostile_templated_initial_value_never_reaches_sql(dataset: str, mocker: MockerFixture) -> None:
    """A hostile ``initial_value`` is rejected with the other arguments, before any SQL is sent."""
    create_source(dataset)
    spies = {name: mocker.spy(IncrementalBigQueryHook, name) for name in HOOK_CALLS}
    op = _incremental_op(
        source_table=f"{dataset}.src",
        destination_table=f"{dataset}.dst",
        initial_value="{{ dag_run.conf['value'] }}",
    )
    ctx = run_context(value=HOSTILE_TIMESTAMP)
    op.render_template_fields(ctx)
    assert op.initial_value == HOSTILE_TIMESTAMP
    with pytest.raises(ValueError, match="initial_value must be an ISO 8601 timestamp"):
        op.execute(ctx)
    assert {name: spy.call_count for name, spy in spies.items()} == dict.fromkeys(spies, 0)


def create_source(dataset: str) -> None:
    IncrementalBigQueryHook().ensure_dataset(None, dataset)
    query(f"CREATE TABLE `{dataset}.src` (id STRING, updated_at TIMESTAMP)")


def test_hostile_connection_project_is_rejected_before_any_sql(
    local_bigquery: LocalBigQuery, monkeypatch: pytest.MonkeyPatch, no_sql: dict[str, Any]
) -> None:
    """The project can come from the connection too: it is validated like any other identifier."""
    extra = {"project": "p`; DROP TABLE x; --", "api_endpoint": local_bigquery.endpoint, "is_anonymous": True}
    monkeypatch.setenv(
        "AIRFLOW_CONN_HOSTILE_PROJECT", json.dumps({"conn_type": "google_cloud_platform", "extra": extra})
    )
    for op in (
        _json_op(gcp_conn_id="hostile_project"),
        _incremental_op(gcp_conn_id="hostile_project"),
        _sensor(gcp_conn_id="hostile_project", fresh_through=RUN_AFTER.isoformat()),
    ):
        with pytest.raises(IdentifierError, match="invalid project"):
            execute(op, run_context())


def test_hostile_sensor_column_never_reaches_sql(dataset: str, mocker: MockerFixture) -> None:
    """A wanted column is compared with the table's real columns, never written into SQL: it never matches."""
    create_source(dataset)
    hostile = "updated_at) AS c0 FROM x; DROP TABLE y; --"
    run_query = mocker.spy(IncrementalBigQueryHook, "run_query")
    sensor = _sensor(table=f"{dataset}.src", columns=[hostile], fresh_through=RUN_AFTER.isoformat())
    result: Any = sensor.poke(run_context())
    assert not result.is_done
    sent = [call.args[1] for call in run_query.call_args_list]
    assert sent and not any("DROP" in sql or hostile in sql for sql in sent)
    assert query(f"SELECT COUNT(*) AS n FROM `{dataset}.src`") == [{"n": 0}]  # still there


# -- hostile values are data --------------------------------------------------------------------------

HOSTILE_RUN_ID = "manual__2025'); DROP TABLE customers; --`@window_end {{ 7 * 7 }}"
CUSTOMER_ID = "cus_'); DROP TABLE customers; --"
SUBSCRIPTION_ID = "sub_`; DROP TABLE subscriptions; --"
HOSTILE_VALUES = {
    "first_name": "Robert'); DROP TABLE students;--",
    "last_name": "`x`; DELETE FROM `t` WHERE TRUE; --",
    "company": '" OR 1=1; --',
    "email": "a@b.c\\'; SELECT @@version",
    "invoice_notes": "line 1\nline 2\r\n\t@window_end {{ 7 * 7 }} ${x} %(y)s $1 ? \u202e",
}
HOSTILE_JSON = {"sql": "'); DROP TABLE x; --", "k`ey": "v'", "nested": ["`", "'", '"', "\\"]}


def hostile_export(path: Path) -> str:
    customer: dict[str, Any] = {
        "id": CUSTOMER_ID,
        **HOSTILE_VALUES,
        "created_at": 1700000000,
        "updated_at": 1700000500,
        "resource_version": 1700000500123,
        "meta_data": HOSTILE_JSON,
        "cf_note": "'; TRUNCATE TABLE customers; --",
        "x`; DROP TABLE y; --": "an unknown key goes to extra_fields (JSON), not to the schema",
    }
    subscription = {
        "id": SUBSCRIPTION_ID,
        "customer_id": CUSTOMER_ID,
        "status": "active'; --",
        "created_at": 1700000000,
        "updated_at": 1700000500,
        "resource_version": 1700000500456,
        "meta_data": HOSTILE_JSON,
    }
    rejected = {"id": "cus_' OR '1'='1", "created_at": "1700000000'; DROP TABLE x; --"}
    entries = [{"customer": customer, "subscription": subscription}, {"customer": rejected}]
    path.write_text(json.dumps({"list": entries}, ensure_ascii=False))
    return str(path)


def test_hostile_values_land_verbatim_through_both_operators(
    local_bigquery: LocalBigQuery, dataset: str, tmp_path: Path, mocker: MockerFixture
) -> None:
    query_job = mocker.spy(IncrementalBigQueryHook, "query_job")
    load_ndjson = mocker.spy(IncrementalBigQueryHook, "load_ndjson")
    labels = {"team": "x'); DROP TABLE y; --", "Evil Key`": "v"}
    load = JsonEpochToBigQueryOperator(
        task_id="load",
        source_path=hostile_export(tmp_path / "hostile.json"),
        dataset_id=dataset,
        labels=labels,
        max_bad_records=1,
    )
    ctx: Any = context(run_id=HOSTILE_RUN_ID, run_after=RUN_AFTER)
    summary = load.execute(ctx)
    assert summary["quarantined"]["by_reason"] == {"epoch_not_integer": 1}

    columns = ", ".join(HOSTILE_VALUES)
    rows = query(
        f"SELECT id, {columns}, TO_JSON_STRING(meta_data) AS meta, TO_JSON_STRING(custom_fields) AS cf,"
        f" TO_JSON_STRING(extra_fields) AS extra FROM `{dataset}.customers`"
    )
    assert len(rows) == 1
    assert {k: rows[0][k] for k in ("id", *HOSTILE_VALUES)} == {"id": CUSTOMER_ID, **HOSTILE_VALUES}
    assert json.loads(rows[0]["meta"]) == HOSTILE_JSON
    assert json.loads(rows[0]["cf"]) == {"cf_note": "'; TRUNCATE TABLE customers; --"}
    assert list(json.loads(rows[0]["extra"])) == ["x`; DROP TABLE y; --"]
    subscriptions = query(f"SELECT id, customer_id, status FROM `{dataset}.subscriptions`")
    assert subscriptions == [{"id": SUBSCRIPTION_ID, "customer_id": CUSTOMER_ID, "status": "active'; --"}]
    rejects = query(f"SELECT record_id, load_id, message FROM `{dataset}.load_rejects`")
    assert [(r["record_id"], r["load_id"]) for r in rejects] == [
        ("cus_' OR '1'='1", f"adhoc_airflow/load/{HOSTILE_RUN_ID}/-1")
    ]
    assert "DROP TABLE x" in rejects[0]["message"]  # the value is quoted in the message, as data

    # the customers table moved on by the incremental operator: the same values, a hostile run id in the state
    move = IncrementalBigQueryOperator(
        task_id="move", source_table=f"{dataset}.customers", destination_table=f"{dataset}.dw_customers"
    )
    moved = move.execute(
        context(  # type: ignore[arg-type]
            run_id=HOSTILE_RUN_ID,
            data_interval_start=RUN_AFTER - timedelta(days=1),
            data_interval_end=RUN_AFTER,
        )
    )
    assert moved["rows_inserted"] == 1
    copy = query(f"SELECT TO_JSON_STRING(t) AS j FROM `{dataset}.dw_customers` AS t")
    assert copy == query(f"SELECT TO_JSON_STRING(t) AS j FROM `{dataset}.customers` AS t")
    state = query(f"SELECT run_id, source FROM `{dataset}._incremental_state`")
    assert state == [{"run_id": HOSTILE_RUN_ID, "source": f"{local_bigquery.project}.{dataset}.customers"}]
    audit = query(f"SELECT run_id FROM `{dataset}._incremental_audit`")
    assert audit == [{"run_id": HOSTILE_RUN_ID}]

    # no value became SQL text; job ids and labels are sanitised
    sql = "\n".join(call.args[1] for call in query_job.call_args_list)
    for value in (CUSTOMER_ID, SUBSCRIPTION_ID, HOSTILE_RUN_ID, *HOSTILE_VALUES.values(), "DROP TABLE y"):
        assert value not in sql
    for call in query_job.call_args_list + load_ndjson.call_args_list:
        job_id = call.kwargs.get("job_id")
        assert job_id is None or re.fullmatch(r"[A-Za-z0-9_-]{1,1024}", job_id)
        for key, value in (call.kwargs.get("labels") or {}).items():
            assert re.fullmatch(r"[a-z0-9_-]{1,63}", key) and re.fullmatch(r"[a-z0-9_-]{0,63}", value), (
                key,
                value,
            )
    assert any(
        (call.kwargs.get("labels") or {}).get("team") == "x_drop_table_y_--"
        for call in load_ndjson.call_args_list
    )
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", job) for job in summary["job_ids"] + moved["job_ids"])


# -- secrets ------------------------------------------------------------------------------------------

PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----\nFAKEKEY123" + "Zq9" * 200 + "\n-----END PRIVATE KEY-----\n"
SECRETS = ("FAKEKEY123", "Zq9Zq9Zq9", "client-secret-0f9e8d7c6b5a")
CARDS = {  # card data in the input: no value here appears anywhere else in the export
    "number": "4111111111111111",
    "masked_number": "************1111",
    "iin": "411111",
    "cvv": "737",
    "first_name": "Cardholder-Quentin",
    "gateway_account_id": "gw_CARDSECRET42",
}
# the values looked for: long enough never to occur by chance (a 6-digit iin could be microseconds)
CARD_VALUES = [value for value in CARDS.values() if len(value) >= 10]


def card_export(path: Path) -> str:
    def entry(i: int, **customer: Any) -> dict[str, Any]:
        return {
            "subscription": {
                "id": f"sub_{i}",
                "customer_id": f"cus_{i}",
                "created_at": 1700000000,
                "updated_at": 1700000000 + i,
                "resource_version": 1700000000000 + i,
            },
            "customer": {
                "id": f"cus_{i}",
                "created_at": 1700000000,
                "updated_at": 1700000000 + i,
                **customer,
            },
            "card": {**CARDS, "customer_id": f"cus_{i}"},
        }

    entries = [
        entry(1),
        entry(2, card=dict(CARDS)),  # a card nested in the customer: dropped too
        entry(3, card=dict(CARDS), mrr="not a number"),  # quarantined: the raw record drops the card
    ]
    path.write_text(json.dumps({"list": entries}))
    return str(path)


def keyfile(project: str) -> dict[str, str]:
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef",
        "private_key": PRIVATE_KEY,
        "client_email": f"loader@{project}.iam.gserviceaccount.com",
        "client_id": "123456789",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture
def all_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[pytest.LogCaptureFixture]:
    """Everything at DEBUG: stdlib records in ``caplog`` (also of loggers that do not propagate to the root),
    and Airflow's structlog loggers (printed, read with ``capfd``) lowered from INFO to DEBUG."""
    for module in ("airflow._shared.logging.structlog", "airflow.sdk._shared.logging.structlog"):
        try:
            levels = importlib.import_module(module).PER_LOGGER_LEVELS
        except (ImportError, AttributeError):
            continue
        monkeypatch.setitem(levels, "", logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    detached = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and (not logger.propagate or logger.level > logging.DEBUG)
    ]
    saved = [(logger, logger.level) for logger in detached]
    for logger in detached:
        logger.setLevel(logging.DEBUG)
        if not logger.propagate:
            logger.addHandler(caplog.handler)
    yield caplog
    for logger, level in saved:
        logger.setLevel(level)
        logger.removeHandler(caplog.handler)


CONNECTIONS: dict[str, Callable[[LocalBigQuery], dict[str, Any]]] = {
    # the key is used and fails to parse: the task fails at the first BigQuery call
    "bad_key": lambda lbq: {"keyfile_dict": keyfile(lbq.project)},
    # the key is there, beside is_anonymous: the Google hook refuses the ambiguous connection
    "anonymous_with_key": lambda lbq: {"keyfile_dict": keyfile(lbq.project), "is_anonymous": True},
    # secrets in extras the hook does not use: the run completes
    "anonymous_unused_secrets": lambda lbq: {
        "is_anonymous": True,
        "private_key": PRIVATE_KEY,
        "client_secret": SECRETS[2],
    },
}
FAILURES = {
    "bad_key": (ValueError, "PEM|key data"),  # cryptography cannot read the fake key
    "anonymous_with_key": (Exception, "mutually exclusive"),
    "anonymous_unused_secrets": None,
}


@pytest.fixture(scope="module")
def cards(
    local_bigquery: LocalBigQuery, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Any]]:
    """The card export loaded once with the emulator's connection: the dataset and the load's summary."""
    dataset = f"t_{uuid.uuid4().hex[:12]}"
    load = JsonEpochToBigQueryOperator(
        task_id="load_cards",
        source_path=card_export(tmp_path_factory.mktemp("cards") / "cards.json"),
        dataset_id=dataset,
        max_bad_records=1,
    )
    ctx: Any = context(run_id="manual__cards", run_after=RUN_AFTER)
    summary: dict[str, Any] = load.execute(ctx)
    return dataset, summary


@pytest.mark.parametrize("connection", list(CONNECTIONS))
@pytest.mark.parametrize("operator", ["json_to_bigquery", "incremental"])
def test_private_key_and_cards_never_reach_the_logs(
    connection: str,
    operator: str,
    local_bigquery: LocalBigQuery,
    cards: tuple[str, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    all_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    extra = {
        "project": local_bigquery.project,
        "api_endpoint": local_bigquery.endpoint,
        **CONNECTIONS[connection](local_bigquery),
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_SECRET_GCP", json.dumps({"conn_type": "google_cloud_platform", "extra": extra})
    )
    ctx: Any = context(
        run_id=f"manual__secrets_{connection}",
        run_after=RUN_AFTER,
        data_interval_start=RUN_AFTER - timedelta(days=1),
        data_interval_end=RUN_AFTER,
    )
    source_dataset = cards[0]
    if operator == "json_to_bigquery":
        op: Any = JsonEpochToBigQueryOperator(
            task_id="load",
            source_path=card_export(tmp_path / "cards.json"),
            dataset_id=f"t_{uuid.uuid4().hex[:12]}",
            max_bad_records=1,
            project_id=local_bigquery.project,  # so that the export is read before the first BigQuery call
            gcp_conn_id="secret_gcp",
        )
    else:
        op = IncrementalBigQueryOperator(
            task_id="move",
            source_table=f"{local_bigquery.project}.{source_dataset}.customers",
            destination_table=f"{local_bigquery.project}.{source_dataset}.dw_{connection}",
            gcp_conn_id="secret_gcp",
        )
    op.log.debug("capture canary of %s", op.task_id)

    failure = FAILURES[connection]
    error: BaseException | None = None
    if failure is None:
        op.execute(ctx)
    else:
        with pytest.raises(failure[0], match=failure[1]) as info:
            op.execute(ctx)
        error = info.value

    out, err = capfd.readouterr()
    records = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in all_logs.records
    )
    logs = "\n".join([out, err, all_logs.text, records])
    if error is not None:
        logs += "\n" + "".join(traceback.format_exception(error))  # what the task log shows on failure
    # the capture works: it holds the task's printed lines at DEBUG and what it logs before failing
    assert f"capture canary of {op.task_id}" in out
    if operator == "json_to_bigquery":
        assert "Reading 1 file(s)" in out
    if failure is None:
        assert "Submitted BigQuery job" in out
    for secret in (*SECRETS, PRIVATE_KEY.splitlines()[1][:40]):
        assert secret not in logs
    for value in CARD_VALUES:
        assert value not in logs


def test_cards_are_stored_nowhere(cards: tuple[str, dict[str, Any]]) -> None:
    """The card of an entry, of a customer, and of a quarantined customer is not in any table."""
    dataset, summary = cards
    assert summary["quarantined"]["by_reason"] == {"wrong_type": 1}
    stored = "".join(
        r["j"]
        for table in ("customers", "subscriptions", "load_rejects")
        for r in query(f"SELECT TO_JSON_STRING(t) AS j FROM `{dataset}.{table}` AS t")
    )
    assert "cus_3" in stored and "not a number" in stored  # the quarantined record is there ...
    for value in CARD_VALUES:
        assert value not in stored  # ... without its card
