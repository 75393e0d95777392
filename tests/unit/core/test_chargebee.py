from __future__ import annotations

import copy
import dataclasses
import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_incremental.core.chargebee import (
    _CUSTOMER_SPEC,
    _SUBSCRIPTION_SPEC,
    CLUSTER_FIELDS,
    CUSTOMER_EPOCH_FIELDS,
    CUSTOMER_SCHEMA,
    EXPORT_ORDER,
    PARTITION_FIELD,
    QUARANTINE_SCHEMA,
    SUBSCRIPTION_EPOCH_FIELDS,
    SUBSCRIPTION_SCHEMA,
    CustomerDedup,
    Reject,
    export_order,
    newer,
    normalise_entry,
    quarantine_row,
    unknown_fields,
)

if TYPE_CHECKING:
    from collections.abc import Callable

UTC = timezone.utc
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SAMPLE = Path(__file__).parents[2] / "data" / "small.json"
ENTRIES: list[dict[str, Any]] = json.loads(SAMPLE.read_text())["list"]
CARD_ENTRY = next(e for e in ENTRIES if "card" in e)
CARD_ONLY_VALUES = [CARD_ENTRY["card"]["masked_number"], CARD_ENTRY["card"]["iin"]]


def ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# --- schema checking helper ------------------------------------------------------------------------

SCALARS: dict[str, Callable[[Any], bool]] = {
    "STRING": lambda v: type(v) is str,
    "INT64": lambda v: type(v) is int,
    "FLOAT64": lambda v: type(v) is float,
    "BOOLEAN": lambda v: type(v) is bool,
    "TIMESTAMP": lambda v: isinstance(v, datetime) and v.utcoffset() is not None and not v.utcoffset(),
}


def assert_matches_schema(row: dict[str, Any], schema: list[dict[str, Any]], path: str = "") -> None:
    """Every key of ``row`` is a field of ``schema`` and its value has a compatible Python type."""
    fields = {f["name"]: f for f in schema}
    for f in schema:
        if f["mode"] == "REQUIRED":
            assert row.get(f["name"]) is not None, f"{path}{f['name']} is REQUIRED"
    for key, value in row.items():
        assert key in fields, f"{path}{key} is not in the schema"
        field = fields[key]
        if field["mode"] == "REPEATED":
            assert type(value) is list, f"{path}{key} must be a list"
            values = value
        else:
            values = [value]
        for i, item in enumerate(values):
            where = f"{path}{key}[{i}]" if field["mode"] == "REPEATED" else f"{path}{key}"
            if item is None:
                assert field["mode"] == "NULLABLE", f"{where} may not be null"
            elif field["type"] == "RECORD":
                assert type(item) is dict, f"{where} must be a dict"
                assert_matches_schema(item, field["fields"], f"{where}.")
            elif field["type"] == "JSON":
                json.dumps(item)  # any JSON value
            else:
                assert SCALARS[field["type"]](item), f"{where}={item!r} is not {field['type']}"


def normalise_all(entries: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[Reject]]:
    customers, subscriptions, rejects = [], [], []
    for i, entry in enumerate(entries):
        customer, subscription, entry_rejects = normalise_entry(entry, i, unit="s", now=NOW)
        customers += [customer] if customer else []
        subscriptions += [subscription] if subscription else []
        rejects += entry_rejects
    return customers, subscriptions, rejects


# --- the sample -------------------------------------------------------------------------------------


def test_sample_normalises_without_rejects() -> None:
    customers, subscriptions, rejects = normalise_all(ENTRIES)
    assert rejects == []
    assert len(subscriptions) == 20
    assert len(customers) == 20
    dedup = CustomerDedup()
    for row in customers:
        dedup.add(row, row)
    distinct = {e["customer"]["id"] for e in ENTRIES}
    assert len(dedup) == len(distinct) == 18
    assert dedup.duplicates == 2
    assert {r["id"] for r in dedup.kept()} == distinct


def test_sample_rows_match_their_schemas() -> None:
    customers, subscriptions, _ = normalise_all(ENTRIES)
    for row in customers:
        assert_matches_schema(row, CUSTOMER_SCHEMA)
    for row in subscriptions:
        assert_matches_schema(row, SUBSCRIPTION_SCHEMA)


