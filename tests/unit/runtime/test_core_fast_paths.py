"""The hot path's shortcuts give exactly what the general code gives: parsing, framing,
UUIDs, keys, SQL parameters and the reader's splitting of fragments."""

from __future__ import annotations

import json
import math
import queue
import sqlite3
import threading
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tests.support.wait import wait_for

from shardkeeper.runtime.core.documents import (
    DOCUMENT_NAMESPACE,
    DocumentError,
    document_uuid,
    encode_line,
    encode_plain_line,
    orjson_parses,
    parse_json,
    plain_float,
    resolve_tokens,
    split_lines,
)
from shardkeeper.runtime.core.documents import parse_line as parse_line_fast
from shardkeeper.runtime.core.errors import DocumentRejected
from shardkeeper.runtime.core.messages import WAKE, ReadChannel, SourceAdvance
from shardkeeper.runtime.core.outputs import OutputBuffer
from shardkeeper.runtime.core.routing import KeyExtractor, MissingKey
from shardkeeper.runtime.core.sources import _lines_from
from shardkeeper.runtime.kinds.derive_sql import DocumentParameters, binder


def parse_line_reference(data: bytes) -> dict[str, Any]:
    """parse_line as it was before orjson: the stdlib decoder alone."""
    try:
        value = parse_json(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DocumentError(f"a document is a JSON object, not {type(value).__name__}")
    return value


def outcome(data: bytes) -> tuple[str, str]:
    try:
        return ("ok", repr(parse_line_reference(data)))
    except DocumentError as exc:
        return ("refused", str(exc))


def fast_outcome(data: bytes) -> tuple[str, str]:
    try:
        return ("ok", repr(parse_line_fast(data)))
    except DocumentError as exc:
        return ("refused", str(exc))


numbers = (
    st.sampled_from(
        [
            "0",
            "-0",
            "-0.0",
            "1.0",
            "1e2",
            "1E-7",
            "2.5e-05",
            "1e400",
            "-1e400",
            "1e-400",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551615",
            "18446744073709551616",
            "123456789012345678901234567890",
            "0.1234567890123456789",
            "NaN",
            "Infinity",
            "-Infinity",
            "01",
            "1.",
            ".5",
            "+1",
        ]
    )
    | st.integers().map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
)
strings = st.sampled_from(
    ['"a"', '"\\ud800"', '"\\udc00x"', '"\\u00e9"', '"é"', '"\\n"', '"\x01"', '"\x7f"']
) | st.text(max_size=6).map(lambda t: json.dumps(t, ensure_ascii=False))
raw_values = st.recursive(
    numbers | strings | st.sampled_from(["true", "false", "null"]),
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
        | st.lists(st.tuples(strings, inner), max_size=3).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
        )
    ),
    max_leaves=8,
)
raw_lines = (
    st.lists(st.tuples(strings, raw_values), max_size=4).map(
        lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
    )
    | raw_values
).map(lambda text: text.encode("utf-8", "surrogatepass"))


@given(raw_lines)
@example(b'{"a":1}\xff')
@example(b'\xef\xbb\xbf{"a":1}')
@example(b'{"a":"\xed\xa0\x80"}')
@example(b"null")
@example(b' {"a" : 1 }\r')
def test_lines_parse_as_the_stdlib_parses_them(data: bytes) -> None:
    # the same value (repr tells 1 from 1.0, and -0.0 from 0.0), or the same refusal
    assert fast_outcome(data) == outcome(data)


def checked_outcome(lines: list[bytes], data: bytes) -> tuple[str, str]:
    # as the transaction loop parses: checked once for the whole batch
    try:
        return ("ok", repr(parse_line_fast(data, checked=orjson_parses(b"\n".join(lines)))))
    except DocumentError as exc:
        return ("refused", str(exc))


@given(st.lists(raw_lines, min_size=1, max_size=4))
@example([b'{"a":1}', b'{"b":12345678901234567890}'])
@example([b'{"a":1234567890', b"123456789}"])
def test_lines_of_a_batch_checked_at_once_parse_as_the_stdlib_parses_them(
    lines: list[bytes],
) -> None:
    # a digit run never spans two lines of the batch, so the batch passes the check iff
    # every line does
    assert orjson_parses(b"\n".join(lines)) == all(orjson_parses(line) for line in lines)
    for line in lines:
        assert checked_outcome(lines, line) == outcome(line)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["\ud800", "\u2028", "\x00", "\x7f"])
)
flat_documents = st.dictionaries(st.text(max_size=6), json_scalars, max_size=5)


