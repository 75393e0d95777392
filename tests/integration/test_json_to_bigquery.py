"""JsonEpochToBigQueryOperator end to end against the local BigQuery emulator (issue 3, "Done means").

Every input is built in ``tmp_path`` from the sample ``tests/data/small.json`` by editing copies, and
every expectation is computed from the input: epochs converted with ``datetime.fromtimestamp``, the
newest version of each record picked by ``(updated_at, resource_version)``, reject reasons from the
edit made. The operator runs through its public ``execute`` with an Airflow-like context.

A load costs the emulator a few seconds, so one baseline load of the sample (module fixture) serves
the read-only checks and is the reference the other loads are compared with, byte for byte
(``TO_JSON_STRING`` of every row, ordered by id).

The operator logs through Airflow 3's structlog (printed, not stdlib records), which ``caplog`` does
not see: :func:`captured_logs` collects both printed output and stdlib records.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import NotFound
from pytest_mock import MockerFixture

from airflow_provider_incremental.core.chargebee import (
    CLUSTER_FIELDS,
    CUSTOMER_EPOCH_FIELDS,
    CUSTOMER_SCHEMA,
    PARTITION_FIELD,
    SUBSCRIPTION_EPOCH_FIELDS,
    SUBSCRIPTION_SCHEMA,
)
from airflow_provider_incremental.core.sql import TableRef
from airflow_provider_incremental.exceptions import SourceFormatError, TooManyBadRecordsError
from airflow_provider_incremental.hooks.bigquery import IncrementalBigQueryHook
from airflow_provider_incremental.local import LocalBigQuery
from airflow_provider_incremental.transfers.json_to_bigquery import JsonEpochToBigQueryOperator
from tests.integration.helpers import context, query
from tests.unit.core.test_transform import bad_record_file, card_only_values, scale_epochs

pytestmark = pytest.mark.integration
UTC = timezone.utc
DATA = Path(__file__).parents[1] / "data"
SAMPLE_PATH = DATA / "small.json"
LITERAL_PATH = DATA / "small_python_literal.txt"
SAMPLE: dict[str, Any] = json.loads(SAMPLE_PATH.read_text())
E: list[dict[str, Any]] = SAMPLE["list"]
RUN_AFTER = datetime(2025, 6, 1, tzinfo=UTC)
TARGETS = ("customers", "subscriptions")

Row = dict[str, Any]


# -- helpers ------------------------------------------------------------------------------------


def ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def entry(i: int) -> dict[str, Any]:
    return copy.deepcopy(E[i])


def write_export(path: Path, entries: Sequence[Any], next_offset: str | None = None) -> str:
    doc: dict[str, Any] = {"list": list(entries)}
    if next_offset is not None:
        doc["next_offset"] = next_offset
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False))
    return str(path)


def bump(e: dict[str, Any], entity: str, seconds: int, **changes: Any) -> dict[str, Any]:
    """Move ``e[entity]`` by ``seconds`` in version order (``updated_at`` and ``resource_version``)."""
    record = e[entity]
    record["updated_at"] += seconds
    record["resource_version"] += seconds * 1000
    record.update(changes)
    return e


def operator(dataset: str, source: str | Sequence[str], **kwargs: Any) -> JsonEpochToBigQueryOperator:
    kwargs.setdefault("task_id", "load")
    return JsonEpochToBigQueryOperator(source_path=source, dataset_id=dataset, **kwargs)


def execute(
    op: JsonEpochToBigQueryOperator,
    *,
    run_id: str = "run_1",
    run_after: datetime = RUN_AFTER,
    map_index: int = -1,
    try_number: int = 1,
) -> dict[str, Any]:
    ctx = context(run_id=run_id, run_after=run_after, map_index=map_index, try_number=try_number)
    summary: dict[str, Any] = op.execute(ctx)
    return summary


def snapshot(dataset: str) -> dict[str, list[str]]:
    """Every row of both targets as ``TO_JSON_STRING``, in a stable order (by id, then content)."""
    rows = query(
        f"SELECT 'customers' AS t, id, TO_JSON_STRING(c) AS j FROM `{dataset}.customers` AS c UNION ALL"
        f" SELECT 'subscriptions' AS t, id, TO_JSON_STRING(s) AS j FROM `{dataset}.subscriptions` AS s"
    )
    out: dict[str, list[str]] = {table: [] for table in TARGETS}
    for r in sorted(rows, key=lambda r: (r["id"], r["j"])):
        out[r["t"]].append(r["j"])
    return out


def tables_of(dataset: str) -> set[str]:
    """The tables of a dataset (empty if the dataset does not exist)."""
    client = IncrementalBigQueryHook().client()
    try:
        return {t.table_id for t in client.list_tables(dataset)}
    except NotFound:
        return set()


def get_table(dataset: str, table: str) -> Any:
    hook = IncrementalBigQueryHook()
    return hook.client().get_table(f"{hook.project_id}.{dataset}.{table}")


def by_id(dataset: str, table: str, columns: str) -> dict[str, Row]:
    rows = query(f"SELECT id, {columns} FROM `{dataset}.{table}`")
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows), f"duplicate ids in {table}"
    return out


def newest(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest record per id, by ``(updated_at, resource_version)``: what a merge must keep."""
    kept: dict[str, dict[str, Any]] = {}
    for r in records:
        old = kept.get(r["id"])
        if old is None or (r["updated_at"], r["resource_version"]) > (
            old["updated_at"],
            old["resource_version"],
        ):
            kept[r["id"]] = r
    return kept


