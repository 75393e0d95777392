"""The benchmark/demo export generator: deterministic, the promised counts, bad records that really are bad."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_incremental.core.chargebee import normalise_entry
from airflow_provider_incremental.local import generate as gen

UTC = timezone.utc
START = datetime(2024, 3, 1, tzinfo=UTC)
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _hourly(out: Path, **kwargs: Any) -> list[dict[str, Any]]:
    args: dict[str, Any] = {"start": START, "hours": 8, "entries_per_hour": 30, "seed": 7} | kwargs
    manifest: list[dict[str, Any]] = gen.write_hourly_exports(out, **args)
    return manifest


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_export_is_deterministic_and_valid(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    stats = gen.write_export(a, entries=60, seed=3)
    gen.write_export(b, entries=60, seed=3)
    gen.write_export(c, entries=60, seed=4)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    doc = json.loads(a.read_bytes())
    assert stats == {"entries": 60, "customers": stats["customers"], "bytes": a.stat().st_size}
    assert stats["customers"] < 60  # customers repeat across their subscriptions
    assert json.loads(doc["next_offset"])[0].isdigit()
    assert any("card" in e for e in doc["list"]) and not all("card" in e for e in doc["list"])
    for index, entry in enumerate(doc["list"]):
        sub = entry["subscription"]
        assert sub["resource_version"] // 1000 == sub["updated_at"]
        assert sub["customer_id"] == entry["customer"]["id"]
        assert normalise_entry(entry, index, unit="s", now=NOW)[2] == []


def test_export_by_size_and_pretty(tmp_path: Path) -> None:
    compact, pretty = tmp_path / "compact.json", tmp_path / "pretty.json"
    stats = gen.write_export(compact, size_mb=0.2)
    assert 200_000 <= compact.stat().st_size < 210_000
    gen.write_export(pretty, entries=stats["entries"], pretty=True)
    assert json.loads(pretty.read_bytes()) == json.loads(compact.read_bytes())
    assert pretty.read_bytes().startswith(b'{\n  "list": [\n    {\n      "subscription": {\n')
    with pytest.raises(ValueError, match="exactly one"):
        gen.write_export(compact)


def test_hourly_exports_are_deterministic(tmp_path: Path) -> None:
    assert _hourly(tmp_path / "a") == _hourly(tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    _hourly(tmp_path / "c", seed=8)
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_hourly_exports_have_the_promised_records(tmp_path: Path) -> None:
    manifest = _hourly(tmp_path, bad_per_hour=2, late_per_hour=1)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert [h["file"] for h in manifest] == [f"exports/20240301T{h:02d}.json" for h in range(8)]
    seen: set[str] = set()
    reasons: set[str] = set()
    for hour_index, hour in enumerate(manifest):
        t0 = int(datetime.fromisoformat(hour["interval_start"]).timestamp())
        entries = json.loads((tmp_path / hour["file"]).read_bytes())["list"]
        subs = {e["subscription"].get("id"): e["subscription"] for e in entries}
        assert len(entries) == hour["entries"] == 30
        assert hour["new"] + hour["updates"] + hour["late"] + hour["deleted"] + hour["bad"] == 30
        assert hour["bad"] == len(hour["bad_records"]) == 2
        assert hour["late"] == len(hour["late_ids"]) == (1 if hour_index else 0)
        assert hour["deleted"] == len(hour["deleted_ids"])
        if hour_index:
            assert hour["updates"] > 0
        for late_id in hour["late_ids"]:  # updated in the previous hour, only in this file
            assert t0 - 3600 <= subs[late_id]["updated_at"] < t0
            assert late_id not in seen
        for deleted_id in hour["deleted_ids"]:
            assert subs[deleted_id]["deleted"] is True and deleted_id in seen
        for change in hour["status_changes"]:
            assert subs[change["id"]]["status"] == change["status"] and change["id"] in seen
        for sub in subs.values():  # every good record's change lies in its hour (late ones just before)
            if sub.get("id") not in hour["late_ids"]:
                assert t0 <= sub["updated_at"] < t0 + 3600
        assert [e["subscription"]["updated_at"] for e in entries] == sorted(
            e["subscription"]["updated_at"] for e in entries
        )
        seen |= {sid for sid in subs if sid}
        reasons |= {b["reason"] for b in hour["bad_records"]}
    assert reasons == set(gen.REASON_CODES)  # 8 hours x 2 bad records cycle through all of them
    assert sum(h["deleted"] for h in manifest) > 0
    assert any(h["status_changes"] for h in manifest)
    assert manifest[-1]["cumulative"]["subscriptions"] <= len(seen)


def test_bad_records_give_their_reason_and_good_ones_none(tmp_path: Path) -> None:
    manifest = _hourly(tmp_path, bad_per_hour=3)
    for hour in manifest:
        entries = json.loads((tmp_path / hour["file"]).read_bytes())["list"]
        bad = {b["index"]: b for b in hour["bad_records"]}
        subscriptions, customers, quarantined = set(), set(), 0
        for index, entry in enumerate(entries):
            customer, subscription, rejects = normalise_entry(entry, index, unit="s", now=NOW)
            got = [(r.entity, r.reason_code, r.field, r.record_id) for r in rejects]
            claim = bad.get(index)
            assert got == (
                [(claim["entity"], claim["reason"], claim["field"], claim["record_id"])] if claim else []
            )
            quarantined += len(rejects)
            if subscription is not None:
                subscriptions.add(subscription["id"])
            if customer is not None:
                customers.add(customer["id"])
        assert hour["expected"] == {
            "subscriptions_loaded": len(subscriptions),
            "customers_loaded": len(customers),
            "quarantined": quarantined,
        }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": datetime(2024, 3, 1)}, "timezone-aware"),
        ({"start": datetime(2024, 3, 1, 0, 30, tzinfo=UTC)}, "on the hour"),
        ({"entries_per_hour": 3}, "entries_per_hour"),
    ],
)
def test_hourly_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _hourly(tmp_path, **kwargs)
