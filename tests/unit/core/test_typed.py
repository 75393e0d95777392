"""``core.typed``: the typed fast path gives exactly the exact path's rows, or declines.

Differential: every export in ``tests/data`` (the sample, its Python-literal twin, the bad-input corpus,
generated exports) goes through ``transform_exports`` with ``typed=True`` and ``typed=False``; the NDJSON
files, counts, reasons and errors must be the same. Table-style cases then show, batch by batch, what the
fast path takes and what it leaves to the exact path (each would change a row, or hide a reader error).
"""

from __future__ import annotations

import copy
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_incremental.core.epoch import epoch_bounds
from airflow_provider_incremental.core.transform import TransformResult, transform_exports
from airflow_provider_incremental.core.typed import TypedBatch, TypedDecoder, _escaped_colon
from airflow_provider_incremental.exceptions import SourceFormatError
from airflow_provider_incremental.local.generate import write_export

UTC = timezone.utc
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DATA = Path(__file__).parents[2] / "data"
SAMPLE = json.loads((DATA / "small.json").read_bytes())
FILES = sorted(
    p for p in DATA.rglob("*") if p.is_file() and p.suffix in (".json", ".txt") and p.name != "utf16.json"
)


def run(tmp_path: Path, data: bytes, *, typed: bool, **kwargs: Any) -> TransformResult | str:
    """The transform's outcome: the result, or the error message."""
    out = tmp_path / ("typed" if typed else "exact")
    try:
        return transform_exports(
            [("export.json", lambda: io.BytesIO(data))],
            out,
            unit=kwargs.pop("unit", "s"),
            now=NOW,
            load_id="l",
            typed=typed,
            **kwargs,
        )
    except SourceFormatError as exc:
        return str(exc)


def rows(result: TransformResult, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.files[name].read_bytes().splitlines()]


def assert_same(tmp_path: Path, data: bytes, **kwargs: Any) -> TransformResult | str:
    fast = run(tmp_path, data, typed=True, **dict(kwargs))
    exact = run(tmp_path, data, typed=False, **dict(kwargs))
    if isinstance(exact, str) or isinstance(fast, str):
        assert fast == exact
        return fast
    assert fast.summary() == exact.summary()
    for name in ("customers", "subscriptions", "rejects"):
        assert rows(fast, name) == rows(exact, name), name
    # one encoder for both paths: the rows (canonical JSON) are the same bytes, and so is the job ids' digest
    for name in ("customers", "subscriptions"):
        assert fast.files[name].read_bytes() == exact.files[name].read_bytes()
    assert fast.digest == exact.digest
    return fast


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(DATA)))
def test_every_test_file_gives_the_same_outcome_on_both_paths(tmp_path: Path, path: Path) -> None:
    literals = path.suffix == ".txt"
    assert_same(tmp_path, path.read_bytes(), allow_python_literals=literals)


@pytest.mark.parametrize("pretty", [False, True])
@pytest.mark.parametrize("unit", ["s", "auto"])
def test_generated_exports_give_the_same_rows_and_take_the_fast_path(
    tmp_path: Path, pretty: bool, unit: str
) -> None:
    path = tmp_path / "export.json"
    write_export(path, entries=3000, seed=7, pretty=pretty)
    data = path.read_bytes()
    result = assert_same(tmp_path, data, unit=unit)
    assert isinstance(result, TransformResult) and result.entries_read == 3000

    decoder = TypedDecoder(unit=unit, now=NOW)
    entries = json.loads(data)["list"]
    batch = json.dumps(entries[:50]).encode()
    assert decoder.decode(batch) is None  # custom fields not learned yet
    for entry in entries:
        for entity in ("customer", "subscription"):
            decoder.learn(entity, [k for k in entry.get(entity, {}) if k.startswith("cf_")])
    decoded = decoder.decode(batch)
    assert type(decoded) is TypedBatch and len(decoded) == 50
    assert decoded.subscription_rows == 50 == decoded.subscriptions.count(b"\n")
    assert 0 < len(decoded.versions) == decoded.customers.count(b"\n") <= 50