def assert_balanced(summary: dict[str, Any]) -> None:
    """Every record read is loaded, folded into a newer duplicate, or quarantined."""
    counts = summary["counts"]
    for name, c in counts.items():
        assert c["read"] == c["loaded"] + c["deduplicated"] + c["quarantined"], name
    assert summary["entries_read"] == counts["customer"]["read"] + counts["entry"]["read"]
    assert summary["quarantined"]["total"] == sum(c["quarantined"] for c in counts.values())
    assert summary["customers_rows"] == counts["customer"]["loaded"]
    assert summary["subscriptions_rows"] == counts["subscription"]["loaded"]


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Collect what is logged: Airflow's structlog output (printed) and stdlib log records."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    loggers = [logging.getLogger(), logging.getLogger("airflow.task")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@dataclass
class Baseline:
    dataset: str
    summary: dict[str, Any]
    log: str
    tables: dict[str, list[str]]


@pytest.fixture(scope="module")
def baseline(local_bigquery: LocalBigQuery) -> Baseline:
    """The sample loaded once (merge mode) into its own dataset: the reference of the other tests."""
    dataset = f"t_{uuid.uuid4().hex[:12]}"
    with captured_logs() as log:
        summary = execute(operator(dataset, str(SAMPLE_PATH)))
    return Baseline(dataset, summary, log.getvalue(), snapshot(dataset))


# -- the sample -----------------------------------------------------------------------------------


def test_sample_loads_typed_partitioned_and_clustered(baseline: Baseline) -> None:
    summary, dataset = baseline.summary, baseline.dataset
    distinct_customers = {e["customer"]["id"] for e in E}
    assert len(E) == 20 and len(distinct_customers) == 18
    assert summary["entries_read"] == 20
    assert summary["customers_rows"] == 18
    assert summary["subscriptions_rows"] == 20
    assert summary["quarantined"] == {"total": 0, "by_reason": {}}
    assert_balanced(summary)
    json.dumps(summary)  # XCom-able

    customers = by_id(dataset, "customers", "created_at, updated_at, resource_version")
    subscriptions = by_id(
        dataset,
        "subscriptions",
        "customer_id, created_at, updated_at, resource_version, subscription_items, charged_items",
    )
    nested_epochs = 0
    assert set(customers) == distinct_customers
    assert set(subscriptions) == {e["subscription"]["id"] for e in E}
    for e in E:
        sub, row = e["subscription"], subscriptions[e["subscription"]["id"]]
        assert row["customer_id"] == e["customer"]["id"]
        assert row["created_at"] == ts(sub["created_at"])  # a TIMESTAMP equal to the epoch converted
        assert row["updated_at"] == ts(sub["updated_at"])
        assert type(row["resource_version"]) is int and row["resource_version"] == sub["resource_version"]
        assert [i["item_price_id"] for i in row["subscription_items"]] == [
            i["item_price_id"] for i in sub["subscription_items"]
        ]
        assert [i["quantity"] for i in row["subscription_items"]] == [
            i.get("quantity") for i in sub["subscription_items"]
        ]
        for item, raw in zip(row["charged_items"], sub.get("charged_items", []), strict=True):
            assert item["last_charged_at"] == ts(raw["last_charged_at"])  # nested epochs too
            nested_epochs += 1
        cust = customers[e["customer"]["id"]]
        assert cust["created_at"] == ts(e["customer"]["created_at"])
        assert cust["resource_version"] == e["customer"]["resource_version"]

    for table in TARGETS:
        bq = get_table(dataset, table)
        assert bq.time_partitioning is not None and bq.time_partitioning.field == "created_at"
        assert bq.clustering_fields == ["id"]
        fields = {f.name: f for f in bq.schema}
        assert fields["created_at"].field_type == "TIMESTAMP"
        assert fields["resource_version"].field_type in ("INTEGER", "INT64")
    assert nested_epochs > 0
    items = {f.name: f for f in get_table(dataset, "subscriptions").schema}["subscription_items"]
    assert (items.field_type, items.mode) == ("RECORD", "REPEATED")
    assert {f.name: f.field_type for f in items.fields}["next_billing_at"] == "TIMESTAMP"
    # no rejects, and the staging tables are dropped by the merge script
    assert set(TARGETS) <= tables_of(dataset)
    assert not [t for t in tables_of(dataset) if t.startswith("_staging") or t == "load_rejects"]


