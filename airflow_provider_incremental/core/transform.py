"""Chargebee list exports in, newline-delimited JSON files out: one streaming pass, every record counted.

``transform_exports`` reads one or more export files (the pages of one export) with the streaming
reader, validates and normalises every entry, and writes three NDJSON files ready for BigQuery load
jobs: ``customers`` (deduplicated by id across all pages: only the newest row per id), ``subscriptions``
and ``rejects`` (quarantine rows with their reason). Memory grows only with the number of distinct
customers. Every input record is loaded, folded into a newer duplicate, or quarantined; the counts say
so and are checked before anything is returned.
"""

from __future__ import annotations

import gc
import hashlib
import os
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate, repeat
from operator import add
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson

from airflow_provider_incremental.core.chargebee import (
    CustomerDedup,
    normalise_entry,
    quarantine_row,
    unknown_fields,
)
from airflow_provider_incremental.core.json_stream import ExportReader, parse_next_offset
from airflow_provider_incremental.core.typed import TypedBatch, TypedDecoder, encode_row

ENTITIES = ("customer", "subscription", "entry")
_DUMP = orjson.OPT_APPEND_NEWLINE


@dataclass
class Progress:
    """What the transform has done so far (passed to the progress callback)."""

    source: str
    entries: int
    bytes_read: int
    seconds: float

    @property
    def mb(self) -> float:
        return self.bytes_read / 1e6

    @property
    def mb_per_s(self) -> float:
        return self.mb / self.seconds if self.seconds else 0.0


@dataclass
class EntityCounts:
    """``read == loaded + deduplicated + quarantined`` for one entity."""

    read: int = 0
    loaded: int = 0
    deduplicated: int = 0
    quarantined: int = 0

    def balanced(self) -> bool:
        return self.read == self.loaded + self.deduplicated + self.quarantined


@dataclass
class TransformResult:
    """What one transform produced: NDJSON files, counts, and what the operator must report."""

    files: dict[str, Path]
    entries_read: int = 0
    bytes_read: int = 0
    counts: dict[str, EntityCounts] = field(default_factory=lambda: {e: EntityCounts() for e in ENTITIES})
    reasons: Counter[str] = field(default_factory=Counter)
    next_offsets: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    #: the ``next_offset`` of the last file read: the cursor of the batch (``None``: the export is complete)
    final_next_offset: str | None = None
    unknown_fields: set[str] = field(default_factory=set)
    digest: str = ""
    seconds: float = 0.0

    @property
    def quarantined(self) -> int:
        return sum(c.quarantined for c in self.counts.values())

    def summary(self) -> dict[str, Any]:
        """The JSON-serialisable part of the result (for XCom and logs)."""
        last_offset = self.final_next_offset
        return {
            "entries_read": self.entries_read,
            "bytes_read": self.bytes_read,
            "customers_rows": self.counts["customer"].loaded,
            "customers_deduplicated": self.counts["customer"].deduplicated,
            "subscriptions_rows": self.counts["subscription"].loaded,
            "quarantined": {"total": self.quarantined, "by_reason": dict(self.reasons.most_common())},
            "counts": {name: vars(c).copy() for name, c in self.counts.items()},
            "next_offset": {
                "raw": last_offset,
                "parsed": parse_next_offset(last_offset),
                "by_source": self.next_offsets,
            },
            "unknown_fields": sorted(self.unknown_fields),
        }


class _Writer:
    """Buffered NDJSON writer that also hashes what it writes (for deterministic job ids)."""

    def __init__(self, path: Path, digest: Any) -> None:
        self.path = path
        self._fp: IO[bytes] = open(path, "wb")
        self._buffer: list[bytes] = []
        self._size = 0
        self._digest = digest
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        self.write_lines([orjson.dumps(row, option=_DUMP)])

    def write_lines(self, lines: list[bytes]) -> None:
        """Write rows already encoded, each ending with a newline."""
        self.write_block(b"".join(lines), len(lines))  # one row: the bytes themselves, not a copy

    def write_block(self, data: bytes, rows: int) -> None:
        """Write ``rows`` rows already encoded, each ending with a newline, as one block."""
        self._buffer.append(data)
        self._size += len(data)
        self.rows += rows
        if self._size > 1 << 20:
            self.flush()

    def flush(self) -> None:
        data = b"".join(self._buffer)
        self._fp.write(data)
        self._digest.update(data)
        self._buffer.clear()
        self._size = 0

    def close(self) -> None:
        self.flush()
        self._fp.close()


