"""The Chargebee export's record model: split, validate, normalise, deduplicate.

An export entry is ``{"subscription": {...}, "customer": {...}, "card": {...}?}`` (list-subscriptions) or
``{"customer": {...}, "card": {...}?}`` (list-customers). :func:`normalise_entry` turns one entry into a
customer row, a subscription row and the rejects, following these rules:

* Every known field is type-checked; epoch-seconds fields (top level and nested, see
  :data:`CUSTOMER_EPOCH_FIELDS` and :data:`SUBSCRIPTION_EPOCH_FIELDS`) become tz-aware UTC datetimes,
  checked by :mod:`.epoch`. ``resource_version`` stays an integer (milliseconds).
* A record with any problem is rejected whole, with one :class:`Reject` naming the first problem and its
  field path (``subscription_items[1].next_billing_at: ...``). The customer and the subscription of an
  entry are judged separately: a bad customer does not reject a good subscription and vice versa.
* Nulls in known fields are treated like omitted fields (Chargebee omits unset fields): NULL columns.
  Integral floats (``1.0``) are accepted where integers are expected (JSON does not tell them apart);
  enum values are not checked (Chargebee adds values over time; a new status must not stop a load).
* String lengths are checked on the top-level fields whose maximum Chargebee documents (``id`` 50,
  ``email`` 70, ...), not inside nested records.
* ``cf_*`` keys go to the JSON column ``custom_fields``; every other unknown key, at the top level or
  inside a nested record, goes to the JSON column ``extra_fields`` under its path (``foo``,
  ``billing_address.foo``, ``subscription_items[0].foo``), so a load with the fixed schema never fails
  and nothing is dropped silently: :func:`unknown_fields` lists them for a schema-drift warning.
* ``card`` is dropped wherever it appears: never copied into rows, rejects or messages.
* A missing customer gives a ``null_customer`` reject, and the subscription still loads: it is complete
  on its own and carries its ``customer_id`` (the customer may come from another entry or file).
  A subscription whose ``customer_id`` differs from the entry's customer ``id`` is rejected
  (``customer_mismatch``); the customer, valid on its own, still loads.

Rows hold only source data; the operator adds lineage columns. Schemas are BigQuery REST API JSON
(lists of ``{"name", "type", "mode", "fields"?, "description"?}``); treat them as read-only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson

from airflow_provider_incremental.core.epoch import UTC, EpochError, epoch_bounds, to_datetime, validate_unit

Row = dict[str, Any]

# Field kinds. A spec maps a field name to (kind, argument): the maximum length for strings (or None),
# the nested spec for records and repeated records, None otherwise.
_STRING, _INT, _EPOCH_S, _BOOL, _FLOAT, _JSON, _RECORD, _REPEATED = range(8)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FieldSpec = tuple[int, Any]
_Spec = dict[str, _FieldSpec]

_BQ_TYPES = {
    _STRING: "STRING",
    _INT: "INT64",
    _EPOCH_S: "TIMESTAMP",
    _BOOL: "BOOLEAN",
    _FLOAT: "FLOAT64",
    _JSON: "JSON",
    _RECORD: "RECORD",
    _REPEATED: "RECORD",
}

_S: _FieldSpec = (_STRING, None)
_I: _FieldSpec = (_INT, None)
_T: _FieldSpec = (_EPOCH_S, None)
_B: _FieldSpec = (_BOOL, None)
_F: _FieldSpec = (_FLOAT, None)
_J: _FieldSpec = (_JSON, None)


def _str(max_length: int) -> _FieldSpec:
    return (_STRING, max_length)


def _record(spec: _Spec) -> _FieldSpec:
    return (_RECORD, spec)


def _repeated(spec: _Spec) -> _FieldSpec:
    return (_REPEATED, spec)


_ADDRESS: _Spec = {
    "first_name": _S, "last_name": _S, "email": _S, "company": _S, "phone": _S,
    "line1": _S, "line2": _S, "line3": _S, "city": _S, "state_code": _S, "state": _S,
    "country": _S, "zip": _S, "validation_status": _S, "index": _I, "object": _S,
}  # fmt: skip

_ACCOUNT_ACCESS: _Spec = {
    "portal_edit_child_subscriptions": _S, "portal_download_child_invoices": _S,
    "portal_edit_subscriptions": _S, "portal_download_invoices": _S,
    "send_subscription_emails": _B, "send_invoice_emails": _B, "send_payment_emails": _B,
}  # fmt: skip

_CUSTOMER_SPEC: _Spec = {
    "id": _str(50), "first_name": _str(150), "last_name": _str(150), "email": _str(70),
    "phone": _str(50), "company": _str(250), "vat_number": _str(20), "vat_number_prefix": _str(10),
    "created_from_ip": _str(50), "exempt_number": _str(100), "locale": _str(50),
    "primary_payment_source_id": _str(40), "backup_payment_source_id": _str(40),
    "invoice_notes": _str(2000), "preferred_currency_code": _str(3), "business_entity_id": _str(50),
    "client_profile_id": _str(50), "active_id": _S, "entity_identifier_scheme": _S,
    "entity_identifier_standard": _S, "object": _S,
    # enums, kept as strings without checking the value
    "auto_collection": _S, "offline_payment_method": _S, "vat_number_status": _S, "taxability": _S,
    "entity_code": _S, "billing_date_mode": _S, "billing_day_of_week": _S,
    "billing_day_of_week_mode": _S, "pii_cleared": _S, "fraud_flag": _S, "card_status": _S,
    "customer_type": _S, "channel": _S, "einvoicing_method": _S,
    "net_term_days": _I, "billing_date": _I, "billing_month": _I,
    "promotional_credits": _I, "refundable_credits": _I, "excess_payments": _I,
    "unbilled_charges": _I, "mrr": _I, "resource_version": _I,
    "created_at": _T, "updated_at": _T, "vat_number_validated_time": _T,
    "allow_direct_debit": _B, "is_location_valid": _B, "auto_close_invoices": _B, "deleted": _B,
    "registered_for_gst": _B, "consolidated_invoicing": _B,
    "business_customer_without_vat_number": _B, "use_default_hierarchy_settings": _B,
    "is_einvoice_enabled": _B,
    "billing_address": _record(_ADDRESS),
    "payment_method": _record({
        "type": _S, "gateway": _S, "gateway_account_id": _S, "status": _S, "reference_id": _S,
        "object": _S,
    }),
    "relationship": _record({"parent_id": _S, "payment_owner_id": _S, "invoice_owner_id": _S}),
    "parent_account_access": _record(_ACCOUNT_ACCESS),
    "child_account_access": _record(_ACCOUNT_ACCESS),
    "contacts": _repeated({
        "id": _S, "first_name": _S, "last_name": _S, "email": _S, "phone": _S, "label": _S,
        "enabled": _B, "send_account_email": _B, "send_billing_email": _B, "object": _S,
    }),
    "balances": _repeated({
        "promotional_credits": _I, "excess_payments": _I, "refundable_credits": _I,
        "unbilled_charges": _I, "currency_code": _S, "balance_currency_code": _S, "object": _S,
    }),
    "referral_urls": _repeated({
        "external_customer_id": _S, "referral_sharing_url": _S, "created_at": _T, "updated_at": _T,
        "referral_campaign_id": _S, "referral_account_id": _S, "referral_external_campaign_id": _S,
        "referral_system": _S, "object": _S,
    }),
    "entity_identifiers": _repeated({"id": _S, "value": _S, "scheme": _S, "standard": _S, "object": _S}),
    "tax_providers_fields": _repeated({"provider_name": _S, "field_id": _S, "field_value": _S, "object": _S}),
    "exemption_details": _J,
    "meta_data": _J,
}  # fmt: skip

_SUBSCRIPTION_SPEC: _Spec = {
    "id": _str(50), "currency_code": _str(3), "customer_id": _str(50), "po_number": _str(100),
    "payment_source_id": _str(40), "created_from_ip": _str(50), "invoice_notes": _str(2000),
    "base_currency_code": _str(3), "cancel_reason_code": _str(100), "business_entity_id": _str(50),
    "plan_id": _str(100), "gift_id": _S, "affiliate_token": _S, "active_id": _S, "object": _S,
    "coupon": _S, "plan_quantity_in_decimal": _S, "plan_unit_price_in_decimal": _S,
    "plan_amount_in_decimal": _S, "plan_free_quantity_in_decimal": _S,
    # enums, kept as strings without checking the value
    "status": _S, "cancel_reason": _S, "billing_period_unit": _S, "trial_end_action": _S,
    "auto_collection": _S, "offline_payment_method": _S, "channel": _S, "free_period_unit": _S,
    "billing_period": _I, "remaining_billing_cycles": _I, "contract_term_billing_cycle_on_renewal": _I,
    "due_invoices_count": _I, "free_period": _I, "net_term_days": _I, "plan_quantity": _I,
    "plan_free_quantity": _I, "mrr": _I, "arr": _I, "total_dues": _I, "plan_unit_price": _I,
    "setup_fee": _I, "plan_amount": _I, "resource_version": _I,
    "exchange_rate": _F,
    "created_at": _T, "updated_at": _T, "started_at": _T, "activated_at": _T, "start_date": _T,
    "trial_start": _T, "trial_end": _T, "current_term_start": _T, "current_term_end": _T,
    "next_billing_at": _T, "cancelled_at": _T, "cancel_schedule_created_at": _T, "pause_date": _T,
    "resume_date": _T, "due_since": _T, "changes_scheduled_at": _T,
    "override_relationship": _B, "has_scheduled_advance_invoices": _B, "has_scheduled_changes": _B,
    "deleted": _B, "create_pending_invoices": _B, "auto_close_invoices": _B,
    "subscription_items": _repeated({
        "item_price_id": _S, "item_type": _S, "quantity": _I, "quantity_in_decimal": _S,
        "metered_quantity": _S, "unit_price": _I, "unit_price_in_decimal": _S, "amount": _I,
        "amount_in_decimal": _S, "current_term_start": _T, "current_term_end": _T,
        "next_billing_at": _T, "last_calculated_at": _T, "billing_period": _I,
        "billing_period_unit": _S, "free_quantity": _I, "free_quantity_in_decimal": _S,
        "trial_end": _T, "billing_cycles": _I, "service_period_days": _I, "charge_on_event": _S,
        "charge_once": _B, "charge_on_option": _S, "proration_type": _S,
        "usage_accumulation_reset_frequency": _S, "object": _S,
    }),
    "item_tiers": _repeated({
        "item_price_id": _S, "starting_unit": _I, "ending_unit": _I, "price": _I,
        "starting_unit_in_decimal": _S, "ending_unit_in_decimal": _S, "price_in_decimal": _S,
        "pricing_type": _S, "package_size": _I, "index": _I, "object": _S,
    }),
    "charged_items": _repeated({"item_price_id": _S, "last_charged_at": _T, "object": _S}),
    "coupons": _repeated({
        "coupon_id": _S, "apply_till": _T, "applied_count": _I, "coupon_code": _S, "object": _S,
    }),
    "discounts": _repeated({
        "id": _S, "invoice_name": _S, "type": _S, "percentage": _F, "amount": _I, "currency_code": _S,
        "duration_type": _S, "period": _I, "period_unit": _S, "included_in_mrr": _B, "apply_on": _S,
        "item_price_id": _S, "created_at": _T, "apply_till": _T, "applied_count": _I,
        "coupon_id": _S, "index": _I, "object": _S,
    }),
    "addons": _repeated({
        "id": _S, "quantity": _I, "unit_price": _I, "amount": _I, "trial_end": _T,
        "remaining_billing_cycles": _I, "quantity_in_decimal": _S, "unit_price_in_decimal": _S,
        "amount_in_decimal": _S, "proration_type": _S, "object": _S,
    }),
    "event_based_addons": _repeated({
        "id": _S, "quantity": _I, "unit_price": _I, "service_period_in_days": _I, "on_event": _S,
        "charge_once": _B, "quantity_in_decimal": _S, "unit_price_in_decimal": _S, "object": _S,
    }),
    "charged_event_based_addons": _repeated({"id": _S, "last_charged_at": _T, "object": _S}),
    "shipping_address": _record(_ADDRESS),
    "contract_term": _record({
        "id": _S, "status": _S, "contract_start": _T, "contract_end": _T, "billing_cycle": _I,
        "action_at_term_end": _S, "total_contract_value": _I, "total_contract_value_before_tax": _I,
        "cancellation_cutoff_period": _I, "created_at": _T, "subscription_id": _S,
        "remaining_billing_cycles": _I, "object": _S,
    }),
    "referral_info": _record({
        "referral_code": _S, "coupon_code": _S, "referrer_id": _S, "external_reference_id": _S,
        "reward_status": _S, "referral_system": _S, "account_id": _S, "campaign_id": _S,
        "external_campaign_id": _S, "friend_offer_type": _S, "referrer_reward_type": _S,
        "notify_referral_system": _S, "destination_url": _S, "post_purchase_widget_enabled": _B,
        "object": _S,
    }),
    "billing_override": _record({
        "max_excess_payment_usage": _I, "max_refundable_credits_usage": _I, "object": _S,
    }),
    "meta_data": _J,
}  # fmt: skip

#: The order in which Chargebee writes the keys of each record (the sample export, then keys only the
#: generator writes, after the key they follow there): the typed decoding declares its Struct fields in it,
#: because msgspec looks a key up from the field after the last one found, and the rows of both paths
#: are written in it. Keys not listed follow in spec order; only the speed depends on this table.
EXPORT_ORDER: dict[str, tuple[str, ...]] = {
    "customer": (
        "id", "first_name", "last_name", "email", "phone", "company", "vat_number", "vat_number_status",
        "auto_collection", "net_term_days", "allow_direct_debit", "created_at", "taxability", "updated_at",
        "pii_cleared", "channel", "resource_version", "deleted", "object", "card_status",
        "offline_payment_method", "billing_address", "promotional_credits", "refundable_credits",
        "excess_payments", "unbilled_charges", "preferred_currency_code", "mrr", "auto_close_invoices",
        "created_from_ip", "primary_payment_source_id", "payment_method", "balances", "locale"
    ),
    "customer.balances": (
        "promotional_credits", "excess_payments", "refundable_credits", "unbilled_charges", "object",
        "currency_code", "balance_currency_code"
    ),
    "customer.billing_address": (
        "first_name", "last_name", "company", "line1", "line2", "city", "country", "zip",
        "validation_status", "object", "state_code", "state"
    ),
    "customer.payment_method": (
        "object", "type", "reference_id", "gateway", "gateway_account_id", "status"
    ),
    "subscription": (
        "id", "billing_period", "billing_period_unit", "auto_collection", "customer_id", "status",
        "current_term_start", "current_term_end", "next_billing_at", "started_at", "activated_at",
        "created_at", "updated_at", "has_scheduled_changes", "channel", "resource_version", "deleted",
        "object", "currency_code", "subscription_items", "due_invoices_count", "mrr", "exchange_rate",
        "base_currency_code", "has_scheduled_advance_invoices", "create_pending_invoices",
        "auto_close_invoices", "trial_start", "trial_end", "contract_term", "cancelled_at",
        "created_from_ip", "cancel_reason_code", "cancel_reason", "charged_items", "due_since",
        "total_dues", "remaining_billing_cycles", "cancel_schedule_created_at", "shipping_address",
        "coupons", "pause_date", "meta_data", "start_date", "discounts"
    ),
    "subscription.charged_items": (
        "item_price_id", "last_charged_at", "object"
    ),
    "subscription.contract_term": (
        "id", "status", "contract_start", "contract_end", "billing_cycle", "action_at_term_end",
        "total_contract_value", "cancellation_cutoff_period", "created_at", "subscription_id",
        "remaining_billing_cycles", "object"
    ),
    "subscription.coupons": (
        "coupon_id", "applied_count", "object", "apply_till"
    ),
    "subscription.discounts": (
        "id", "invoice_name", "type", "percentage", "duration_type", "included_in_mrr", "apply_on",
        "created_at", "applied_count", "index", "object"
    ),
    "subscription.shipping_address": (
        "first_name", "last_name", "line1", "line2", "city", "country", "zip", "validation_status", "object"
    ),
    "subscription.subscription_items": (
        "item_price_id", "item_type", "quantity", "unit_price", "amount", "free_quantity", "object",
        "trial_end", "charge_on_event", "charge_once", "charge_on_option"
    ),
}  # fmt: skip


def export_order(path: str, keys: Iterable[str]) -> list[str]:
    """``keys`` of the record at ``path`` (``subscription``, ``subscription.subscription_items``...) in
    :data:`EXPORT_ORDER`, the others after them in their own order."""
    rank = {key: i for i, key in enumerate(EXPORT_ORDER.get(path, ()))}
    return sorted(keys, key=lambda key: rank.get(key, len(rank)))  # stable: the others keep their order


PARTITION_FIELD = "created_at"
CLUSTER_FIELDS = ["id"]

_DESCRIPTIONS = {
    "id": "Chargebee id (the merge key).",
    "created_at": "Creation time (epoch seconds in the export). The partitioning column.",
    "updated_at": "Last change time (epoch seconds in the export).",
    "resource_version": "Epoch milliseconds of the last change, kept as an integer.",
    "meta_data": "Chargebee meta_data, free JSON.",
    "custom_fields": "All cf_* custom fields of the record, keyed by their Chargebee name.",
    "extra_fields": "Keys not in this schema, keyed by their path (schema drift; nothing is dropped).",
}


def _schema(spec: _Spec, *, top: bool) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = []
    for name, (kind, arg) in spec.items():
        mode = "REQUIRED" if top and name == "id" else "REPEATED" if kind == _REPEATED else "NULLABLE"
        field: dict[str, Any] = {"name": name, "type": _BQ_TYPES[kind], "mode": mode}
        if kind in (_RECORD, _REPEATED):
            field["fields"] = _schema(arg, top=False)
        if top and name in _DESCRIPTIONS:
            field["description"] = _DESCRIPTIONS[name]
        fields.append(field)
    if top:
        for name in ("custom_fields", "extra_fields"):
            fields.append(
                {"name": name, "type": "JSON", "mode": "NULLABLE", "description": _DESCRIPTIONS[name]}
            )
    return fields


def _epoch_paths(spec: _Spec, prefix: str = "") -> frozenset[str]:
    paths: set[str] = set()
    for name, (kind, arg) in spec.items():
        if kind == _EPOCH_S:
            paths.add(prefix + name)
        elif kind == _RECORD:
            paths |= _epoch_paths(arg, f"{prefix}{name}.")
        elif kind == _REPEATED:
            paths |= _epoch_paths(arg, f"{prefix}{name}[].")
    return frozenset(paths)


CUSTOMER_SCHEMA: list[dict[str, Any]] = _schema(_CUSTOMER_SPEC, top=True)
SUBSCRIPTION_SCHEMA: list[dict[str, Any]] = _schema(_SUBSCRIPTION_SPEC, top=True)
QUARANTINE_SCHEMA: list[dict[str, Any]] = [
    {"name": "source", "type": "STRING", "mode": "NULLABLE", "description": "The input file."},
    {"name": "record_index", "type": "INT64", "mode": "NULLABLE", "description": "0-based entry index."},
    {
        "name": "entity",
        "type": "STRING",
        "mode": "NULLABLE",
        "description": "subscription, customer or entry.",
    },
    {"name": "record_id", "type": "STRING", "mode": "NULLABLE"},
    {"name": "field", "type": "STRING", "mode": "NULLABLE", "description": "Path of the first bad field."},
    {"name": "reason_code", "type": "STRING", "mode": "NULLABLE"},
    {"name": "message", "type": "STRING", "mode": "NULLABLE"},
    {
        "name": "raw_record",
        "type": "JSON",
        "mode": "NULLABLE",
        "description": "The record as read (no card).",
    },
    {"name": "load_id", "type": "STRING", "mode": "NULLABLE"},
    {"name": "rejected_at", "type": "TIMESTAMP", "mode": "NULLABLE"},
]

#: epoch-seconds fields, as paths (``subscription_items[].trial_end``); converted to TIMESTAMP
CUSTOMER_EPOCH_FIELDS = _epoch_paths(_CUSTOMER_SPEC)
SUBSCRIPTION_EPOCH_FIELDS = _epoch_paths(_SUBSCRIPTION_SPEC)


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that failed validation, for the quarantine table.

    :param entity: ``"subscription"``, ``"customer"`` or ``"entry"`` (the entry itself is malformed).
    :param record_index: 0-based index of the entry in the input list.
    :param record_id: the record's ``id`` when it is a non-blank string.
    :param reason_code: machine-readable reason, e.g. ``epoch_out_of_range``.
    :param message: the first problem, prefixed with its field path.
    :param field: path of the bad field (``subscription_items[1].next_billing_at``), if any.
    :param raw_record: the raw JSON value of the record (never the card).
    """

    entity: str
    record_index: int
    record_id: str | None
    reason_code: str
    message: str
    field: str | None
    raw_record: Any