def test_card_is_loaded_nowhere_and_never_logged(baseline: Baseline) -> None:
    secrets = card_only_values()
    assert secrets and any("card" in e for e in E)

    def names(fields: Sequence[Any]) -> Iterator[str]:
        for f in fields:
            yield f.name
            yield from names(f.fields)

    for table in TARGETS:
        columns = set(names(get_table(baseline.dataset, table).schema))
        assert not {"card", "masked_number", "last4", "iin"} & columns
    stored = json.dumps(baseline.tables, ensure_ascii=False)
    assert "Loaded 20 entries" in baseline.log and "Submitted BigQuery job" in baseline.log
    for value in secrets:
        assert value not in stored
        assert value not in baseline.log


def test_next_offset_is_returned_raw_and_parsed_and_warned(baseline: Baseline) -> None:
    raw = SAMPLE["next_offset"]
    assert baseline.summary["next_offset"]["raw"] == raw
    assert baseline.summary["next_offset"]["parsed"] == json.loads(raw)
    warning = next(line for line in baseline.log.splitlines() if "non-final page" in line)
    assert "warning" in warning.lower() and raw in warning and str(SAMPLE_PATH) in warning


# -- Python literals --------------------------------------------------------------------------------


def test_python_literal_twin(dataset: str, baseline: Baseline) -> None:
    with pytest.raises(SourceFormatError) as info:
        execute(operator(dataset, str(LITERAL_PATH)))
    error = info.value
    assert "allow_python_literals=True" in str(error)
    assert error.source == str(LITERAL_PATH)
    assert error.line is not None and error.column is not None
    assert f"{LITERAL_PATH}:{error.line}:{error.column}" in str(error)
    assert tables_of(dataset) == set()  # nothing loaded

    # The same task id, run id and data as the baseline, into another dataset: its own jobs.
    summary = execute(operator(dataset, str(LITERAL_PATH), allow_python_literals=True))
    assert snapshot(dataset) == baseline.tables
    assert summary["customers_rows"] == 18 and summary["subscriptions_rows"] == 20
    assert not set(summary["job_ids"]) & set(baseline.summary["job_ids"])

    rows = query(
        f"SELECT id, last_name, company FROM `{dataset}.customers` WHERE last_name = @name",
        {"name": "O'Brien"},
    )
    expected = {e["customer"]["id"]: e["customer"] for e in E if e["customer"].get("last_name") == "O'Brien"}
    assert expected and {r["id"] for r in rows} == set(expected)
    assert {r["company"] for r in rows} == {c.get("company") for c in expected.values()}
    companies = {r["company"] for r in query(f"SELECT company FROM `{dataset}.customers`")}
    assert {'The "Best" Widgets Ltd', "True North Analytics"} <= companies


# -- exactly once -----------------------------------------------------------------------------------