def encoded_or_error(encode: Any, document: dict[str, Any]) -> bytes | str:
    try:
        line: bytes = encode(document)
    except (ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return line


@given(flat_documents)
@example({"x": 2.5e-05, "y": 1e16, "z": 5e-324})
@example({"big": 2**64, "small": -(2**63) - 1})
def test_plain_documents_frame_as_the_stdlib_frames_them(document: dict[str, Any]) -> None:
    buffer = OutputBuffer({"out": "j"}, {"j": 7})
    buffer.clock = 12
    meta = {"uuid": document_uuid("j", 7), "clock": 12}
    expected = encoded_or_error(encode_line, {**document, "_meta": meta})
    written = encoded_or_error(lambda d: buffer.add("out", d), document)
    if isinstance(written, str):
        # what the stdlib refuses, the buffer refuses the same way
        assert written == expected
        return
    (batch,) = buffer.seal(epoch=1)
    assert batch.payload == expected


@given(st.floats(allow_nan=False, allow_infinity=False))
@example(1e-4)
@example(9.999999999999999e-05)
@example(1e16)
@example(-0.0)
def test_orjson_writes_plain_floats_as_repr_does(value: float) -> None:
    if plain_float(value):
        assert encode_plain_line({"v": value}) == encode_line({"v": value})
    assert not plain_float(math.nan)
    assert not plain_float(math.inf)


@given(st.text(max_size=40), st.integers(0, 2**63))
def test_document_uuids_are_uuid5_of_journal_and_offset(journal: str, offset: int) -> None:
    if "\ud800" <= max(journal, default="a") <= "\udfff":
        return  # not a journal name: journal names are UTF-8
    try:
        journal.encode()
    except UnicodeEncodeError:
        return
    assert document_uuid(journal, offset) == str(
        uuid.uuid5(DOCUMENT_NAMESPACE, f"{journal}@{offset}")
    )


pointers = st.lists(
    st.sampled_from(["/a", "/b", "/a/b", "/c/0", "/~1x", "/"]), min_size=1, max_size=3
)
nested = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "0", "/x", ""]), inner, max_size=3)
    ),
    max_leaves=6,
)
documents = st.dictionaries(st.sampled_from(["a", "b", "c", "/x", ""]), nested, max_size=4)


@given(pointers, documents)
def test_keys_of_top_level_fields_read_as_pointers_resolve(
    key_pointers: list[str], document: dict[str, Any]
) -> None:
    key = KeyExtractor.of(key_pointers)
    expected: list[Any] | str = []
    for pointer, tokens in zip(key.pointers, key.tokens, strict=True):
        value = resolve_tokens(document, tokens)
        if value is resolve_tokens({}, ("missing",)):
            expected = f"the document has no value at key pointer {pointer}"
            break
        assert isinstance(expected, list)
        expected.append(value)
    try:
        found: list[Any] | str = key.values(document)
    except MissingKey as exc:
        found = str(exc)
    assert found == expected
    # require checks the same, without collecting the values
    try:
        key.require(document)
        required: list[Any] | str = expected if isinstance(expected, list) else "passed"
    except MissingKey as exc:
        required = str(exc)
    assert required == expected


parameter_names = st.lists(
    st.sampled_from(["a", "b", "c", "a$b", "c$0", "missing", "flow_document", "x$y$z"]),
    unique=True,
    max_size=5,
)


@given(parameter_names, documents)
def test_a_binder_binds_what_document_parameters_bind(
    names: list[str], document: dict[str, Any]
) -> None:
    lazily = DocumentParameters(document)
    for name in names:
        lazily.__getitem__(name)  # what sqlite3 does for each name a statement uses
    try:
        expected = dict(lazily)
    except ValueError:
        return
    assert binder(names)(document) == expected


def test_a_statement_binds_only_what_it_names_after_its_first_document() -> None:
    from shardkeeper.runtime.kinds.derive_sql import SqlDeriver

    db = sqlite3.connect(":memory:")

    class Connection:
        def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
            return db.execute(sql, parameters)

    deriver = SqlDeriver([], {"src": "SELECT $a AS a, $b$c AS c, $flow_document AS d"})
    txn = Connection()
    first = deriver.derive(txn, "src", {"a": 1, "b": {"c": [2]}})
    second = deriver.derive(txn, "src", {"a": {"x": 1.5}, "z": None})
    assert first == [{"a": 1, "c": "[2]", "d": '{"a":1,"b":{"c":[2]}}'}]
    assert second == [{"a": '{"x":1.5}', "c": None, "d": '{"a":{"x":1.5},"z":null}'}]
    # a batch after the first document runs the statement on the transaction's cursor
    batch = deriver.deriving(txn, "src")
    assert batch({"a": 1, "b": {"c": [2]}}) == first
    assert batch({"a": {"x": 1.5}, "z": None}) == second


def test_batches_derive_as_single_documents_do() -> None:
    from shardkeeper.runtime.kinds.derive_sql import SqlDeriver

    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER)")

    class Connection:
        def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
            return db.execute(sql, parameters)

    upsert = "INSERT INTO t VALUES ($k, 1) ON CONFLICT (k) DO UPDATE SET n = n + 1 RETURNING k, n;"
    keys = ["a", "b", "a", "b", "a"]
    single = SqlDeriver([], {"src": upsert})
    expected = [single.derive(Connection(), "src", {"k": k}) for k in keys]
    db.execute("DELETE FROM t")
    batched, txn = SqlDeriver([], {"src": upsert}), Connection()
    first = batched.deriving(txn, "src")  # its statement not run yet
    found = [first({"k": "a"}), first({"k": "b"})]
    found.append(batched.deriving(txn, "src")({"k": "a"}))  # on the transaction's cursor
    later = batched.deriving(Connection(), "src")  # another transaction
    found += [later({"k": "b"}), later({"k": "a"})]
    assert found == expected
    assert found[-1] == [{"k": "a", "n": 3}]


