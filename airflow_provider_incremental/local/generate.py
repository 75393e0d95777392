"""Deterministic generator of Chargebee-format list exports, for the benchmark and for the demo.

An export is ``{"list": [{"subscription": {...}, "customer": {...}, "card": {...}?}, ...],
"next_offset": "[\\"...\\",\\"...\\"]"}`` (see ``chargebee-format.md``). Records look like the sample
``tests/data/small.json``: subscription items, coupons, discounts, contract terms, addresses, ``cf_*`` custom
fields; integer epoch seconds; ``resource_version = updated_at * 1000 + ms``; a customer repeated in the
entries of its subscriptions; a card on some entries. The same seed always gives the same bytes.

Two uses:

* :func:`write_export` writes one export of about ``size_mb`` MB (or ``entries`` entries), streaming: memory
  stays small whatever the size. Every record is valid.
* :func:`write_hourly_exports` writes one export per hour (``exports/YYYYMMDDTHH.json``) with new
  subscriptions, updates of earlier ones (status changes, cancellations), late records (``updated_at`` in the
  previous hour), soft deletes and bad records with a known reason code, plus ``manifest.json`` saying what
  is where. Every file is checked with the provider's own validation before it is written.

CLI: ``python -m airflow_provider_incremental.local.generate export OUT.json --size-mb 100`` or
``python -m airflow_provider_incremental.local.generate hourly OUT_DIR --start 2024-03-01T00:00:00+00:00 --hours 3``.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, BinaryIO

import orjson

Row = dict[str, Any]

UTC = timezone.utc
DAY = 86_400
HOUR = 3_600
#: the reason codes of the bad records, in the order the hourly generator cycles through them
REASON_CODES = (
    "missing_id",
    "epoch_out_of_range",
    "wrong_type",
    "null_customer",
    "epoch_not_integer",
    "string_too_long",
    "customer_mismatch",
)
#: which record of the entry each reason rejects (the other one still loads)
REASON_ENTITY = {
    "missing_id": "subscription",
    "epoch_out_of_range": "subscription",
    "wrong_type": "subscription",
    "null_customer": "customer",
    "epoch_not_integer": "subscription",
    "string_too_long": "customer",
    "customer_mismatch": "subscription",
}
LATE_SECONDS = 600  # a late record's updated_at lies in the last 10 minutes of the previous hour

_BENCH_START = int(datetime(2022, 1, 1, tzinfo=UTC).timestamp())
_ID_CHARS = string.ascii_letters + string.digits
_PERIOD = {"month": 30 * DAY, "year": 365 * DAY}

_FIRST = ("Aisha", "Mary", "Dmitri", "Emily", "Liam", "Sofia", "Kenji", "Priya", "Lucas", "Chloe",
          "Mateo", "Zoë", "Seán", "Ingrid", "Omar", "Hannah", "Yuki", "Carlos", "Fatima", "Noah")  # fmt: skip
_LAST = ("Jackson", "McDonald", "Sharma", "Núñez", "O'Brien", "Müller", "García", "Kowalski", "Nguyen",
         "Smith", "Okafor", "Rossi", "Dubois", "Tanaka", "Andersson", "Patel", "Byrne", "Silva", "Cohen")  # fmt: skip
_COMPANIES = ("Quantumworks Technologies", "Pixelplus Solutions", "True North Analytics",
              'The "Best" Widgets Ltd', "Bluefin Logistics", "Greenleaf Studio", "Northwind Traders",
              "Acme Robotics", "Brightpath Learning", "Ironclad Security", "Lumen Health", "Harbour & Finch")  # fmt: skip
_COUNTRIES = (  # country, dialling code, cities, currency
    ("IE", "353", ("Dublin", "Cork", "Galway"), "EUR"),
    ("US", "1", ("Boston", "Austin", "Seattle", "New York"), "USD"),
    ("GB", "44", ("London", "Manchester", "Leeds"), "GBP"),
    ("DE", "49", ("Berlin", "München", "Hamburg"), "EUR"),
    ("FR", "33", ("Paris", "Lyon"), "EUR"),
    ("ES", "34", ("Madrid", "Barcelona"), "EUR"),
    ("AU", "61", ("Melbourne", "Sydney"), "AUD"),
)
_STREETS = ("High Street", "Main Street", "Calle Mayor", "Rue de la Paix", "Hauptstraße", "King Street")
_EXCHANGE = {"EUR": 1.0871, "USD": 1.0, "GBP": 1.2713, "AUD": 0.6612}
_PLANS = (("basic", 1900), ("pro", 4900), ("business", 9900))
_ADDONS = (("sso", 1500), ("extra-storage", 500), ("priority-support", 2900))
_COUPONS = ("EDU50", "BLACKFRIDAY30", "WELCOME10", "PARTNER20")
_SIGNUP = ("referral", "organic", "app_store_migration", "partner", "paid_search")
_INDUSTRIES = ("software", "retail", "education", "healthcare", "logistics", "media")
_MANAGERS = ("Anna Byrne", "Tom Reilly", "Grace Lee")
_CANCEL_CODES = ("Not Paid", "No Card", "Too Expensive", "Switched Provider")
_CARD_TYPES = (
    ("visa", "411111", "1111"),
    ("mastercard", "555555", "4444"),
    ("american_express", "378282", "0005"),
)
_STATUSES = ("active", "cancelled", "non_renewing", "paused", "in_trial", "future")
_STATUS_WEIGHTS = (55, 20, 5, 4, 8, 8)


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


class _Records:
    """Builds customers, cards and subscriptions from one seeded random stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def new_id(self) -> str:
        return "".join(self.rng.choices(_ID_CHARS, k=16))

    def version(self, t: int) -> int:
        return t * 1000 + self.rng.randrange(1000)

    def address(self, first: str, last: str, company: str | None, country: tuple[Any, ...], kind: str) -> Row:
        r = self.rng
        code, _, cities, _ = country
        address: Row = {"first_name": first, "last_name": last}
        if company is not None:
            address["company"] = company
        address["line1"] = f"{r.randrange(1, 2000)} {r.choice(_STREETS)}"
        if r.random() < 0.3:
            address["line2"] = f"Suite {r.randrange(100, 999)}"
        address.update(
            city=r.choice(cities),
            country=code,
            zip=f"{r.randrange(1000, 99999):05d}",
            validation_status="not_validated",
            object=kind,
        )
        return address

    def customer(self, t: int) -> tuple[Row, Row | None]:
        """Return a customer created at ``t`` and its card (or ``None``)."""
        r = self.rng
        first, last = r.choice(_FIRST), r.choice(_LAST)
        country = r.choice(_COUNTRIES)
        code, dial, _, currency = country
        company = r.choice(_COMPANIES) if r.random() < 0.6 else None
        domain = _ascii(company)[:20] + ".com" if company else "example.org"
        has_card = r.random() < 0.7
        cid = self.new_id()
        c: Row = {
            "id": cid,
            "first_name": first,
            "last_name": last,
            "email": f"{_ascii(first)}.{_ascii(last)}@{domain}",
            "phone": f"+{dial} {r.randrange(1, 10)} {r.randrange(100, 1000)} {r.randrange(1000, 10000)}",
        }
        if company is not None:
            c["company"] = company
        if r.random() < 0.2:
            c["vat_number"] = str(r.randrange(10**8, 10**9))
            c["vat_number_status"] = "not_validated"
        c.update(
            auto_collection="on" if has_card else "off",
            net_term_days=0 if has_card else r.choice((15, 30, 45)),
            allow_direct_debit=False,
            created_at=t,
        )
        if r.random() < 0.7:
            c["created_from_ip"] = (
                f"{r.randrange(11, 224)}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(256)}"
            )
        c.update(taxability="taxable", updated_at=t)
        if r.random() < 0.2:
            c["locale"] = r.choice(("en-IE", "de-DE", "fr-FR", "es-ES"))
        c.update(
            pii_cleared="active",
            channel="web",
            resource_version=self.version(t),
            deleted=False,
            object="customer",
            card_status="valid" if has_card else "no_card",
        )
        card: Row | None = None
        if has_card:
            payment_source = "pm_" + self.new_id()
            c["primary_payment_source_id"] = payment_source
            c["payment_method"] = {
                "object": "payment_method",
                "type": "card",
                "reference_id": "tok_" + self.new_id(),
                "gateway": "chargebee",
                "gateway_account_id": "gw_16CKmRSb2oGddH4",
                "status": "valid",
            }
            card_type, iin, last4 = r.choice(_CARD_TYPES)
            card = {
                "status": "valid",
                "gateway": "chargebee",
                "gateway_account_id": "gw_16CKmRSb2oGddH4",
                "first_name": first,
                "last_name": last,
                "iin": iin,
                "last4": last4,
                "card_type": card_type,
                "funding_type": r.choice(("credit", "debit", "prepaid")),
                "expiry_month": r.randrange(1, 13),
                "expiry_year": datetime.fromtimestamp(t, UTC).year + r.randrange(1, 6),
                "billing_country": code,
                "created_at": t,
                "updated_at": t,
                "resource_version": self.version(t),
                "object": "card",
                "masked_number": "************" + last4,
                "customer_id": cid,
                "payment_source_id": payment_source,
            }
        else:
            c["offline_payment_method"] = "no_preference"
        if r.random() < 0.85:
            c["billing_address"] = self.address(first, last, company, country, "billing_address")
        c.update(promotional_credits=0, refundable_credits=0, excess_payments=0, unbilled_charges=0)
        c["preferred_currency_code"] = currency
        if r.random() < 0.2:
            c["balances"] = [
                {
                    "promotional_credits": 0,
                    "excess_payments": 0,
                    "refundable_credits": 0,
                    "unbilled_charges": 0,
                    "currency_code": currency,
                    "balance_currency_code": currency,
                    "object": "customer_balance",
                }
            ]
        c.update(mrr=0, auto_close_invoices=True)
        if r.random() < 0.4:
            c["cf_account_manager"] = r.choice(_MANAGERS)
            c["cf_industry"] = r.choice(_INDUSTRIES)
        return c, card

    def items(self, currency: str, unit: str, trial_end: int | None) -> list[Row]:
        r = self.rng
        factor, freq = (10, "yearly") if unit == "year" else (1, "monthly")
        plan, price = r.choice(_PLANS)
        quantity = r.randrange(1, 41)
        plan_item: Row = {
            "item_price_id": f"{plan}-{currency}-{freq}",
            "item_type": "plan",
            "quantity": quantity,
            "unit_price": price * factor,
            "amount": quantity * price * factor,
            "free_quantity": 0,
        }
        if trial_end is not None:
            plan_item["trial_end"] = trial_end
        plan_item["object"] = "subscription_item"
        items = [plan_item]
        for name, addon_price in r.sample(_ADDONS, r.choice((0, 0, 1, 1, 2))):
            quantity = r.randrange(1, 4)
            items.append(
                {
                    "item_price_id": f"{name}-{currency}-{freq}",
                    "item_type": "addon",
                    "quantity": quantity,
                    "unit_price": addon_price * factor,
                    "amount": quantity * addon_price * factor,
                    "object": "subscription_item",
                }
            )
        if r.random() < 0.1:
            items.append(
                {
                    "item_price_id": f"onboarding-fee-{currency}",
                    "item_type": "charge",
                    "quantity": 1,
                    "unit_price": 25000,
                    "amount": 25000,
                    "charge_on_event": "subscription_creation",
                    "charge_once": True,
                    "charge_on_option": "on_event",
                    "object": "subscription_item",
                }
            )
        return items

    def subscription(self, customer: Row, created: int, updated: int, status: str) -> Row:
        """Return a subscription of ``customer`` created at ``created``, last changed at ``updated``."""
        r = self.rng
        unit = "year" if r.random() < 0.25 else "month"
        period = _PERIOD[unit]
        currency = customer["preferred_currency_code"]
        sid = self.new_id()
        s: Row = {
            "id": sid,
            "billing_period": 1,
            "billing_period_unit": unit,
            "auto_collection": customer["auto_collection"],
            "customer_id": customer["id"],
            "status": status,
        }
        trial_end = None
        if status == "future":
            s["start_date"] = created + r.randrange(1, 30) * DAY
            s["next_billing_at"] = s["start_date"]
        else:
            activated = created
            if status == "in_trial" or (updated - created > 15 * DAY and r.random() < 0.3):
                trial_end = created + 14 * DAY
                s["trial_start"] = created
                s["trial_end"] = trial_end
                activated = trial_end
            event = max(activated, updated - r.randrange(0, 60))  # when it was cancelled / paused
            start = created if status == "in_trial" else activated + (event - activated) // period * period
            end = (trial_end or 0) if status == "in_trial" else start + period - 1
            if status == "cancelled":
                end = max(start, event - 1)
            s["current_term_start"] = start
            s["current_term_end"] = end
            if status in ("active", "in_trial"):
                s["next_billing_at"] = end + 1
            s["started_at"] = created
            if status != "in_trial":
                s["activated_at"] = activated
            if status == "cancelled":
                s["cancelled_at"] = event
                if r.random() < 0.5:
                    s["cancel_reason_code"] = r.choice(_CANCEL_CODES)
            elif status == "non_renewing":
                s["cancelled_at"] = end + 1
                s["cancel_schedule_created_at"] = event
                s["remaining_billing_cycles"] = 0
            elif status == "paused":
                s["pause_date"] = event
        if r.random() < 0.7:
            s["created_from_ip"] = customer.get("created_from_ip", "173.241.241.200")
        s.update(
            created_at=created,
            updated_at=updated,
            has_scheduled_changes=False,
            channel="web",
            resource_version=self.version(updated),
            deleted=False,
            object="subscription",
            currency_code=currency,
        )
        items = self.items(currency, unit, trial_end)
        s["subscription_items"] = items
        if r.random() < 0.12:
            coupon: Row = {"coupon_id": r.choice(_COUPONS), "applied_count": r.randrange(1, 13)}
            if r.random() < 0.5:
                coupon["apply_till"] = created + 365 * DAY
            coupon["object"] = "coupon"
            s["coupons"] = [coupon]
        if r.random() < 0.08:
            s["discounts"] = [
                {
                    "id": "disc_" + self.new_id(),
                    "invoice_name": "Loyalty discount",
                    "type": "percentage",
                    "percentage": r.choice((5.0, 10.0, 12.5, 20.0)),
                    "duration_type": "forever",
                    "included_in_mrr": False,
                    "apply_on": "invoice_amount",
                    "created_at": created,
                    "applied_count": r.randrange(0, 13),
                    "index": 0,
                    "object": "discount",
                }
            ]
        if unit == "year" and r.random() < 0.5:
            s["contract_term"] = {
                "id": "ct_" + self.new_id(),
                "status": "active",
                "contract_start": created,
                "contract_end": created + 365 * DAY - 1,
                "billing_cycle": 1,
                "action_at_term_end": r.choice(("renew", "evergreen", "cancel")),
                "total_contract_value": items[0]["amount"],
                "cancellation_cutoff_period": 30,
                "created_at": created,
                "subscription_id": sid,
                "remaining_billing_cycles": 0,
                "object": "contract_term",
            }
        if items[-1]["item_type"] == "charge":
            s["charged_items"] = [
                {
                    "item_price_id": items[-1]["item_price_id"],
                    "last_charged_at": created,
                    "object": "charged_item",
                }
            ]
        if r.random() < 0.15:
            country = next(
                c for c in _COUNTRIES if c[0] == customer.get("billing_address", {}).get("country", "US")
            )
            s["shipping_address"] = self.address(
                customer["first_name"], customer["last_name"], None, country, "shipping_address"
            )
        if r.random() < 0.05:
            s["meta_data"] = {"feature_flags": ["beta_reports"], "seats_committed": items[0]["quantity"]}
        s.update(
            due_invoices_count=0,
            mrr=0 if status in ("cancelled", "paused") else _mrr(s),
            exchange_rate=_EXCHANGE[currency],
            base_currency_code="USD",
            has_scheduled_advance_invoices=False,
            create_pending_invoices=False,
            auto_close_invoices=True,
        )
        if r.random() < 0.6:
            s["cf_signup_source"] = r.choice(_SIGNUP)
        return s