def quarantine_row(reject: Reject, *, source: str, load_id: str, rejected_at: datetime) -> Row:
    """Return the :data:`QUARANTINE_SCHEMA` row of a reject.

    :param reject: the reject.
    :param source: the input file.
    :param load_id: the id of the load run.
    :param rejected_at: when the record was rejected (tz-aware).
    """
    return {
        "source": source,
        "record_index": reject.record_index,
        "entity": reject.entity,
        "record_id": reject.record_id,
        "field": reject.field,
        "reason_code": reject.reason_code,
        "message": reject.message,
        "raw_record": reject.raw_record,
        "load_id": load_id,
        "rejected_at": rejected_at,
    }


class _Invalid(Exception):
    def __init__(self, reason_code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.field = field
        self.message = f"{field}: {message}"


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "a boolean", type(None): "null"}  # fmt: skip


def _wrong_type(path: str, expected: str, value: Any) -> _Invalid:
    got = _JSON_TYPES.get(type(value), type(value).__name__)
    return _Invalid("wrong_type", path, f"expected {expected}, got {got}")


@dataclass(frozen=True, slots=True)
class _Context:
    unit: str
    now: datetime
    low: int  # integer range of the fast path (seconds for "s" and "auto")
    high: int
    micros: int  # microseconds per unit of the fast path