def test_retry_and_rerun_leave_identical_tables(
    dataset: str, baseline: Baseline, mocker: MockerFixture
) -> None:
    source = str(SAMPLE_PATH)
    original = IncrementalBigQueryHook.query_job

    def fail_subscriptions_merge(self: IncrementalBigQueryHook, sql: str, *args: Any, **kwargs: Any) -> Any:
        if "subscriptions__merge" in (kwargs.get("job_id") or ""):
            raise ConnectionError("injected: the worker died before the subscriptions MERGE")
        return original(self, sql, *args, **kwargs)

    patch = mocker.patch.object(IncrementalBigQueryHook, "query_job", fail_subscriptions_merge)
    spy = mocker.spy(IncrementalBigQueryHook, "_run_job")
    with pytest.raises(ConnectionError, match="injected"):
        execute(operator(dataset, source))
    first_try = [job.job_id for job in spy.spy_return_list]
    assert len(first_try) == 3  # customers staged and merged, subscriptions staged
    assert any(t.startswith("_staging_subscriptions") for t in tables_of(dataset))
    mocker.stop(patch)

    retried = execute(operator(dataset, source), try_number=2)
    assert retried["job_ids"][:3] == first_try  # the retry reattached to the finished jobs
    assert snapshot(dataset) == baseline.tables
    assert tables_of(dataset) == set(TARGETS)  # staging dropped

    again = execute(operator(dataset, source), try_number=3)
    assert again["job_ids"] == retried["job_ids"]
    assert snapshot(dataset) == baseline.tables

    new_run = execute(operator(dataset, source), run_id="run_2", run_after=RUN_AFTER + timedelta(days=1))
    assert not set(new_run["job_ids"]) & set(retried["job_ids"])  # it really ran again
    assert len(new_run["job_ids"]) == 4
    assert snapshot(dataset) == baseline.tables  # and changed nothing: no duplicates
    assert tables_of(dataset) == set(TARGETS)


def test_pages_are_one_batch_newest_wins_and_deletes(dataset: str, tmp_path: Path) -> None:
    # Run 1: three pages given as a list. Besides the sample, page 1 holds a newer version of a record
    # that is on page 3, page 3 an older version of a record on page 1, page 2 a deleted one.
    fresh16 = bump(entry(16), "subscription", 100, mrr=E[16]["subscription"]["mrr"] + 1)
    stale0 = bump(bump(entry(0), "subscription", -1000, mrr=1), "customer", -1000, company="Stale Co")
    deleted1 = bump(bump(entry(1), "subscription", 10, deleted=True), "customer", 10, deleted=True)
    pages = [
        write_export(tmp_path / "page1.json", [*E[0:7], fresh16], '["1","1"]'),
        write_export(tmp_path / "page2.json", [*E[7:14], deleted1], '["2","2"]'),
        write_export(tmp_path / "page3.json", [*E[14:20], stale0]),
    ]
    first = execute(operator(dataset, pages))
    assert first["entries_read"] == 23
    assert first["customers_rows"] == 18  # deduplicated across pages (one customer is on pages 2 and 3)
    assert first["next_offset"]["raw"] is None  # the last page is the final one
    steps = Counter(job.split("__")[-2] for job in first["job_ids"])
    assert len(first["job_ids"]) == 4 and steps == {"stage": 2, "merge": 2}  # one load + one MERGE per table
    assert_balanced(first)
    # soft delete (the default): the newer deleted versions are kept with their flag
    assert by_id(dataset, "subscriptions", "deleted")[E[1]["subscription"]["id"]]["deleted"] is True
    assert by_id(dataset, "customers", "deleted")[E[1]["customer"]["id"]]["deleted"] is True
    batch1 = [e for page in (E, [fresh16, deleted1, stale0]) for e in page]

    # Run 2: a glob of two later files, hard deletes. Older versions must not overwrite newer rows;
    # newer ones (by updated_at, or by resource_version at the same updated_at) must.
    late = [
        bump(bump(entry(2), "subscription", -1000, mrr=1), "customer", -1000, company="Stale Co"),
        bump(bump(entry(3), "subscription", 50, mrr=777), "customer", 50, company="Newer Co"),
        bump(
            entry(4),
            "subscription",
            0,
            resource_version=E[4]["subscription"]["resource_version"] + 1,
            mrr=778,
        ),
        bump(
            entry(5),
            "subscription",
            0,
            resource_version=E[5]["subscription"]["resource_version"] - 1,
            mrr=779,
        ),
        bump(entry(6), "subscription", 10, deleted=True),
    ]
    later = [
        bump(entry(3), "subscription", 100, mrr=999),
        bump(entry(7), "subscription", -1000, deleted=True),
    ]
    write_export(tmp_path / "late_1.json", late)
    write_export(tmp_path / "late_2.json", later)
    write_export(tmp_path / "other.json", [bump(entry(9), "subscription", 10**6, mrr=5)])  # not matched
    second = execute(
        operator(dataset, str(tmp_path / "late_*.json"), on_deleted="hard"),
        run_id="run_2",
        run_after=RUN_AFTER + timedelta(days=1),
    )
    assert list(second["next_offset"]["by_source"]) == []
    assert second["entries_read"] == len(late) + len(later)

    subs = by_id(dataset, "subscriptions", "mrr, deleted, updated_at, resource_version")
    expected_subs = newest([e["subscription"] for e in [*batch1, *late, *later]])
    hard_deleted = {i for i, s in expected_subs.items() if s.get("deleted")}
    assert hard_deleted == {E[1]["subscription"]["id"], E[6]["subscription"]["id"]}
    assert set(subs) == set(expected_subs) - hard_deleted
    for sub_id, row in subs.items():
        want = expected_subs[sub_id]
        assert (row["mrr"], row["deleted"], row["updated_at"], row["resource_version"]) == (
            want.get("mrr"),
            want["deleted"],
            ts(want["updated_at"]),
            want["resource_version"],
        ), sub_id
    # spot checks of what the rule above means
    assert subs[E[3]["subscription"]["id"]]["mrr"] == 999  # newest of two glob pages
    assert subs[E[4]["subscription"]["id"]]["mrr"] == 778  # same updated_at, higher resource_version
    assert subs[E[5]["subscription"]["id"]]["mrr"] == E[5]["subscription"]["mrr"]  # lower: kept
    assert subs[E[2]["subscription"]["id"]]["mrr"] == E[2]["subscription"]["mrr"]  # older: kept
    assert subs[E[0]["subscription"]["id"]]["mrr"] == E[0]["subscription"]["mrr"]  # older later page
    assert subs[E[16]["subscription"]["id"]]["mrr"] == fresh16["subscription"]["mrr"]  # newer earlier page
    assert subs[E[7]["subscription"]["id"]]["deleted"] is False  # an older deletion is not applied

    customers = by_id(dataset, "customers", "company, updated_at")
    expected_customers = newest([e["customer"] for e in [*batch1, *late, *later]])
    assert E[1]["customer"]["id"] not in customers  # soft-deleted in run 1, removed by the hard run
    assert {k: (r["company"], r["updated_at"]) for k, r in customers.items()} == {
        k: (c.get("company"), ts(c["updated_at"])) for k, c in expected_customers.items() if not c["deleted"]
    }
    assert customers[E[3]["customer"]["id"]]["company"] == "Newer Co"
    assert customers[E[2]["customer"]["id"]]["company"] == E[2]["customer"].get("company")
    assert tables_of(dataset) == set(TARGETS)