def entry(**changes: Any) -> dict[str, Any]:
    """The sample's second entry (it has a card), with ``customer__email=value``-style changes (``...``
    deletes)."""
    e = copy.deepcopy(SAMPLE["list"][1])
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = e
        for key in parents:
            target = target[key]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return e


def learned() -> TypedDecoder:
    decoder = TypedDecoder(unit="s", now=NOW)
    for e in SAMPLE["list"]:
        for entity in ("customer", "subscription"):
            decoder.learn(entity, [k for k in e.get(entity, {}) if k.startswith("cf_")])
    return decoder


GOOD = json.dumps([entry()]).encode()
DECLINED = {
    # a record the exact path quarantines
    "blank id": [entry(customer__id="  ")],
    "no subscription id": [entry(subscription__id=...)],
    "no customer": [entry(customer=...)],
    "null customer": [entry(customer=None)],
    "customer mismatch": [entry(subscription__customer_id="other")],
    "no customer_id": [entry(subscription__customer_id=...)],
    "string too long": [entry(customer__id="x" * 51, subscription__customer_id="x" * 51)],
    "epoch out of range": [entry(subscription__created_at=10)],
    "epoch in ms": [entry(subscription__created_at=1_700_000_000_000)],
    "epoch float": [entry(subscription__created_at=1.7e9)],
    "nested epoch": [entry(subscription__subscription_items=[{"next_billing_at": "soon"}])],
    "integral float": [entry(subscription__mrr=10.0)],
    "int64 overflow": [entry(subscription__mrr=1 << 63)],
    "wrong type": [entry(subscription__status=1)],
    # rows the exact path writes differently: nulls omitted, unknown fields kept in extra_fields
    "null field": [entry(customer__email=None)],
    "null json": [entry(customer__meta_data=None)],
    "unknown field": [entry(customer__surprise=1)],
    "unknown nested field": [entry(customer__billing_address__surprise=1)],
    "new custom field": [entry(customer__cf_new="x")],
    "unknown entry key": [{**entry(), "invoice": {}}],
    "big int in json": [entry(customer__meta_data={"n": 1 << 60})],
    "card in a record": [entry(customer__card={"last4": "0005"})],
    # what msgspec's lax mode would coerce: the decoding is strict, so these are refused
    "string for an integer": [entry(subscription__mrr="100")],
    "string for a customer integer": [entry(customer__net_term_days="0")],
    "string for a boolean": [entry(subscription__deleted="false")],
    "1 for a boolean": [entry(customer__deleted=1)],
    "0 for a nested boolean": [
        entry(subscription__subscription_items=[{"item_price_id": "p", "charge_once": 0}])
    ],
    "string for a number": [entry(subscription__exchange_rate="1.5")],
    "nan string for a number": [entry(subscription__exchange_rate="nan")],
    "numeric string for an epoch": [entry(subscription__created_at="1700000000")],
    "rfc 3339 string for an epoch": [entry(customer__updated_at="2024-01-01T00:00:00Z")],
    "epoch with a fraction": [entry(subscription__updated_at=1_700_000_000.5)],
    "nested numeric string epoch": [
        entry(subscription__contract_term={"id": "t", "contract_start": "1700000000"})
    ],
    "customer epoch out of range": [entry(customer__created_at=10)],
    "epoch just past the range": [entry(subscription__next_billing_at=2_082_758_401)],
}


def test_a_clean_batch_is_decoded() -> None:
    decoded = learned().decode(GOOD)
    assert decoded is not None and len(decoded) == 1
    row = json.loads(decoded.customers.splitlines()[0])
    assert row["id"] == SAMPLE["list"][1]["customer"]["id"]
    assert decoded.versions[0][0] == row["id"]
    created = SAMPLE["list"][1]["customer"]["created_at"]
    assert row["created_at"] == datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z")
    assert json.loads(decoded.subscriptions)["customer_id"] == row["id"]


@pytest.mark.parametrize("name", DECLINED)
def test_batches_the_exact_path_must_judge_are_declined(name: str) -> None:
    assert learned().decode(json.dumps(DECLINED[name]).encode()) is None