@lru_cache(maxsize=16)
def _context(unit: str, now: datetime) -> _Context:
    validate_unit(unit)
    fast_unit = "s" if unit == "auto" else unit
    low, high = epoch_bounds(fast_unit, now)
    return _Context(unit, now, low, high, {"s": 1_000_000, "ms": 1_000, "us": 1}[fast_unit])


def _epoch(value: Any, path: str, ctx: _Context) -> datetime:
    try:
        return to_datetime(value, ctx.unit, now=ctx.now)
    except EpochError as exc:
        raise _Invalid(exc.reason_code, path, str(exc)) from None


_fromtimestamp = datetime.fromtimestamp
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _fields(
    src: dict[str, Any], spec: _Spec, prefix: str, ctx: _Context, extra: Row, *, custom: Row | None = None
) -> Row:
    """Validate and convert the known fields of ``src``; put the unknown ones in ``extra`` / ``custom``."""
    low, high, micros = ctx.low, ctx.high, ctx.micros
    out: Row = {}
    for key, value in src.items():
        field = spec.get(key)
        if field is None:
            if custom is not None and key.startswith("cf_"):
                custom[key] = value
            elif key != "card":
                extra[prefix + key] = value
            continue
        if value is None:
            continue
        kind, arg = field
        vtype = type(value)
        if kind == _STRING:
            if vtype is not str:
                raise _wrong_type(prefix + key, "a string", value)
            if arg is not None and len(value) > arg:
                raise _Invalid(
                    "string_too_long", prefix + key, f"{len(value)} characters, at most {arg} allowed"
                )
            out[key] = value
        elif kind == _EPOCH_S:
            if vtype is int and low <= value <= high:
                if micros == 1_000_000:
                    out[key] = _fromtimestamp(value, UTC)
                else:
                    out[key] = _EPOCH + timedelta(0, 0, value * micros)
            else:
                out[key] = _epoch(value, prefix + key, ctx)
        elif kind == _INT:
            if vtype is not int:
                if vtype is not float or not value.is_integer():
                    raise _wrong_type(prefix + key, "an integer", value)
                if not _INT64_MIN <= value <= _INT64_MAX:
                    raise _Invalid(
                        "integer_out_of_range",
                        prefix + key,
                        f"{value!r} does not fit a 64-bit integer (INT64)",
                    )
                out[key] = int(value)
            else:
                out[key] = value
        elif kind == _BOOL:
            if vtype is not bool:
                raise _wrong_type(prefix + key, "a boolean", value)
            out[key] = value
        elif kind == _FLOAT:
            if vtype is not float and vtype is not int:
                raise _wrong_type(prefix + key, "a number", value)
            out[key] = float(value)
        elif kind == _JSON:
            out[key] = value
        elif kind == _RECORD:
            if vtype is not dict:
                raise _wrong_type(prefix + key, "an object", value)
            out[key] = _fields(value, arg, f"{prefix}{key}.", ctx, extra)
        else:  # _REPEATED
            if vtype is not list:
                raise _wrong_type(prefix + key, "an array", value)
            items = []
            for i, item in enumerate(value):
                if type(item) is not dict:
                    raise _wrong_type(f"{prefix}{key}[{i}]", "an object", item)
                items.append(_fields(item, arg, f"{prefix}{key}[{i}].", ctx, extra))
            out[key] = items
    return out