# -- write modes and epoch units ------------------------------------------------------------------


def scaled(factor: int, which: Any = lambda i: True) -> list[dict[str, Any]]:
    entries = copy.deepcopy(E)
    for i, e in enumerate(entries):
        if which(i):
            scale_epochs(e["subscription"], SUBSCRIPTION_EPOCH_FIELDS, factor)
            scale_epochs(e["customer"], CUSTOMER_EPOCH_FIELDS, factor)
    return entries


def test_write_modes_and_epoch_units(dataset: str, baseline: Baseline, tmp_path: Path) -> None:
    # append, epochs in milliseconds: the same tables as the baseline (seconds)
    ms = write_export(tmp_path / "ms.json", scaled(1000))
    execute(operator(dataset, ms, epoch_unit="ms", write_mode="append", task_id="ms"))
    assert snapshot(dataset) == baseline.tables

    # append again, auto: 13-digit values are detected as milliseconds, 10-digit ones as seconds
    mixed = scaled(1000, lambda i: i % 2 == 0)
    assert any(len(str(e["subscription"]["created_at"])) == 13 for e in mixed)
    assert any(len(str(e["subscription"]["created_at"])) == 10 for e in mixed)
    auto = write_export(tmp_path / "auto.json", mixed)
    summary = execute(operator(dataset, auto, epoch_unit="auto", write_mode="append", task_id="auto"))
    assert summary["quarantined"]["total"] == 0
    # append keeps every row: each one is there twice, identical
    doubled = {t: sorted(rows * 2) for t, rows in baseline.tables.items()}
    assert {t: sorted(rows) for t, rows in snapshot(dataset).items()} == doubled

    # replace: the tables hold this batch only; on_deleted="hard" leaves deleted records out
    small = [entry(0), bump(entry(1), "subscription", 10, deleted=True), entry(2)]
    replaced = execute(
        operator(dataset, write_export(tmp_path / "r.json", small), write_mode="replace", on_deleted="hard")
    )
    assert replaced["subscriptions_rows"] == 3
    assert set(by_id(dataset, "subscriptions", "deleted")) == {
        E[0]["subscription"]["id"],
        E[2]["subscription"]["id"],
    }
    assert set(by_id(dataset, "customers", "deleted")) == {e["customer"]["id"] for e in small}