def _mrr(subscription: Row) -> int:
    total = sum(i["amount"] for i in subscription["subscription_items"] if i["item_type"] != "charge")
    return int(total // 12 if subscription["billing_period_unit"] == "year" else total)


def _entry(subscription: Row, customer: Row | None, card: Row | None) -> Row:
    entry: Row = {"subscription": subscription, "customer": customer}
    if card is not None:
        entry["card"] = card
    return entry


class _ExportWriter:
    """Writes the export envelope around entries given one at a time (compact, or indented like the sample)."""

    def __init__(self, fp: BinaryIO, *, pretty: bool) -> None:
        self._fp = fp
        self._pretty = pretty
        self.entries = 0
        self.bytes = 0
        self._write(b'{\n  "list": [' if pretty else b'{"list":[')

    def _write(self, data: bytes) -> None:
        self._fp.write(data)
        self.bytes += len(data)

    def add(self, entry: Row) -> None:
        if self._pretty:
            body = b"    " + orjson.dumps(entry, option=orjson.OPT_INDENT_2).replace(b"\n", b"\n    ")
            self._write((b",\n" if self.entries else b"\n") + body)
        else:
            self._write((b"," if self.entries else b"") + orjson.dumps(entry))
        self.entries += 1

    def close(self, next_offset: str | None) -> None:
        tail = [b"\n  ]" if self._pretty and self.entries else b"]"]
        if next_offset is not None:
            tail.append(
                (b',\n  "next_offset": ' if self._pretty else b',"next_offset":') + orjson.dumps(next_offset)
            )
        tail.append(b"\n}\n" if self._pretty else b"}\n")
        self._write(b"".join(tail))


def write_export(
    path: str | Path,
    *,
    size_mb: float | None = None,
    entries: int | None = None,
    seed: int = 0,
    pretty: bool = False,
) -> dict[str, int]:
    """Write one list-subscriptions export of about ``size_mb`` MB (10**6 bytes) or exactly ``entries`` entries.

    Streaming: memory stays small whatever the size (a bounded pool of recent customers is reused, so
    customers repeat across their subscriptions). Every record is valid; the file ends with a
    ``next_offset`` (it looks like one page of a longer export). The file is written under a temporary name
    and renamed when complete.

    :param path: the output file.
    :param size_mb: stop after the first entry that takes the file to this size.
    :param entries: write exactly this many entries (give ``size_mb`` or ``entries``, not both).
    :param seed: the random seed; the same seed and size give the same bytes.
    :param pretty: indent like the sample export (about 1.7x bigger for the same entries).
    :return: ``{"entries": ..., "customers": ..., "bytes": ...}`` (distinct customers created).
    """
    if (size_mb is None) == (entries is None):
        raise ValueError("give exactly one of size_mb or entries")
    max_bytes = int(size_mb * 1e6) if size_mb is not None else None
    records = _Records(seed)
    r = records.rng
    pool: list[tuple[Row, Row | None]] = []  # recent customers, reused for later subscriptions
    customers = 0
    t = _BENCH_START
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb", buffering=1 << 20) as fp:
        out = _ExportWriter(fp, pretty=pretty)
        while out.entries < entries if entries is not None else out.bytes < (max_bytes or 0):
            t += r.randrange(1, 60)
            if pool and r.random() < 0.35:
                customer, card = r.choice(pool)
            else:
                customer, card = records.customer(t - r.randrange(0, HOUR))
                customers += 1
                if len(pool) < 2000:
                    pool.append((customer, card))
                else:
                    pool[r.randrange(len(pool))] = (customer, card)
            status = r.choices(_STATUSES, _STATUS_WEIGHTS)[0]
            if status in ("in_trial", "future"):
                updated = t + r.randrange(0, 7 * DAY)
            elif r.random() < 0.3:
                updated = t
            else:
                updated = t + r.randrange(DAY, 200 * DAY)
            out.add(_entry(records.subscription(customer, t, updated, status), customer, card))
        out.close(orjson.dumps([str(t * 1000), str(r.randrange(10**7, 10**8))]).decode())
    tmp.replace(path)
    return {"entries": out.entries, "customers": customers, "bytes": out.bytes}


class _Hourly:
    """The state of the hourly scenario: every subscription and customer so far, and what was loaded."""

    def __init__(self, seed: int) -> None:
        self.records = _Records(seed)
        self.rng = self.records.rng
        self.live: dict[str, tuple[Row, Row, Row | None]] = {}  # subscription id -> (sub, customer, card)
        self.customers: list[tuple[Row, Row | None]] = []  # good customers, for reuse
        self.loaded_subscriptions: set[str] = set()
        self.loaded_customers: set[str] = set()
        self.deleted = 0

    def new(
        self, t: int, earliest: int, status: str | None = None, *, reuse: bool = True
    ) -> tuple[Row, Row, Row | None]:
        """A new subscription created (and last updated) at ``t``, of a new or an earlier customer."""
        r = self.rng
        candidates = [c for c in self.customers if c[0]["created_at"] <= t] if reuse else []
        if candidates and r.random() < 0.3:
            customer, card = r.choice(candidates)
        else:
            customer, card = self.records.customer(max(earliest, t - r.randrange(0, 300)))
        if status is None:
            status = r.choices(("active", "in_trial", "future"), (7, 2, 1))[0]
        return self.records.subscription(customer, t, t, status), customer, card

    def update(self, sub: Row, customer: Row, t: int, hour_start: int) -> str | None:
        """Change ``sub`` at ``t`` (a later hour than its last change); return its new status if it changed."""
        r = self.rng
        old = sub["status"]
        period = _PERIOD[sub["billing_period_unit"]]
        roll = r.random()
        if old in ("in_trial", "future") or (old == "paused" and roll < 0.5):
            sub.pop("start_date", None)
            sub.pop("pause_date", None)
            sub.setdefault("started_at", t)
            if old == "paused":
                sub["resume_date"] = t
            else:
                sub["activated_at"] = t
            sub.update(
                status="active",
                current_term_start=t,
                current_term_end=t + period - 1,
                next_billing_at=t + period,
            )
        elif old == "non_renewing" or (old == "active" and roll < 0.2):
            sub.pop("next_billing_at", None)
            sub.update(
                status="cancelled", cancelled_at=t, current_term_end=max(sub["current_term_start"], t - 1)
            )
            sub["cancel_reason_code"] = r.choice(_CANCEL_CODES)
        elif old == "active" and roll < 0.3:
            sub.pop("next_billing_at", None)
            sub.update(
                status="non_renewing", cancelled_at=sub["current_term_end"] + 1, cancel_schedule_created_at=t
            )
            sub["remaining_billing_cycles"] = 0
        elif old == "active" and roll < 0.35:
            sub.pop("next_billing_at", None)
            sub.update(status="paused", pause_date=t)
        elif old == "active":  # a seat change
            plan = sub["subscription_items"][0]
            plan["quantity"] = max(1, plan["quantity"] + r.choice((-2, -1, 1, 2, 5)))
            plan["amount"] = plan["quantity"] * plan["unit_price"]
        else:  # cancelled or paused: an unpaid invoice
            sub["due_invoices_count"] = sub["due_invoices_count"] + 1
            sub["total_dues"] = sub.get("total_dues", 0) + sub["subscription_items"][0]["amount"]
            sub.setdefault("due_since", t)
        sub["mrr"] = 0 if sub["status"] in ("cancelled", "paused") else _mrr(sub)
        sub["updated_at"] = t
        sub["resource_version"] = self.records.version(t)
        if r.random() < 0.2 and customer["updated_at"] < hour_start:  # the customer changes too
            changed = r.randrange(hour_start, hour_start + HOUR)
            customer["phone"] = customer["phone"][:-4] + f"{r.randrange(1000, 10000)}"
            customer["updated_at"] = changed
            customer["resource_version"] = self.records.version(changed)
        return sub["status"] if sub["status"] != old else None

    def bad(self, reason: str, t: int) -> tuple[Row, str]:
        """A new entry at ``t`` with one problem that gives ``reason``; return it and the bad field's path."""
        sub, customer, card = self.new(t, t - 300, "active", reuse=False)
        entry = _entry(sub, customer, card)
        field = "id"
        if reason == "missing_id":
            del sub["id"]
        elif reason == "epoch_out_of_range":  # milliseconds in a seconds field
            field = "current_term_end"
            sub[field] *= 1000
        elif reason == "wrong_type":  # a quantity written as a string
            field = "subscription_items[0].quantity"
            sub["subscription_items"][0]["quantity"] = str(sub["subscription_items"][0]["quantity"])
        elif reason == "null_customer":
            field = "customer"
            entry = _entry(sub, None, None)
        elif reason == "epoch_not_integer":
            field = "activated_at"
            sub[field] += 0.5
        elif reason == "string_too_long":  # Chargebee allows 70 characters
            field = "email"
            local = customer["email"].split("@")[0]
            customer[field] = (
                f"{local}.accounts-payable.invoices@billing-department.{_ascii(customer['last_name'])}.example.com"
            )
        elif reason == "customer_mismatch":
            field = "customer_id"
            sub[field] = self.customers[0][0]["id"] if self.customers else self.records.new_id()
        else:
            raise ValueError(f"unknown reason code {reason!r}; known: {', '.join(REASON_CODES)}")
        return entry, field

    def hour(
        self, index: int, t0: int, *, entries: int, bad: int, late: int
    ) -> tuple[list[Row], dict[str, Any]]:
        """Return the entries of the hour starting at ``t0`` (sorted by ``updated_at``) and its manifest."""
        r = self.rng
        late = late if index else 0  # the first hour has no previous hour
        deleted = 1 if index and len(self.live) > 1 and r.random() < 0.5 else 0
        remaining = entries - bad - late - deleted
        updates = min(len(self.live) - deleted, remaining * 3 // 10) if index else 0
        items: list[tuple[int, str, Row, dict[str, Any] | None]] = []  # (updated_at, id, entry, bad record)
        changes: list[dict[str, str]] = []
        chosen = r.sample(sorted(self.live), updates + deleted)
        for sid in chosen[:updates]:
            sub, customer, card = self.live[sid]
            t = r.randrange(t0, t0 + HOUR)
            status = self.update(sub, customer, t, t0)
            if status is not None:
                changes.append({"id": sid, "status": status})
            items.append((t, sid, _entry(sub, customer, card), None))
        deleted_ids = chosen[updates:]
        for sid in deleted_ids:
            sub, customer, card = self.live.pop(sid)
            t = r.randrange(t0, t0 + HOUR)
            sub.update(updated_at=t, resource_version=self.records.version(t), deleted=True)
            items.append((t, sid, _entry(sub, customer, card), None))
        new: list[tuple[Row, Row, Row | None]] = []
        for t in sorted(r.randrange(t0, t0 + HOUR) for _ in range(remaining - updates)):
            new.append(self.new(t, t0))
            self._remember(*new[-1])
        late_records = [
            self.new(r.randrange(t0 - LATE_SECONDS, t0), t0 - LATE_SECONDS, reuse=False) for _ in range(late)
        ]
        for sub, customer, card in late_records:
            self._remember(sub, customer, card)
        for sub, customer, card in new + late_records:
            items.append((sub["updated_at"], sub["id"], _entry(sub, customer, card), None))
        for k in range(bad):
            reason = REASON_CODES[(index * bad + k) % len(REASON_CODES)]
            t = r.randrange(t0, t0 + HOUR)
            entry, field = self.bad(reason, t)
            if reason == "null_customer":
                record_id = entry["subscription"]["customer_id"]
            elif REASON_ENTITY[reason] == "customer":
                record_id = entry["customer"]["id"]
            else:
                record_id = entry["subscription"].get("id")
            info = {"reason": reason, "entity": REASON_ENTITY[reason], "field": field, "record_id": record_id}
            items.append((t, "", entry, info))
        items.sort(key=lambda item: (item[0], item[1]))

        bad_records = []
        hour_subscriptions: set[str] = set()
        hour_customers: set[str] = set()
        for i, (_, _, entry, claim) in enumerate(items):
            if claim is not None:
                bad_records.append({"index": i, **claim})
            rejected = claim["entity"] if claim is not None else None
            if rejected != "subscription":
                hour_subscriptions.add(entry["subscription"]["id"])
            if rejected != "customer":
                hour_customers.add(entry["customer"]["id"])
        self.loaded_subscriptions |= hour_subscriptions
        self.loaded_customers |= hour_customers
        self.deleted += len(deleted_ids)
        start = datetime.fromtimestamp(t0, UTC)
        manifest = {
            "file": f"exports/{start:%Y%m%dT%H}.json",
            "interval_start": start.isoformat(),
            "interval_end": (start + timedelta(hours=1)).isoformat(),
            "entries": len(items),
            "new": remaining - updates,
            "updates": updates,
            "late": late,
            "deleted": len(deleted_ids),
            "bad": bad,
            "late_ids": [sub["id"] for sub, _, _ in late_records],
            "deleted_ids": deleted_ids,
            "status_changes": changes,
            "bad_records": bad_records,
            "expected": {
                "subscriptions_loaded": len(hour_subscriptions),
                "customers_loaded": len(hour_customers),
                "quarantined": len(bad_records),
            },
            "cumulative": {
                "subscriptions": len(self.loaded_subscriptions),
                "customers": len(self.loaded_customers),
                "deleted": self.deleted,
            },
        }
        return [entry for _, _, entry, _ in items], manifest

    def _remember(self, sub: Row, customer: Row, card: Row | None) -> None:
        self.live[sub["id"]] = (sub, customer, card)
        if all(c is not customer for c, _ in self.customers):
            self.customers.append((customer, card))


def write_hourly_exports(
    out_dir: str | Path,
    *,
    start: datetime,
    hours: int,
    entries_per_hour: int,
    seed: int = 0,
    bad_per_hour: int = 1,
    late_per_hour: int = 1,
    pretty: bool = True,
) -> list[dict[str, Any]]:
    """Write one export per hour, ``out_dir/exports/YYYYMMDDTHH.json`` (named after the hour's start).

    Each hour has ``entries_per_hour`` entries, sorted by ``updated_at``: updates of earlier subscriptions
    (about 30% from the second hour on: seat changes, trials converting, cancellations, pauses), sometimes one
    soft delete (``deleted: true``), ``late_per_hour`` late records (new subscriptions whose ``updated_at``
    lies in the last 10 minutes of the previous hour; none in the first hour), ``bad_per_hour`` bad records
    (cycling through :data:`REASON_CODES`; the record named by ``entity`` is rejected, the other one of the
    entry loads) and new subscriptions for the rest. Customers repeat across their subscriptions; a customer
    copy shows the customer as of the end of the hour. Each file is checked with
    ``airflow_provider_incremental.core.chargebee.normalise_entry`` before it is written.

    :param out_dir: where ``exports/`` and ``manifest.json`` go.
    :param start: the first hour's start, tz-aware and on the hour.
    :param hours: how many hourly files.
    :param entries_per_hour: entries per file, at least ``bad_per_hour + late_per_hour + 2``.
    :param seed: the random seed; the same arguments give the same bytes.
    :param pretty: indent the files like the sample export.
    :return: the manifest, one dict per hour (also written to ``out_dir/manifest.json``): ``file``,
        ``interval_start``/``interval_end``, counts (``entries``, ``new``, ``updates``, ``late``,
        ``deleted``, ``bad``), ``late_ids``, ``deleted_ids``, ``status_changes``, ``bad_records``
        (``index``, ``reason``, ``entity``, ``field``, ``record_id``), ``expected`` (rows the transform
        loads from this file: ``subscriptions_loaded``, ``customers_loaded`` after dedup, ``quarantined``)
        and ``cumulative`` (distinct ids loaded so far: the target tables' row counts, soft deletes included).
    """
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError(f"start must be timezone-aware, got {start.isoformat()}")
    if start.minute or start.second or start.microsecond:
        raise ValueError(f"start must be on the hour, got {start.isoformat()}")
    if hours < 1 or min(bad_per_hour, late_per_hour) < 0:
        raise ValueError("hours must be >= 1 and bad_per_hour, late_per_hour >= 0")
    if entries_per_hour < bad_per_hour + late_per_hour + 2:
        raise ValueError(
            f"entries_per_hour must be at least bad_per_hour + late_per_hour + 2, got {entries_per_hour}"
        )
    out_dir = Path(out_dir)
    (out_dir / "exports").mkdir(parents=True, exist_ok=True)
    scenario = _Hourly(seed)
    base = int(start.timestamp())
    manifest = []
    for index in range(hours):
        entries, hour = scenario.hour(
            index, base + index * HOUR, entries=entries_per_hour, bad=bad_per_hour, late=late_per_hour
        )
        check_entries(entries, hour["bad_records"])
        with open(out_dir / hour["file"], "wb") as fp:
            out = _ExportWriter(fp, pretty=pretty)
            for entry in entries:
                out.add(entry)
            out.close(None)
        manifest.append(hour)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def check_entries(
    entries: Sequence[Row], bad_records: Sequence[dict[str, Any]], now: datetime | None = None
) -> None:
    """Check with the provider's validation that exactly the bad records are rejected, for their reason.

    :raises AssertionError: naming the first entry whose outcome differs from the claim.
    """
    from airflow_provider_incremental.core.chargebee import normalise_entry

    now = now or datetime.now(UTC)
    claims = {b["index"]: b for b in bad_records}
    for index, entry in enumerate(entries):
        _, _, rejects = normalise_entry(entry, index, unit="s", now=now)
        got = [(r.entity, r.reason_code, r.field, r.record_id) for r in rejects]
        claim = claims.get(index)
        want = [(claim["entity"], claim["reason"], claim["field"], claim["record_id"])] if claim else []
        if got != want:
            raise AssertionError(f"entry {index}: validation gives {got}, the generator claims {want}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="one big valid export (for benchmarks)")
    export.add_argument("path", type=Path)
    size = export.add_mutually_exclusive_group(required=True)
    size.add_argument("--size-mb", type=float, help="about this many MB (10**6 bytes)")
    size.add_argument("--entries", type=int, help="exactly this many entries")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--pretty", action="store_true", help="indent like the sample export")
    hourly = commands.add_parser(
        "hourly", help="hourly exports with new/updated/late/deleted/bad records (demo)"
    )
    hourly.add_argument("out_dir", type=Path)
    hourly.add_argument(
        "--start", type=datetime.fromisoformat, required=True, help="e.g. 2024-03-01T00:00:00+00:00"
    )
    hourly.add_argument("--hours", type=int, default=3)
    hourly.add_argument("--entries-per-hour", type=int, default=40)
    hourly.add_argument("--seed", type=int, default=0)
    hourly.add_argument("--bad-per-hour", type=int, default=1)
    hourly.add_argument("--late-per-hour", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "export":
        stats = write_export(
            args.path, size_mb=args.size_mb, entries=args.entries, seed=args.seed, pretty=args.pretty
        )
        print(
            f"{args.path}: {stats['entries']} entries, {stats['customers']} customers, {stats['bytes'] / 1e6:.1f} MB"
        )
    else:
        manifest = write_hourly_exports(
            args.out_dir,
            start=args.start,
            hours=args.hours,
            entries_per_hour=args.entries_per_hour,
            seed=args.seed,
            bad_per_hour=args.bad_per_hour,
            late_per_hour=args.late_per_hour,
        )
        for hour in manifest:
            reasons = ", ".join(b["reason"] for b in hour["bad_records"])
            print(
                f"{hour['file']}: {hour['entries']} entries ({hour['new']} new, {hour['updates']} updates, "
                f"{hour['late']} late, {hour['deleted']} deleted, {hour['bad']} bad: {reasons or '-'})"
            )
        print(f"manifest: {args.out_dir / 'manifest.json'}")


if __name__ == "__main__":
    main()