@pytest.mark.parametrize("name", DECLINED)
def test_declined_batches_give_the_exact_paths_outcome(tmp_path: Path, name: str) -> None:
    def plain(e: Any) -> Any:  # without custom fields, so that the fast path tries the first batch
        if not isinstance(e, dict):
            return e
        return {k: plain(v) for k, v in e.items() if not k.startswith("cf_")}

    data = json.dumps({"list": [plain(e) for e in (entry(), *DECLINED[name], entry())]}).encode()
    assert_same(tmp_path, data)


@pytest.mark.parametrize("unit", ["s", "auto"])
def test_epochs_at_the_edges_of_the_range_take_the_fast_path(unit: str) -> None:
    low, high = epoch_bounds("s", NOW)
    decoder = TypedDecoder(unit=unit, now=NOW)
    for e in SAMPLE["list"]:
        for entity in ("customer", "subscription"):
            decoder.learn(entity, [k for k in e.get(entity, {}) if k.startswith("cf_")])
    fields = ("created_at", "updated_at", "started_at", "activated_at", "current_term_start",
              "current_term_end", "next_billing_at")  # fmt: skip
    base = entry()
    for key in fields:  # every epoch of the record in the unit, so that the fast path may take it
        if key in base["subscription"]:
            base["subscription"][key] = high
        if key in base["customer"]:
            base["customer"][key] = low
    decoded = decoder.decode(json.dumps([base]).encode())
    assert decoded is not None
    customer = json.loads(decoded.customers.splitlines()[0])
    subscription = json.loads(decoded.subscriptions)
    assert customer["created_at"] == "2000-01-01T00:00:00Z"
    expected = datetime.fromtimestamp(high, UTC).isoformat().replace("+00:00", "Z")
    assert subscription["updated_at"] == expected