# -- validation and quarantine ----------------------------------------------------------------------


def bad_records(tmp_path: Path) -> tuple[str, list[Any], list[tuple[int, str, str | None, str]]]:
    entries, expected = bad_record_file()
    with_card = next(i for i, e in enumerate(E) if "card" in e)
    carded = entry(with_card)  # a rejected record whose entry (and record) holds a card
    carded["customer"]["email"] = "x" * 80
    carded["customer"]["card"] = copy.deepcopy(E[with_card]["card"])
    expected.append((len(entries), "customer", carded["customer"]["id"], "string_too_long"))
    entries.append(carded)
    return write_export(tmp_path / "bad_records.json", entries), entries, expected


def test_bad_records_are_quarantined_with_their_reason(dataset: str, tmp_path: Path) -> None:
    path, entries, expected = bad_records(tmp_path)
    with captured_logs() as log:
        summary = execute(operator(dataset, path, max_bad_records=len(expected)))  # at the limit: loads

    rejects = query(
        "SELECT source, record_index, entity, record_id, field, reason_code, message,"
        f" TO_JSON_STRING(raw_record) AS raw, load_id, rejected_at FROM `{dataset}.load_rejects`"
        " ORDER BY record_index, entity"
    )
    assert [(r["record_index"], r["entity"], r["record_id"], r["reason_code"]) for r in rejects] == sorted(
        expected, key=lambda x: (x[0], x[1])
    )
    for r in rejects:
        assert r["source"] == path
        assert r["load_id"] == summary["load_id"]
        assert r["rejected_at"] == RUN_AFTER
        assert r["message"]
        if r["field"] is not None:  # the message names the bad field's path
            assert r["message"].startswith(f"{r['field']}: ")
        raw = entries[r["record_index"]]
        if r["entity"] == "entry":
            assert json.loads(r["raw"]) == raw
        elif r["reason_code"] == "null_customer":
            assert json.loads(r["raw"]) is None
        else:
            assert json.loads(r["raw"]) == {k: v for k, v in raw[r["entity"]].items() if k != "card"}

    reasons = Counter(reason for *_, reason in expected)
    assert summary["quarantined"] == {"total": len(expected), "by_reason": dict(reasons.most_common())}
    assert_balanced(summary)
    assert summary["entries_read"] == len(entries)

    # the targets hold exactly the records that were not rejected
    rejected = {(index, entity) for index, entity, _, _ in expected}

    def kept(entity: str) -> list[str]:
        return [
            e[entity]["id"]
            for i, e in enumerate(entries)
            if isinstance(e, dict) and (i, entity) not in rejected and (i, "entry") not in rejected
        ]

    good_subs, good_customers = kept("subscription"), kept("customer")
    assert set(by_id(dataset, "subscriptions", "customer_id")) == set(good_subs)
    assert set(by_id(dataset, "customers", "updated_at")) == set(good_customers)
    assert summary["subscriptions_rows"] == len(good_subs)  # rows staged (the MERGE keeps one per id)
    assert summary["customers_rows"] == len(set(good_customers))  # deduplicated before loading

    assert get_table(dataset, "load_rejects").time_partitioning.field == "rejected_at"
    stored = json.dumps(rejects, default=str, ensure_ascii=False)
    for value in card_only_values():
        assert value not in stored
        assert value not in log.getvalue()
    assert "Quarantined" in log.getvalue()


@pytest.mark.xfail(
    strict=True,
    reason="local-bigquery 0.3.2 reads a string value of a JSON column as JSON text, so the quarantine"
    " load fails on raw_record 'not an object'; BigQuery loads raw JSON values (a JSON string here)",
)
def test_an_entry_that_is_a_string_is_quarantined(dataset: str, tmp_path: Path) -> None:
    path = write_export(tmp_path / "string_entry.json", [entry(0), "not an object"])
    execute(operator(dataset, path, max_bad_records=1))
    rows = query(
        f"SELECT entity, reason_code, TO_JSON_STRING(raw_record) AS raw FROM `{dataset}.load_rejects`"
    )
    assert rows == [{"entity": "entry", "reason_code": "wrong_type", "raw": '"not an object"'}]