@given(
    st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    st.booleans(),
    st.integers(0, 2**40),
    st.integers(0, 120),
)
def test_the_reader_splits_fragments_as_split_lines_does(
    lines: list[bytes], terminated: bool, begin: int, skip: int
) -> None:
    payload = b"\n".join(lines) + (b"\n" if terminated and lines else b"")
    skip_to = begin + skip
    expected = [line for line in split_lines(payload, begin) if line.begin >= skip_to]
    first, found = _lines_from(payload, begin, skip_to)
    assert found == [line.data for line in expected]
    if expected:
        assert first == expected[0].begin
        ends, offset = [], first
        for data in found:
            offset = min(offset + len(data) + 1, begin + len(payload))
            ends.append(offset)
        assert ends == [line.end for line in expected]


@pytest.mark.parametrize("schema_type", ["integer", "number"])
def test_compiled_checks_tell_bools_from_numbers(schema_type: str) -> None:
    from shardkeeper.runtime.core.schemas import compile_fast

    check = compile_fast({"type": schema_type, "minimum": 0})
    assert check is not None
    assert check(1)
    assert check(1.0)
    assert not check(True)
    assert not check(-1)
    assert check(2.5) is (schema_type == "number")


@pytest.mark.parametrize("batched", [False, True], ids=["derive", "deriving"])
def test_a_failed_statement_leaves_no_statement_open_on_the_connection(
    tmp_path: Path, batched: bool
) -> None:
    from shardkeeper.runtime.kinds.derive_sql import SqlDeriver

    path = tmp_path / "store.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")

    class Connection:
        def execute(self, sql: str, parameters: Any = ()) -> sqlite3.Cursor:
            return db.execute(sql, parameters)

    deriver = SqlDeriver([], {"src": "INSERT INTO t VALUES ($k) RETURNING k"})
    txn = Connection()
    db.execute("BEGIN")
    assert deriver.derive(txn, "src", {"k": "a"}) == [{"k": "a"}]
    derive = deriver.deriving(txn, "src") if batched else partial(deriver.derive, txn, "src")
    assert derive({"k": "b"}) == [{"k": "b"}]
    with pytest.raises(DocumentRejected, match="the lambda of src failed: UNIQUE constraint"):
        derive({"k": "a"})
    db.execute("COMMIT")
    db.close()
    # a statement still alive would keep the connection open underneath, and its WAL
    assert not path.with_name("store.db-wal").exists()


sql_values = st.none() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=4)
columns = st.lists(st.sampled_from(["a", "b", "c", "flow_document", "a$b", "d$e$f"]), max_size=4)


@given(columns, st.data())
def test_a_row_converter_makes_what_row_document_makes(
    names: list[str], data: st.DataObject
) -> None:
    from shardkeeper.runtime.kinds.derive_sql import row_converter, row_document

    row = data.draw(st.tuples(*([sql_values | st.binary(max_size=2)] * len(names))))

    def made(convert: Any) -> object:
        try:
            return convert(row)
        except DocumentRejected as exc:
            return str(exc)

    assert repr(made(row_converter(names))) == repr(made(lambda r: row_document(names, r)))


def test_the_read_channel_wakes_writers_once_it_is_half_empty() -> None:
    channel = ReadChannel(4)
    notified: list[int] = []
    notify = channel.not_full.notify

    def counting(n: int = 1) -> None:
        notified.append(channel._qsize())  # under the lock get holds
        notify(n)

    channel.not_full.notify = counting  # type: ignore[method-assign]
    for n in range(4):
        channel.put(SourceAdvance("j", n, n))
    with pytest.raises(queue.Full):
        channel.put_nowait(WAKE)
    taken = [channel.get_nowait()]
    assert notified == []  # three of four left: writers wait on
    taken += [channel.get(timeout=1), channel.get(), channel.get_nowait()]
    assert [m.end for m in taken if isinstance(m, SourceAdvance)] == [0, 1, 2, 3]
    assert notified == [2, 1, 0]  # from half empty on, every message taken wakes one
    with pytest.raises(queue.Empty):
        channel.get(timeout=0.01)


def test_a_writer_blocked_on_a_full_read_channel_gets_in_once_it_is_half_empty() -> None:
    channel = ReadChannel(4)
    for n in range(4):
        channel.put(SourceAdvance("j", n, n))
    done = threading.Event()

    def write() -> None:
        channel.put(WAKE)  # no timeout: only a notification lets it in
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    wait_for(lambda: channel.not_full._waiters, timeout=5, what="the writer to wait")  # type: ignore[attr-defined]
    channel.get()
    channel.get()
    wait_for(done.is_set, timeout=5, what="the writer to get in")
    writer.join(5)
    assert [channel.get_nowait() for _ in range(3)][-1] is WAKE