class _CustomerSpill:
    """Customer rows spilled to disk, deduplicated by :class:`CustomerDedup` (an index, not the rows).

    ``write_newest`` copies the newest row of each id, in the order the rows were read.
    """

    def __init__(self, spill: Path) -> None:
        self._path = spill
        self._fp: IO[bytes] = open(spill, "w+b")
        self._dedup = CustomerDedup(canonical=self._row)
        self._ends = array("q")  # the byte offset of the end of each row (8 bytes a row; len: the rows)

    @property
    def duplicates(self) -> int:
        return self._dedup.duplicates

    def add(self, row: dict[str, Any]) -> None:
        data = encode_row("customer", row)
        number = len(self._ends)
        self._fp.write(data + b"\n")
        self._ends.append(self._end() + len(data) + 1)
        self._dedup.add(row, number)

    def add_typed(self, batch: TypedBatch) -> None:
        """Add the customers of a batch of the fast path (rows encoded, versions computed)."""
        first = len(self._ends)
        self._fp.write(batch.customers)
        ends = accumulate(map(add, batch.lengths, repeat(1)), initial=self._end())
        next(ends)  # the start of the block
        self._ends.extend(ends)
        self._dedup.duplicates += batch.entries - len(batch.versions)  # repeats: never the newest row
        add_version = self._dedup.add_version
        for number, (record_id, version) in enumerate(batch.versions, first):
            add_version(record_id, version, number)

    def _row(self, number: int) -> bytes:
        """Row ``number`` as it was spilled, without its newline (read back for a tie-break: rare)."""
        self._fp.flush()
        start = self._ends[number - 1] if number else 0
        return os.pread(self._fp.fileno(), self._ends[number] - 1 - start, start)

    def _end(self) -> int:
        """The byte offset of the end of the spill so far."""
        return self._ends[-1] if self._ends else 0

    def close(self) -> None:
        self._fp.close()

    def write_newest(self, path: Path, digest: Any) -> int:
        """Write the newest row of each id to ``path`` (feeding ``digest``); return how many."""
        self._fp.close()
        ends = self._ends
        kept = sorted(self._dedup.kept())
        with open(self._path, "rb") as spill, open(path, "wb") as out:
            # copy each run of consecutive kept rows as one byte range (usually a few runs: few ids change)
            for start, stop in _runs(kept):
                spill.seek(ends[start - 1] if start else 0)
                left = ends[stop - 1] - spill.tell()
                while left > 0:
                    block = spill.read(min(left, 1 << 20))
                    if not block:
                        raise RuntimeError(f"the customer spill {self._path} is shorter than written")
                    digest.update(block)
                    out.write(block)
                    left -= len(block)
        self._path.unlink()
        return len(kept)


def _runs(numbers: list[int]) -> Iterator[tuple[int, int]]:
    """The runs of consecutive integers in sorted ``numbers``, as ``range``-style ``(start, stop)`` pairs."""
    start = stop = -1
    for number in numbers:
        if number != stop:
            if stop > start:
                yield start, stop
            start = number
        stop = number + 1
    if stop > start:
        yield start, stop


