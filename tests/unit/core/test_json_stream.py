from __future__ import annotations

import io
import json
import pprint
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_incremental.core.json_stream import ExportReader, parse_next_offset
from airflow_provider_incremental.exceptions import SourceFormatError

DATA = Path(__file__).parents[2] / "data"
SAMPLE = (DATA / "small.json").read_bytes()
SAMPLE_LITERAL = (DATA / "small_python_literal.txt").read_bytes()
SAMPLE_DOC = json.loads(SAMPLE)
NEXT_OFFSET = '["1719562584000","40000719"]'
TINY_CHUNKS = [1, 3, 64, 1000]


def read(data: bytes, **kwargs: Any) -> tuple[ExportReader, list[Any]]:
    reader = ExportReader(io.BytesIO(data), source="test.json", **kwargs)
    return reader, [entry for _, entry in reader.entries()]


def read_error(data: bytes, **kwargs: Any) -> SourceFormatError:
    with pytest.raises(SourceFormatError) as info:
        read(data, **kwargs)
    return info.value


def strings(value: Any) -> Iterator[str]:
    """Every string value in a parsed JSON document."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def export(entries: list[Any], **dumps: Any) -> bytes:
    return json.dumps({"list": entries, "next_offset": NEXT_OFFSET}, **dumps).encode()


# -- the samples -------------------------------------------------------------------------------------------


def test_sample_gives_20_entries_with_ids_and_next_offset() -> None:
    reader = ExportReader(io.BytesIO(SAMPLE), source="small.json")
    pairs = list(reader.entries())
    assert [index for index, _ in pairs] == list(range(20))
    assert [entry["subscription"]["id"] for _, entry in pairs][:3] == [
        "6ocKn3sfmjzWtK2k",
        "AzUtkne0DfKaA9Cj",
        "BTcZ0gxYqHYcLMe3",
    ]
    assert [entry for _, entry in pairs] == SAMPLE_DOC["list"]
    assert reader.next_offset == NEXT_OFFSET
    assert parse_next_offset(reader.next_offset) == ["1719562584000", "40000719"]
    assert (reader.entries_read, reader.bytes_read, reader.ignored_keys) == (20, len(SAMPLE), [])


@pytest.mark.parametrize("chunk_size", [5, 4096, 8 << 20])
def test_python_literal_twin_gives_the_same_entries(chunk_size: int) -> None:
    reader, entries = read(SAMPLE_LITERAL, allow_python_literals=True, chunk_size=chunk_size)
    assert entries == SAMPLE_DOC["list"]
    assert reader.next_offset == NEXT_OFFSET
    assert reader.bytes_read == len(SAMPLE_LITERAL)


def test_strict_mode_rejects_the_python_literal_twin_and_says_how_to_repair_it() -> None:
    error = read_error(SAMPLE_LITERAL)
    assert (error.line, error.column, error.byte_offset) == (2, 3, 4)
    assert "allow_python_literals=True" in str(error)
    assert "test.json:2:3 (byte 4)" in str(error)


@pytest.mark.parametrize(("data", "allow"), [(SAMPLE, False), (SAMPLE, True), (SAMPLE_LITERAL, True)])
def test_quotes_and_words_inside_strings_survive(data: bytes, allow: bool) -> None:
    found = set(strings(read(data, allow_python_literals=allow)[1]))
    assert {"O'Brien", 'The "Best" Widgets Ltd', "True North Analytics"} <= found


def test_json_strings_in_python_literal_mode_are_json_strings() -> None:
    # JSON input is valid in the repair mode too (true/false/null and JSON escapes).
    data = b'{"list": [{"a": true, "b": null, "c": "x\\u00e9\\"y\\\\"}]}'
    assert read(data, allow_python_literals=True)[1] == [{"a": True, "b": None, "c": 'xé"y\\'}]


# -- layouts and chunk boundaries -------------------------------------------------------------------------

LAYOUTS = {
    "compact": export(SAMPLE_DOC["list"], separators=(",", ":"), ensure_ascii=False),
    "compact-spaces": export(SAMPLE_DOC["list"]),
    "indent-4": export(SAMPLE_DOC["list"], indent=4),
    "tabs": export(SAMPLE_DOC["list"], indent="\t"),
    "crlf": SAMPLE.replace(b"\n", b"\r\n"),
    "ascii-escaped": export(SAMPLE_DOC["list"], indent=1, ensure_ascii=True),
    "next-offset-first": json.dumps({"next_offset": NEXT_OFFSET, "list": SAMPLE_DOC["list"]}).encode(),
    "one-entry-per-line": b'{"list": [\n'
    + b",\n".join(json.dumps(entry).encode() for entry in SAMPLE_DOC["list"])
    + b'\n], "next_offset": '
    + json.dumps(NEXT_OFFSET).encode()
    + b"}\n",
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("chunk_size", [64, 8 << 20])
def test_layouts_give_the_same_entries(layout: str, chunk_size: int) -> None:
    reader, entries = read(LAYOUTS[layout], chunk_size=chunk_size)
    assert entries == SAMPLE_DOC["list"]
    assert reader.next_offset == NEXT_OFFSET


@pytest.mark.parametrize("chunk_size", TINY_CHUNKS)
def test_tiny_chunks_give_the_same_entries_as_the_default(chunk_size: int) -> None:
    assert read(SAMPLE, chunk_size=chunk_size)[1] == read(SAMPLE)[1]


@pytest.mark.parametrize("chunk_size", [300, 8 << 20])
def test_entries_whose_inner_objects_look_like_entry_starts(chunk_size: int) -> None:
    # compact: the bytes between two entries, '},{"id"', also occur between the items of an inner list,
    # so guessed entry ends are often wrong; the exact scanner must take over
    entries = [{"id": i, "items": [{"id": i * 10 + k, "s": '},{"id"'} for k in range(3)]} for i in range(200)]
    assert read(export(entries, separators=(",", ":")), chunk_size=chunk_size)[1] == entries


@pytest.mark.parametrize("chunk_size", [1 << 20, 8 << 20])
def test_a_10_mb_string(chunk_size: int) -> None:
    big = "x" * (10 << 20) + 'é\\"'
    entries = [{"id": 1}, {"id": 2, "note": big}, {"id": 3}]
    assert read(export(entries), chunk_size=chunk_size)[1] == entries


@pytest.mark.parametrize(
    ("data", "entries", "next_offset", "ignored"),
    [
        (b'{"list": []}', [], None, []),
        (b'{"list":[ ]}', [], None, []),
        (b'{"list": [1, "a", null, [2], {}]}', [1, "a", None, [2], {}], None, []),
        (b'{"next_offset": "x", "list": [{}], "has_more": true}', [{}], "x", ["has_more"]),
        (b'{"list": [{}], "next_offset": null}', [{}], None, []),
        (b'{"list": [{}], "next_offset": ["1", 2]}', [{}], '["1",2]', []),
        (b' \n\t{"meta": {"a": [1, {"b": "]"}]}, "list": [{"x": "}]"}]} \n', [{"x": "}]"}], None, ["meta"]),
    ],
)
def test_envelopes(data: bytes, entries: list[Any], next_offset: str | None, ignored: list[str]) -> None:
    for chunk_size in (1, 8 << 20):
        reader, got = read(data, chunk_size=chunk_size)
        assert (got, reader.next_offset, reader.ignored_keys) == (entries, next_offset, ignored)


def test_integers_and_floats_at_the_edges_of_the_checks() -> None:
    entry = {"max": 2**63 - 1, "min": -(2**63), "beyond53": 2**53 + 1, "big_float": 1e20, "tiny": -1.5e-300}
    assert read(export([entry] * 3))[1] == [entry] * 3


def test_progress_counters_grow_while_reading() -> None:
    reader = ExportReader(io.BytesIO(SAMPLE), source="small.json", chunk_size=4096)
    seen = [(reader.entries_read, reader.bytes_read) for _ in reader.entries()]
    assert seen[0][1] > 0
    assert [count for count, _ in seen] == list(range(1, 21))
    assert seen == sorted(seen)
    assert reader.bytes_read == len(SAMPLE)


def test_entries_can_be_iterated_once() -> None:
    reader = ExportReader(io.BytesIO(SAMPLE), source="small.json")
    list(reader.entries())
    with pytest.raises(RuntimeError, match="once"):
        list(reader.entries())


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        ExportReader(io.BytesIO(SAMPLE), source="small.json", chunk_size=0)


# -- bad files ----------------------------------------------------------------------------------------------

ENTRIES_350 = b",".join(b'{"id": %d, "tags": ["a", "b"], "n": {"x": 1}}' % i for i in range(400))
DUPLICATE_IN_350 = b'{"list": [' + ENTRIES_350.replace(b'"id": 350,', b'"id": 350, "id": 0,') + b"]}"
DEEP = b'{"list": [' + b"[" * 1100 + b"]" * 1100 + b"]}"

# fmt: off
BAD_FILES: list[tuple[str, bytes, str, int, int, int]] = [
    # (id, file, phrase of the message, line, column, byte offset)
    ("empty", b"", "the file is empty", 1, 1, 0),
    ("whitespace", b"  \n  ", "only whitespace", 2, 3, 5),
    ("bom", b'\xef\xbb\xbf{"list": []}', "byte order mark (BOM)", 1, 1, 0),
    ("truncated-entry", b'{"list": [{"a": 1}, {"b": ', "truncated", 1, 27, 26),
    ("truncated-string", b'{\n  "list": [\n    {"a": "abc', "truncated", 3, 15, 28),
    ("truncated-after-list", b'{"list": [{"a": 1}]', "truncated", 1, 20, 19),
    ("truncated-in-list", b'{"list": [{"a": 1}', "truncated", 1, 19, 18),
    ("root-array", b'[{"a": 1}]', "root must be a JSON object", 1, 1, 0),
    ("root-string", b' "list"', "but it is a string", 1, 2, 1),
    ("no-list", b'{"next_offset": "x"}', 'no "list" array', 1, 20, 19),
    ("list-not-array", b'{"list": {"a": 1}}', '"list" must be a JSON array', 1, 10, 9),
    ("invalid-utf8", b'{"list": [{"a": "ok"}, {"b": "caf\xe9"}]}', "invalid UTF-8 (byte 0xE9)", 1, 34, 33),
    ("invalid-utf8-key", b'{"li\xffst": []}', "invalid UTF-8 (byte 0xFF)", 1, 5, 4),
    ("nan", b'{"list": [{"a": NaN}]}', "NaN is not valid JSON", 1, 17, 16),
    ("minus-infinity", b'{"list": [{"a": -Infinity}]}', "-Infinity is not valid JSON", 1, 17, 16),
    ("infinity-line-3", b'{\n"list": [\n{"a": 1, "b": Infinity}]}', "Infinity is not valid", 3, 15, 26),
    ("float-overflow", b'{"list": [{"a": 1e400}]}', "too large for a 64-bit float", 1, 17, 16),
    ("int-above-int64", b'{"list": [{"b": {"c": 9223372036854775808}}]}', "9223372036854775808", 1, 23, 22),
    ("int-below-int64", b'{"list": [{"b": -9223372036854775809}]}', "BigQuery INT64", 1, 17, 16),
    ("int-above-uint64", b'{"list": [{"b": 123456789012345678901234567890}]}', "64-bit signed", 1, 17, 16),
    ("duplicate-key", b'{"list": [{"a": 1}, {"b": {"c": 1, "c": 2}}]}', 'duplicate key "c"', 1, 36, 35),
    ("duplicate-escaped-key", b'{"list": [{"a": 1, "\\u0061": 2}]}', 'duplicate key "a"', 1, 20, 19),
    ("duplicate-escaped-colon", b'{"list": [{"x": "\\u003a", "k": 1, "k": 2}]}', 'key "k"', 1, 35, 34),
    ("duplicate-root-key", b'{"list": [], "list": []}', 'duplicate key "list"', 1, 14, 13),
    ("duplicate-in-entry-350", DUPLICATE_IN_350, 'duplicate key "id" in an object of entry 350',
     1, 16363, 16362),
    ("deep", DEEP, "deeper than 1024 levels", 1, 1035, 1034),
    ("garbage-after-root", b'{"list": []} x', "after the end of the root object", 1, 14, 13),
    ("second-document", b'{"list": []}\n{"list": []}', "after the end of the root object", 2, 1, 13),
    ("trailing-comma", b'{"list": [{"a": 1},]}', "trailing comma", 1, 19, 18),
    ("missing-comma", b'{"list": [{"a": 1} {"b": 2}]}', "expected ',' or ']' after entry 0", 1, 20, 19),
    ("python-true", b'{"list": [{"a": True}]}', "allow_python_literals=True", 1, 17, 16),
    ("python-quotes", b"{'list': []}", "allow_python_literals=True", 1, 2, 1),
    ("control-character", b'{"list": [{"a": "x\ty"}]}', "control character", 1, 19, 18),
    ("column-in-characters", '{"list": [{"n": "Müller", "x": nope}]}'.encode(), "invalid JSON", 1, 32, 32),
]
# fmt: on


@pytest.mark.parametrize(
    ("data", "phrase", "line", "column", "byte_offset"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
@pytest.mark.parametrize("chunk_size", [3, 8 << 20])
def test_bad_files(
    data: bytes, phrase: str, line: int, column: int, byte_offset: int, chunk_size: int
) -> None:
    error = read_error(data, chunk_size=chunk_size)
    assert phrase in error.reason
    assert (error.line, error.column, error.byte_offset) == (line, column, byte_offset)
    assert str(error).startswith(f"test.json:{line}:{column} (byte {byte_offset}): ")


def test_a_stream_that_cannot_seek_gets_the_byte_offset_only() -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            return self._data.readinto(buffer)

    reader = ExportReader(io.BufferedReader(Pipe(b'{"list": [{"a": NaN}]}')), source="pipe")
    with pytest.raises(SourceFormatError) as info:
        list(reader.entries())
    assert (info.value.line, info.value.column, info.value.byte_offset) == (None, None, 16)


# -- the repair of Python literals -------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 7, 8 << 20])
@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("{'a': True, 'b': False, 'c': None, 'd': [1, -2.5, 1e-05]}", {"a": True, "b": False, "c": None,
                                                                        "d": [1, -2.5, 1e-05]}),
        ("{'q': 'O\\'Brien', 'r': \"O'Brien\", 's': 'The \"Best\" Ltd', 't': \"say \\\"hi\\\"\"}",
         {"q": "O'Brien", "r": "O'Brien", "s": 'The "Best" Ltd', "t": 'say "hi"'}),
        ("{'e': '\\x41\\u00e9\\U0001F600\\N{BULLET}\\101\\n\\t\\\\\\'\\d', 'u': u'x'}",
         {"e": "Aé😀•A\n\t\\'\\d", "u": "x"}),
        ("{'trailing': [1, 2,], 'x': {'y': 1,},}", {"trailing": [1, 2], "x": {"y": 1}}),
        ("{'joined': 'True North '\n   'Analytics', 'mixed': \"it's \" 'done'}",
         {"joined": "True North Analytics", "mixed": "it's done"}),
        ("{'words in strings': 'True, False, None, nan', 'k': 'a, ]'}",
         {"words in strings": "True, False, None, nan", "k": "a, ]"}),
    ],
)  # fmt: skip
def test_python_literal_repair(literal: str, expected: dict[str, Any], chunk_size: int) -> None:
    data = b"{'list': [" + literal.encode() + b"]}"
    assert read(data, allow_python_literals=True, chunk_size=chunk_size)[1] == [expected]


@pytest.mark.parametrize("chunk_size", [16, 8 << 20])
def test_python_literal_repair_of_pprint_output_with_long_strings(chunk_size: int) -> None:
    doc = {"list": SAMPLE_DOC["list"][:4], "next_offset": NEXT_OFFSET}
    doc["list"][0]["customer"]["notes"] = (
        "a long note about the customer " * 8 + "line\nbreak 'quoted' \"too\""
    )
    text = pprint.pformat(doc, width=60)
    assert "'\n" in text  # pprint split long strings into adjacent literals
    reader, entries = read(text.encode(), allow_python_literals=True, chunk_size=chunk_size)
    assert (entries, reader.next_offset) == (doc["list"], NEXT_OFFSET)


LITERAL_ERRORS: list[tuple[str, bytes, str, int, int, int]] = [
    ("tuple", b"{'list': [{'a': (1, 2)}]}", "tuples", 1, 17, 16),
    ("nan", b"{'list': [{'a': nan}]}", "nan is not valid JSON", 1, 17, 16),
    ("unknown-name", b"{'list': [{'a': foo}]}", "unexpected name 'foo'", 1, 17, 16),
    ("bytes", b"{'list': [{'a': b'x'}]}", "b'...' strings", 1, 17, 16),
    ("unterminated", b"{'list': [{'a': 'abc}]}\n", "unterminated string", 1, 17, 16),
    ("unterminated-at-end", b"{'list': [{'a': 'abc}]}", "unterminated string", 1, 17, 16),
    ("triple-quoted", b"{'list': [{'a': '''x'''}]}", "triple-quoted", 1, 17, 16),
    ("bad-escape", b"{'list': [{'a': '\\x4'}]}", "\\x must be followed by 2 hex digits", 1, 17, 16),
    ("surrogate", b"{'list': [{'a': '\\ud800'}]}", "unpaired surrogate", 1, 17, 16),
    ("invalid-utf8", b"{'list': [{'a': 'x\\'\xff'}]}", "invalid UTF-8 (byte 0xFF)", 1, 21, 20),
    ("big-int-after-rewrite", b"{'list': [{'a': 'x\"y', 'b': 99999999999999999999}]}", "INT64", 1, 29, 28),
    (
        "duplicate-after-rewrite",
        b"{'list': [{'a': 'x\\'y', 'b': 1, 'b': 2}]}",
        'duplicate key "b"',
        1,
        33,
        32,
    ),
    ("json-error-after-rewrite", b"{'list': [{'a': 'x\\'y', 'b': 01}]}", "leading zero", 1, 30, 29),
    (
        "duplicate-after-joined-lines",
        b"{'list': [{'a': 'x '\n   'y', 'b': 1,\n 'b': 2}]}",
        'duplicate key "b"',
        3,
        2,
        38,
    ),
    ("bom", b"\xef\xbb\xbf{'list': []}", "byte order mark", 1, 1, 0),
]


@pytest.mark.parametrize(
    ("data", "phrase", "line", "column", "byte_offset"),
    [case[1:] for case in LITERAL_ERRORS],
    ids=[case[0] for case in LITERAL_ERRORS],
)
@pytest.mark.parametrize("chunk_size", [2, 8 << 20])
def test_python_literal_errors(
    data: bytes, phrase: str, line: int, column: int, byte_offset: int, chunk_size: int
) -> None:
    error = read_error(data, allow_python_literals=True, chunk_size=chunk_size)
    assert phrase in error.reason
    assert (error.line, error.column, error.byte_offset) == (line, column, byte_offset)


# -- next_offset -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ('["1698915678000","63969095"]', ["1698915678000", "63969095"]),
        ('[ "1698915678000" , "63969095" ]', ["1698915678000", "63969095"]),
        ("[1698915678000, 63969095]", ["1698915678000", "63969095"]),
        ("[]", []),
        (None, None),
        ("", None),
        ("not json", None),
        ('"a string"', None),
        ('{"a": 1}', None),
        ('[["nested"]]', None),
        ("[true]", None),
        ("[1.5]", None),
        ('["unterminated', None),
    ],
)
def test_parse_next_offset(raw: str | None, parsed: list[str] | None) -> None:
    assert parse_next_offset(raw) == parsed


@pytest.mark.parametrize("chunk_size", [64, 4096, 1 << 20])
def test_batches_hold_the_entries_in_order_with_their_first_index(chunk_size: int) -> None:
    reader = ExportReader(io.BytesIO(SAMPLE), source="small.json", chunk_size=chunk_size)
    batches = [(first, list(batch), reader.entries_read) for first, batch in reader.batches()]
    assert [entry for _, batch, _ in batches for entry in batch] == json.loads(SAMPLE)["list"]
    firsts = [first for first, _, _ in batches]
    assert firsts == [sum(len(b) for _, b, _ in batches[:i]) for i in range(len(batches))]
    assert [count for _, _, count in batches] == [first + len(b) for first, b, _ in batches]
    assert (len(batches) > 1) == (chunk_size < len(SAMPLE))


def test_a_fast_decoder_supplies_the_batches_it_takes() -> None:
    seen: list[bytes] = []

    def decode(data: bytes) -> list[Any] | None:
        seen.append(data)
        return [("decoded", i) for i in range(len(json.loads(data)))] if len(seen) % 2 else None

    reader = ExportReader(io.BytesIO(SAMPLE), source="small.json", chunk_size=4096, decode=decode)
    entries = [entry for _, entry in reader.entries()]
    expected = json.loads(SAMPLE)["list"]
    assert len(entries) == len(expected) == reader.entries_read
    assert all(json.loads(data) for data in seen)  # whole entries, as a JSON array
    assert {type(e) for e in entries} == {tuple, dict}  # taken batches, and the reader's own
    for entry, original in zip(entries, expected, strict=True):
        assert entry == original or entry[0] == "decoded"


def test_batches_shrink_after_the_fast_path_declines_one_and_grow_back(tmp_path: Path) -> None:
    from airflow_provider_incremental.local.generate import write_export

    path = tmp_path / "export.json"
    write_export(path, entries=2000, seed=3, pretty=False)
    data = path.read_bytes()
    bad = data.index(b'"subscription"', len(data) // 3)  # an entry a third of the way in "fails"
    sizes: list[tuple[int, bool]] = []
    offset = [0]

    def decode(batch: bytes) -> list[Any] | None:
        start = data.index(batch[1:200], offset[0])
        declined = start <= bad < start + len(batch)
        sizes.append((len(batch), declined))
        if declined:
            return None
        offset[0] = start + len(batch) - 2
        return [None] * len(json.loads(batch))

    reader = ExportReader(io.BytesIO(data), source="export.json", decode=decode, chunk_size=1 << 20)
    assert sum(1 for _ in reader.entries()) == 2000
    i = next(i for i, (_, declined) in enumerate(sizes) if declined)
    assert sizes[1][0] > 500_000  # full 1 MB batches at first (the first batch is one entry)
    assert 30_000 < sizes[i + 1][0] <= sizes[i][0] // 8 + 4096  # then a small one after the decline
    assert sizes[i + 2][0] > sizes[i + 1][0]  # and growing again