def test_sample_has_no_unknown_fields() -> None:
    customers, subscriptions, _ = normalise_all(ENTRIES)
    assert all(unknown_fields(r) == set() for r in customers + subscriptions)


def test_values_are_converted() -> None:
    customer, subscription, _ = normalise_entry(ENTRIES[0], 0, unit="s", now=NOW)
    assert subscription is not None and customer is not None
    raw = ENTRIES[0]["subscription"]
    assert subscription["created_at"] == ts(raw["created_at"]) == datetime(2023, 7, 6, 6, 50, 42, tzinfo=UTC)
    assert subscription["resource_version"] == 1_717_658_346_224  # stays integer milliseconds
    assert subscription["exchange_rate"] == 1.0871
    assert subscription["deleted"] is False
    assert subscription["custom_fields"] == {"cf_signup_source": "referral"}
    assert "cf_signup_source" not in subscription
    assert subscription["subscription_items"][0] == raw["subscription_items"][0]
    assert customer["billing_address"] == ENTRIES[0]["customer"]["billing_address"]
    assert customer["updated_at"] == ts(ENTRIES[0]["customer"]["updated_at"])


def test_nested_epochs_are_converted() -> None:
    entry = copy.deepcopy(ENTRIES[0])
    sub = entry["subscription"]
    sub["subscription_items"][1].update(trial_end=1_700_000_001, last_calculated_at=1_700_000_002)
    sub["charged_items"] = [{"item_price_id": "x", "last_charged_at": 1_700_000_003}]
    sub["coupons"] = [{"coupon_id": "c", "apply_till": 1_700_000_004, "applied_count": 2}]
    sub["discounts"] = [
        {"id": "d", "created_at": 1_700_000_005, "apply_till": 1_700_000_006, "percentage": 10}
    ]
    sub["contract_term"] = {"id": "ct", "contract_start": 1_700_000_007, "contract_end": 1_700_000_008}
    sub["addons"] = [{"id": "a", "trial_end": 1_700_000_009}]
    sub["meta_data"] = {"nested": {"created_at": 12}}
    entry["customer"]["referral_urls"] = [{"created_at": 1_700_000_010, "updated_at": 1_700_000_011}]
    customer, row, rejects = normalise_entry(entry, 0, unit="s", now=NOW)
    assert rejects == []
    assert row is not None and customer is not None
    assert row["subscription_items"][1]["trial_end"] == ts(1_700_000_001)
    assert row["subscription_items"][1]["last_calculated_at"] == ts(1_700_000_002)
    assert row["charged_items"][0]["last_charged_at"] == ts(1_700_000_003)
    assert row["coupons"][0]["apply_till"] == ts(1_700_000_004)
    assert row["discounts"][0]["created_at"] == ts(1_700_000_005)
    assert row["discounts"][0]["apply_till"] == ts(1_700_000_006)
    assert row["discounts"][0]["percentage"] == 10.0
    assert row["contract_term"]["contract_start"] == ts(1_700_000_007)
    assert row["contract_term"]["contract_end"] == ts(1_700_000_008)
    assert row["addons"][0]["trial_end"] == ts(1_700_000_009)
    assert row["meta_data"] == {"nested": {"created_at": 12}}  # free JSON: left alone
    assert customer["referral_urls"][0] == {"created_at": ts(1_700_000_010), "updated_at": ts(1_700_000_011)}
    assert_matches_schema(row, SUBSCRIPTION_SCHEMA)
    assert_matches_schema(customer, CUSTOMER_SCHEMA)


@pytest.mark.parametrize(
    ("unit", "created_at", "updated_at"),
    [
        ("ms", 1_688_626_242_123, 1_688_626_243_000),
        ("us", 1_688_626_242_123_000, 1_688_626_243_000_000),
        ("auto", 1_688_626_242_123, 1_688_626_243),
    ],
)
def test_other_units(unit: str, created_at: int, updated_at: int) -> None:
    entry = {"customer": {"id": "c1", "created_at": created_at, "updated_at": updated_at}}
    customer, _, rejects = normalise_entry(entry, 0, unit=unit, now=NOW)
    assert rejects == []
    assert customer is not None
    assert customer["created_at"] == datetime(2023, 7, 6, 6, 50, 42, 123_000, tzinfo=UTC)
    assert customer["updated_at"] == datetime(2023, 7, 6, 6, 50, 43, tzinfo=UTC)