def transform_exports(
    sources: Iterable[tuple[str, Callable[[], BinaryIO]]],
    out_dir: Path,
    *,
    unit: str,
    now: datetime,
    load_id: str,
    allow_python_literals: bool = False,
    progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 10.0,
    typed: bool = True,
) -> TransformResult:
    """Transform export files into ``customers``, ``subscriptions`` and ``rejects`` NDJSON files.

    :param sources: ``(name, open)`` pairs: the name is reported in errors and in the quarantine,
        ``open()`` returns the file as a binary stream.
    :param out_dir: where the three NDJSON files are written.
    :param unit: epoch unit of the timestamp fields (``s``, ``ms``, ``us`` or ``auto``).
    :param now: the reference time of the run (epoch range check, quarantine timestamps).
    :param load_id: the id of this load, written into each quarantine row.
    :param allow_python_literals: repair Python-literal exports (single quotes, True/False/None).
    :param progress: called at least every ``progress_interval`` seconds while reading.
    :param typed: decode clean batches with the typed fast path (:mod:`.typed`); the rows are the same
        either way (``False`` is for tests and benchmarks).
    :raises SourceFormatError: a file is not a readable export (nothing is returned, nothing loaded).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()  # hardware-accelerated: hashing every row byte costs ~2% of the transform
    writers = {name: _Writer(out_dir / f"{name}.ndjson", digest) for name in ("subscriptions", "rejects")}
    result = TransformResult(
        files={"customers": out_dir / "customers.ndjson", **{n: w.path for n, w in writers.items()}}
    )
    counts = result.counts
    customers = _CustomerSpill(out_dir / "customers.all.ndjson")
    fast = TypedDecoder(unit=unit, now=now) if typed else None

    def add_entry(name: str, index: int, entry: Any) -> None:
        """The exact path: validate and normalise one entry, write its rows and rejects."""
        customer, subscription, rejects = normalise_entry(entry, index, unit=unit, now=now)
        if customer is not None:
            counts["customer"].read += 1
            customers.add(customer)
            result.unknown_fields |= unknown_fields(customer)
            if fast is not None and "custom_fields" in customer:
                fast.learn("customer", customer["custom_fields"])
        if subscription is not None:
            counts["subscription"].read += 1
            counts["subscription"].loaded += 1
            writers["subscriptions"].write_lines([encode_row("subscription", subscription) + b"\n"])
            result.unknown_fields |= unknown_fields(subscription)
            if fast is not None and "custom_fields" in subscription:
                fast.learn("subscription", subscription["custom_fields"])
        for reject in rejects:
            entity = counts[reject.entity]
            entity.read += 1
            entity.quarantined += 1
            result.reasons[reject.reason_code] += 1
            writers["rejects"].write(quarantine_row(reject, source=name, load_id=load_id, rejected_at=now))

    started = last_report = time.monotonic()
    entry_offset = 0  # record indexes continue across the pages of one export
    # The cyclic GC is paused while reading: the batches are millions of short-lived objects without cycles
    # (records, rows), which it would otherwise scan again and again for nothing (~5% of the transform).
    # Reference counting frees them as before; the previous state is restored, on errors too.
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        for name, opener in sources:
            result.sources.append(name)
            with opener() as fp:
                reader = ExportReader(
                    fp,
                    source=name,
                    allow_python_literals=allow_python_literals,
                    decode=fast.decode if fast is not None else None,
                )
                for first, batch in reader.batches():
                    if type(batch) is TypedBatch:  # a clean batch: rows checked and encoded
                        customers.add_typed(batch)
                        counts["customer"].read += batch.entries
                        counts["subscription"].read += batch.subscription_rows
                        counts["subscription"].loaded += batch.subscription_rows
                        writers["subscriptions"].write_block(batch.subscriptions, batch.subscription_rows)
                    else:
                        for i, entry in enumerate(batch):
                            add_entry(name, first + i, entry)
                    if progress is not None and time.monotonic() - last_report >= progress_interval:
                        last_report = time.monotonic()
                        progress(
                            Progress(
                                name,
                                entry_offset + reader.entries_read,
                                result.bytes_read + reader.bytes_read,
                                last_report - started,
                            )
                        )
                entry_offset += reader.entries_read
                result.entries_read += reader.entries_read
                result.bytes_read += reader.bytes_read
                if reader.next_offset is not None:
                    result.next_offsets[name] = reader.next_offset
                result.final_next_offset = reader.next_offset
    except BaseException:
        customers.close()
        raise
    finally:
        if gc_enabled:
            gc.enable()
        for writer in writers.values():
            writer.close()
    counts["customer"].loaded = customers.write_newest(result.files["customers"], digest)
    counts["customer"].deduplicated = customers.duplicates
    counts["entry"].read = counts["entry"].quarantined
    result.digest = digest.hexdigest()[:32]
    result.seconds = time.monotonic() - started
    unbalanced = [name for name, c in counts.items() if not c.balanced()]
    if unbalanced:  # a bug, never bad input: refuse to load rather than lose records silently
        raise RuntimeError(f"Record counts do not balance for {unbalanced}: {counts}")
    return result