def _blank(value: Any) -> bool:
    return value is None or (type(value) is str and not value.strip())


def _record_row(src: dict[str, Any], spec: _Spec, ctx: _Context, *, needs_customer_id: bool) -> Row:
    """Return the row of one customer or subscription object, or raise :class:`_Invalid`."""
    if _blank(src.get("id")):
        raise _Invalid("missing_id", "id", "the record has no id")
    if needs_customer_id and _blank(src.get("customer_id")):
        raise _Invalid("missing_customer_id", "customer_id", "the subscription has no customer_id")
    extra: Row = {}
    custom: Row = {}
    row = _fields(src, spec, "", ctx, extra, custom=custom)
    if custom:
        row["custom_fields"] = custom
    if extra:
        row["extra_fields"] = extra
    return row


def _record_id(src: dict[str, Any]) -> str | None:
    value = src.get("id")
    return None if _blank(value) or type(value) is not str else value


def _without_card(src: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in src.items() if k != "card"} if "card" in src else src


def normalise_entry(
    entry: Any, index: int, *, unit: str, now: datetime
) -> tuple[Row | None, Row | None, list[Reject]]:
    """Split one export entry into a customer row and a subscription row, validating both.

    :param entry: one element of the export's ``list``.
    :param index: its 0-based position in the list (for the quarantine).
    :param unit: epoch unit of the timestamp fields, one of ``EPOCH_UNITS`` (Chargebee: ``"s"``).
    :param now: reference time for the epoch range check (tz-aware; fixed for a whole run).
    :return: ``(customer_row, subscription_row, rejects)``; a row is ``None`` when it is absent or
        rejected.
    :raises ValueError: for an unknown ``unit`` or a naive ``now``.
    """
    ctx = _context(unit, now)
    if type(entry) is not dict:
        got = _JSON_TYPES.get(type(entry), type(entry).__name__)
        message = f"entry {index}: expected an object with 'subscription' and/or 'customer', got {got}"
        return None, None, [Reject("entry", index, None, "wrong_type", message, None, entry)]

    rejects: list[Reject] = []
    customer = entry.get("customer")
    subscription = entry.get("subscription")
    customer_row: Row | None = None
    customer_id: str | None = None
    if customer is None:
        rejects.append(_null_customer(index, subscription))
    elif type(customer) is not dict:
        rejects.append(
            _reject("customer", index, None, _wrong_type("customer", "an object", customer), customer)
        )
    else:
        customer_id = _record_id(customer)
        try:
            customer_row = _record_row(customer, _CUSTOMER_SPEC, ctx, needs_customer_id=False)
        except _Invalid as exc:
            rejects.append(_reject("customer", index, customer_id, exc, _without_card(customer)))

    subscription_row: Row | None = None
    if "subscription" in entry:
        try:
            subscription_row = _subscription_row(subscription, customer_id, ctx)
        except _Invalid as exc:
            if type(subscription) is dict:
                rejects.append(
                    _reject("subscription", index, _record_id(subscription), exc, _without_card(subscription))
                )
            else:
                rejects.append(_reject("subscription", index, None, exc, subscription))
    return customer_row, subscription_row, rejects


