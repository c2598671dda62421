"""Property-based: random Arrow tables and random bytes thrown at catalog reading and validation.

Whatever comes in, the answer is a CatalogValidation whose problems name rows that exist, or a
CatalogReadError; never a raw pyarrow, fsspec or OS error. Every row is either a valid spec or
has a problem of its own.
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moviegen.catalog.check import CatalogValidation, validate_catalog
from moviegen.catalog.schema import COLUMNS, ID_PATTERN, CatalogReadError, read_catalog
from moviegen.presets import channel_presets, styles

PRESETS = channel_presets()
STYLES = styles()
KNOWN = [c.name for c in COLUMNS]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

huge_text = st.sampled_from(["x" * 100_000, "é" * 5_000, "a\x00b" * 1000, "\u202e" * 300, "../" * 700])
text = st.one_of(st.text(max_size=80), st.sampled_from(["", " ", "youtube", "tiktok", "warm", "a-1", "../../etc"]))
text = st.one_of(text, huge_text)


def _timestamps_from_ints(values: list[int | None]) -> pa.Array:
    """Timestamps in seconds from raw integers: most are far outside what Python's datetime can hold."""
    return pa.array(values, pa.int64()).cast(pa.timestamp("s"))


# (Arrow type, strategy for one non-null value, or a builder taking the values list)
TYPES: list[tuple[pa.DataType, st.SearchStrategy, object]] = [
    (pa.string(), text, None),
    (pa.large_string(), text, None),
    (pa.int8(), st.integers(-128, 127), None),
    (pa.int32(), st.integers(-(2**31), 2**31 - 1), None),
    (pa.int64(), st.integers(-(2**63), 2**63 - 1), None),
    (pa.uint64(), st.integers(0, 2**64 - 1), None),
    (pa.float32(), st.floats(width=32), None),
    (pa.float64(), st.floats(), None),
    (pa.bool_(), st.booleans(), None),
    (pa.binary(), st.binary(max_size=40), None),
    (pa.list_(pa.string()), st.lists(text, max_size=4), None),
    (pa.list_(pa.int64()), st.lists(st.integers(-10, 10), max_size=4), None),
    (pa.large_list(pa.large_string()), st.lists(text, max_size=3), None),
    (pa.struct([("a", pa.string())]), st.fixed_dictionaries({"a": text}), None),
    (pa.map_(pa.string(), pa.int32()), st.lists(st.tuples(st.text(max_size=5), st.integers(0, 9)), max_size=3), None),
    (pa.date32(), st.dates(), None),
    (pa.timestamp("us"), st.datetimes(min_value=dt.datetime(1900, 1, 1)), None),
    (pa.timestamp("s"), st.integers(-(2**62), 2**62), _timestamps_from_ints),
    (pa.duration("s"), st.integers(-(2**40), 2**40), None),
    (pa.null(), st.none(), None),
]


@st.composite
def columns(draw, rows: int) -> tuple[str, pa.Array]:
    name = draw(st.one_of(st.sampled_from(KNOWN), st.text(max_size=12)))
    arrow_type, values, build = draw(st.sampled_from(TYPES))
    data = draw(st.lists(st.one_of(st.none(), values), min_size=rows, max_size=rows))
    if build is not None:
        array = build(data)
    elif arrow_type == pa.duration("s"):
        array = pa.array(data, pa.int64()).cast(arrow_type)
    else:
        array = pa.array(data, arrow_type)
    if draw(st.booleans()) and pa.types.is_string(arrow_type):
        array = array.dictionary_encode()
    return name, array


@st.composite
def tables(draw) -> pa.Table:
    rows = draw(st.integers(0, 6))
    arrays: list[pa.Array] = []
    names: list[str] = []
    if draw(st.booleans()):  # a plausible base, so deeper checks run too

        def column(values: st.SearchStrategy) -> list:
            return draw(st.lists(values, min_size=rows, max_size=rows))

        base = {
            "campaign_id": pa.array(column(st.sampled_from(["camp", "c-2", "bad id"]))),
            "clip_id": pa.array(column(st.sampled_from(["a", "b", "a", "c\n", "../x"]))),
            "prompt": pa.array(column(text)),
            "channels": pa.array(
                column(st.lists(st.sampled_from(["youtube", "tiktok", "nope"]), max_size=2)), pa.list_(pa.string())
            ),
        }
        names += list(base)
        arrays += list(base.values())
    for name, array in draw(st.lists(columns(rows), max_size=6)):
        names.append(name)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=names) if arrays else pa.table({})


def _assert_clean(result: CatalogValidation, rows: int) -> None:
    assert isinstance(result, CatalogValidation)
    assert result.rows == rows
    for p in result.problems:
        assert p.row is None or 0 <= p.row < rows
        assert isinstance(p.message, str) and p.message
        assert p.column is None or isinstance(p.column, str)
    for spec in result.specs:
        assert 0 <= spec.row < rows
        assert ID_PATTERN.fullmatch(spec.clip_id) and ID_PATTERN.fullmatch(spec.campaign_id)
        assert set(spec.channels) <= set(PRESETS)
    if not any(p.row is None for p in result.problems):
        # Every row either runs or says why not, never both.
        valid = {s.row for s in result.specs}
        bad = {p.row for p in result.problems}
        assert valid | bad == set(range(rows)) and not valid & bad


def _validate(table: pa.Table) -> CatalogValidation:
    return validate_catalog(table, channels=PRESETS, styles=STYLES, default_model="tiny-wan")


@FUZZ
@given(tables())
def test_random_tables_give_problems_never_tracebacks(table):
    _assert_clean(_validate(table), table.num_rows)
    # The same table through a real Parquet file, when pyarrow can write it at all.
    buffer = io.BytesIO()
    try:
        pq.write_table(table, buffer)
    except (pa.ArrowException, ValueError):
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.parquet"
        path.write_bytes(buffer.getvalue())
        _assert_clean(_validate(read_catalog(str(path))), table.num_rows)


def _valid_parquet() -> bytes:
    table = pa.table(
        {
            "campaign_id": ["camp", "camp"],
            "clip_id": ["a", "b"],
            "prompt": ["a red kite over the sea", "a green field"],
            "channels": pa.array([["youtube"], ["tiktok"]], pa.list_(pa.string())),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


VALID = _valid_parquet()


@st.composite
def damaged_files(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "prefixed"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    if kind == "truncated":
        return VALID[: draw(st.integers(0, len(VALID) - 1))]
    if kind == "prefixed":  # the Parquet magic, then garbage
        return b"PAR1" + draw(st.binary(max_size=500)) + b"PAR1"
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(damaged_files())
def test_random_bytes_are_a_clean_read_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "catalog.parquet"
        path.write_bytes(data)
        try:
            table = read_catalog(str(path))
        except CatalogReadError as exc:
            assert "catalog.parquet" in str(exc)
            return
        _assert_clean(_validate(table), table.num_rows)  # a flipped byte the file survived
