"""The transform's fast path: typed decoding of clean batches of entries, straight into rows.

:class:`TypedDecoder` decodes a batch of export entries (``[`` entry, entry, ... ``]``, as cut by the
streaming reader) with ``msgspec`` into Structs built from the record specs of :mod:`.chargebee`: types,
string lengths, INT64 and epoch ranges are checked in C while parsing, no dict is built, and the rows are
written by msgspec's encoder. It accepts a batch only when its rows are exactly the rows the exact path
(:func:`.chargebee.normalise_entry` on the reader's entries) would give, and the batch is valid for the
reader's strict rules; for anything else (a record to quarantine, a null, an unknown field, an epoch in
another unit, a duplicate key...) it returns ``None`` and the batch takes the exact path, which gives the
reasons. Both paths encode rows with :data:`ENCODE`, so a row has the same bytes whichever path it took.

Strictness the typed decoding does not see by itself is checked cheaply:

* duplicate keys (msgspec keeps the last value): each key of the input is one ``":`` and so is each key
  of the rows written, so the batch's count of ``":`` must equal the rows' (plus the entries' own keys and
  the cards', minus the ``custom_fields`` keys the rows add); a ``\\u0022`` or ``\\u003a`` escape in the
  batch (a quote or colon the count cannot see) sends it to the exact path;
* integers outside INT64 in free JSON values (``meta_data``, custom fields, the card): accepted only when
  ``orjson`` can write them with ``OPT_STRICT_INTEGER`` (53 bits; bigger ones take the exact path).

Custom fields (``cf_*``) have no fixed names: the decoder learns them from the rows of the exact path
(:meth:`TypedDecoder.learn`), so an export whose records carry custom fields takes the exact path for its
first batch only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType
from msgspec.structs import astuple

from airflow_provider_incremental.core import chargebee as cb
from airflow_provider_incremental.core.epoch import UTC

__all__ = ["ENCODE", "TypedDecoder", "TypedEntry"]

#: the row encoder of both paths: canonical JSON (keys sorted, datetimes as RFC 3339 ``...Z``), so a row has
#: the same bytes whichever path and batch it came through (the customer dedup hashes them)
ENCODE = msgspec.json.Encoder(order="sorted").encode

_INT64 = Annotated[int, Meta(ge=cb._INT64_MIN, le=cb._INT64_MAX)]
_ESCAPE = re.compile(rb"\\u00(?:22|3[aA])")  # an escaped quote or colon
_PLAIN = (str, bool, type(None), float)
_CACHED_DATETIMES = 1 << 16
_MAX_CUSTOM_FIELDS = 256  # learned names per entity; past that, records with new ones take the exact path
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_fromtimestamp = datetime.fromtimestamp
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TypedEntry:
    """One entry decoded by the fast path: its customer row and subscription row, already encoded.

    :param customer_id: the customer's id.
    :param version: the customer's :func:`.chargebee.version_key`.
    :param customer: the customer row, canonical JSON (keys sorted) and a newline.
    :param subscription: the subscription row and a newline, or ``None`` (a list-customers entry).
    """

    __slots__ = ("customer", "customer_id", "subscription", "version")

    def __init__(self, customer_id: str, version: Any, customer: bytes, subscription: bytes | None) -> None:
        self.customer_id = customer_id
        self.version = version
        self.customer = customer
        self.subscription = subscription


class _Plan:
    """What to do with a decoded Struct, by field position: epochs, nested Structs, free JSON, custom fields."""

    __slots__ = ("custom", "epochs", "json", "nested")

    def __init__(self, struct: type, spec: cb._Spec, custom: tuple[str, ...]) -> None:
        position = {key: i for i, key in enumerate(struct.__struct_fields__)}  # type: ignore[attr-defined]

        def where(*kinds: int) -> tuple[tuple[int, str], ...]:
            return tuple((position[k], k) for k, (kind, _) in spec.items() if kind in kinds)

        self.epochs = where(cb._EPOCH_S)
        self.nested = tuple((i, spec[k][0] == cb._REPEATED) for i, k in where(cb._RECORD, cb._REPEATED))
        self.json = where(cb._JSON)
        self.custom = tuple((position[k], k) for k in custom)


def _struct(
    name: str, spec: cb._Spec, epoch: Any, plans: dict[type, _Plan], custom: tuple[str, ...] = ()
) -> type:
    """A Struct type for ``spec`` (every field optional, unknown fields rejected), and its plan."""
    types = {cb._STRING: str, cb._INT: _INT64, cb._EPOCH_S: epoch, cb._BOOL: bool, cb._FLOAT: float}
    fields: list[tuple[str, Any, Any]] = []
    for key, (kind, arg) in spec.items():
        if kind == cb._STRING and arg is not None:
            tp: Any = Annotated[str, Meta(max_length=arg)]
        elif kind == cb._JSON:
            tp = Any
        elif kind in (cb._RECORD, cb._REPEATED):
            tp = _struct(f"{name}_{key}", arg, epoch, plans)
            if kind == cb._REPEATED:
                tp = list[tp]
        else:
            tp = types[kind]
        fields.append((key, tp | UnsetType, UNSET))
    if custom:
        fields += [(key, Any, UNSET) for key in custom]
        fields.append(("custom_fields", Any, UNSET))
    struct = msgspec.defstruct(name, fields, forbid_unknown_fields=True, omit_defaults=True)
    plans[struct] = _Plan(struct, spec, custom)
    return struct


def _plain(value: Any) -> bool:
    """Whether a free JSON value is one the reader accepts as it is (no integer outside INT64)."""
    if type(value) in _PLAIN:
        return True
    try:
        orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:  # beyond 53 bits, or nested too deep: let the exact path judge it
        return False
    return True


def _card_keys(card: Any) -> int:
    """Check the card as the reader would (big integers); return how many keys it has once written."""
    try:
        return orjson.dumps(card, option=orjson.OPT_STRICT_INTEGER).count(b'":')
    except TypeError:  # beyond 53 bits, or nested too deep: let the exact path judge it
        raise _Reject from None


class _Reject(Exception):
    """The batch must take the exact path."""


class TypedDecoder:
    """Decode clean batches of entries into rows (see the module docstring); ``None`` for the others.

    :param unit: epoch unit of the timestamp fields (``s``, ``ms``, ``us`` or ``auto``: seconds here,
        values in other units take the exact path).
    :param now: the reference time of the run (the epoch range check).
    """

    def __init__(self, *, unit: str, now: datetime) -> None:
        ctx = cb._context(unit, now)
        self._epoch = Annotated[int, Meta(ge=ctx.low, le=ctx.high)]
        self._micros = ctx.micros
        self._custom: dict[str, dict[str, None]] = {"customer": {}, "subscription": {}}
        self._decoder: msgspec.json.Decoder[Any] | None = None
        self._plans: dict[type, _Plan] = {}
        self._datetimes: dict[int, datetime] = {}  # epochs repeat (a customer in each of its entries)
        self._declines = 0  # batches declined in a row
        self._skip = 0  # batches left to pass to the exact path untried (dirty input costs no double work)

    def learn(self, entity: str, custom_fields: Iterable[str]) -> None:
        """Add custom field names seen in a row of the exact path (``customer`` or ``subscription``)."""
        names = self._custom[entity]
        new = [key for key in custom_fields if key not in names]
        if new and len(names) + len(new) <= _MAX_CUSTOM_FIELDS:
            names.update(dict.fromkeys(new))
            self._decoder = None
            self._declines = self._skip = 0

    def _build(self) -> msgspec.json.Decoder[Any]:
        plans: dict[type, _Plan] = {}
        customer = _struct("Customer", cb._CUSTOMER_SPEC, self._epoch, plans, tuple(self._custom["customer"]))
        subscription = _struct(
            "Subscription", cb._SUBSCRIPTION_SPEC, self._epoch, plans, tuple(self._custom["subscription"])
        )
        entry = msgspec.defstruct(
            "Entry",
            [
                ("subscription", subscription | UnsetType, UNSET),
                ("customer", customer | UnsetType, UNSET),
                ("card", Any, UNSET),
            ],
            forbid_unknown_fields=True,
        )
        self._plans = plans
        self._decoder = msgspec.json.Decoder(list[entry])  # type: ignore[valid-type]
        return self._decoder

    def decode(self, data: bytes) -> list[TypedEntry] | None:
        """Return the rows of the batch ``data`` (a JSON array of entries), or ``None``: take the exact path.

        :param data: ``[`` + entries + ``]``, possibly cut wrong (then ``None``).
        """
        if self._skip:
            self._skip -= 1
            return None
        out = self._decode(data)
        if out is None:
            self._declines += 1
            if self._declines >= 3:  # dirty input: try every 2nd, 4th, ... 32nd batch only
                self._skip = min(1 << (self._declines - 3), 32)
        else:
            self._declines = 0
        return out

    def _decode(self, data: bytes) -> list[TypedEntry] | None:
        if b"\\u00" in data and _ESCAPE.search(data):
            return None
        decoder = self._decoder or self._build()
        try:
            entries = decoder.decode(data)
            keys = 0  # the keys the rows account for, to compare with the batch's
            out = []
            for entry in entries:
                customer, subscription, card = entry.customer, entry.subscription, entry.card
                cid = customer.id if customer is not UNSET else UNSET
                if cid is UNSET or not cid or cid.isspace():
                    return None  # no customer, or no id: the exact path quarantines it
                keys += 1 - self._convert(customer)
                row = ENCODE(customer) + b"\n"
                keys += row.count(b'":')
                sub_row = None
                if subscription is not UNSET:
                    sid = subscription.id
                    if sid is UNSET or not sid or sid.isspace() or subscription.customer_id != cid:
                        return None  # no id, no customer_id or another customer's
                    keys += 1 - self._convert(subscription)
                    sub_row = ENCODE(subscription) + b"\n"
                    keys += sub_row.count(b'":')
                if card is not UNSET:
                    keys += 1 + _card_keys(card)
                version = (
                    customer.updated_at or customer.created_at or cb._OLDEST,
                    customer.resource_version or -1,
                    hashlib.blake2b(row, digest_size=8).digest(),
                )
                out.append(TypedEntry(cid, version, row, sub_row))
        except (_Reject, *_DECODE_ERRORS):
            return None
        if data.count(b'":') != keys:  # a duplicate key (or an unusual spelling): let the reader judge
            return None
        return out

    def _convert(self, record: Any) -> int:
        """Convert the epochs of a Struct (and its nested ones) to datetimes in place, check its free JSON,
        move its custom fields to ``custom_fields``; return how many keys that adds (0 or 1)."""
        plan = self._plans[type(record)]
        values = astuple(record)
        datetimes = self._datetimes
        for i, key in plan.epochs:
            value = values[i]
            if value is not UNSET:
                converted = datetimes.get(value)
                if converted is None:
                    if len(datetimes) >= _CACHED_DATETIMES:
                        datetimes.clear()
                    converted = datetimes[value] = self._datetime(value)
                setattr(record, key, converted)
        for i, repeated in plan.nested:
            value = values[i]
            if value is not UNSET:
                for item in value if repeated else (value,):
                    self._convert(item)
        for i, _ in plan.json:
            value = values[i]
            if value is not UNSET and (value is None or not _plain(value)):
                raise _Reject  # the exact path omits a null and judges big integers
        if not plan.custom:
            return 0
        custom = {}
        for i, key in plan.custom:
            value = values[i]
            if value is not UNSET:
                if not _plain(value):
                    raise _Reject
                custom[key] = value
                setattr(record, key, UNSET)
        if custom:
            record.custom_fields = custom
            return 1
        return 0

    def _datetime(self, value: int) -> datetime:
        if self._micros == 1_000_000:
            return _fromtimestamp(value, UTC)
        return _EPOCH + timedelta(0, 0, value * self._micros)
