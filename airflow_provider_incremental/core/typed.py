"""The transform's fast path: typed decoding of clean batches of entries, straight into rows.

:class:`TypedDecoder` decodes a batch of export entries (``[`` entry, entry, ... ``]``, as cut by the
streaming reader) with ``msgspec`` into Structs built from the record specs of :mod:`.chargebee`: types,
string lengths, INT64 and epoch ranges are checked in C while parsing (strict mode: no coercion), no dict is
built, and the rows are written by msgspec's encoder. It accepts a batch only when its rows are exactly the
rows the exact path (:func:`.chargebee.normalise_entry` on the reader's entries) would give, and the batch
is valid for the reader's strict rules; for anything else (a record to quarantine, a null, an unknown field,
an epoch in another unit, a duplicate key...) it returns ``None`` and the batch takes the exact path, which
gives the reasons. Both paths write rows with one encoder (:func:`encode_row` for the exact path), so a row
has the same bytes whichever path it took.

Epoch fields are decoded as integers in the unit's range; then the epochs of the whole batch (every record,
every nesting level) are gathered by field with ``attrgetter`` and made datetimes in one ``msgspec.convert``
call (seconds) or one ``timedelta`` chain (other units), and set back with ``setattr``: C loops, no Python
frame per value. A customer repeated byte for byte in later entries (a customer is repeated in each entry of
its subscriptions) is recognised by a hash of its bytes and counted as a duplicate without being decoded
again.

Strictness the typed decoding does not see by itself is checked cheaply:

* duplicate keys (msgspec keeps the last value): each key of the input has one colon, and so has each key
  of the rows written, while a colon inside a string is copied as it is and a timestamp adds two. So the
  batch's count of colons must equal the rows' (plus the entries' own keys, the cards' and the repeated
  customers', minus the ``custom_fields`` keys and two per timestamp the rows add); a duplicate key is a
  colon less in the rows. A ``\\u003a`` escape in the batch (a colon the count cannot see) sends it to the
  exact path. Counting one byte is a plain loop, 1.7x faster than counting ``":`` (see
  ``docs/performance.md``);
* integers outside INT64 in free JSON values (``meta_data``, custom fields): accepted only when
  ``orjson`` can write them with ``OPT_STRICT_INTEGER`` (53 bits; bigger ones take the exact path); the
  card is decoded as a flat object of scalars with INT64 integers.

Custom fields (``cf_*``) have no fixed names: the decoder learns them from the rows of the exact path
(:meth:`TypedDecoder.learn`), so an export whose records carry custom fields takes the exact path for its
first batch only.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from itertools import chain, compress, repeat
from operator import add, attrgetter, mul
from typing import Annotated, Any

import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType

from airflow_provider_incremental.core import chargebee as cb
from airflow_provider_incremental.core.epoch import _EPOCH

__all__ = ["TypedBatch", "TypedDecoder", "encode_row"]


_INT64 = Annotated[int, Meta(ge=cb._INT64_MIN, le=cb._INT64_MAX)]
#: a card is flat (a card with nested values takes the exact path); it is never loaded, only checked
_CARD = dict[str, str | bool | _INT64 | float | None]
_ESCAPE = re.compile(rb"\\u003[aA]")  # an escaped colon
_PLAIN = (str, bool, type(None), float)
_SEEN_CUSTOMERS = 1 << 16  # ~16 MB; past that the window restarts (repeats are decoded again)
_MAX_CUSTOM_FIELDS = 256  # learned names per entity; past that, records with new ones take the exact path
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)
_DATETIMES = list[datetime]
_consume: Callable[[Iterable[Any]], None] = deque(maxlen=0).extend  # run an iterator to its end in C


class TypedBatch:
    """A batch decoded by the fast path: its rows, already encoded, and its counts.

    :param entries: how many entries the batch holds (its ``len``).
    :param subscriptions: the subscription rows, one per line (NDJSON).
    :param subscription_rows: how many rows ``subscriptions`` holds.
    :param customers: the rows of the customers not seen before, one per line (canonical JSON, as :func:`encode_row`).
    :param versions: ``(id, version)`` of each row of ``customers``, ``version`` its
        :func:`.chargebee.version`. The other entries' customers repeat, byte for byte, a customer
        already given (duplicates: they can never be the newest row).
    :param lengths: the length of each row of ``customers``, without its newline.
    """

    __slots__ = ("customers", "entries", "lengths", "subscription_rows", "subscriptions", "versions")

    def __init__(
        self,
        entries: int,
        subscriptions: bytes,
        subscription_rows: int,
        customers: bytes,
        versions: list[tuple[str, tuple[datetime, int]]],
        lengths: list[int],
    ) -> None:
        self.entries = entries
        self.subscriptions = subscriptions
        self.subscription_rows = subscription_rows
        self.customers = customers
        self.versions = versions
        self.lengths = lengths

    def __len__(self) -> int:
        return self.entries


#: the row encoder of both paths: canonical JSON (the fields of a record in :data:`.chargebee.EXPORT_ORDER`,
#: the keys of free JSON objects sorted, datetimes as RFC 3339 ``...Z``), so a row has the same bytes whichever
#: path and batch it came through (the customer dedup breaks ties on them)
_ENCODER = msgspec.json.Encoder(order="deterministic")
_ENCODE = _ENCODER.encode
_ENCODE_LINES = _ENCODER.encode_lines


def _name(path: str) -> str:
    """The Struct name of the records at ``path``: ``subscription.subscription_items`` is
    ``SubscriptionSubscriptionItems``."""
    return "".join(part.title().replace("_", "") for part in path.split("."))


def _row_struct(path: str, spec: cb._Spec) -> type:
    """The Struct type of a row dict of the exact path at ``path``: its fields in the typed Structs' order
    (values as they are; nested records as Structs), so that :data:`_ENCODER` writes the same bytes."""
    fields: list[tuple[str, Any, Any]] = []
    for key in cb.export_order(path, spec):
        kind, arg = spec[key]
        tp: Any = Any
        if kind in (cb._RECORD, cb._REPEATED):
            tp = _row_struct(f"{path}.{key}", arg)
            if kind == cb._REPEATED:
                tp = list[tp]
        fields.append((key, tp | UnsetType, UNSET))
    if "." not in path:
        fields += [("custom_fields", Any, UNSET), ("extra_fields", Any, UNSET)]
    return msgspec.defstruct(
        _name(path) + "Row", fields, forbid_unknown_fields=True, omit_defaults=True, gc=False
    )


_ROWS = {
    "customer": _row_struct("customer", cb._CUSTOMER_SPEC),
    "subscription": _row_struct("subscription", cb._SUBSCRIPTION_SPEC),
}


def encode_row(entity: str, row: dict[str, Any]) -> bytes:
    """A row of the exact path (``customer`` or ``subscription``) as the fast path writes it.

    :param entity: ``customer`` or ``subscription``.
    :param row: the row, from :func:`.chargebee.normalise_entry`.
    """
    return _ENCODE(msgspec.convert(row, _ROWS[entity]))


class _Plan:
    """What to check in a decoded record: its free JSON fields and its custom fields."""

    __slots__ = ("custom", "json")

    def __init__(self, spec: cb._Spec, custom: tuple[str, ...]) -> None:
        self.json = tuple(k for k, (kind, _) in spec.items() if kind == cb._JSON)
        self.custom = custom


#: where the epochs of a record are: its epoch fields, and the records (``repeated``: lists of records)
#: under it that hold epochs, each with its own plan
_EpochPlan = tuple[tuple[str, ...], tuple[tuple[str, bool, "_EpochPlan"], ...]]


def _epoch_plan(spec: cb._Spec) -> _EpochPlan | None:
    """The :data:`_EpochPlan` of ``spec``; ``None`` when it holds no epoch at any level."""
    epochs = tuple(key for key, (kind, _) in spec.items() if kind == cb._EPOCH_S)
    nested = []
    for key, (kind, arg) in spec.items():
        if kind in (cb._RECORD, cb._REPEATED) and (plan := _epoch_plan(arg)) is not None:
            nested.append((key, kind == cb._REPEATED, plan))
    return (epochs, tuple(nested)) if epochs or nested else None


def _gather(records: list[Any], plan: _EpochPlan, found: tuple[list[Any], list[str], list[int]]) -> None:
    """Add the epochs set in ``records`` (Structs of one type) to ``found``: (record, field, value) lists.

    The loops run in C: ``filter(None, ...)`` keeps what is set, because an epoch is a positive integer
    (range-checked while decoding: after 2000-01-01) while ``UNSET`` and an empty list are false.
    """
    owners, names, values = found
    epochs, nested = plan
    for name in epochs:
        column = list(map(attrgetter(name), records))
        present = list(filter(None, column))
        if present:
            values += present
            owners += compress(records, column)
            names += repeat(name, len(present))
    for name, many, inner in nested:
        children = filter(None, map(attrgetter(name), records))  # a Struct is true
        within = list(chain.from_iterable(children)) if many else list(children)
        if within:
            _gather(within, inner, found)


def _struct(
    path: str, spec: cb._Spec, plans: dict[type, _Plan], custom: tuple[str, ...] = (), *, epoch: Any
) -> type:
    """A Struct type for the records at ``path`` (every field optional, unknown fields rejected; the fields
    in :data:`.chargebee.EXPORT_ORDER`, custom fields last), and its plan.

    :param epoch: the type of the epoch fields (integers in the unit's range).
    """
    types = {cb._STRING: str, cb._INT: _INT64, cb._EPOCH_S: epoch, cb._BOOL: bool, cb._FLOAT: float}
    fields: list[tuple[str, Any, Any]] = []
    for key in cb.export_order(path, spec):
        kind, arg = spec[key]
        if kind == cb._STRING and arg is not None:
            tp: Any = Annotated[str, Meta(max_length=arg)]
        elif kind == cb._JSON:
            tp = Any
        elif kind in (cb._RECORD, cb._REPEATED):
            tp = _struct(f"{path}.{key}", arg, plans, epoch=epoch)
            if kind == cb._REPEATED:
                tp = list[tp]
        else:
            tp = types[kind]
        fields.append((key, tp | UnsetType, UNSET))
    if custom:
        fields += [(key, Any, UNSET) for key in custom]
        fields.append(("custom_fields", Any, UNSET))
    # gc=False: decoded rows hold no reference cycles, so the cyclic GC need not track (and scan) them
    struct = msgspec.defstruct(_name(path), fields, forbid_unknown_fields=True, omit_defaults=True, gc=False)
    plans[struct] = _Plan(spec, custom)
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


def _escaped_colon(data: bytes) -> bool:
    """Whether ``data`` holds a ``\\u003a`` escape: memchr from one backslash to the next (most batches have
    none or a few escaped quotes; 3x faster than one search for the escape), a regular expression past 64."""
    at = data.find(b"\\")
    for _ in range(64):
        if at < 0:
            return False
        if data[at + 1 : at + 5] == b"u003" and data[at + 5 : at + 6] in (b"a", b"A"):
            return True
        at = data.find(b"\\", at + 2)  # past the escaped character: "\\\\" is one escape
    return at >= 0 and _ESCAPE.search(data, at) is not None


def _card_colons(entries: list[Any]) -> int:
    """The colons inside the strings (keys and values) of the entries' cards, which no row copies."""
    strings = (s for e in entries if e.card is not UNSET for item in e.card.items() for s in item)
    return sum(s.count(":") for s in strings if type(s) is str)


class _Reject(Exception):
    """The batch must take the exact path."""


_CUSTOMER_EPOCHS = _epoch_plan(cb._CUSTOMER_SPEC)
_SUBSCRIPTION_EPOCHS = _epoch_plan(cb._SUBSCRIPTION_SPEC)


class TypedDecoder:
    """Decode clean batches of entries into rows (see the module docstring); ``None`` for the others.

    :param unit: epoch unit of the timestamp fields (``s``, ``ms``, ``us`` or ``auto``: seconds here,
        values in other units take the exact path).
    :param now: the reference time of the run (the epoch range check).
    """

    def __init__(self, *, unit: str, now: datetime) -> None:
        ctx = cb._context(unit, now)
        self._micros = ctx.micros
        self._range = Annotated[int, Meta(ge=ctx.low, le=ctx.high)]
        self._custom: dict[str, dict[str, None]] = {"customer": {}, "subscription": {}}
        self._decoder: msgspec.json.Decoder[Any] | None = None
        self._customer: msgspec.json.Decoder[Any] | None = None
        #: customer objects (by hash of their bytes) of accepted batches: their id; a customer repeated
        #: byte for byte in later entries is a duplicate of a row the dedup has already seen. Keyed by
        #: Python's hash of the bytes (64-bit SipHash with a per-process key: as unlikely to collide as
        #: 8 bytes of SHA-256, unpredictable to a crafted input, and 2x cheaper); only decides whether a
        #: customer is decoded again, never the rows' bytes or order
        self._seen: dict[int, str] = {}
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
        epoch = self._range
        customer = _struct("customer", cb._CUSTOMER_SPEC, plans, tuple(self._custom["customer"]), epoch=epoch)
        subscription = _struct(
            "subscription", cb._SUBSCRIPTION_SPEC, plans, tuple(self._custom["subscription"]), epoch=epoch
        )
        entry = msgspec.defstruct(
            "Entry",
            [
                ("subscription", subscription | UnsetType, UNSET),
                ("customer", msgspec.Raw | UnsetType, UNSET),  # decoded apart, once per distinct row
                ("card", _CARD | UnsetType, UNSET),
            ],
            forbid_unknown_fields=True,
            gc=False,
        )
        self._plans = plans
        self._customer = msgspec.json.Decoder(customer)
        self._decoder = msgspec.json.Decoder(list[entry])  # type: ignore[valid-type]
        return self._decoder

    def decode(self, data: bytes) -> TypedBatch | None:
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

    def _decode(self, data: bytes) -> TypedBatch | None:
        if _escaped_colon(data):
            return None
        decoder = self._decoder or self._build()
        decode_customer = self._customer.decode  # type: ignore[union-attr]
        check = self._check
        seen = self._seen
        new: dict[int, str] = {}
        customers: list[Any] = []  # the customers not seen before, decoded
        subscriptions: list[Any] = []
        keys = 0  # the keys the rows account for, to compare with the batch's
        try:
            entries = decoder.decode(data)
            for entry in entries:
                raw, subscription, card = entry.customer, entry.subscription, entry.card
                if raw is UNSET:
                    return None  # the exact path quarantines it
                customer_bytes = bytes(raw)
                digest = hash(customer_bytes)
                cid = seen.get(digest) or new.get(digest)
                if cid is not None:  # the same bytes as a customer row already written: its keys as they are
                    keys += 1 + customer_bytes.count(b":")
                else:
                    customer = decode_customer(raw)
                    cid = customer.id
                    if cid is UNSET or not cid or cid.isspace():
                        return None  # no id: the exact path quarantines it
                    keys += 1 - check(customer)
                    new[digest] = cid
                    customers.append(customer)
                if subscription is not UNSET:
                    sid = subscription.id
                    if sid is UNSET or not sid or sid.isspace() or subscription.customer_id != cid:
                        return None  # no id, no customer_id or another customer's
                    keys += 1 - check(subscription)
                    subscriptions.append(subscription)
                if card is not UNSET:
                    keys += 1 + len(card)  # a duplicate key in the card is one key less
        except (_Reject, *_DECODE_ERRORS):
            return None
        stamps = self._datetimes(customers, subscriptions)
        rows = _ENCODE_LINES(subscriptions)
        customer_rows = _ENCODE_LINES(customers)
        keys += rows.count(b":") + customer_rows.count(b":") - 2 * stamps
        colons = data.count(b":")
        if colons != keys and colons != keys + _card_colons(entries):
            return None  # a duplicate key: let the reader judge
        versions = [
            (c.id, (c.updated_at or c.created_at or cb._OLDEST, c.resource_version or -1)) for c in customers
        ]
        if len(seen) + len(new) > _SEEN_CUSTOMERS:
            seen.clear()
        seen.update(new)
        lengths = list(map(len, customer_rows.split(b"\n")[:-1]))  # one line a record, ending with a newline
        return TypedBatch(len(entries), rows, len(subscriptions), customer_rows, versions, lengths)

    def _datetimes(self, customers: list[Any], subscriptions: list[Any]) -> int:
        """Replace the epochs of the records (integers, range-checked while decoding) by datetimes; return
        how many."""
        found: tuple[list[Any], list[str], list[int]] = ([], [], [])
        if customers and _CUSTOMER_EPOCHS is not None:
            _gather(customers, _CUSTOMER_EPOCHS, found)
        if subscriptions and _SUBSCRIPTION_EPOCHS is not None:
            _gather(subscriptions, _SUBSCRIPTION_EPOCHS, found)
        owners, names, values = found
        if self._micros == 1_000_000:  # seconds: msgspec makes them datetimes in C, all in one call
            datetimes: Iterable[datetime] = msgspec.convert(values, _DATETIMES, strict=False)
        else:
            micros = map(mul, values, repeat(self._micros))
            datetimes = map(add, repeat(_EPOCH), map(timedelta, repeat(0), repeat(0), micros))
        _consume(map(setattr, owners, names, datetimes))
        return len(values)

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