@pytest.mark.parametrize("kind", ["count", "fraction"])
def test_too_many_bad_records_fail_after_writing_the_quarantine(
    baseline: Baseline, tmp_path: Path, kind: str
) -> None:
    path, entries, expected = bad_records(tmp_path)
    # records: a customer (or its null_customer reject) and a subscription per entry, or the entry itself
    records = sum(1 + ("subscription" in e) if isinstance(e, dict) else 1 for e in entries)
    limit: int | float = len(expected) - 1 if kind == "count" else (len(expected) - 0.5) / records
    quarantine = f"rejects_{kind}"
    op = operator(
        baseline.dataset, path, max_bad_records=limit, quarantine_table=quarantine, task_id=f"too_many_{kind}"
    )
    with pytest.raises(TooManyBadRecordsError) as info:
        execute(op)
    message = str(info.value)
    reasons = Counter(reason for *_, reason in expected)
    for reason, n in reasons.most_common(3):
        assert f"{reason} ({n})" in message
    assert f"{len(expected)} of {records} records" in message
    written = query(f"SELECT reason_code FROM `{baseline.dataset}.{quarantine}`")
    assert Counter(r["reason_code"] for r in written) == reasons
    assert snapshot(baseline.dataset) == baseline.tables  # the targets were not touched


# -- schema drift -----------------------------------------------------------------------------------


def test_unknown_and_custom_fields_are_kept_with_a_drift_warning(dataset: str, tmp_path: Path) -> None:
    drifted = entry(0)
    drifted["subscription"]["brand_new_field"] = {"nested": [1, 2]}
    drifted["subscription"]["subscription_items"][0]["usage_tier"] = "gold"
    drifted["subscription"]["cf_region"] = "EMEA"
    drifted["customer"]["cf_tier"] = "vip"
    drifted["customer"]["billing_address"]["county"] = "Dublin"
    path = write_export(tmp_path / "drift.json", [drifted, entry(1)])
    with captured_logs() as log:
        summary = execute(operator(dataset, path, write_mode="replace", progress_interval=0.0))

    progress = [line for line in log.getvalue().splitlines() if "MB/s" in line]
    assert progress and all(path in line and "entries" in line for line in progress)
    paths = {"brand_new_field", "subscription_items[].usage_tier", "billing_address.county"}
    assert set(summary["unknown_fields"]) == paths
    warning = next(line for line in log.getvalue().splitlines() if "Schema drift" in line)
    assert all(p in warning for p in paths)

    def json_columns(table: str) -> dict[str, tuple[Any, Any]]:
        rows = query(
            "SELECT id, TO_JSON_STRING(custom_fields) AS c, TO_JSON_STRING(extra_fields) AS x"
            f" FROM `{dataset}.{table}`"
        )
        return {r["id"]: (json.loads(r["c"]), json.loads(r["x"])) for r in rows}

    cf = {k: v for k, v in E[0]["subscription"].items() if k.startswith("cf_")}
    subs = json_columns("subscriptions")
    assert subs[E[0]["subscription"]["id"]] == (
        {**cf, "cf_region": "EMEA"},
        {"brand_new_field": {"nested": [1, 2]}, "subscription_items[0].usage_tier": "gold"},
    )
    untouched_cf = {k: v for k, v in E[1]["subscription"].items() if k.startswith("cf_")} or None
    assert subs[E[1]["subscription"]["id"]] == (untouched_cf, None)
    customers = json_columns("customers")
    assert customers[E[0]["customer"]["id"]] == ({"cf_tier": "vip"}, {"billing_address.county": "Dublin"})


# -- bad files ------------------------------------------------------------------------------------