@pytest.mark.parametrize(("unit", "scale", "extra"), [("ms", 1_000, 123), ("us", 1_000_000, 456_789)])
def test_epochs_in_other_units_take_the_fast_path_and_give_the_exact_paths_rows(
    tmp_path: Path, unit: str, scale: int, extra: int
) -> None:
    def scaled(value: Any, key: str = "") -> Any:  # every epoch in the unit, with a sub-second part
        if isinstance(value, dict):
            return {k: scaled(v, k) for k, v in value.items() if not k.startswith("cf_")}
        if isinstance(value, list):
            return [scaled(v) for v in value]
        epoch = isinstance(value, int) and not isinstance(value, bool) and 10**9 < value < 10**10
        return value * scale + extra if epoch and key != "resource_version" else value

    entries = [scaled(e) for e in SAMPLE["list"][:5]]
    decoded = TypedDecoder(unit=unit, now=NOW).decode(json.dumps(entries).encode())
    assert decoded is not None and len(decoded) == 5  # taken by the fast path
    subscription = json.loads(decoded.subscriptions.splitlines()[0])
    created = SAMPLE["list"][0]["subscription"]["created_at"]
    expected = datetime.fromtimestamp(created, UTC).replace(microsecond=extra * 1_000_000 // scale)
    assert subscription["created_at"] == expected.isoformat().replace("+00:00", "Z")
    result = assert_same(tmp_path, json.dumps({"list": entries}).encode(), unit=unit)
    assert isinstance(result, TransformResult) and result.quarantined == 0


@pytest.mark.parametrize(
    "data",
    [
        GOOD.replace(b'"object": "customer"', b'"object": "customer", "object": "customer"'),  # dup key
        GOOD.replace(b'"object": "card"', b'"object": "card", "object": "card"'),  # dup key in the card
        GOOD.replace(b'"company": "', b'"company": "\\u003a'),  # an escaped colon hides from the count
        GOOD.replace(b'"company": "', b'"company": "\\u003A'),
        # a duplicate key beside colons in the card's strings (the rows copy neither)
        GOOD.replace(b'"object": "card"', b'"object": "card:a:b", "object": "card"'),
        GOOD.replace(b'"object": "customer"', b'"object": "customer", "object" : "customer"'),
        GOOD.replace(b'"object": "card"', b'"object": "card", "n": 123456789012345678901'),
        GOOD[:-40],  # cut inside an entry
        GOOD.replace(b'"object": "card"', b'"object": NaN'),
    ],
    ids=[
        "duplicate key",
        "duplicate key in card",
        "escaped colon",
        "escaped colon upper case",
        "duplicate key in card with colons",
        "duplicate key spelled with a space",
        "big int in card",
        "cut",
        "NaN",
    ],
)
def test_batches_the_reader_must_judge_are_declined(data: bytes) -> None:
    assert data != GOOD
    assert learned().decode(data) is None


COLONS = {
    # colons inside strings are copied to the rows as they are, or dropped with the card: counted either way
    "in a customer string": entry(customer__company="Acme: the 2nd"),
    "in a subscription string": entry(subscription__po_number="po:1:2"),
    "in a nested string": entry(subscription__subscription_items=[{"item_price_id": "plan:gold"}]),
    "in free json": entry(customer__meta_data={"a:b": "c:d"}),
    "in a card value": entry(card__ip_address="2001:db8::1"),
    "in a card key": entry(card__colon_key_x="1"),
    "escaped quote": entry(customer__company='The "Best": Widgets'),
}


@pytest.mark.parametrize("name", COLONS)
def test_colons_inside_strings_take_the_fast_path_and_give_the_exact_paths_rows(
    tmp_path: Path, name: str
) -> None:
    data = json.dumps([COLONS[name]]).encode().replace(b"colon_key_x", b"colon:key")
    decoded = learned().decode(data)
    assert decoded is not None and len(decoded) == 1
    twin = json.dumps({"list": [SAMPLE["list"][0], json.loads(data)[0]]}).encode()
    result = assert_same(tmp_path, twin)
    assert isinstance(result, TransformResult) and result.quarantined == 0


def test_a_duplicate_key_in_a_batch_with_colons_in_strings_is_declined() -> None:
    data = json.dumps([COLONS["in a card value"], COLONS["in a customer string"]]).encode()
    assert learned().decode(data) is not None
    duplicated = data.replace(b'"object": "customer"', b'"object": "customer", "object": "x:y"', 1)
    assert learned().decode(duplicated) is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"a": "b"}', False),
        (b'{"a": "\\"b\\""}', False),  # escaped quotes only
        (b'{"a": "\\u003a"}', True),
        (b'{"a": "\\u003A"}', True),
        (b'{"a": "x\\"\\u003ay"}', True),  # after another escape
        (b'{"a": "\\\\u003a"}', False),  # an escaped backslash, then the text u003a
        (b'{"a": "\\u0022 \\u003b \\u00e9"}', False),
        (b'{"a": "' + b"\\n" * 100 + b'\\u003a"}', True),  # past 64 escapes: the regular expression
        (b'{"a": "' + b"\\n" * 100 + b'"}', False),
        (b'{"a": "' + b"\\n" * 64 + b'"}', False),
    ],
)
def test_escaped_colon(data: bytes, expected: bool) -> None:
    assert _escaped_colon(data) is expected


def test_dirty_input_is_tried_less_often_and_learning_resets_that() -> None:
    decoder = learned()
    bad = json.dumps(DECLINED["blank id"]).encode()
    tried = [decoder.decode(bad) is None for _ in range(6)]
    assert all(tried)
    assert decoder.decode(GOOD) is None  # skipped: the last batches were all declined
    decoder.learn("customer", ["cf_brand_new"])
    assert decoder.decode(GOOD) is not None


def test_rows_are_written_in_the_export_order_on_both_paths(tmp_path: Path) -> None:
    result = assert_same(tmp_path, (DATA / "small.json").read_bytes())
    assert isinstance(result, TransformResult)
    first = json.loads(result.files["subscriptions"].read_bytes().splitlines()[0])
    source = SAMPLE["list"][0]["subscription"]
    assert list(first)[:6] == list(source)[:6] == [
        "id", "billing_period", "billing_period_unit", "auto_collection", "customer_id", "status"
    ]  # fmt: skip
    customer = json.loads(result.files["customers"].read_bytes().splitlines()[0])
    assert list(customer)[:5] == ["id", "first_name", "last_name", "email", "phone"]
