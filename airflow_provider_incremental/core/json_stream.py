"""Streaming reader of Chargebee list exports: strict JSON, with an opt-in repair of Python-literal input.

An export is ``{"list": [entry, ...], "next_offset": "..."}``; :class:`ExportReader` yields the entries one
by one while reading the file in blocks of ``chunk_size`` bytes, so memory does not grow with the file.

How it stays close to ``orjson.loads`` speed: many entries are parsed by one ``orjson.loads`` call on a slice
of the block. The slice ends at the last entry boundary of the block, found with ``bytes.rfind`` of the bytes
seen between the first two entries (for example ``\\n    },\\n    {\\n      "subscription"``). A guessed
boundary is safe: a slice that starts at an entry and ends inside a string or a nested value never parses
as ``[`` + slice + ``]``. When the guess fails, an exact scanner that tracks strings and brackets finds
the boundaries.

``orjson`` accepts two things this reader rejects: duplicate keys (it keeps the last value) and integers
outside BigQuery's INT64 range (it returns them as big ints or floats). Both are checked cheaply per slice
on ``orjson.dumps`` of what was parsed: if it equals the slice (compact input), all is well; otherwise it
must have as many ``:`` as the slice (each key has one, so a dropped duplicate loses one; a ``\\u003a``
escape in the slice disables this shortcut), no integer beyond 53 bits (``OPT_STRICT_INTEGER``) and no
float written with ``e+`` (what an integer too big for 64 bits becomes). A slice that fails the cheap check
is checked exactly, and the first problem is located for the message.

With ``allow_python_literals=True`` the input first goes through :class:`_PythonLiteralStream`, a
streaming tokenizer that rewrites Python-literal syntax (``'...'`` strings, ``True``/``False``/``None``,
trailing commas, adjacent strings) to JSON; errors still point at the line and column of the original file.
"""

from __future__ import annotations

import bisect
import codecs
import json
import re
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, ClassVar, NoReturn

import orjson

from airflow_provider_incremental.exceptions import SourceFormatError

__all__ = ["DEFAULT_CHUNK_SIZE", "ExportReader", "parse_next_offset"]

_DIGIT = re.compile(r"[0-9]")
_MIN_BATCH = 1 << 15  # the smallest batch cut while the fast path declines batches
DEFAULT_CHUNK_SIZE = 1 << 16  # 64 KiB: a batch and its records stay in the CPU cache (docs/performance.md)
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

