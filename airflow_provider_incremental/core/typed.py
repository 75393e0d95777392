"""The transform's fast path: typed decoding of clean batches of entries, straight into rows.

:class:`TypedDecoder` decodes a batch of export entries (``[`` entry, entry, ... ``]``, as cut by the
streaming reader) with ``msgspec`` into Structs built from the record specs of :mod:`.chargebee`: types,
string lengths, INT64 and epoch ranges are checked in C while parsing, no dict is built, and the rows are
written by msgspec's encoder. It accepts a batch only when its rows are exactly the rows the exact path
(:func:`.chargebee.normalise_entry` on the reader's entries) would give, and the batch is valid for the
reader's strict rules; for anything else (a record to quarantine, a null, an unknown field, an epoch in
another unit, a duplicate key...) it returns ``None`` and the batch takes the exact path, which gives the
reasons. Both paths encode rows with :data:`ENCODE`, so a row has the same bytes whichever path it took.

Epochs in seconds (units ``s`` and ``auto``) are made datetimes in C by msgspec's lax mode; lax mode would
also take strings for numbers, 0/1 for booleans and any number for an epoch, so a strict decoding of the
same bytes into a *view* (the fields that are not strings, epochs as range-checked integers, and the card;
strings are skipped, not built) refuses those first. Other units go through a ``dec_hook`` (range check,
then a cached value). A customer repeated byte for byte in later entries (a customer is repeated in each
entry of its subscriptions) is recognised by a hash of its bytes and counted as a duplicate without being
decoded again.

Strictness the typed decoding does not see by itself is checked cheaply:

* duplicate keys (msgspec keeps the last value): each key of the input is one ``":`` and so is each key
  of the rows written, so the batch's count of ``":`` must equal the rows' (plus the entries' own keys and
  the cards', minus the ``custom_fields`` keys the rows add); a ``\\u0022`` or ``\\u003a`` escape in the
  batch (a quote or colon the count cannot see) sends it to the exact path;
* integers outside INT64 in free JSON values (``meta_data``, custom fields): accepted only when
  ``orjson`` can write them with ``OPT_STRICT_INTEGER`` (53 bits; bigger ones take the exact path); the
  card is decoded as a flat object of scalars with INT64 integers.

Custom fields (``cf_*``) have no fixed names: the decoder learns them from the rows of the exact path
(:meth:`TypedDecoder.learn`), so an export whose records carry custom fields takes the exact path for its
first batch only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType

from airflow_provider_incremental.core import chargebee as cb
from airflow_provider_incremental.core.epoch import UTC

__all__ = ["ENCODE", "TypedDecoder", "TypedEntry"]


_INT64 = Annotated[int, Meta(ge=cb._INT64_MIN, le=cb._INT64_MAX)]
#: a card is flat (a card with nested values takes the exact path); it is never loaded, only checked
_CARD = dict[str, str | bool | _INT64 | float | None]
_ESCAPE = re.compile(rb"\\u00(?:22|3[aA])")  # an escaped quote or colon
_PLAIN = (str, bool, type(None), float)
_CACHED_EPOCHS = 1 << 15
_SEEN_CUSTOMERS = 1 << 16  # ~16 MB; past that the window restarts (repeats are decoded again)
_MAX_CUSTOM_FIELDS = 256  # learned names per entity; past that, records with new ones take the exact path
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_fromtimestamp = datetime.fromtimestamp
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TypedEntry:
    """One entry decoded by the fast path: its customer row and subscription row, already encoded.

    :param customer_id: the customer's id.
    :param version: the customer's :func:`.chargebee.version_key`.
    :param customer: the customer row, canonical JSON (keys sorted) and a newline; ``None`` when the entry
        repeats, byte for byte, a customer already given (a duplicate: it can never be the newest row).
    :param subscription: the subscription row and a newline, or ``None`` (a list-customers entry).
    """

    __slots__ = ("customer", "customer_id", "subscription", "version")

    def __init__(
        self, customer_id: str, version: Any, customer: bytes | None, subscription: bytes | None
    ) -> None:
        self.customer_id = customer_id
        self.version = version
        self.customer = customer
        self.subscription = subscription


class _Epoch:
    """An epoch field's value as decoded: its datetime, written by the encoder (``enc_hook``) as RFC 3339.

    msgspec calls the decoder's ``dec_hook`` for this type with the JSON value, and the result must be an
    instance of it (a datetime subclass would not be encodable); instances are cached per epoch value.
    """

    __slots__ = ("datetime",)

    def __init__(self, value: datetime) -> None:
        self.datetime = value


_ENCODE_EPOCH = attrgetter("datetime")  # a C callable: no Python frame per timestamp written


#: the row encoder of both paths: canonical JSON (keys sorted, datetimes as RFC 3339 ``...Z``), so a row has
#: the same bytes whichever path and batch it came through (the customer dedup hashes them); Struct fields
#: are declared sorted
ENCODE = msgspec.json.Encoder(order="deterministic", enc_hook=_ENCODE_EPOCH).encode


class _Plan:
    """What to check in a decoded record: its free JSON fields and its custom fields."""

    __slots__ = ("custom", "json")

    def __init__(self, spec: cb._Spec, custom: tuple[str, ...]) -> None:
        self.json = tuple(k for k, (kind, _) in spec.items() if kind == cb._JSON)
        self.custom = custom


def _struct(
    name: str, spec: cb._Spec, plans: dict[type, _Plan], custom: tuple[str, ...] = (), *, epoch: Any
) -> type:
    """A Struct type for ``spec`` (every field optional, unknown fields rejected), and its plan.

    :param epoch: the type of the epoch fields: ``datetime`` (lax decoding) or :class:`_Epoch` (a hook).
    """
    types = {cb._STRING: str, cb._INT: _INT64, cb._EPOCH_S: epoch, cb._BOOL: bool, cb._FLOAT: float}
    fields: list[tuple[str, Any, Any]] = []
    for key, (kind, arg) in spec.items():
        if kind == cb._STRING and arg is not None:
            tp: Any = Annotated[str, Meta(max_length=arg)]
        elif kind == cb._JSON:
            tp = Any
        elif kind in (cb._RECORD, cb._REPEATED):
            tp = _struct(f"{name}_{key}", arg, plans, epoch=epoch)
            if kind == cb._REPEATED:
                tp = list[tp]
        else:
            tp = types[kind]
        fields.append((key, tp | UnsetType, UNSET))
    if custom:
        fields += [(key, Any, UNSET) for key in custom]
        fields.append(("custom_fields", Any, UNSET))
    fields.sort()  # encoded in this order: the same bytes as a row dict with its keys sorted
    # gc=False: decoded rows hold no reference cycles, so the cyclic GC need not track (and scan) them
    struct = msgspec.defstruct(name, fields, forbid_unknown_fields=True, omit_defaults=True, gc=False)
    plans[struct] = _Plan(spec, custom)
    return struct


def _strict_view(name: str, spec: cb._Spec, epoch: Any) -> type | None:
    """The strict view of ``spec`` that checks what a lax decoding lets through: a Struct of the fields
    that are not strings (integers, numbers, booleans, epochs as ``epoch``: range-checked integers) and of
    the records holding such fields. Strings, free JSON and unknown keys are skipped, never built (a lax
    decoding is strict for them). ``None`` when ``spec`` has no such field.
    """
    types = {cb._INT: _INT64, cb._EPOCH_S: epoch, cb._BOOL: bool, cb._FLOAT: float}
    fields: list[tuple[str, Any, Any]] = []
    for key, (kind, arg) in spec.items():
        if kind in (cb._RECORD, cb._REPEATED):
            tp = _strict_view(f"{name}_{key}", arg, epoch)
            if tp is None:
                continue
            if kind == cb._REPEATED:
                tp = list[tp]  # type: ignore[valid-type]
        elif kind in types:
            tp = types[kind]
        else:
            continue
        fields.append((key, tp | UnsetType, UNSET))
    return msgspec.defstruct(f"{name}View", fields, gc=False) if fields else None


def _plain(value: Any) -> bool:
    """Whether a free JSON value is one the reader accepts as it is (no integer outside INT64)."""
    if type(value) in _PLAIN:
        return True
    try:
        orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
    except TypeError:  # beyond 53 bits, or nested too deep: let the exact path judge it
        return False
    return True


def _epoch_hook(low: int, high: int, micros: int) -> Callable[[type, Any], _Epoch]:
    """msgspec's ``dec_hook`` for epoch fields: an integer in ``[low, high]`` becomes an :class:`_Epoch`;
    anything else fails the batch (the exact path gives the reason)."""
    cache: dict[int, _Epoch] = {}  # epochs repeat (a customer in each of its entries, terms in items)

    def hook(kind: type, value: Any) -> _Epoch:
        epoch = cache.get(value) if type(value) is int else None
        if epoch is None:
            if type(value) is not int or not low <= value <= high:
                raise ValueError("not an epoch in range")
            if len(cache) >= _CACHED_EPOCHS:
                cache.clear()
            if micros == 1_000_000:
                epoch = cache[value] = _Epoch(_fromtimestamp(value, UTC))
            else:
                epoch = cache[value] = _Epoch(_EPOCH + timedelta(0, 0, value * micros))
        return epoch

    return hook


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
        #: epochs in seconds (``s``, ``auto``): msgspec's lax mode makes the datetimes in C, and a strict
        #: decoding of the same bytes into :func:`_strict_view` Structs refuses what lax mode would let
        #: through (strings for numbers, 0/1 for booleans, fractions and the range of epochs). Other
        #: units: strict decoding, epochs through a ``dec_hook``.
        self._lax = ctx.micros == 1_000_000
        self._epoch = _epoch_hook(ctx.low, ctx.high, ctx.micros)
        self._range = Annotated[int, Meta(ge=ctx.low, le=ctx.high)]
        self._view: msgspec.json.Decoder[Any] | None = None
        self._customer_view: msgspec.json.Decoder[Any] | None = None
        self._custom: dict[str, dict[str, None]] = {"customer": {}, "subscription": {}}
        self._decoder: msgspec.json.Decoder[Any] | None = None
        self._customer: msgspec.json.Decoder[Any] | None = None
        #: customer objects (by hash of their bytes) of accepted batches: (id, keys); a customer repeated
        #: byte for byte in later entries is a duplicate of a row the dedup has already seen. Keyed by
        #: Python's hash of the bytes (64-bit SipHash with a per-process key: as unlikely to collide as
        #: 8 bytes of SHA-256, unpredictable to a crafted input, and 2x cheaper); only decides whether a
        #: customer is decoded again, never the rows' bytes or order
        self._seen: dict[int, tuple[str, int]] = {}
        self._plans: dict[type, _Plan] = {}
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
        lax = self._lax
        epoch = datetime if lax else _Epoch
        customer = _struct("Customer", cb._CUSTOMER_SPEC, plans, tuple(self._custom["customer"]), epoch=epoch)
        subscription = _struct(
            "Subscription", cb._SUBSCRIPTION_SPEC, plans, tuple(self._custom["subscription"]), epoch=epoch
        )
        card: Any = msgspec.Raw if lax else _CARD  # lax: the strict view checks (and counts) the card
        entry = msgspec.defstruct(
            "Entry",
            [
                ("subscription", subscription | UnsetType, UNSET),
                ("customer", msgspec.Raw | UnsetType, UNSET),  # decoded apart, once per distinct row
                ("card", card | UnsetType, UNSET),
            ],
            forbid_unknown_fields=True,
            gc=False,
        )
        self._plans = plans
        hook = None if lax else self._epoch
        self._customer = msgspec.json.Decoder(customer, dec_hook=hook, strict=not lax)
        self._decoder = msgspec.json.Decoder(list[entry], dec_hook=hook, strict=not lax)  # type: ignore[valid-type]
        if lax:
            view = _strict_view("Subscription", cb._SUBSCRIPTION_SPEC, self._range)
            entry_view = msgspec.defstruct(
                "EntryView", [("subscription", view | UnsetType, UNSET), ("card", _CARD | UnsetType, UNSET)]
            )
            self._view = msgspec.json.Decoder(list[entry_view])  # type: ignore[valid-type]
            self._customer_view = msgspec.json.Decoder(
                _strict_view("Customer", cb._CUSTOMER_SPEC, self._range)
            )
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
        if data.rfind(b"\\u00") >= 0 and _ESCAPE.search(data):  # rfind: skips on the rare "\\", 2x `in`
            return None
        decoder = self._decoder or self._build()
        try:
            entries = decoder.decode(data)
            views = entries if self._view is None else self._view.decode(data)
            keys = 0  # the keys the rows account for, to compare with the batch's
            out = []
            seen = self._seen
            lax = self._lax
            new: dict[int, tuple[str, int]] = {}
            for entry, view in zip(entries, views, strict=True):
                raw, subscription, card = entry.customer, entry.subscription, view.card
                if raw is UNSET:
                    return None  # the exact path quarantines it
                digest = hash(bytes(raw))
                known = seen.get(digest) or new.get(digest)
                if known is not None:  # the same bytes as a customer row already written
                    cid, customer_keys = known
                    typed = TypedEntry(cid, None, None, None)
                else:
                    if self._customer_view is not None:
                        self._customer_view.decode(raw)
                    customer = self._customer.decode(raw)  # type: ignore[union-attr]
                    cid = customer.id
                    if cid is UNSET or not cid or cid.isspace():
                        return None  # no id: the exact path quarantines it
                    customer_keys = 1 - self._check(customer)
                    row = ENCODE(customer) + b"\n"
                    customer_keys += row.count(b'":')
                    new[digest] = (cid, customer_keys)
                    changed = customer.updated_at or customer.created_at
                    version = (
                        (changed if lax else changed.datetime) if changed else cb._OLDEST,
                        customer.resource_version or -1,
                        cb.row_hash(row),
                    )
                    typed = TypedEntry(cid, version, row, None)
                keys += customer_keys
                if subscription is not UNSET:
                    sid = subscription.id
                    if sid is UNSET or not sid or sid.isspace() or subscription.customer_id != cid:
                        return None  # no id, no customer_id or another customer's
                    keys += 1 - self._check(subscription)
                    typed.subscription = ENCODE(subscription) + b"\n"
                    keys += typed.subscription.count(b'":')
                if card is not UNSET:
                    keys += 1 + len(card)  # a duplicate key in the card is one key less
                out.append(typed)
        except (_Reject, *_DECODE_ERRORS):
            return None
        if data.count(b'":') != keys:  # a duplicate key (or an unusual spelling): let the reader judge
            return None
        if len(seen) + len(new) > _SEEN_CUSTOMERS:
            seen.clear()
        seen.update(new)
        return out

    def _check(self, record: Any) -> int:
        """Check the free JSON of a record, move its custom fields to ``custom_fields``; return how many keys
        that adds (0 or 1)."""
        plan = self._plans[type(record)]
        for key in plan.json:
            value = getattr(record, key)
            if value is not UNSET and (value is None or not _plain(value)):
                raise _Reject  # the exact path omits a null and judges big integers
        custom = {}
        for key in plan.custom:
            value = getattr(record, key)
            if value is not UNSET:
                if not _plain(value):
                    raise _Reject
                custom[key] = value
                setattr(record, key, UNSET)
        if custom:
            record.custom_fields = custom
            return 1
        return 0
