"""``core.transform.transform_exports``: export files in, NDJSON files and counts out (no BigQuery).

Inputs are built from the sample ``tests/data/small.json`` by editing copies; every expectation is
computed from the input (epochs converted with ``datetime.fromtimestamp``, counts from the entries).
"""

from __future__ import annotations

import copy
import gc
import io
import itertools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from airflow_provider_incremental.core.chargebee import (
    CUSTOMER_EPOCH_FIELDS,
    QUARANTINE_SCHEMA,
    SUBSCRIPTION_EPOCH_FIELDS,
)
from airflow_provider_incremental.core.transform import Progress, TransformResult, _runs, transform_exports
from airflow_provider_incremental.core.typed import TypedDecoder
from airflow_provider_incremental.exceptions import SourceFormatError

UTC = timezone.utc
NOW = datetime(2026, 1, 1, tzinfo=UTC)
DATA = Path(__file__).parents[2] / "data"
SAMPLE_BYTES = (DATA / "small.json").read_bytes()
LITERAL_BYTES = (DATA / "small_python_literal.txt").read_bytes()
SAMPLE: dict[str, Any] = json.loads(SAMPLE_BYTES)
ENTRIES: list[dict[str, Any]] = SAMPLE["list"]
Source = tuple[str, Callable[[], BinaryIO]]


# -- helpers ------------------------------------------------------------------------------------------


def source(name: str, data: bytes) -> Source:
    return name, lambda: io.BytesIO(data)


def export(entries: Sequence[Any], next_offset: str | None = None) -> bytes:
    doc: dict[str, Any] = {"list": list(entries)}
    if next_offset is not None:
        doc["next_offset"] = next_offset
    return json.dumps(doc, indent=2).encode()


def transform(
    tmp_path: Path, sources: Sequence[Source], *, unit: str = "s", **kwargs: Any
) -> TransformResult:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    return transform_exports(sources, out, unit=unit, now=NOW, load_id="load-1", **kwargs)


def ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ts(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def entry(i: int) -> dict[str, Any]:
    return copy.deepcopy(ENTRIES[i])


def card_only_values() -> list[str]:
    """String values of the sample's cards (masked numbers, iin, ...) that appear nowhere else in it."""
    rest = json.dumps([{k: v for k, v in e.items() if k != "card"} for e in ENTRIES], ensure_ascii=False)
    values = {
        str(v)
        for e in ENTRIES
        if "card" in e
        for v in e["card"].values()
        if isinstance(v, str) and len(v) >= 6
    }
    return sorted(v for v in values if v not in rest)


def scale_epochs(record: dict[str, Any], paths: frozenset[str], factor: int) -> None:
    """Multiply every epoch field of ``record`` (top level and nested, by path) by ``factor``."""
    for path in paths:
        _scale(record, path.split("."), factor)


def _scale(value: Any, parts: list[str], factor: int) -> None:
    head, rest = parts[0], parts[1:]
    if head.endswith("[]"):
        for item in value.get(head[:-2]) or []:
            _scale(item, rest, factor)
    elif not rest:
        if isinstance(value.get(head), int):
            value[head] *= factor
    elif isinstance(value.get(head), dict):
        _scale(value[head], rest, factor)


def assert_balanced(result: TransformResult) -> None:
    summary = result.summary()
    for name, c in summary["counts"].items():
        assert c["read"] == c["loaded"] + c["deduplicated"] + c["quarantined"], name
    # every entry is an object with a customer (present or reported null), or a rejected non-object
    assert (
        summary["entries_read"] == summary["counts"]["customer"]["read"] + summary["counts"]["entry"]["read"]
    )
    assert summary["quarantined"]["total"] == sum(c["quarantined"] for c in summary["counts"].values())
    assert summary["quarantined"]["total"] == sum(summary["quarantined"]["by_reason"].values())
    assert summary["customers_rows"] == len(ndjson(result.files["customers"]))
    assert summary["subscriptions_rows"] == len(ndjson(result.files["subscriptions"]))
    assert summary["quarantined"]["total"] == len(ndjson(result.files["rejects"]))


# -- the sample ---------------------------------------------------------------------------------------


def test_sample_gives_18_customers_20_subscriptions_and_no_rejects(tmp_path: Path) -> None:
    result = transform(tmp_path, [source("small.json", SAMPLE_BYTES)])
    customers = ndjson(result.files["customers"])
    subscriptions = ndjson(result.files["subscriptions"])
    distinct = {e["customer"]["id"] for e in ENTRIES}

    assert result.entries_read == len(ENTRIES) == 20
    assert len(distinct) == 18
    assert [c["id"] for c in customers] == list(dict.fromkeys(e["customer"]["id"] for e in ENTRIES))
    assert [s["id"] for s in subscriptions] == [e["subscription"]["id"] for e in ENTRIES]
    assert ndjson(result.files["rejects"]) == []
    assert result.bytes_read == len(SAMPLE_BYTES)
    summary = result.summary()
    assert summary["customers_rows"] == 18
    assert summary["customers_deduplicated"] == 2
    assert summary["subscriptions_rows"] == 20
    assert summary["quarantined"] == {"total": 0, "by_reason": {}}
    json.dumps(summary)  # XCom-able
    assert_balanced(result)


def test_epochs_become_utc_timestamps_and_resource_version_stays_an_integer(tmp_path: Path) -> None:
    result = transform(tmp_path, [source("small.json", SAMPLE_BYTES)])
    subscriptions = {s["id"]: s for s in ndjson(result.files["subscriptions"])}
    customers = {c["id"]: c for c in ndjson(result.files["customers"])}
    for e in ENTRIES:
        raw, row = e["subscription"], subscriptions[e["subscription"]["id"]]
        for name in ("created_at", "updated_at", "current_term_end", "next_billing_at"):
            if name in raw:
                assert parse_ts(row[name]) == ts(raw[name]), name
                assert parse_ts(row[name]).utcoffset() is not None
        assert row["resource_version"] == raw["resource_version"]
        assert type(row["resource_version"]) is int
        for item, raw_item in zip(row["subscription_items"], raw["subscription_items"], strict=True):
            assert item["item_price_id"] == raw_item["item_price_id"]
            for name in ("trial_end", "current_term_start", "current_term_end", "next_billing_at"):
                if name in raw_item:
                    assert parse_ts(item[name]) == ts(raw_item[name])
        customer = customers[e["customer"]["id"]]
        assert parse_ts(customer["created_at"]) == ts(e["customer"]["created_at"])
    # nested epochs (subscription_items[], contract_term, coupons[]) are converted too
    edited = entry(0)
    edited["subscription"]["subscription_items"][0]["trial_end"] = 1_720_000_000
    edited["subscription"]["contract_term"] = {"id": "ct", "contract_start": 1_710_000_000}
    edited["subscription"]["coupons"] = [{"coupon_id": "c", "apply_till": 1_730_000_000}]
    (row,) = ndjson(transform(tmp_path, [source("e.json", export([edited]))]).files["subscriptions"])
    assert parse_ts(row["subscription_items"][0]["trial_end"]) == ts(1_720_000_000)
    assert parse_ts(row["contract_term"]["contract_start"]) == ts(1_710_000_000)
    assert parse_ts(row["coupons"][0]["apply_till"]) == ts(1_730_000_000)


def test_card_is_never_written(tmp_path: Path) -> None:
    secrets = card_only_values()
    assert secrets, "the sample has cards with card-only values"
    with_card = next(i for i, e in enumerate(ENTRIES) if "card" in e)
    bad = entry(with_card)
    bad["customer"]["email"] = "x" * 200  # rejected: its raw record goes to the quarantine
    bad["customer"]["card"] = copy.deepcopy(ENTRIES[with_card]["card"])  # even nested
    bad["subscription"]["card"] = copy.deepcopy(ENTRIES[with_card]["card"])
    bad["subscription"]["mrr"] = "lots"
    result = transform(tmp_path, [source("small.json", SAMPLE_BYTES), source("bad.json", export([bad]))])
    assert result.quarantined == 2
    written = "".join(path.read_text() for path in result.files.values())
    written += json.dumps(result.summary())
    for value in secrets:
        assert value in SAMPLE_BYTES.decode()
        assert value not in written
    assert '"card":' not in written  # as a key (payment_method.type may be the value "card")


# -- Python literals ---------------------------------------------------------------------------------


def test_python_literal_twin_gives_byte_identical_output(tmp_path: Path) -> None:
    strict = transform(tmp_path, [source("small.json", SAMPLE_BYTES)])
    repaired = transform(tmp_path, [source("small.json", LITERAL_BYTES)], allow_python_literals=True)
    for name in ("customers", "subscriptions", "rejects"):
        assert repaired.files[name].read_bytes() == strict.files[name].read_bytes(), name
    assert repaired.digest == strict.digest
    assert repaired.summary() | {"bytes_read": 0} == strict.summary() | {"bytes_read": 0}
    names = {c["last_name"] for c in ndjson(repaired.files["customers"])}
    companies = {c.get("company") for c in ndjson(repaired.files["customers"])}
    assert "O'Brien" in names
    assert {'The "Best" Widgets Ltd', "True North Analytics"} <= companies


def test_strict_mode_refuses_the_python_literal_twin(tmp_path: Path) -> None:
    with pytest.raises(SourceFormatError) as info:
        transform(tmp_path, [source("small_python_literal.txt", LITERAL_BYTES)])
    error = info.value
    assert "allow_python_literals=True" in str(error)
    assert error.source == "small_python_literal.txt"
    assert error.line is not None and error.column is not None
    first_quote = LITERAL_BYTES.index(b"'")
    assert error.byte_offset == first_quote
    assert error.line == LITERAL_BYTES[:first_quote].count(b"\n") + 1


# -- pages, dedup and versions -----------------------------------------------------------------------


def test_pages_are_one_batch_deduplicated_across_pages(tmp_path: Path) -> None:
    pages = [ENTRIES[:7], ENTRIES[7:14], ENTRIES[14:]]
    offsets = ['["1","1"]', '["2","2"]', None]
    sources = [
        source(f"page{i}.json", export(p, o)) for i, (p, o) in enumerate(zip(pages, offsets, strict=True))
    ]
    whole = transform(tmp_path, [source("small.json", export(ENTRIES))])
    paged = transform(tmp_path, sources)
    for name in ("customers", "subscriptions"):
        assert paged.files[name].read_bytes() == whole.files[name].read_bytes()
    assert paged.entries_read == 20
    assert paged.summary()["customers_deduplicated"] == 2
    # the duplicate customer is on several pages
    (duplicate,) = [cid for cid, n in Counter(e["customer"]["id"] for e in ENTRIES).items() if n > 1]
    pages_of = {i for i, p in enumerate(pages) for e in p if e["customer"]["id"] == duplicate}
    assert len(pages_of) > 1
    assert paged.next_offsets == {"page0.json": '["1","1"]', "page1.json": '["2","2"]'}
    assert_balanced(paged)


def test_newest_customer_wins_whatever_the_page_order(tmp_path: Path) -> None:
    old, new = entry(0), entry(0)
    new["customer"]["updated_at"] += 100
    new["customer"]["company"] = "Renamed Ltd"
    same_time_higher_version = entry(1)
    same_time_higher_version["customer"]["resource_version"] += 1
    same_time_higher_version["customer"]["company"] = "Higher Version Ltd"
    for first, second in ((new, old), (old, new)):
        pair = (same_time_higher_version, entry(1)) if first is new else (entry(1), same_time_higher_version)
        pages = [source("p0.json", export([first, pair[0]])), source("p1.json", export([second, pair[1]]))]
        result = transform(tmp_path, pages)
        customers = {c["id"]: c for c in ndjson(result.files["customers"])}
        assert customers[old["customer"]["id"]]["company"] == "Renamed Ltd"
        assert customers[ENTRIES[1]["customer"]["id"]]["company"] == "Higher Version Ltd"
        assert len(customers) == 2
        assert result.counts["customer"].deduplicated == 2
        assert_balanced(result)


def test_a_version_tie_has_one_winner_whatever_the_order_the_pages_and_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[bool] = []  # whether each batch took the typed fast path
    decode = TypedDecoder.decode
    monkeypatch.setattr(TypedDecoder, "decode", lambda self, data: taken.append(r := decode(self, data)) or r)

    def plain(e: dict[str, Any]) -> dict[str, Any]:  # no custom fields: the fast path takes the first batch
        return {k: plain(v) if isinstance(v, dict) else v for k, v in e.items() if not k.startswith("cf_")}

    versions = [plain(entry(0)) for _ in range(3)]  # same id, updated_at and resource_version; other bytes
    versions[1]["customer"]["company"] = "Tie Ltd"
    versions[2]["customer"]["phone"] = "+1 555 0100"
    winners = set()
    for typed in (True, False):
        for order in itertools.permutations(versions):
            for pages in ([list(order)], [[e] for e in order]):  # one batch, or one page (and batch) each
                taken.clear()
                sources = [source(f"p{i}.json", export(p)) for i, p in enumerate(pages)]
                result = transform(tmp_path, sources, typed=typed)
                assert bool(taken) is typed and all(taken)
                (row,) = ndjson(result.files["customers"])
                winners.add(json.dumps(row, sort_keys=True))
                assert result.counts["customer"].deduplicated == 2
                assert_balanced(result)
    assert len(winners) == 1, "the winner of a tie depends on neither the order, the pages nor the path"


def test_deleted_records_are_kept_with_their_flag(tmp_path: Path) -> None:
    deleted = entry(2)
    deleted["subscription"]["deleted"] = True
    deleted["customer"]["deleted"] = True
    result = transform(tmp_path, [source("d.json", export([deleted, entry(3)]))])
    assert [s["deleted"] for s in ndjson(result.files["subscriptions"])] == [True, False]
    assert [c["deleted"] for c in ndjson(result.files["customers"])] == [True, False]


# -- epoch units -------------------------------------------------------------------------------------


def scaled_sample(factor: int, which: Callable[[int], bool] = lambda i: True) -> list[dict[str, Any]]:
    entries = copy.deepcopy(ENTRIES)
    for i, e in enumerate(entries):
        if which(i):
            scale_epochs(e["subscription"], SUBSCRIPTION_EPOCH_FIELDS, factor)
            scale_epochs(e["customer"], CUSTOMER_EPOCH_FIELDS, factor)
    return entries


@pytest.mark.parametrize(
    ("unit", "factor", "which"),
    [
        ("ms", 1000, lambda i: True),
        ("us", 1_000_000, lambda i: True),
        ("auto", 1000, lambda i: i % 2 == 0),  # half the entries in ms (13 digits), half in s
        ("auto", 1_000_000, lambda i: i % 3 == 0),
    ],
    ids=["ms", "us", "auto-s-and-ms", "auto-s-and-us"],
)
def test_epoch_units_give_the_same_rows(
    tmp_path: Path, unit: str, factor: int, which: Callable[[int], bool]
) -> None:
    entries = scaled_sample(factor, which)
    assert entries != ENTRIES
    expected = transform(tmp_path, [source("s.json", SAMPLE_BYTES)])
    result = transform(tmp_path, [source("x.json", export(entries))], unit=unit)
    assert result.quarantined == 0
    for name in ("customers", "subscriptions"):
        assert ndjson(result.files[name]) == ndjson(expected.files[name]), name
    # resource_version is milliseconds but never converted, whatever the unit
    rows = ndjson(result.files["subscriptions"])
    assert [r["resource_version"] for r in rows] == [e["subscription"]["resource_version"] for e in ENTRIES]


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_seconds_read_in_a_smaller_unit_are_quarantined_not_loaded_as_1970(tmp_path: Path, unit: str) -> None:
    result = transform(tmp_path, [source("s.json", SAMPLE_BYTES)], unit=unit)
    assert ndjson(result.files["customers"]) == ndjson(result.files["subscriptions"]) == []
    assert result.reasons == Counter({"epoch_out_of_range": 40})
    assert_balanced(result)


def test_auto_detects_only_13_digits_as_milliseconds(tmp_path: Path) -> None:
    twelve, fourteen, thirteen = entry(0), entry(1), entry(2)
    twelve["subscription"]["created_at"] *= 100  # 12 digits: ambiguous
    fourteen["subscription"]["created_at"] *= 10_000  # 14 digits: ambiguous
    thirteen["subscription"]["created_at"] *= 1000
    result = transform(tmp_path, [source("a.json", export([twelve, fourteen, thirteen]))], unit="auto")
    rejects = ndjson(result.files["rejects"])
    assert [(r["record_index"], r["reason_code"]) for r in rejects] == [
        (0, "epoch_out_of_range"),
        (1, "epoch_out_of_range"),
    ]
    (row,) = ndjson(result.files["subscriptions"])
    assert parse_ts(row["created_at"]) == ts(ENTRIES[2]["subscription"]["created_at"])


# -- quarantine --------------------------------------------------------------------------------------

# (edit of a sample entry, entity rejected, reason code, field) -- a bad-record file with a known outcome
BAD_RECORDS: list[tuple[str, Callable[[dict[str, Any]], Any], str, str]] = [
    ("missing id", lambda e: e["subscription"].pop("id"), "subscription", "missing_id"),
    ("blank id", lambda e: e["customer"].update(id="  "), "customer", "missing_id"),
    ("ms in a seconds field (year 58000)",
     lambda e: e["subscription"].update(created_at=e["subscription"]["created_at"] * 1000),
     "subscription", "epoch_out_of_range"),
    ("before 2000", lambda e: e["customer"].update(created_at=12), "customer", "epoch_out_of_range"),
    ("non-integer epoch", lambda e: e["subscription"].update(updated_at=1717658346.5),
     "subscription", "epoch_not_integer"),
    ("epoch as a string", lambda e: e["customer"].update(updated_at="1717658346"),
     "customer", "epoch_not_integer"),
    ("wrong type", lambda e: e["subscription"].update(mrr="lots"), "subscription", "wrong_type"),
    ("nested wrong type", lambda e: e["subscription"]["subscription_items"][0].update(quantity=True),
     "subscription", "wrong_type"),
    ("null customer", lambda e: e.update(customer=None), "customer", "null_customer"),
    ("over-long string", lambda e: e["customer"].update(email="x" * 71 + "@example.com"),
     "customer", "string_too_long"),
    ("customer mismatch", lambda e: e["subscription"].update(customer_id="someone_else"),
     "subscription", "customer_mismatch"),
]  # fmt: skip


def bad_record_file() -> tuple[list[Any], list[tuple[int, str, str | None, str]]]:
    """Good sample entries interleaved with one bad record per rule, and the expected rejects."""
    entries: list[Any] = []
    expected: list[tuple[int, str, str | None, str]] = []
    for n, (_, edit, entity, reason) in enumerate(BAD_RECORDS):
        entries.append(entry(n))  # a good one
        bad = entry(n + 1)
        record = bad.get(entity)
        record_id = record.get("id") if isinstance(record, dict) else None
        if reason == "null_customer":
            record_id = bad["subscription"]["customer_id"]
        edit(bad)
        if reason == "missing_id":
            record_id = None
        expected.append((len(entries), entity, record_id, reason))
        entries.append(bad)
    entries.append(["not", "an", "object"])
    expected.append((len(entries) - 1, "entry", None, "wrong_type"))
    return entries, expected


def test_bad_record_file_gives_one_known_reject_per_record(tmp_path: Path) -> None:
    entries, expected = bad_record_file()
    result = transform(tmp_path, [source("bad.json", export(entries))])
    rejects = ndjson(result.files["rejects"])
    assert [(r["record_index"], r["entity"], r["record_id"], r["reason_code"]) for r in rejects] == expected
    assert [f["name"] for f in QUARANTINE_SCHEMA] == list(rejects[0])
    for r in rejects:
        assert r["source"] == "bad.json"
        assert r["load_id"] == "load-1"
        assert parse_ts(r["rejected_at"]) == NOW
        assert r["message"]
        raw = entries[r["record_index"]]
        if r["entity"] == "entry":
            assert r["raw_record"] == raw
        elif r["reason_code"] == "null_customer":
            assert r["raw_record"] is None
        else:
            assert r["raw_record"] == raw[r["entity"]]
    by_reason = Counter(reason for *_, reason in expected)
    assert result.reasons == by_reason
    summary = result.summary()
    assert summary["quarantined"] == {"total": len(expected), "by_reason": dict(by_reason.most_common())}
    subs_rejected = sum(1 for e in expected if e[1] == "subscription")
    assert summary["counts"]["subscription"] == {
        "read": len(entries) - 1, "loaded": len(entries) - 1 - subs_rejected,
        "deduplicated": 0, "quarantined": subs_rejected,
    }  # fmt: skip
    assert summary["counts"]["entry"]["read"] == summary["counts"]["entry"]["quarantined"] == 1
    assert_balanced(result)


def test_rejects_of_later_pages_name_their_file_and_index(tmp_path: Path) -> None:
    bad = entry(4)
    bad["subscription"]["mrr"] = "lots"
    result = transform(
        tmp_path,
        [source("p1.json", export([entry(0), entry(1)])), source("p2.json", export([entry(2), bad]))],
    )
    (reject,) = ndjson(result.files["rejects"])
    assert (reject["source"], reject["record_index"], reject["record_id"]) == (
        "p2.json",
        1,
        bad["subscription"]["id"],
    )


# -- schema drift, next_offset, progress ----------------------------------------------------------------


def test_unknown_and_custom_fields_are_kept_and_reported(tmp_path: Path) -> None:
    drifted = entry(0)
    drifted["subscription"]["brand_new_field"] = {"a": 1}
    drifted["subscription"]["subscription_items"][1]["usage_tier"] = "gold"
    drifted["subscription"]["cf_region"] = "EMEA"
    drifted["customer"]["cf_tier"] = "vip"
    drifted["customer"]["billing_address"]["county"] = "Dublin"
    result = transform(tmp_path, [source("d.json", export([drifted]))])
    (sub,) = ndjson(result.files["subscriptions"])
    (cust,) = ndjson(result.files["customers"])
    assert sub["extra_fields"] == {"brand_new_field": {"a": 1}, "subscription_items[1].usage_tier": "gold"}
    assert sub["custom_fields"] == {"cf_region": "EMEA", **{
        k: v for k, v in ENTRIES[0]["subscription"].items() if k.startswith("cf_")
    }}  # fmt: skip
    assert "usage_tier" not in sub["subscription_items"][1]
    assert cust["custom_fields"] == {"cf_tier": "vip"}
    assert cust["extra_fields"] == {"billing_address.county": "Dublin"}
    assert result.unknown_fields == {
        "brand_new_field",
        "subscription_items[].usage_tier",
        "billing_address.county",
    }
    assert result.summary()["unknown_fields"] == sorted(result.unknown_fields)


@pytest.mark.parametrize(
    ("offsets", "raw", "parsed"),
    [
        ([None], None, None),
        (['["1","2"]', None], None, None),  # the last page is the final one: the export is complete
        (['["1719562584000","40000719"]'], '["1719562584000","40000719"]', ["1719562584000", "40000719"]),
        (['["1","2"]', '["3","4"]'], '["3","4"]', ["3", "4"]),
        (["opaque"], "opaque", None),
    ],
)
def test_next_offset_is_returned_raw_and_parsed(
    tmp_path: Path, offsets: list[str | None], raw: str | None, parsed: list[str] | None
) -> None:
    sources = [source(f"p{i}.json", export([entry(i)], o)) for i, o in enumerate(offsets)]
    next_offset = transform(tmp_path, sources).summary()["next_offset"]
    assert (next_offset["raw"], next_offset["parsed"]) == (raw, parsed)
    assert next_offset["by_source"] == {f"p{i}.json": o for i, o in enumerate(offsets) if o is not None}


def test_progress_is_reported(tmp_path: Path) -> None:
    seen: list[Progress] = []
    sources = [source("p1.json", SAMPLE_BYTES), source("p2.json", SAMPLE_BYTES)]
    transform(tmp_path, sources, progress=seen.append, progress_interval=0.0)
    # a report after every batch of entries the reader cuts: the last of each file counts all its entries
    assert [p.source for p in seen] == sorted(p.source for p in seen)
    assert {p.source: p.entries for p in seen} == {"p1.json": 20, "p2.json": 40}
    assert all(a.entries < b.entries for a, b in itertools.pairwise(seen))
    assert all(a.bytes_read <= b.bytes_read for a, b in itertools.pairwise(seen))
    assert seen[-1].bytes_read <= 2 * len(SAMPLE_BYTES)
    assert all(p.mb == p.bytes_read / 1e6 and p.mb_per_s >= 0 for p in seen)
    quiet: list[Progress] = []
    transform(tmp_path, sources, progress=quiet.append, progress_interval=3600.0)
    assert quiet == []


# -- determinism and bad files ----------------------------------------------------------------------


def test_digest_depends_on_the_data_only(tmp_path: Path) -> None:
    a = transform(tmp_path, [source("a.json", SAMPLE_BYTES)])
    b = transform(tmp_path, [source("b.json", SAMPLE_BYTES)])
    edited = copy.deepcopy(ENTRIES)
    edited[5]["subscription"]["mrr"] += 1
    c = transform(tmp_path, [source("a.json", export(edited))])
    assert a.digest == b.digest
    assert c.digest != a.digest


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (SAMPLE_BYTES[: len(SAMPLE_BYTES) // 2], "truncated"),
        (b"", "empty"),
        (b"[]", "root must be a JSON object"),
        (b"\xef\xbb\xbf" + SAMPLE_BYTES, "BOM"),
        (SAMPLE_BYTES.replace(b'"mrr": 288600', b'"mrr": NaN', 1), "NaN"),
        (SAMPLE_BYTES.replace(b'"mrr": 288600', b'"mrr": 288600, "mrr": 1', 1), "duplicate key"),
        (SAMPLE_BYTES.replace(b'"mrr": 288600', b'"mrr": 92233720368547758070', 1), "64-bit"),
    ],
    ids=["truncated", "empty", "wrong-root", "bom", "nan", "duplicate-key", "huge-integer"],
)
def test_a_bad_page_fails_the_whole_batch_with_file_and_position(
    tmp_path: Path, data: bytes, phrase: str
) -> None:
    assert data != SAMPLE_BYTES
    with pytest.raises(SourceFormatError) as info:
        transform(tmp_path, [source("good.json", SAMPLE_BYTES), source("bad.json", data)])
    assert info.value.source == "bad.json"
    assert info.value.byte_offset is not None
    assert phrase in str(info.value)
    assert str(info.value).startswith("bad.json:")


# -- the cyclic GC, paused while reading ----------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-on", "gc-off"])
@pytest.mark.parametrize("data", [SAMPLE_BYTES, SAMPLE_BYTES[:-40]], ids=["ok", "truncated"])
def test_the_gc_state_is_restored_after_a_transform(tmp_path: Path, enabled: bool, data: bytes) -> None:
    seen: list[bool] = []

    def opener() -> BinaryIO:
        seen.append(gc.isenabled())
        return io.BytesIO(data)

    before = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        try:
            transform(tmp_path, [("page.json", opener)])
        except SourceFormatError:
            assert data != SAMPLE_BYTES
        assert gc.isenabled() is enabled
        assert seen == [False]  # paused while the file is read
    finally:
        (gc.enable if before else gc.disable)()


@pytest.mark.parametrize(
    ("numbers", "runs"),
    [
        ([], []),
        ([0], [(0, 1)]),
        ([0, 1, 2], [(0, 3)]),
        ([0, 2, 3, 7], [(0, 1), (2, 4), (7, 8)]),
        ([5, 6], [(5, 7)]),
    ],
)
def test_kept_customer_rows_are_copied_in_runs(numbers: list[int], runs: list[tuple[int, int]]) -> None:
    assert list(_runs(numbers)) == runs
