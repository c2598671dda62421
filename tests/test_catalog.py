"""Catalog schema and validation: every problem named by row, clip_id and column; good rows go on."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import row

from moviegen.catalog.check import validate_catalog
from moviegen.catalog.schema import CATALOG_SCHEMA, CatalogReadError, default_seed, read_catalog
from moviegen.config import TINY_MODEL_ID
from moviegen.presets import channel_presets, styles


def check(table: pa.Table):
    return validate_catalog(table, channels=channel_presets(), styles=styles(), default_model=TINY_MODEL_ID)


def problems_by(result, column):
    return [(p.row, p.clip_id, p.rule) for p in result.problems if p.column == column]


def test_valid_rows_become_specs_with_defaults(catalog_file):
    path = catalog_file([row("a"), row("b", style="warm", hashtags=["#Spring", "spring"], brief="x")])
    result = check(read_catalog(str(path)))
    assert result.problems == []
    a, b = result.specs
    assert a.channels == ("youtube",) and a.style == "none" and a.negative_prompt == "" and a.aspect == "16:9"
    assert b.hashtags == ("Spring", "spring") and b.extra == {"brief": "x"}
    assert read_catalog(str(path)).schema.field("channels").type == CATALOG_SCHEMA.field("channels").type


def test_default_seed_is_stable_and_differs_per_clip(catalog_file):
    rows = [{k: v for k, v in row(c).items() if k != "seed"} for c in ("a", "b")]
    specs = check(read_catalog(str(catalog_file(rows)))).specs
    assert [s.seed for s in specs] == [default_seed("test-camp", "a"), default_seed("test-camp", "b")]
    assert specs[0].seed != specs[1].seed


def test_missing_required_column_is_fatal():
    table = pa.table({"campaign_id": ["c"], "clip_id": ["a"], "prompt": ["x"]})
    result = check(table)
    assert result.fatal and not result.specs
    [p] = result.problems
    assert (p.row, p.column, p.rule) == (None, "channels", "missing_column")
    assert "add it" in p.message


def test_every_bad_row_is_reported_and_good_rows_survive():
    table = pa.table(
        {
            "campaign_id": ["c", "c", "c", "c", "c", "c", "c", "c", None, "c"],
            "clip_id": ["ok", "empty", "chan", "dup", "dup", "types", "bad id!", "nochan", "x", "ok2"],
            "prompt": ["a cat", "   ", "a dog", "a", "b", "c", "d", "e", "f", "a bird"],
            "channels": [
                ["youtube"],
                ["youtube"],
                ["tiktok", "myspace"],
                ["x"],
                ["x"],
                ["x"],
                ["x"],
                None,
                ["x"],
                ["x"],
            ],
            "seed": [None, None, None, None, None, "seven", None, None, None, "12"],
            "duration_s": [2.0, 2.0, 2.0, 2.0, 2.0, -1.0, 2.0, 2.0, 2.0, 2.0],
        }
    )
    result = check(table)
    assert [s.clip_id for s in result.specs] == ["ok"]
    assert not result.fatal
    assert problems_by(result, "prompt") == [(1, "empty", "empty")]
    assert problems_by(result, "channels") == [(2, "chan", "unknown_channel"), (7, "nochan", "missing")]
    assert problems_by(result, "clip_id") == [(3, "dup", "duplicate"), (4, "dup", "duplicate"), (6, "bad id!", "slug")]
    assert problems_by(result, "campaign_id") == [(8, "x", "missing")]
    assert problems_by(result, "duration_s") == [(5, "types", "range")]
    # seed is a text column here: each value is reported as the wrong type, quoting the value
    assert problems_by(result, "seed") == [(5, "types", "type"), (9, "ok2", "type")]
    assert "'seven'" in next(p.message for p in result.problems if p.column == "seed" and p.row == 5)
    assert "myspace" in next(p.message for p in result.problems if p.rule == "unknown_channel")
    assert "row(s) 4" in next(p.message for p in result.problems if p.row == 3 and p.rule == "duplicate")
    assert all(p.stage == "schema" for p in result.problems)


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("prompt", 42, "type"),
        ("prompt", "x" * 2001, "too_long"),
        ("prompt", "hello\x00world", "control_chars"),
        ("caption", "bidi \u202e trick", "control_chars"),
        ("style", "noir", "unknown_style"),
        ("aspect", "4:3", "unknown_aspect"),
        ("seed", -1, "range"),
        ("seed", 1.5, "type"),
        ("seed", True, "type"),
        ("duration_s", float("nan"), "type"),
        ("duration_s", 61.0, "range"),
        ("steps", 0, "range"),
        ("model", "no-such-model", "unknown_model"),
        ("hashtags", ["two words"], "hashtag"),
        ("channels", "youtube", "type"),
        ("title", "x" * 101, "too_long"),
        ("cta", "Shop\x07now", "control_chars"),
        ("logo_uri", "ftp://cdn.example.com/logo.png", "uri"),
        ("logo_uri", "https://cdn.example.com/logo.gif", "uri"),
        ("logo_uri", "brand/missing-logo.png", "uri"),
        ("logo_position", "middle", "unknown_logo_position"),
        ("music_uri", "track.mid", "uri"),
        ("fit", "stretch", "unknown_fit"),
        ("anchor", "middle", "unknown_anchor"),
        ("lut", "bleach", "uri"),
        ("saturation", 5.0, "range"),
        ("speed", 0.1, "range"),
        ("grain", "lots", "type"),
        ("motion", "fast", "unknown_motion"),
        ("extend", "bounce", "unknown_extend"),
    ],
)
def test_single_bad_value(column, value, rule):
    # Parquet columns have one type, so each bad value gets its own table.
    result = check(pa.Table.from_pylist([row("b", **{column: value})]))
    assert result.specs == []
    assert [(p.row, p.clip_id, p.column, p.rule) for p in result.problems] == [(0, "b", column, rule)]


def test_duration_longer_than_a_channel_allows():
    presets = channel_presets({"story": {"width": 720, "height": 1280, "fps": 30, "max_duration_s": 15}})
    table = pa.Table.from_pylist([row("a", duration_s=20.0, channels=["story", "youtube"]), row("b", duration_s=9.0)])
    result = validate_catalog(table, channels=presets, styles=styles(), default_model=TINY_MODEL_ID)
    [p] = result.problems
    assert (p.row, p.column, p.rule) == (0, "duration_s", "too_long_for_channel") and "story allows" in p.message
    assert [s.clip_id for s in result.specs] == ["b"]


def test_unreadable_catalogs(tmp_path):
    with pytest.raises(CatalogReadError, match="does not exist"):
        read_catalog(str(tmp_path / "missing.parquet"))
    text = tmp_path / "notes.parquet"
    text.write_text("campaign_id,clip_id\n")
    with pytest.raises(CatalogReadError, match="not a readable Parquet file"):
        read_catalog(str(text))
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist([row("a")]), good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(CatalogReadError):
        read_catalog(str(truncated))


def test_movie_gen_bench_prompts_are_valid_rows(moviegenbench):
    """The 1003 Movie Gen Bench prompts, read from shared/, make a realistic large catalog."""
    prompts = (moviegenbench / "MovieGenVideoBench.txt").read_text().splitlines()
    table = pa.Table.from_pylist([row(f"p{i}", prompt=p) for i, p in enumerate(prompts) if p.strip()])
    result = check(table)
    assert result.rows >= 1000
    assert result.problems == []


def test_catalog_readme_documents_every_column():
    from pathlib import Path

    from moviegen.catalog.schema import COLUMNS

    readme = (Path(__file__).resolve().parents[1] / "catalogs" / "README.md").read_text()
    assert [c.name for c in COLUMNS if f"| `{c.name}` |" not in readme] == []


def test_rendition_columns_become_spec_fields(tmp_path):
    from PIL import Image

    logo = tmp_path / "logo.png"
    Image.new("RGB", (4, 4)).save(logo)
    fields = {
        "title": "Spring drop",
        "cta": "Shop now",
        "logo_uri": str(logo),
        "logo_position": "bottom_left",
        "music_uri": "https://cdn.example.com/bed.mp3",
        "fit": "pad",
        "anchor": "top",
        "lut": "film_fade",
        "saturation": 1.2,
        "speed": 0.5,
        "motion": "blend",
    }
    result = check(pa.Table.from_pylist([row("a", **fields), row("b")]))
    assert result.problems == []
    a, b = result.specs
    assert (a.title, a.cta, a.logo_uri, a.logo_position) == ("Spring drop", "Shop now", str(logo), "bottom_left")
    assert (a.music_uri, a.fit, a.anchor) == ("https://cdn.example.com/bed.mp3", "pad", "top")
    assert dict(a.look) == {"saturation": 1.2, "speed": 0.5, "lut": "film_fade", "motion": "blend"}
    assert (b.title, b.logo_uri, b.fit, b.look, b.logo_position) == ("", None, None, (), "top_right")