SAMPLE_BYTES = SAMPLE_PATH.read_bytes()
MRR = b'"mrr": 288600'
BAD_FILES = {
    "truncated": SAMPLE_BYTES[: len(SAMPLE_BYTES) * 2 // 3],
    "empty": b"",
    "wrong-root": b'[{"subscription": {"id": "x"}}]',
    "bom": b"\xef\xbb\xbf" + SAMPLE_BYTES,
    "nan": SAMPLE_BYTES.replace(MRR, b'"mrr": NaN', 1),
    "duplicate-key": SAMPLE_BYTES.replace(MRR, MRR + b', "mrr": 1', 1),
    "huge-integer": SAMPLE_BYTES.replace(MRR, b'"mrr": 9223372036854775808', 1),
    "invalid-utf8": SAMPLE_BYTES.replace("Müller".encode(), b"M\xfcller", 1),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_fail_with_file_and_position_and_load_nothing(
    baseline: Baseline, tmp_path: Path, kind: str
) -> None:
    data = BAD_FILES[kind]
    assert data != SAMPLE_BYTES
    good = write_export(tmp_path / "good.json", [bump(entry(0), "subscription", 10**5, mrr=1)])
    bad = tmp_path / f"{kind}.json"
    bad.write_bytes(data)
    with pytest.raises(SourceFormatError) as info:  # the bad file is the second page of the batch
        execute(operator(baseline.dataset, [good, str(bad)], task_id=f"bad_{kind.replace('-', '_')}"))
    error = info.value
    assert error.source == str(bad)
    assert error.byte_offset is not None and error.line is not None
    assert str(error).startswith(f"{bad}:{error.line}:")
    assert f"(byte {error.byte_offset})" in str(error)
    assert snapshot(baseline.dataset) == baseline.tables  # nothing half-loaded, not even page 1
    assert not any(t.startswith("_staging") for t in tables_of(baseline.dataset))


# -- dynamic task mapping ---------------------------------------------------------------------------


def create_targets(dataset: str) -> None:
    """Create the dataset and the target tables as the operator does, without loading anything.

    local-bigquery 0.3.2 answers two concurrent creations of the same dataset or table with
    ``400 Failed to commit DuckLake transaction`` instead of ``409 Already Exists``, which
    ``IncrementalBigQueryHook.ensure_table(exists_ok=True)`` does not tolerate.
    """
    hook = IncrementalBigQueryHook()
    for table, schema in (("customers", CUSTOMER_SCHEMA), ("subscriptions", SUBSCRIPTION_SCHEMA)):
        hook.ensure_table(
            TableRef(None, dataset, table),
            schema,
            partition_field=PARTITION_FIELD,
            cluster_fields=CLUSTER_FIELDS,
        )


def test_concurrent_mapped_loads_into_the_same_tables(dataset: str, tmp_path: Path) -> None:
    # Two files of one export with overlapping records; each side has the newer version of some.
    part0 = [*copy.deepcopy(E[0:12])]
    part1 = [*copy.deepcopy(E[8:20])]
    bump(part0[8 - 0], "subscription", 100, mrr=800)  # E[8]: newer in file 0
    bump(part1[9 - 8], "subscription", 100, mrr=900)  # E[9]: newer in file 1
    bump(part1[11 - 8], "customer", 100, company="Newer Co")  # E[11]'s customer: newer in file 1
    bump(part0[11], "subscription", -100, mrr=1)  # E[11]: older in file 0
    files = [write_export(tmp_path / "part0.json", part0), write_export(tmp_path / "part1.json", part1)]
    # The tables exist already (created by an earlier run, or by the DAG's set-up): the emulator does not
    # yet survive two concurrent first-time creations of a dataset or table (see create_targets).
    create_targets(dataset)

    barrier = threading.Barrier(2, timeout=60)
    results: dict[int, Any] = {}

    def load(index: int) -> None:
        op = operator(dataset, files[index])
        barrier.wait()
        try:
            results[index] = execute(op, map_index=index)
        except BaseException as exc:  # reported below
            results[index] = exc

    threads = [threading.Thread(target=load, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert all(isinstance(results.get(i), dict) for i in (0, 1)), results
    assert not set(results[0]["job_ids"]) & set(results[1]["job_ids"])

    records = [*part0, *part1]
    subs = by_id(dataset, "subscriptions", "mrr, updated_at")
    expected_subs = newest([e["subscription"] for e in records])
    assert {k: (r["mrr"], r["updated_at"]) for k, r in subs.items()} == {
        k: (s.get("mrr"), ts(s["updated_at"])) for k, s in expected_subs.items()
    }
    assert len(subs) == 20
    customers = by_id(dataset, "customers", "company, updated_at")
    expected_customers = newest([e["customer"] for e in records])
    assert {k: (r["company"], r["updated_at"]) for k, r in customers.items()} == {
        k: (c.get("company"), ts(c["updated_at"])) for k, c in expected_customers.items()
    }
    assert len(customers) == 18
    assert tables_of(dataset) == set(TARGETS)