def _subscription_row(src: Any, customer_id: str | None, ctx: _Context) -> Row:
    if type(src) is not dict:
        raise _wrong_type("subscription", "an object", src)
    row = _record_row(src, _SUBSCRIPTION_SPEC, ctx, needs_customer_id=True)
    if customer_id is not None and row["customer_id"] != customer_id:
        raise _Invalid(
            "customer_mismatch",
            "customer_id",
            f"{row['customer_id']!r} is not the id of the entry's customer ({customer_id!r})",
        )
    return row


def _null_customer(index: int, subscription: Any) -> Reject:
    linked = subscription.get("customer_id") if type(subscription) is dict else None
    message = "customer: the entry has no customer"
    if type(subscription) is dict:
        message += " (its subscription is loaded on its own)"
    record_id = linked if type(linked) is str and linked.strip() else None
    return Reject("customer", index, record_id, "null_customer", message, "customer", None)


def _reject(entity: str, index: int, record_id: str | None, problem: _Invalid, raw: Any) -> Reject:
    return Reject(entity, index, record_id, problem.reason_code, problem.message, problem.field, raw)


_INDEX = re.compile(r"\[\d+\]")


def unknown_fields(row: Row) -> set[str]:
    """Return the paths of the fields of ``row`` that are not in its schema (kept in ``extra_fields``).

    Array indexes are folded: ``subscription_items[0].foo`` and ``subscription_items[3].foo`` are both
    reported as ``subscription_items[].foo``.

    :param row: a row returned by :func:`normalise_entry`.
    """
    extra = row.get("extra_fields")
    if not extra:
        return set()
    return {_INDEX.sub("[]", path) for path in extra}