_BOM = b"\xef\xbb\xbf"
_WS_BYTES = b" \t\n\r"
_WS = re.compile(rb"[ \t\n\r]*")
# a string; the closing quote is optional (group 1) so that a string cut by the end of the buffer is found
# without the regex engine backtracking through all of it
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(")?', re.DOTALL)
# everything up to the next bracket outside strings (a string cut by the end of the buffer runs to it)
_SKIP = re.compile(rb'(?:[^"\[\]{}]+|"[^"\\]*(?:\\.[^"\\]*)*"?)*', re.DOTALL)
_SCALAR = re.compile(rb'[^ \t\n\r,:\[\]{}"]+')
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[^ \t\n\r,:\[\]{}"]+|[,:\[\]{}]', re.DOTALL)
_ESCAPED_COLON = re.compile(rb"\\u003[aA]")
_NOT_A_NUMBER = re.compile(rb"[-+]?(?:NaN|nan|Infinity|inf)(?!\w)")
_PYTHON_WORD = re.compile(rb"(?:True|False|None)\b")

_PYTHON_HINT = (
    "this looks like a Python literal (single quotes, True/False/None), not JSON; "
    "pass allow_python_literals=True to repair it"
)
_NAN_MESSAGE = (
    "{token} is not valid JSON (NaN, Infinity and -Infinity are JavaScript/Python extensions); "
    "write null or a string instead"
)
_DEPTH_MESSAGE = "nesting is deeper than 1024 levels (the JSON parser's limit); flatten the data"
#: how deep an entry may nest (the entry itself is level 1): orjson writes at most 254 nested levels,
#: and a quarantine row holds the entry one level down
MAX_ENTRY_DEPTH = 253
_ENTRY_DEPTH_MESSAGE = (
    "entry {entry} is nested more than {limit} levels deep, more than its rows and JSON columns can "
    "hold when written to BigQuery; flatten the data"
)
_SURROGATE_MESSAGE = (
    "a string holds an unpaired surrogate escape (\\ud800-\\udfff), which is not a character "
    "and cannot be stored as UTF-8; fix the producer of the file"
)
# the first bytes of a UTF-16 or UTF-32 file: a byte order mark, or ASCII next to a NUL byte
_WIDE_ENCODING = re.compile(rb"\xff\xfe|\xfe\xff|\x00\x00\xfe\xff|\x00[^\x00]|[^\x00]\x00")


def parse_next_offset(raw: str | None) -> list[str] | None:
    """Parse a Chargebee ``next_offset`` cursor, a string that holds a JSON array.

    ``'["1698915678000","63969095"]'`` gives ``["1698915678000", "63969095"]``; numbers in the array are
    turned into strings. Anything else (``None``, not JSON, not a flat array) gives ``None``: the cursor is
    opaque, so this never raises.

    :param raw: the ``next_offset`` value as found in the file.
    """
    if not isinstance(raw, str):
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list):
        return None
    parts: list[str] = []
    for item in value:
        if isinstance(item, str):
            parts.append(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            parts.append(str(item))
        else:
            return None
    return parts


class ExportReader:
    """Read the entries of one Chargebee list export as a stream.

    Iterate :meth:`entries` once; afterwards :attr:`next_offset` holds the cursor of a non-final page and
    :attr:`ignored_keys` the other top-level keys. :attr:`bytes_read` and :attr:`entries_read` grow as
    the file is read (for progress logs).

    :param fp: the file, opened in binary mode. Error line and column need it to be seekable (they are
        ``None`` otherwise; the byte offset is always given).
    :param source: the file name used in error messages.
    :param allow_python_literals: repair Python-literal input (``'...'``, ``True``/``False``/``None``,
        trailing commas) instead of rejecting it.
    :param chunk_size: how many bytes to read at a time, and so the size of a batch of entries; memory use
        is a small multiple of it (or of the largest entry, if bigger).
    :param decode: a fast path tried first on each batch of entries (``[`` + entries + ``]``, maybe cut in
        the wrong place): it returns what to yield for the batch (the entries, or any object whose ``len``
        is their number: :meth:`batches` yields it as it is), having checked everything this reader
        checks, or ``None`` to let the reader parse and check the batch itself. After a batch it declined
        (and the reader parsed), the next batches are cut smaller (down to 32 KB, then doubling back to
        ``chunk_size``), so that a bad record sends few good ones down the slower path with it.
    :raises SourceFormatError: (from :meth:`entries`) the file is not a valid export.
    """

    def __init__(
        self,
        fp: BinaryIO,
        *,
        source: str,
        allow_python_literals: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        decode: Callable[[bytes], Any] | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        self.source = source
        self.allow_python_literals = allow_python_literals
        #: the raw ``next_offset`` (a non-string value is kept as its JSON text); ``None`` if absent
        self.next_offset: str | None = None
        #: top-level keys other than ``list`` and ``next_offset``, in file order
        self.ignored_keys: list[str] = []
        self.bytes_read = 0
        self.entries_read = 0
        self._fp = fp
        self._origin = _tell(fp)
        self._chunk_size = chunk_size
        self._decode = decode
        self._target = chunk_size  # the size of the next batch to cut (smaller while decode declines)
        self._literals = _PythonLiteralStream(fp, self._fail_at) if allow_python_literals else None
        self._buf = b""
        self._pos = 0  # the next byte to look at, in _buf
        self._base = 0  # offset of _buf[0] in the (repaired) stream
        self._eof = False
        self._keys: dict[str, None] = {}  # the root keys read, in file order (for messages)
        self._sig: bytes | None = None  # the bytes seen between two entries, from one's "}" to the next key
        self._sig_close = 0  # offset of that "}" in _sig
        self._misses = 0  # wrong guesses of where entries end
        self._started = False

    def entries(self) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, entry)`` for each element of the ``list`` array; index counts from 0.

        An entry is whatever JSON value the element is (normally an object); the caller validates it.

        :raises SourceFormatError: the file is not a valid export; the message gives the position.
        """
        for first, batch in self._batches():
            for i in range(len(batch)):
                entry = batch[i]
                batch[i] = None  # let the caller's copy be the last one
                self.entries_read = first + i + 1
                yield first + i, entry

    def batches(self) -> Iterator[tuple[int, Any]]:
        """Like :meth:`entries`, a batch at a time: yield ``(index of the first entry, entries)``; ``entries``
        is a list, or what the ``decode`` fast path returned for the batch.

        :raises SourceFormatError: the file is not a valid export; the message gives the position.
        """
        for first, batch in self._batches():
            self.entries_read = first + len(batch)
            yield first, batch

    def _batches(self) -> Iterator[tuple[int, Any]]:
        """Yield the batches; the caller counts them into :attr:`entries_read` before asking for the next."""
        if self._started:
            raise RuntimeError("ExportReader.entries() can be iterated only once")
        self._started = True
        self._open()
        more = self._peek() != 0x5D
        if not more:
            self._pos += 1
        while more:
            yield self.entries_read, self._next_batch()
            more = self._after_entry()
        self._close()

    # -- the envelope -------------------------------------------------------------------------------------

    def _open(self) -> None:
        """Check the start of the file and read the root members up to the ``list`` array's ``[``."""
        if not self._fill(len(_BOM)):
            self._error('the file is empty (0 bytes); expected a JSON object like {"list": [...]}', 0)
        if self._buf.startswith(_BOM):
            self._error(
                "the file starts with a UTF-8 byte order mark (BOM), which JSON does not allow; "
                "save it as UTF-8 without BOM (e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' FILE)",
                0,
            )
        if _WIDE_ENCODING.match(self._buf):
            self._error(
                "the file looks UTF-16 or UTF-32 encoded (a byte order mark or NUL bytes at its start); "
                "JSON must be UTF-8: convert it (e.g. iconv -f utf-16 -t utf-8)",
                0,
            )
        c = self._peek()
        if c < 0:
            self._error(
                'the file contains only whitespace; expected a JSON object like {"list": [...]}', self._pos
            )
        if c != 0x7B:
            self._error(
                f'the root must be a JSON object like {{"list": [...]}}, but it is {self._kind()}', self._pos
            )
        self._pos += 1
        if not self._members(after_value=False):
            found = ", ".join(f'"{key}"' for key in self._keys) or "none"
            self._error(
                f'the root object has no "list" array of entries (keys found: {found})', self._pos - 1
            )

    def _close(self) -> None:
        """Read the root members after the ``list`` array, the root's ``}`` and check nothing follows."""
        self._members(after_value=True)
        if self._peek() >= 0:
            self._error(f"unexpected data after the end of the root object: {self._found()}", self._pos)

    def _members(self, *, after_value: bool) -> bool:
        """Read root members: True when the ``list`` array opened (pos after its ``[``), False at the ``}``.

        :param after_value: whether pos is just after a member (else just after the root's ``{``).
        """
        if not after_value and self._peek() == 0x7D:
            self._pos += 1
            return False
        while True:
            if after_value:
                c = self._peek()
                if c == 0x7D:
                    self._pos += 1
                    return False
                if c != 0x2C:
                    self._unexpected("',' or '}' after a member of the root object")
                self._pos += 1
            key = self._key()
            if key == "list":
                if self._peek() != 0x5B:
                    self._error(
                        f'"list" must be a JSON array of entries, but it is {self._kind()}', self._pos
                    )
                self._pos += 1
                return True
            self._peek()
            end = self._value_end()  # may move pos: it reads more of the file
            start = self._pos
            if end == start:
                self._unexpected(f'a value for "{key}"')
            value = self._loads(start, end)
            self._pos = end
            if key == "next_offset":
                self.next_offset = (
                    value if isinstance(value, str) or value is None else orjson.dumps(value).decode()
                )
            else:
                self.ignored_keys.append(key)
            after_value = True

    def _key(self) -> str:
        """Read a root member's key and its ``:``."""
        if self._peek() != 0x22:
            self._unexpected('a key in double quotes (e.g. "list")')
        end = self._value_end()
        start = self._pos
        key = self._loads(start, end)
        if key in self._keys:
            self._error(f'duplicate key "{key}" in the root object', start)
        self._keys[key] = None
        self._pos = end
        if self._peek() != 0x3A:
            self._unexpected(f"':' after the key \"{key}\"")
        self._pos += 1
        return str(key)

    def _after_entry(self) -> bool:
        """Read the separator after an entry: True if another entry follows, False at the list's end."""
        c = self._peek()
        if c == 0x5D:
            self._pos += 1
            return False
        if c != 0x2C:
            self._unexpected(f"',' or ']' after entry {self.entries_read - 1} of the \"list\" array")
        comma = self._pos
        self._pos += 1
        c = self._peek()
        if c == 0x5D:
            self._error("a trailing comma before ']' is not allowed in JSON", comma)
        if c < 0:
            self._unexpected('an entry of the "list" array')
        return True

    # -- the entries --------------------------------------------------------------------------------------

    def _next_batch(self) -> Any:
        """Parse the run of entries that starts at pos and ends in the buffer; leave pos after it."""
        while True:
            self._fill(self._chunk_size)
            for cut in self._guesses():
                data = self._array(cut)
                if (fast := self._fast(data, cut)) is not None:
                    return fast
                try:
                    batch = orjson.loads(data)
                except orjson.JSONDecodeError:
                    self._misses += 1
                    if self._misses == 3:  # the bytes between entries also occur inside them
                        self._sig = None
                    continue
                if self._decode is not None:  # declined for what it holds: keep the next batches small,
                    self._target = max(self._target // 8, _MIN_BATCH)  # so a bad record slows few others
                break
            else:
                cut = self._scan()
                if not cut:  # not one complete entry in the buffer
                    self._check_incomplete()
                    self._fill(2 * (len(self._buf) - self._pos))
                    continue
                data = self._array(cut)
                if (fast := self._fast(data, cut)) is not None:
                    return fast
                try:
                    batch = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    self._decode_error(exc, data, self._pos - 1, cut)
            self._check_batch(batch, data, self._pos, cut)
            self._pos = cut
            return list(batch)

    def _fast(self, data: bytes, cut: int) -> Any:
        """The batch ``data`` (ending at ``cut``) as decoded by the ``decode`` fast path, if it takes it."""
        batch = self._decode(data) if self._decode is not None else None
        if batch is not None:
            self._pos = cut
            self._target = min(2 * self._target, self._chunk_size)
        return batch

    def _array(self, cut: int) -> bytes:
        """The entries from pos to ``cut`` as a JSON array."""
        return b"".join((b"[", memoryview(self._buf)[self._pos : cut], b"]"))

    def _guesses(self) -> list[int]:
        """Likely ends of the last entries in the buffer (each is verified by parsing)."""
        buf, pos = self._buf, self._pos
        guesses = []
        if self._eof:  # the last entry ends at the "}" before the list's "]", near the end of the file
            end = len(buf)
            for _ in range(3):
                end = buf.rfind(b"]", pos, end)
                last = end - 1
                while last > pos and buf[last] in _WS_BYTES:
                    last -= 1
                if last <= pos:
                    break
                if buf[last] == 0x7D:
                    guesses.append(last + 1)
                    break
        if self._sig is not None:
            limit = pos + self._target
            if self._target < self._chunk_size and limit < len(buf):  # declined lately: a smaller one first
                found = buf.rfind(self._sig, pos, limit)
                if found >= 0:
                    guesses.insert(0, found + self._sig_close + 1)
            found = buf.rfind(self._sig, pos)
            if found >= 0:
                guesses.append(found + self._sig_close + 1)
        return guesses

    def _scan(self) -> int:
        """Find the end of the last complete entry in the buffer exactly (0 if there is none)."""
        buf, pos, cut = self._buf, self._pos, 0
        while True:
            end = _value_end(buf, pos, self._eof)
            if end <= pos:
                return cut
            cut = end
            comma = _skip_ws(buf, end)
            if comma >= len(buf) or buf[comma] != 0x2C:
                return cut
            start = _skip_ws(buf, comma + 1)
            if start >= len(buf):
                return cut
            learn = self._sig is None and self._misses < 3
            if learn and buf[end - 1] == 0x7D and buf[start] == 0x7B and self._learn(end, start):
                return cut  # the fast path takes over from here
            pos = start

    def _learn(self, end: int, start: int) -> bool:
        """Remember the bytes between two entries (``buf[end - 1]`` is ``}``, ``buf[start]`` is ``{``)."""
        buf = self._buf
        first = end - 1
        while first > 0 and end - first < 64 and buf[first - 1] in _WS_BYTES:
            first -= 1
        key = _STRING.match(buf, _skip_ws(buf, start + 1))
        if key is None or key.lastindex is None or key.end() - start > 256:
            return False
        self._sig = buf[first : key.end()]
        self._sig_close = end - 1 - first
        return True

    def _check_incomplete(self) -> None:
        """The buffer holds part of one entry: raise if it is already invalid, or if the file ends there."""
        data = b"[" + self._buf[self._pos :]
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            # orjson fails to "allocate memory" for cut input that is deeply nested
            cut = _byte_pos(exc, data) == len(data) or "allocate" in exc.msg or _incomplete_utf8(exc, data)
            if not cut:
                self._decode_error(exc, data, self._pos - 1, len(self._buf))
        if self._eof:
            self._error("unexpected end of file: the file is truncated", len(self._buf))

    def _check_batch(self, batch: list[Any], data: bytes, start: int, end: int) -> None:
        """Reject duplicate keys and integers outside INT64 in ``data`` (``[`` + ``buf[start:end]`` + ``]``),
        parsed as ``batch``."""
        try:
            dumped = orjson.dumps(batch, option=orjson.OPT_STRICT_INTEGER)
        except TypeError:  # an integer beyond 53 bits (maybe beyond 64), or an entry nested too deep
            deep = _find_deep(self._buf, start, end, self.entries_read)
            if deep is not None:
                self._error(_ENTRY_DEPTH_MESSAGE.format(entry=deep[1], limit=MAX_ENTRY_DEPTH), deep[0])
            clean = False
        else:
            clean = data == dumped or (
                not _has_big_float(dumped)
                and self._buf.count(b":", start, end) == dumped.count(b":")
                and not _has_escaped_colon(self._buf, start, end)
            )
        if clean or _semantically_valid(self._buf[start:end]):
            return
        found = _find_semantic_error(self._buf, start, end, self.entries_read)
        if found is not None:
            self._error(found[1], found[0])

    # -- reading ------------------------------------------------------------------------------------------

    def _read(self, size: int) -> bytes:
        if self._literals is not None:
            data = self._literals.read(size)
            self.bytes_read = self._literals.bytes_read
        else:
            data = self._fp.read(size)
            self.bytes_read += len(data)
        return data

    def _fill(self, want: int) -> bool:
        """Make ``want`` bytes available after pos (fewer at the end of the file); False if none are."""
        available = len(self._buf) - self._pos
        if available < want and not self._eof:
            parts = [self._buf[self._pos :]]
            self._base += self._pos
            self._pos = 0
            if self._literals is not None:
                self._literals.forget(self._base)
            while available < want:
                data = self._read(max(self._chunk_size, want - available))
                if not data:
                    self._eof = True
                    break
                parts.append(data)
                available += len(data)
            self._buf = b"".join(parts)
        return available > 0

    def _peek(self) -> int:
        """Skip whitespace and return the next byte, or -1 at the end of the file."""
        while True:
            self._pos = _skip_ws(self._buf, self._pos)
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill(1):
                return -1

    def _value_end(self) -> int:
        """The end of the JSON value at pos, reading more of the file as needed (it is not validated)."""
        while True:
            end = _value_end(self._buf, self._pos, self._eof)
            if end >= 0:
                return end
            if self._eof:
                self._check_incomplete()
            self._fill(2 * (len(self._buf) - self._pos))

    def _loads(self, start: int, end: int) -> Any:
        """Parse ``buf[start:end]``, raising a positioned error."""
        data = self._buf[start:end]
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._decode_error(exc, data, start, end)

    # -- errors -------------------------------------------------------------------------------------------

    def _decode_error(self, exc: orjson.JSONDecodeError, data: bytes, shift: int, end: int) -> NoReturn:
        """Raise the error of ``orjson.loads(data)``, where ``data[i]`` is ``buf[shift + i]``.

        :param end: where the input ends in the buffer (an error found after it is reported there).
        """
        if "UTF-8" in exc.msg:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as bad:
                byte = data[bad.start]
                self._error(
                    f"invalid UTF-8 (byte 0x{byte:02X}); the file must be UTF-8 encoded "
                    "(convert it, e.g. iconv -f latin1 -t utf-8)",
                    shift + bad.start,
                )
        pos = self._look(min(shift + _byte_pos(exc, data), end))
        if pos >= len(self._buf) and self._eof:
            self._error("unexpected end of file: the file is truncated", pos)
        if "depth" in exc.msg:
            self._error(_DEPTH_MESSAGE, pos)
        if "surrogate" in exc.msg:
            self._error(_SURROGATE_MESSAGE, pos)
        if "infinity" in exc.msg:
            self._error("number too large for a 64-bit float (it would be infinity)", pos)
        special = _NOT_A_NUMBER.match(self._buf, max(pos - 1, 0)) or _NOT_A_NUMBER.match(self._buf, pos)
        if special:
            self._error(_NAN_MESSAGE.format(token=special.group().decode()), special.start())
        if self._looks_python(pos):
            self._error(f"invalid JSON: found {self._found(pos)}; {_PYTHON_HINT}", pos)
        self._error(f"invalid JSON: {exc.msg}", pos)

    def _unexpected(self, expected: str) -> NoReturn:
        """Raise "expected X" for the byte at pos (or a truncation error at the end of the file)."""
        self._look(self._pos)
        if self._pos >= len(self._buf):
            self._error(f"unexpected end of file: the file is truncated (expected {expected})", self._pos)
        special = _NOT_A_NUMBER.match(self._buf, self._pos)
        if special:
            self._error(_NAN_MESSAGE.format(token=special.group().decode()), self._pos)
        hint = f"; {_PYTHON_HINT}" if self._looks_python(self._pos) else ""
        self._error(f"expected {expected}, found {self._found()}{hint}", self._pos)

    def _look(self, pos: int) -> int:
        """Move to ``buf[pos]`` and read a few bytes after it (keeping the one before), for an error message.

        :return: the new offset of that byte in the buffer.
        """
        before = min(pos, 1)
        self._pos = pos - before
        self._fill(32)
        self._pos += before
        return self._pos

    def _looks_python(self, pos: int) -> bool:
        return self._literals is None and (
            self._buf[pos : pos + 1] == b"'" or _PYTHON_WORD.match(self._buf, pos) is not None
        )

    def _found(self, pos: int | None = None) -> str:
        """A short quote of the input at ``pos`` (default: the current position).

        Digits are masked: the quote goes into exceptions and logs, and may fall inside a card number.
        """
        pos = self._pos if pos is None else pos
        text = self._buf[pos : pos + 20].decode("utf-8", "replace").split("\n")[0]
        return repr(_DIGIT.sub("#", text)) if text else "the end of a line"

    def _kind(self) -> str:
        """What the JSON value at pos is, for messages."""
        self._look(self._pos)
        c = self._buf[self._pos : self._pos + 1]
        kinds = {b"[": "an array", b"{": "an object", b'"': "a string", b"t": "a boolean", b"f": "a boolean"}
        if c in kinds:
            return kinds[c]
        if c == b"n":
            return "null"
        if c and c in b"-0123456789":
            return "a number"
        if not c:
            return "missing (the file ends there)"
        hint = f"; {_PYTHON_HINT}" if self._looks_python(self._pos) else ""
        return f"not valid JSON ({self._found()}){hint}"

    def _error(self, message: str, pos: int) -> NoReturn:
        """Raise :class:`SourceFormatError` for the byte at ``buf[pos]``."""
        offset = self._base + pos
        if self._literals is not None:
            offset = self._literals.source_offset(offset)
        self._fail_at(message, offset)

    def _fail_at(self, message: str, offset: int) -> NoReturn:
        """Raise :class:`SourceFormatError` for the byte at ``offset`` of the file."""
        line, column = _locate(self._fp, self._origin, offset)
        raise SourceFormatError(self.source, message, line=line, column=column, byte_offset=offset)


class _PythonLiteralStream:
    """Rewrite a Python-literal export to JSON as a stream; :meth:`read` returns JSON bytes.

    A tokenizer finds strings, names, trailing commas and parentheses; everything else (numbers,
    punctuation, whitespace) is copied. ``'...'`` becomes ``"..."`` (re-encoded when it has escapes or
    double quotes), adjacent strings are joined as Python does (``pprint`` splits long strings so),
    ``True``/``False``/``None`` become ``true``/``false``/``null``, a trailing comma becomes a space, a
    ``u`` string prefix a space. Length changes are recorded so that a position in the output maps back
    to the file (:meth:`source_offset`). Nothing is evaluated.

    :param fp: the file, in binary mode.
    :param fail: raises the error for a message and a byte offset of the file.
    """

    # a string; the closing quote is optional (groups 1 and 2): a string cut by the end of the line or of
    # the input read so far is found without the regex engine backtracking through all of it
    _STRING = re.compile(rb"'[^'\\\n]*(?:\\.[^'\\\n]*)*(')?|" rb'"[^"\\\n]*(?:\\.[^"\\\n]*)*(")?')
    _TOKEN = re.compile(
        _STRING.pattern + rb"|(?<![\w.])[A-Za-z_]\w*"
        rb"|,(?=[ \t\r\n]*[\]}])"
        rb"|[()]"
    )
    _WORDS: ClassVar[dict[bytes, bytes]] = {b"True": b"true", b"False": b"false", b"None": b"null"} | {
        word: word for word in (b"true", b"false", b"null")
    }
    _AFTER_STRING = frozenset((b":", b",", b"}", b"]"))
    _PREFIXES = frozenset({b"b", b"r", b"f", b"br", b"rb", b"fr", b"rf"})
    _WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")

    def __init__(self, fp: BinaryIO, fail: Callable[[str, int], NoReturn]) -> None:
        self.bytes_read = 0
        self._fp = fp
        self._fail = fail
        self._raw = b""  # input not converted yet
        self._raw_base = 0  # offset of _raw[0] in the file
        self._out = 0  # bytes returned so far
        self._eof = False
        self._starts: list[int] = []  # output offsets of the rewritten tokens that changed length ...
        self._spans: list[tuple[int, int, int, int]] = []  # ... and (out start, out end, in start, in end)

    def read(self, size: int) -> bytes:
        """Return the next JSON bytes (about ``size`` of them); ``b""`` at the end."""
        while True:
            if not self._eof:
                data = self._fp.read(max(size, len(self._raw)))
                self.bytes_read += len(data)
                self._eof = not data
                self._raw += data
            if not self._raw:
                return b""
            out = self._convert()
            if out or self._eof:
                return out

    def source_offset(self, out_pos: int) -> int:
        """The file offset of output byte ``out_pos`` (a rewritten token maps to its start)."""
        i = bisect.bisect_right(self._starts, out_pos) - 1
        if i < 0:
            return out_pos
        _, out_end, in_start, in_end = self._spans[i]
        return in_start if out_pos < out_end else in_end + out_pos - out_end

    def forget(self, out_pos: int) -> None:
        """Drop the position records that only output before ``out_pos`` needs."""
        i = bisect.bisect_right(self._starts, out_pos) - 1
        if i > 256:
            del self._starts[:i]
            del self._spans[:i]

    def _convert(self) -> bytes:
        raw = self._raw
        stop = len(raw) if self._eof else self._safe_end(raw)
        out = bytearray(raw[:stop])
        splices: list[tuple[int, int, bytes]] = []
        done = 0  # tokens before this were handled (adjacent strings are handled together)
        for match in self._TOKEN.finditer(raw, 0, stop):
            a, b = match.span()
            c = raw[a]
            if a < done:
                continue
            if c in b"'\"":  # a quote
                if match.lastindex is None:  # a string without its closing quote in this line
                    if self._more_input(raw, a):
                        stop = a
                        break
                    self._fail(
                        "unterminated string (a Python string ends on the line it starts)", self._at(a)
                    )
                if b - a == 2 and raw[b : b + 1] == raw[a : a + 1]:
                    self._fail("triple-quoted strings are not supported", self._at(a))
                body = raw[a + 1 : b - 1]
                if raw[b : b + 1] in self._AFTER_STRING:  # the usual case: one string
                    if b"\\" not in body and (c == 0x22 or b'"' not in body):
                        out[a] = out[b - 1] = 0x22
                        continue
                    text = self._json([(a, b)])
                else:  # maybe adjacent strings, which Python concatenates (pprint writes long ones so)
                    spans = self._adjacent(raw, a, b, stop)
                    if spans is None:
                        stop = a
                        break
                    b = done = spans[-1][1]
                    text = self._json(spans)
                if len(text) == b - a:
                    out[a:b] = text
                else:
                    splices.append((a, b, text))
            elif c == 0x2C:  # a trailing comma
                out[a] = 0x20
            elif c in b"()":
                self._fail(
                    "Python tuples and parentheses are not supported; write lists as [...]", self._at(a)
                )
            else:
                self._name(match.group(), a, b, out)
        pieces: list[bytes | bytearray] = []
        done = 0
        for a, b, text in splices:
            pieces.append(out[done:a])
            self._out += a - done
            self._starts.append(self._out)
            self._spans.append((self._out, self._out + len(text), self._at(a), self._at(b)))
            pieces.append(text)
            self._out += len(text)
            done = b
        pieces.append(out[done:stop])
        self._out += stop - done
        self._raw = raw[stop:]
        self._raw_base += stop
        return b"".join(pieces)

    def _more_input(self, raw: bytes, a: int) -> bool:
        """Whether the string that starts at ``raw[a]`` may still end in input not read yet."""
        return not self._eof and raw.find(b"\n", a) < 0

    def _adjacent(self, raw: bytes, a: int, b: int, stop: int) -> list[tuple[int, int]] | None:
        """The spans of the string at ``raw[a:b]`` and of the strings that follow it after whitespace only.

        :return: None if the input read so far ends before that is known.
        """
        spans = [(a, b)]
        while True:
            k = _skip_ws(raw, b)
            if k >= stop:
                return None if not self._eof else spans
            if raw[k] not in b"'\"":
                return spans
            string = self._STRING.match(raw, k, stop)
            if string is None or string.lastindex is None:
                if self._more_input(raw, k):
                    return None
                self._fail("unterminated string (a Python string ends on the line it starts)", self._at(k))
            b = string.end()
            spans.append((k, b))

    def _name(self, word: bytes, a: int, b: int, out: bytearray) -> None:
        """Rewrite the bare name ``word`` at ``raw[a:b]``."""
        if word in self._WORDS:
            out[a:b] = self._WORDS[word]
        elif self._raw[b : b + 1] in (b"'", b'"') and word in (b"u", b"U"):
            out[a] = 0x20
        elif self._raw[b : b + 1] in (b"'", b'"') and word.lower() in self._PREFIXES:
            self._fail(
                f"{word.decode()}'...' strings (bytes, raw or f-strings) are not supported", self._at(a)
            )
        elif _NOT_A_NUMBER.fullmatch(word):
            self._fail(_NAN_MESSAGE.format(token=word.decode()), self._at(a))
        else:
            self._fail(f"unexpected name {word.decode()!r}: not a JSON or Python literal", self._at(a))

    def _json(self, spans: list[tuple[int, int]]) -> bytes:
        """The JSON string of the Python string literals at ``spans`` of the input, concatenated."""
        texts = []
        for a, b in spans:
            body = self._raw[a + 1 : b - 1]
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as bad:
                byte = body[bad.start]
                self._fail(f"invalid UTF-8 (byte 0x{byte:02X}) in a string", self._at(a + 1 + bad.start))
            try:
                texts.append(_PY_ESCAPE.sub(_unescape, text) if "\\" in text else text)
            except ValueError as bad:
                self._fail(f"invalid escape in a string: {bad}", self._at(a))
        try:
            return orjson.dumps("".join(texts))
        except orjson.JSONEncodeError:
            self._fail("a string holds an unpaired surrogate (\\ud800-\\udfff)", self._at(spans[0][0]))

    def _at(self, i: int) -> int:
        return self._raw_base + i

    def _safe_end(self, raw: bytes) -> int:
        """Where to stop converting ``raw`` when more input follows: not inside a name or number, nor
        between a comma and what follows it (it may be a trailing comma)."""
        end = len(raw)
        while end > 0 and raw[end - 1] in self._WORD_BYTES:
            end -= 1
        last = len(raw[:end].rstrip(_WS_BYTES))
        if last > 0 and raw[last - 1] == 0x2C:
            end = last - 1
        return end


_PY_ESCAPE = re.compile(
    r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|N\{[^}]*\}|[0-7]{1,3}|.)", re.DOTALL
)
_PY_SIMPLE_ESCAPES = {
    "\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r",
    "b": "\b", "f": "\f", "a": "\a", "v": "\v",
}  # fmt: skip
_PY_ESCAPE_ARGUMENTS = {"x": "2 hex digits", "u": "4 hex digits", "U": "8 hex digits", "N": "{name}"}


def _unescape(match: re.Match[str]) -> str:
    """The character(s) of one Python string escape; raises ValueError for an invalid one."""
    escape = match.group(1)
    simple = _PY_SIMPLE_ESCAPES.get(escape)
    if simple is not None:
        return simple
    kind = escape[0]
    if kind in "xuU" and len(escape) > 1:
        return chr(int(escape[1:], 16))  # ValueError beyond U+10FFFF
    if kind == "N" and len(escape) > 1:
        try:
            return unicodedata.lookup(escape[2:-1])
        except KeyError:
            raise ValueError(f"unknown character name \\{escape}") from None
    if kind in "01234567":
        return chr(int(escape, 8))
    if kind in _PY_ESCAPE_ARGUMENTS:
        raise ValueError(f"\\{kind} must be followed by {_PY_ESCAPE_ARGUMENTS[kind]}")
    return "\\" + escape  # Python keeps the backslash of an unknown escape


def _value_end(buf: bytes, pos: int, eof: bool) -> int:
    """The end of the JSON value that starts at ``buf[pos]``, found without validating it.

    :return: the end offset; ``pos`` if no value starts there; -1 if the value goes on after the buffer.
    """
    n = len(buf)
    if pos >= n:
        return -1
    c = buf[pos]
    if c in b"{[":
        depth = 0
        while True:
            skipped = _SKIP.match(buf, pos)
            pos = skipped.end() if skipped else pos
            if pos >= n or buf[pos] == 0x22:
                return -1
            c = buf[pos]
            pos += 1
            depth += 1 if c in b"{[" else -1
            if depth == 0:
                return pos
    if c == 0x22:
        string = _STRING.match(buf, pos)
        return string.end() if string and string.lastindex else -1
    scalar = _SCALAR.match(buf, pos)
    if scalar is None:
        return pos
    return -1 if scalar.end() == n and not eof else scalar.end()


def _skip_ws(buf: bytes, pos: int) -> int:
    """The offset of the first non-whitespace byte at or after ``pos``."""
    match = _WS.match(buf, pos)
    return match.end() if match else pos


def _has_big_float(dumped: bytes) -> bool:
    """Whether orjson output holds a float written with ``e+`` (at least 1e16 in size)."""
    i = dumped.find(b"+")  # memchr: fast, unlike a search for "e+"
    while i >= 0:
        if dumped[i - 1] == 0x65 and 0x30 <= dumped[i - 2] <= 0x39:
            return True
        i = dumped.find(b"+", i + 1)
    return False


def _has_escaped_colon(buf: bytes, start: int, end: int) -> bool:
    """Whether ``buf[start:end]`` may hold a ``\\u003a`` escape (a colon, uncounted by ``bytes.count``)."""
    i = buf.find(b"\\", start, end)
    for _ in range(64):  # backslashes are rare: look at a few, then let the regex engine search
        if i < 0:
            return False
        if buf[i + 1 : i + 6] in (b"u003a", b"u003A"):
            return True
        i = buf.find(b"\\", i + 2, end)
    return _ESCAPED_COLON.search(buf, i, end) is not None


class _Invalid(Exception):
    """A duplicate key or an integer outside INT64 (found by :func:`_semantically_valid`)."""


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _Invalid
    return value


def _int64(text: str) -> int:
    if not _fits_int64(text):
        raise _Invalid
    return int(text)


def _fits_int64(text: str | bytes) -> bool:
    digits = len(text) - (text[:1] in ("-", b"-"))
    return digits < 19 or (digits == 19 and INT64_MIN <= int(text) <= INT64_MAX)


def _semantically_valid(data: bytes) -> bool:
    """Whether valid JSON items ``data`` have no duplicate key and no integer outside INT64."""
    try:
        json.loads(b"[" + data + b"]", object_pairs_hook=_unique_pairs, parse_int=_int64)
    except (_Invalid, RecursionError, ValueError):
        return False
    return True


def _find_semantic_error(buf: bytes, start: int, end: int, first_entry: int) -> tuple[int, str] | None:
    """Find the first duplicate key or integer outside INT64 in the valid JSON items ``buf[start:end]``.

    :param first_entry: the index of the first item, for the message.
    :return: the offset in ``buf`` and the message, or None.
    """
    stack: list[set[str] | None] = []
    entry = first_entry
    expect_key = False
    for token in _TOKEN.finditer(buf, start, end):
        c = buf[token.start()]
        if c == 0x22:
            keys = stack[-1] if stack else None
            if expect_key and keys is not None:
                key = orjson.loads(token.group())
                if key in keys:
                    return token.start(), (
                        f'duplicate key "{key}" in an object of entry {entry} '
                        "(a JSON parser would silently keep only the last value)"
                    )
                keys.add(key)
            expect_key = False
        elif c == 0x7B:
            stack.append(set())
            expect_key = True
        elif c == 0x5B:
            stack.append(None)
        elif c in b"}]":
            stack.pop()
        elif c == 0x2C:
            expect_key = bool(stack) and stack[-1] is not None
            entry += not stack
        elif c != 0x3A and not any(x in token.group() for x in b".eEtfn") and not _fits_int64(token.group()):
            return token.start(), (
                f"integer {token.group().decode()} in entry {entry} is outside the 64-bit signed range "
                f"[{INT64_MIN}, {INT64_MAX}] of BigQuery INT64; write it as a string"
            )
    return None


def _find_deep(buf: bytes, start: int, end: int, first_entry: int) -> tuple[int, int] | None:
    """Find the first bracket nested deeper than :data:`MAX_ENTRY_DEPTH` in the JSON items ``buf[start:end]``.

    :param first_entry: the index of the first item.
    :return: the offset of that bracket in ``buf`` and the index of its entry, or None.
    """
    depth = 0
    entry = first_entry
    for token in _TOKEN.finditer(buf, start, end):
        c = buf[token.start()]
        if c in b"[{":
            depth += 1
            if depth > MAX_ENTRY_DEPTH:
                return token.start(), entry
        elif c in b"]}":
            depth -= 1
        elif c == 0x2C and depth == 0:
            entry += 1
    return None


def _byte_pos(exc: orjson.JSONDecodeError, data: bytes) -> int:
    """The byte offset in ``data`` of an orjson error (orjson counts characters)."""
    if data.isascii():
        return exc.pos
    return len(data.decode("utf-8", "surrogateescape")[: exc.pos].encode("utf-8", "surrogateescape"))


def _incomplete_utf8(exc: orjson.JSONDecodeError, data: bytes) -> bool:
    """Whether the UTF-8 error of ``data`` is only a character cut at its end."""
    if "UTF-8" not in exc.msg:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return bad.end == len(data) and bad.reason == "unexpected end of data"
    return False


def _tell(fp: BinaryIO) -> int | None:
    """Where ``fp`` starts, or None if it cannot seek back there."""
    try:
        return fp.tell() if fp.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


def _locate(fp: BinaryIO, origin: int | None, offset: int) -> tuple[int | None, int | None]:
    """The 1-based line and column (in characters) of byte ``offset``, re-reading ``fp`` from ``origin``."""
    if origin is None:
        return None, None
    line, column, done = 1, 1, 0
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        fp.seek(origin)
        while done < offset:
            block = fp.read(min(1 << 20, offset - done))
            if not block:
                break
            done += len(block)
            newlines = block.count(b"\n")
            if newlines:
                line += newlines
                column = 1
                decoder.reset()
                block = block[block.rindex(b"\n") + 1 :]
            column += len(decoder.decode(block))
    except (OSError, ValueError):
        return None, None
    return line, column