def test_unknown_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="epoch unit must be one of"):
        normalise_entry(ENTRIES[0], 0, unit="seconds", now=NOW)


def test_customer_only_entry() -> None:
    customer, subscription, rejects = normalise_entry(
        {"customer": ENTRIES[0]["customer"]}, 0, unit="s", now=NOW
    )
    assert customer is not None and customer["id"] == ENTRIES[0]["customer"]["id"]
    assert subscription is None
    assert rejects == []


def test_nulls_are_like_omitted_fields() -> None:
    entry = copy.deepcopy(ENTRIES[0])
    entry["subscription"].update(po_number=None, trial_end=None, subscription_items=None, mrr=None)
    _, row, rejects = normalise_entry(entry, 0, unit="s", now=NOW)
    assert rejects == []
    assert row is not None
    assert not {"po_number", "trial_end", "subscription_items", "mrr"} & row.keys()


def test_integral_floats_are_integers() -> None:
    entry = copy.deepcopy(ENTRIES[0])
    entry["subscription"].update(mrr=288600.0, created_at=1_688_626_242.0, exchange_rate=1)
    _, row, rejects = normalise_entry(entry, 0, unit="s", now=NOW)
    assert rejects == []
    assert row is not None
    assert row["mrr"] == 288600 and type(row["mrr"]) is int
    assert row["created_at"] == ts(1_688_626_242)
    assert row["exchange_rate"] == 1.0 and type(row["exchange_rate"]) is float


# --- custom and unknown fields ----------------------------------------------------------------------


def test_custom_and_unknown_fields_are_kept() -> None:
    entry = copy.deepcopy(ENTRIES[0])
    sub, cust = entry["subscription"], entry["customer"]
    sub["cf_flag"] = "False"
    sub["brand_new"] = {"a": 1}
    sub["custom_fields"] = [{"name": "cf_signup_source", "value": "referral"}]  # Airbyte-style: not ours
    sub["subscription_items"][1]["new_nested"] = 2
    sub["subscription_items"][0]["new_nested"] = 3
    cust["billing_address"]["geo"] = {"lat": 1.5}
    cust["cf_industry"] = None
    customer, row, rejects = normalise_entry(entry, 0, unit="s", now=NOW)
    assert rejects == []
    assert row is not None and customer is not None
    assert row["custom_fields"] == {"cf_signup_source": "referral", "cf_flag": "False"}
    assert row["extra_fields"] == {
        "brand_new": {"a": 1},
        "custom_fields": [{"name": "cf_signup_source", "value": "referral"}],
        "subscription_items[0].new_nested": 3,
        "subscription_items[1].new_nested": 2,
    }
    assert "new_nested" not in row["subscription_items"][1]
    assert unknown_fields(row) == {"brand_new", "custom_fields", "subscription_items[].new_nested"}
    assert customer["custom_fields"] == {"cf_industry": None}
    assert customer["extra_fields"] == {"billing_address.geo": {"lat": 1.5}}
    assert unknown_fields(customer) == {"billing_address.geo"}
    assert_matches_schema(row, SUBSCRIPTION_SCHEMA)
    assert_matches_schema(customer, CUSTOMER_SCHEMA)


# --- rejects ----------------------------------------------------------------------------------------


def base_entry() -> dict[str, Any]:
    entry = copy.deepcopy(CARD_ENTRY)
    entry["subscription"]["contract_term"] = {"id": "ct_1", "contract_start": 1_700_000_000}
    entry["customer"]["referral_urls"] = [{"created_at": 1_700_000_000}]
    return entry