_OLDEST = datetime.min.replace(tzinfo=UTC)


def row_hash(data: bytes) -> bytes:
    """The tie-breaker of :func:`version_key`: 8 bytes of SHA-256 (hardware-accelerated, unlike BLAKE2)."""
    return hashlib.sha256(data).digest()[:8]


def version(row: Row) -> tuple[datetime, int]:
    """The order of the versions of one record, before the tie-break: newest ``updated_at`` (or
    ``created_at``), then ``resource_version``.

    :param row: a row from :func:`normalise_entry` (datetimes, not epochs).
    """
    return (row.get("updated_at") or row.get("created_at") or _OLDEST, row.get("resource_version") or -1)


def version_key(row: Row, canonical: bytes | None = None) -> tuple[datetime, int, bytes]:
    """The order of the versions of one record: :func:`version`, then a hash of the row's canonical JSON,
    so that two different rows with the same version still have one winner whatever the input order.

    :param row: a row from :func:`normalise_entry` (datetimes, not epochs).
    :param canonical: the row's canonical JSON (default: its keys sorted), if the caller has it already.
    """
    data = canonical if canonical is not None else _canonical(row)
    return (*version(row), row_hash(data))


def _canonical(row: Row) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS)


def newer(a: Row, b: Row) -> bool:
    """Return whether row ``a`` is strictly newer than row ``b`` of the same record (:func:`version_key`).

    :param a: a row.
    :param b: another row with the same ``id``.
    """
    return version_key(a) > version_key(b)