def setter(entity: str, path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set ``entry[entity][a][b]...`` (``path`` is dotted; integers index lists); ``...`` deletes."""

    def apply(entry: dict[str, Any]) -> None:
        target: Any = entry[entity]
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for part in parents:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value

    return apply


SUB, CUST = "subscription", "customer"
REJECT_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str, str | None]] = [
    # (case id, mutation, entity, reason_code, field)
    ("sub id missing", setter(SUB, "id", ...), SUB, "missing_id", "id"),
    ("sub id blank", setter(SUB, "id", "  "), SUB, "missing_id", "id"),
    ("sub id null", setter(SUB, "id", None), SUB, "missing_id", "id"),
    ("sub id int", setter(SUB, "id", 123), SUB, "wrong_type", "id"),
    ("sub id too long", setter(SUB, "id", "s" * 51), SUB, "string_too_long", "id"),
    ("cust id missing", setter(CUST, "id", ...), CUST, "missing_id", "id"),
    ("cust id list", setter(CUST, "id", ["x"]), CUST, "wrong_type", "id"),
    ("email too long", setter(CUST, "email", "e" * 60 + "@example.com"), CUST, "string_too_long", "email"),
    ("first_name too long", setter(CUST, "first_name", "f" * 151), CUST, "string_too_long", "first_name"),
    ("last_name too long", setter(CUST, "last_name", "l" * 151), CUST, "string_too_long", "last_name"),
    ("company too long", setter(CUST, "company", "c" * 251), CUST, "string_too_long", "company"),
    ("notes too long", setter(CUST, "invoice_notes", "n" * 2001), CUST, "string_too_long", "invoice_notes"),
    ("currency too long", setter(SUB, "currency_code", "EURO"), SUB, "string_too_long", "currency_code"),
    (
        "pref currency too long",
        setter(CUST, "preferred_currency_code", "EURO"),
        CUST,
        "string_too_long",
        "preferred_currency_code",
    ),
    ("customer_id too long", setter(SUB, "customer_id", "c" * 51), SUB, "string_too_long", "customer_id"),
    ("epoch str", setter(SUB, "created_at", "1688626242"), SUB, "epoch_not_integer", "created_at"),
    ("epoch fraction", setter(SUB, "updated_at", 1_688_626_242.5), SUB, "epoch_not_integer", "updated_at"),
    ("epoch bool", setter(CUST, "created_at", True), CUST, "epoch_not_integer", "created_at"),
    ("epoch 1970", setter(CUST, "updated_at", 0), CUST, "epoch_out_of_range", "updated_at"),
    ("epoch negative", setter(SUB, "started_at", -5), SUB, "epoch_out_of_range", "started_at"),
    ("epoch ms as s", setter(SUB, "created_at", 1_688_626_242_000), SUB, "epoch_out_of_range", "created_at"),
    (
        "nested epoch",
        setter(SUB, "subscription_items.1.next_billing_at", 99_999_999_999),
        SUB,
        "epoch_out_of_range",
        "subscription_items[1].next_billing_at",
    ),
    (
        "record epoch",
        setter(SUB, "contract_term.contract_start", "soon"),
        SUB,
        "epoch_not_integer",
        "contract_term.contract_start",
    ),
    (
        "customer nested epoch",
        setter(CUST, "referral_urls.0.created_at", 253_402_300_800),
        CUST,
        "epoch_out_of_range",
        "referral_urls[0].created_at",
    ),
    ("int as str", setter(SUB, "mrr", "100"), SUB, "wrong_type", "mrr"),
    ("int fraction", setter(SUB, "billing_period", 1.5), SUB, "wrong_type", "billing_period"),
    ("int bool", setter(CUST, "net_term_days", True), CUST, "wrong_type", "net_term_days"),
    ("resource_version str", setter(SUB, "resource_version", "1"), SUB, "wrong_type", "resource_version"),
    ("bool as str", setter(SUB, "deleted", "false"), SUB, "wrong_type", "deleted"),
    ("bool as int", setter(CUST, "allow_direct_debit", 0), CUST, "wrong_type", "allow_direct_debit"),
    ("float as str", setter(SUB, "exchange_rate", "1.08"), SUB, "wrong_type", "exchange_rate"),
    ("string as int", setter(SUB, "status", 1), SUB, "wrong_type", "status"),
    ("object for array", setter(SUB, "subscription_items", {}), SUB, "wrong_type", "subscription_items"),
    ("scalar in array", setter(SUB, "subscription_items.1", 7), SUB, "wrong_type", "subscription_items[1]"),
    ("string for object", setter(CUST, "billing_address", "Dublin"), CUST, "wrong_type", "billing_address"),
    ("array for object", setter(SUB, "contract_term", []), SUB, "wrong_type", "contract_term"),
    (
        "nested wrong type",
        setter(SUB, "subscription_items.0.quantity", "29"),
        SUB,
        "wrong_type",
        "subscription_items[0].quantity",
    ),
    ("customer_id missing", setter(SUB, "customer_id", ...), SUB, "missing_customer_id", "customer_id"),
    ("customer_id blank", setter(SUB, "customer_id", ""), SUB, "missing_customer_id", "customer_id"),
    ("customer_id int", setter(SUB, "customer_id", 5), SUB, "wrong_type", "customer_id"),
    (
        "customer mismatch",
        setter(SUB, "customer_id", "someone_else"),
        SUB,
        "customer_mismatch",
        "customer_id",
    ),
    ("customer null", lambda e: e.update(customer=None), CUST, "null_customer", "customer"),
    ("customer missing", lambda e: e.pop("customer"), CUST, "null_customer", "customer"),
    ("customer string", lambda e: e.update(customer="AzUtkne0DfKaA9Cj"), CUST, "wrong_type", "customer"),
    ("subscription null", lambda e: e.update(subscription=None), SUB, "wrong_type", "subscription"),
    ("subscription list", lambda e: e.update(subscription=[]), SUB, "wrong_type", "subscription"),
]


@pytest.mark.parametrize(
    ("mutate", "entity", "reason_code", "field"),
    [case[1:] for case in REJECT_CASES],
    ids=[case[0] for case in REJECT_CASES],
)
def test_reject(
    mutate: Callable[[dict[str, Any]], None], entity: str, reason_code: str, field: str | None
) -> None:
    entry = base_entry()
    mutate(entry)
    original = copy.deepcopy(entry)
    customer, subscription, rejects = normalise_entry(entry, 7, unit="s", now=NOW)
    assert entry == original  # the input is not modified
    assert len(rejects) == 1
    (reject,) = rejects
    assert (reject.entity, reject.reason_code, reject.field) == (entity, reason_code, field)
    assert reject.record_index == 7
    assert reject.message.startswith(f"{field}: ")
    # the other record of the entry is judged on its own
    if entity == CUST:
        assert customer is None
        assert subscription is not None
        assert_matches_schema(subscription, SUBSCRIPTION_SCHEMA)
    else:
        assert subscription is None
        assert customer is not None
        assert_matches_schema(customer, CUSTOMER_SCHEMA)
    # the raw record is the entity's own object, never the card
    raw = entry.get(entity)
    if isinstance(raw, dict):
        assert reject.raw_record == raw
    elif reason_code == "null_customer":
        assert reject.raw_record is None
    else:
        assert reject.raw_record == raw
    for value in CARD_ONLY_VALUES:
        assert value not in repr(reject)


def test_reject_message_names_path_and_value() -> None:
    entry = base_entry()
    entry["subscription"]["subscription_items"][1]["next_billing_at"] = 99_999_999_999
    _, _, (reject,) = normalise_entry(entry, 0, unit="s", now=NOW)
    assert reject.message.startswith("subscription_items[1].next_billing_at: 99999999999 is out of range")
    assert reject.record_id == entry["subscription"]["id"]


def test_reject_reports_the_first_problem() -> None:
    entry = base_entry()
    entry["customer"]["email"] = "x" * 100
    entry["customer"]["mrr"] = "lots"
    _, _, (reject,) = normalise_entry(entry, 0, unit="s", now=NOW)
    assert reject.field == "email"
    assert reject.record_id == entry["customer"]["id"]


def test_null_customer_reject_names_the_linked_customer() -> None:
    entry = base_entry()
    del entry["customer"]
    _, subscription, (reject,) = normalise_entry(entry, 0, unit="s", now=NOW)
    assert subscription is not None
    assert reject.record_id == entry["subscription"]["customer_id"]


def test_mismatched_customer_still_loads() -> None:
    entry = base_entry()
    entry["subscription"]["customer_id"] = "someone_else"
    customer, subscription, (reject,) = normalise_entry(entry, 0, unit="s", now=NOW)
    assert subscription is None
    assert customer is not None and customer["id"] == entry["customer"]["id"]
    assert "'someone_else'" in reject.message


@pytest.mark.parametrize("entry", ["text", 42, None, [], [{"customer": {"id": "c"}}], True])
def test_entry_that_is_not_an_object(entry: Any) -> None:
    customer, subscription, rejects = normalise_entry(entry, 3, unit="s", now=NOW)
    assert customer is None and subscription is None
    assert rejects == [Reject("entry", 3, None, "wrong_type", rejects[0].message, None, entry)]
    assert rejects[0].message.startswith("entry 3: expected an object")


def test_empty_entry() -> None:
    customer, subscription, (reject,) = normalise_entry({}, 0, unit="s", now=NOW)
    assert customer is None and subscription is None
    assert (reject.entity, reject.reason_code) == ("customer", "null_customer")


def test_reject_is_frozen() -> None:
    reject = Reject("customer", 0, "c", "missing_id", "id: no id", "id", {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        reject.reason_code = "other"  # type: ignore[misc]


def test_quarantine_row_matches_schema() -> None:
    entry = base_entry()
    entry["subscription"]["mrr"] = "x"
    _, _, (reject,) = normalise_entry(entry, 4, unit="s", now=NOW)
    row = quarantine_row(reject, source="gs://b/etl.json", load_id="run-1", rejected_at=NOW)
    assert_matches_schema(row, QUARANTINE_SCHEMA)
    assert [f["name"] for f in QUARANTINE_SCHEMA] == list(row)
    assert row["raw_record"] == entry["subscription"]


# --- the card ---------------------------------------------------------------------------------------


def test_card_never_appears_in_output() -> None:
    bad_customer = copy.deepcopy(CARD_ENTRY)
    bad_customer["customer"]["email"] = "x" * 80
    bad_customer["customer"]["card"] = copy.deepcopy(CARD_ENTRY["card"])  # even when nested
    bad_subscription = copy.deepcopy(CARD_ENTRY)
    bad_subscription["subscription"]["mrr"] = "x"
    bad_subscription["subscription"]["card"] = copy.deepcopy(CARD_ENTRY["card"])
    good_nested = copy.deepcopy(CARD_ENTRY)
    good_nested["customer"]["card"] = copy.deepcopy(CARD_ENTRY["card"])
    outputs = [
        normalise_entry(e, i, unit="s", now=NOW)
        for i, e in enumerate([*ENTRIES, bad_customer, bad_subscription, good_nested])
    ]
    assert sum(len(rejects) for _, _, rejects in outputs) == 2
    text = repr(outputs)
    for value in CARD_ONLY_VALUES:
        assert value in json.dumps(CARD_ENTRY)
        assert value not in text
    assert "'card':" not in text  # as a key; payment_method.type may be the value 'card'


# --- schemas ----------------------------------------------------------------------------------------

BQ_TYPES = {"STRING", "INT64", "FLOAT64", "BOOLEAN", "TIMESTAMP", "JSON", "RECORD"}


def walk(schema: list[dict[str, Any]], prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    for field in schema:
        path = prefix + field["name"]
        out.append((path, field))
        if field["type"] == "RECORD":
            sep = "[]." if field["mode"] == "REPEATED" else "."
            out += walk(field["fields"], path + sep)
    return out


@pytest.mark.parametrize("schema", [CUSTOMER_SCHEMA, SUBSCRIPTION_SCHEMA, QUARANTINE_SCHEMA])
def test_schema_is_well_formed(schema: list[dict[str, Any]]) -> None:
    json.dumps(schema)
    for path, field in walk(schema):
        assert set(field) <= {"name", "type", "mode", "fields", "description"}, path
        assert field["type"] in BQ_TYPES, path
        assert field["mode"] in {"NULLABLE", "REQUIRED", "REPEATED"}, path
        assert ("fields" in field) == (field["type"] == "RECORD"), path
    for fields in [schema] + [f["fields"] for _, f in walk(schema) if "fields" in f]:
        names = [f["name"] for f in fields]
        assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("schema", "path", "type_", "mode"),
    [
        (CUSTOMER_SCHEMA, "id", "STRING", "REQUIRED"),
        (SUBSCRIPTION_SCHEMA, "id", "STRING", "REQUIRED"),
        (SUBSCRIPTION_SCHEMA, "created_at", "TIMESTAMP", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "deleted", "BOOLEAN", "NULLABLE"),
        (CUSTOMER_SCHEMA, "resource_version", "INT64", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "mrr", "INT64", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "exchange_rate", "FLOAT64", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "subscription_items", "RECORD", "REPEATED"),
        (SUBSCRIPTION_SCHEMA, "subscription_items[].unit_price", "INT64", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "shipping_address", "RECORD", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "contract_term", "RECORD", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "contract_term.total_contract_value", "INT64", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "coupons", "RECORD", "REPEATED"),
        (SUBSCRIPTION_SCHEMA, "discounts", "RECORD", "REPEATED"),
        (SUBSCRIPTION_SCHEMA, "charged_items", "RECORD", "REPEATED"),
        (SUBSCRIPTION_SCHEMA, "addons", "RECORD", "REPEATED"),
        (CUSTOMER_SCHEMA, "billing_address", "RECORD", "NULLABLE"),
        (CUSTOMER_SCHEMA, "contacts", "RECORD", "REPEATED"),
        (CUSTOMER_SCHEMA, "balances", "RECORD", "REPEATED"),
        (CUSTOMER_SCHEMA, "referral_urls", "RECORD", "REPEATED"),
        (CUSTOMER_SCHEMA, "payment_method", "RECORD", "NULLABLE"),
        (CUSTOMER_SCHEMA, "relationship", "RECORD", "NULLABLE"),
        (CUSTOMER_SCHEMA, "meta_data", "JSON", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "meta_data", "JSON", "NULLABLE"),
        (CUSTOMER_SCHEMA, "custom_fields", "JSON", "NULLABLE"),
        (SUBSCRIPTION_SCHEMA, "extra_fields", "JSON", "NULLABLE"),
        (QUARANTINE_SCHEMA, "record_index", "INT64", "NULLABLE"),
        (QUARANTINE_SCHEMA, "raw_record", "JSON", "NULLABLE"),
        (QUARANTINE_SCHEMA, "rejected_at", "TIMESTAMP", "NULLABLE"),
    ],
)
def test_schema_field(schema: list[dict[str, Any]], path: str, type_: str, mode: str) -> None:
    field = dict(walk(schema))[path]
    assert (field["type"], field["mode"]) == (type_, mode)


def test_partitioning_and_clustering_columns_exist() -> None:
    for schema in (CUSTOMER_SCHEMA, SUBSCRIPTION_SCHEMA):
        fields = dict(walk(schema))
        assert fields[PARTITION_FIELD]["type"] == "TIMESTAMP"
        assert all(fields[name]["mode"] == "REQUIRED" for name in CLUSTER_FIELDS)


def test_epoch_fields() -> None:
    assert {
        "created_at",
        "updated_at",
        "current_term_end",
        "cancelled_at",
        "subscription_items[].trial_end",
        "subscription_items[].current_term_start",
        "subscription_items[].current_term_end",
        "subscription_items[].next_billing_at",
        "subscription_items[].last_calculated_at",
        "charged_items[].last_charged_at",
        "coupons[].apply_till",
        "discounts[].created_at",
        "discounts[].apply_till",
        "contract_term.contract_start",
        "contract_term.contract_end",
        "contract_term.created_at",
        "addons[].trial_end",
    } <= SUBSCRIPTION_EPOCH_FIELDS
    assert CUSTOMER_EPOCH_FIELDS == {
        "created_at",
        "updated_at",
        "vat_number_validated_time",
        "referral_urls[].created_at",
        "referral_urls[].updated_at",
    }
    assert "resource_version" not in SUBSCRIPTION_EPOCH_FIELDS | CUSTOMER_EPOCH_FIELDS
    for schema, paths in (
        (SUBSCRIPTION_SCHEMA, SUBSCRIPTION_EPOCH_FIELDS),
        (CUSTOMER_SCHEMA, CUSTOMER_EPOCH_FIELDS),
    ):
        timestamps = {p for p, f in walk(schema) if f["type"] == "TIMESTAMP"}
        assert timestamps == paths


# --- dedup ------------------------------------------------------------------------------------------


def customer(
    updated_at: int | None, resource_version: int | None, name: str = "x", **extra: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": "c1", "created_at": ts(1_600_000_000), "first_name": name, **extra}
    if updated_at is not None:
        row["updated_at"] = ts(updated_at)
    if resource_version is not None:
        row["resource_version"] = resource_version
    return row


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (customer(1_700_000_002, 1), customer(1_700_000_001, 9), True),  # updated_at first
        (customer(1_700_000_001, 9), customer(1_700_000_002, 1), False),
        (customer(1_700_000_001, 2), customer(1_700_000_001, 1), True),  # then resource_version
        (customer(1_700_000_001, 1), customer(1_700_000_001, 2), False),
        (customer(1_700_000_001, 1), customer(1_700_000_001, 1), False),  # identical: not newer
        (customer(1_700_000_001, None), customer(None, None), True),  # created_at stands in
        (customer(None, 5), customer(None, 4), True),
        (customer(1_500_000_000, 1), customer(None, 1), False),  # updated before the other's creation
    ],
)
def test_newer(a: dict[str, Any], b: dict[str, Any], expected: bool) -> None:
    assert newer(a, b) is expected


def test_newer_breaks_ties_independently_of_order() -> None:
    a = customer(1_700_000_001, 1, name="Ann")
    b = customer(1_700_000_001, 1, name="Bob")
    assert newer(a, b) != newer(b, a)


@pytest.mark.parametrize(
    "rows",
    [
        [
            customer(1_700_000_001, 5, "old"),
            customer(1_700_000_003, 1, "newest"),
            customer(1_700_000_002, 9, "mid"),
        ],
        [customer(1_700_000_003, 1, "same-time-lower-rv"), customer(1_700_000_003, 7, "newest")],
        [customer(1_700_000_001, 1, "a"), customer(1_700_000_001, 1, "newest")],  # tie: canonical order
    ],
)
def test_dedup_keeps_newest_whatever_the_order(rows: list[dict[str, Any]]) -> None:
    winners = set()
    for order in itertools.permutations(rows):
        dedup = CustomerDedup()
        for row in order:
            dedup.add(row, row)
        assert len(dedup) == 1
        assert dedup.duplicates == len(rows) - 1
        winners.add(dedup.kept()[0]["first_name"])
    assert len(winners) == 1, "the winner never depends on the input order"
    if len({(r["updated_at"], r["resource_version"]) for r in rows}) == len(rows):
        assert winners == {"newest"}


def test_dedup_keeps_one_row_per_id() -> None:
    dedup = CustomerDedup()
    for token, row in enumerate(
        [
            {"id": "a", "updated_at": ts(1_700_000_000)},
            {"id": "b", "updated_at": ts(1_700_000_000)},
            {"id": "a", "updated_at": ts(1_600_000_000)},
            {"id": "a", "updated_at": ts(1_800_000_000)},
        ]
    ):
        assert dedup.add(row, row) is (token != 2)
    assert len(dedup) == 2
    assert dedup.duplicates == 2
    assert [(r["id"], r["updated_at"]) for r in dedup.kept()] == [
        ("a", ts(1_800_000_000)),
        ("b", ts(1_700_000_000)),
    ]


# --- export order -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "keys", "expected"),
    [
        ("subscription", ["status", "id", "customer_id"], ["id", "customer_id", "status"]),
        ("subscription", ["zz_unlisted", "id", "aa_unlisted"], ["id", "zz_unlisted", "aa_unlisted"]),
        ("customer.billing_address", ["zip", "first_name"], ["first_name", "zip"]),
        ("no.such.record", ["b", "a"], ["b", "a"]),  # not listed: the keys keep their order
        ("customer", [], []),
    ],
)
def test_export_order(path: str, keys: list[str], expected: list[str]) -> None:
    assert export_order(path, keys) == expected


@pytest.mark.parametrize("path", EXPORT_ORDER)
def test_export_order_names_only_fields_of_the_record_once(path: str) -> None:
    top, *nested = path.split(".")
    spec = {"customer": _CUSTOMER_SPEC, "subscription": _SUBSCRIPTION_SPEC}[top]
    for key in nested:
        spec = spec[key][1]
    keys = EXPORT_ORDER[path]
    assert len(set(keys)) == len(keys)
    assert set(keys) <= set(spec)


def test_the_export_order_follows_the_samples_first_seen_key_order() -> None:
    for entity in ("customer", "subscription"):
        seen = dict.fromkeys(k for e in ENTRIES for k in e[entity] if not k.startswith("cf_"))
        assert export_order(entity, seen) == list(seen)