class CustomerDedup:
    """Keep the newest row per customer id (:func:`version_key`), holding an index, not the rows.

    In a list-subscriptions export every entry repeats its customer. The caller keeps the rows where it
    likes (the transform spills them to disk) and passes a token for each (its line number); memory grows
    with the distinct ids only. ``duplicates`` counts the rows folded into another. The tie-break hash is
    computed only for a tie (two versions of an id with the same :func:`version`): then ``canonical`` gives
    the rows' bytes.

    :param canonical: the canonical JSON of the row a token stands for (the caller has stored it already);
        by default the token is the row itself.
    """

    def __init__(self, canonical: Callable[[Any], bytes] = _canonical) -> None:
        self._index: dict[str, tuple[tuple[datetime, int], Any]] = {}
        self._canonical = canonical
        self.duplicates = 0

    def add(self, row: Row, token: Any) -> bool:
        """Add a customer row; return whether it is now the kept row for its id.

        :param row: a customer row from :func:`normalise_entry`.
        :param token: what :meth:`kept` returns for this row if it wins.
        """
        return self.add_version(row["id"], version(row), token)

    def add_version(self, record_id: str, version: tuple[datetime, int], token: Any) -> bool:
        """:meth:`add` for a row whose :func:`version` the caller has computed already."""
        kept = self._index.get(record_id)
        if kept is not None:
            self.duplicates += 1
            if version < kept[0]:
                return False
            if version == kept[0]:  # a tie: the greater hash of the canonical JSON wins, whatever the order
                canonical = self._canonical
                if row_hash(canonical(token)) <= row_hash(canonical(kept[1])):
                    return False
        self._index[record_id] = (version, token)
        return True

    def kept(self) -> list[Any]:
        """The tokens of the kept rows, in first-seen order of their ids."""
        return [token for _, token in self._index.values()]

    def __len__(self) -> int:
        return len(self._index)
