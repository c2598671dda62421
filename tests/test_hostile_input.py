"""Hostile input in catalogs, configuration and URIs: each gets a clear problem naming row, clip_id and
column (or a clean error for a whole file), and no secret is echoed."""

from __future__ import annotations

import io
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import row

from moviegen.assets import AssetError, UriPolicy, check_uri, fetch_asset
from moviegen.catalog.check import validate_catalog
from moviegen.catalog.schema import CatalogReadError, read_catalog, write_catalog
from moviegen.config import ConfigError, InputSettings, load_settings
from moviegen.presets import channel_presets, styles
from moviegen.redact import RedactingFilter, redact_text, redact_uri, register_secret
from moviegen.spec import Problem


def validate(table: pa.Table, policy: UriPolicy | None = None):
    return validate_catalog(
        table, channels=channel_presets(), styles=styles(), default_model="tiny-wan", uri_policy=policy
    )


def validate_rows(rows: list[dict], tmp_path, policy: UriPolicy | None = None):
    path = tmp_path / "hostile.parquet"
    write_catalog(rows, str(path))
    return validate(read_catalog(str(path)), policy)


HOSTILE = [
    # (column, value, rule)
    ("clip_id", "../../escape", "slug"),
    ("clip_id", "clip/../../x", "slug"),
    ("clip_id", "clip\n", "slug"),
    ("clip_id", "clip\x00", "slug"),
    ("clip_id", "clíp", "slug"),
    ("clip_id", "x" * 65, "slug"),
    ("campaign_id", "..", "slug"),
    ("campaign_id", "/etc", "slug"),
    ("prompt", "x" * 200_000, "too_long"),
    ("prompt", "a scene\x1b[2J with a terminal escape", "control_chars"),
    ("prompt", "   ", "empty"),
    ("title", "evil\u202egnp.exe", "control_chars"),
    ("caption", "bell\x07", "control_chars"),
    ("caption", "c" * 5000, "too_long"),
    ("channels", ["youtube", "../../x"], "unknown_channel"),
    ("channels", [], "missing"),
    ("style", "; rm -rf /", "unknown_style"),
    ("hashtags", ["ok", "two words"], "hashtag"),
    ("hashtags", ["tag\x00"], "hashtag"),
    ("aspect", "4:3", "unknown_aspect"),
    ("logo_uri", "ftp://cdn.example.com/logo.png", "uri"),
    ("logo_uri", "https://user:hunter2pass@cdn.example.com/logo.png", "uri"),
    ("music_uri", "concat:/etc/passwd|/etc/hosts.mp3", "uri"),
    ("music_uri", "file:///etc/passwd", "uri"),
    ("lut", "../../../../etc/shadow.cube", "uri"),
    ("reference_image", "/etc/" + "n" * 300 + ".png", "uri"),
    ("source_video", "subfile,,start,0,end,10,,:/etc/passwd.mp4", "uri"),
    ("source_video", "data://text/plain,abc.mp4", "uri"),
    ("model", "../../../../../", "unknown_model"),
]


@pytest.mark.parametrize(
    ("column", "value", "rule"), HOSTILE, ids=[f"{c}-{r}-{i}" for i, (c, _, r) in enumerate(HOSTILE)]
)
def test_hostile_value_is_rejected_with_row_clip_and_column(tmp_path, column, value, rule):
    bad = {**row("bad"), column: value}
    result = validate_rows([row("good"), bad, row("good2")], tmp_path)
    assert sorted(s.clip_id for s in result.specs) == ["good", "good2"]
    problems = [p for p in result.problems if p.row == 1]
    assert problems, result.problems
    p = problems[0]
    assert (p.column, p.rule) == (column, rule), p
    if column != "clip_id":
        assert p.clip_id == "bad"
    assert "row 1" in p.describe() and f"column {column}" in p.describe()
    assert "hunter2pass" not in p.message and "\x00" not in p.message and len(p.message) < 600


def test_local_files_outside_the_allowed_folders_are_refused(tmp_path):
    allowed, outside = tmp_path / "brand", tmp_path / "elsewhere"
    allowed.mkdir()
    outside.mkdir()
    from PIL import Image

    for folder in (allowed, outside):
        Image.new("RGB", (8, 8), "red").save(folder / "logo.png")
    (allowed / "link.png").symlink_to(outside / "logo.png")
    policy = UriPolicy.from_settings(InputSettings(allowed_folders=[allowed]))
    assert check_uri(str(allowed / "logo.png"), "logo", policy) is None
    for uri in (str(outside / "logo.png"), str(allowed / ".." / "elsewhere" / "logo.png"), str(allowed / "link.png")):
        assert "outside the allowed folders" in check_uri(uri, "logo", policy), uri
    with pytest.raises(AssetError, match="outside the allowed folders"):
        fetch_asset(str(outside / "logo.png"), "logo", tmp_path / "cache", policy)
    result = validate_rows([row("a", logo_uri=str(outside / "logo.png")), row("b")], tmp_path, policy)
    assert [s.clip_id for s in result.specs] == ["b"]
    assert (result.problems[0].row, result.problems[0].column, result.problems[0].rule) == (0, "logo_uri", "uri")


def test_schemes_can_be_narrowed(tmp_path):
    policy = UriPolicy.from_settings(InputSettings(allowed_schemes=["https"]))
    assert "not allowed" in check_uri("s3://bucket/logo.png", "logo", policy)
    assert "not allowed" in check_uri(str(tmp_path / "logo.png"), "logo", policy)
    assert check_uri("https://cdn.example.com/logo.png?sig=abc", "logo", policy) is None
    with pytest.raises(ConfigError, match=r"inputs.allowed_schemes"):
        load_settings(None, inputs={"allowed_schemes": ["https", "bad scheme"]})


def test_wrong_types_and_nulls_name_the_column():
    table = pa.table(
        {
            "campaign_id": ["c", None, "c"],
            "clip_id": ["a", "b", None],
            "prompt": ["p one", "p two", "p three"],
            "channels": pa.array([["youtube"], ["youtube"], ["youtube"]]),
            "seed": ["7", "8", "9"],  # text where an integer belongs
            "duration_s": [1.0, float("nan"), 1e300],
        }
    )
    result = validate(table)
    assert result.specs == []
    found = {(p.row, p.column, p.rule) for p in result.problems}
    assert {(0, "seed", "type"), (1, "campaign_id", "missing"), (2, "clip_id", "missing")} <= found
    assert {(1, "duration_s", "type"), (2, "duration_s", "range")} <= found


def test_duplicate_columns_and_duplicate_clips():
    table = pa.Table.from_arrays(
        [pa.array(["c"]), pa.array(["a"]), pa.array(["p"]), pa.array([["youtube"]]), pa.array(["q"])],
        names=["campaign_id", "clip_id", "prompt", "channels", "prompt"],
    )
    result = validate(table)
    assert result.fatal and [(p.column, p.rule) for p in result.problems] == [("prompt", "duplicate_column")]
    table = pa.table({"campaign_id": ["c", "c"], "clip_id": ["a", "a"], "prompt": ["p", "q"],
                      "channels": pa.array([["youtube"], ["youtube"]])})  # fmt: skip
    result = validate(table)
    assert result.specs == [] and {p.rule for p in result.problems} == {"duplicate"}


def test_unreadable_column_types_are_problems_not_tracebacks():
    stamps = pa.array([2**62], pa.int64()).cast(pa.timestamp("s"))  # far beyond year 9999
    table = pa.table({"campaign_id": ["c"], "clip_id": ["a"], "prompt": ["p"], "channels": pa.array([["youtube"]])})
    ok = validate(table.append_column("shot_at", stamps))  # an unknown column: kept as text
    assert [s.clip_id for s in ok.specs] == ["a"]
    bad = validate(table.append_column("seed", stamps))
    assert bad.specs == [] and (bad.problems[0].column, bad.problems[0].rule) == ("seed", "unreadable_column")


@pytest.mark.parametrize(
    "data",
    [b"", b"not parquet at all", b"PAR1" + b"\x00" * 64 + b"PAR1", "half"],
    ids=["empty", "text", "fake-magic", "truncated"],
)
def test_unreadable_catalog_is_a_clean_error(tmp_path, data):
    if data == "half":
        buffer = io.BytesIO()
        pq.write_table(pa.table({"campaign_id": ["c"] * 100}), buffer)
        data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    path = tmp_path / "catalog.parquet"
    path.write_bytes(data)
    with pytest.raises(CatalogReadError, match=r"not a readable Parquet file.*write it with"):
        read_catalog(str(path))
    with pytest.raises(CatalogReadError, match="is a folder"):
        read_catalog(str(tmp_path))


def test_catalog_read_errors_hide_credentials():
    with pytest.raises(CatalogReadError) as info:
        read_catalog("memory://user:s3cretpass@bucket/missing.parquet?token=tok3nvalue")
    assert "s3cretpass" not in str(info.value) and "tok3nvalue" not in str(info.value)


def test_broken_config_files_and_environment(tmp_path, monkeypatch, caplog):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("provenance:\n  private_key_password: 'sup3r-secret-value\n  x: [\n")
    with pytest.raises(ConfigError) as info:
        load_settings(bad_yaml)
    assert "not valid YAML at line" in str(info.value) and "sup3r-secret-value" not in str(info.value)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(binary)
    with pytest.raises(ConfigError, match="not valid TOML"):
        (tmp_path / "bad.toml").write_text("out = ")
        load_settings(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path)
    monkeypatch.setenv("MOVIEGEN_GENERATION__BATCH_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"generation.batch_size"):
        load_settings()
    monkeypatch.delenv("MOVIEGEN_GENERATION__BATCH_SIZE")
    monkeypatch.setenv("MOVIEGEN_CHANNELS", "{not json: tok3n-in-env")
    with pytest.raises(ConfigError, match=r"MOVIEGEN_CHANNELS|channels") as info:
        load_settings()
    assert "tok3n-in-env" not in str(info.value)
    monkeypatch.delenv("MOVIEGEN_CHANNELS")
    monkeypatch.setenv("MOVIEGEN_GENERATON__STEPS", "s3cret-typo-value")  # a typo is not silently ignored
    with caplog.at_level(logging.WARNING, logger="moviegen.config"):
        load_settings()
    assert "MOVIEGEN_GENERATON__STEPS is not a moviegen setting" in caplog.text
    assert "s3cret-typo-value" not in caplog.text


@pytest.mark.parametrize(
    ("uri", "hidden", "kept"),
    [
        ("https://alice:pa55word@cdn.example.com/a.png", ["pa55word", "alice"], ["cdn.example.com/a.png"]),
        ("https://cdn.example.com/a.png?X-Amz-Signature=abc123&X-Amz-Date=2026", ["abc123"], ["X-Amz-Date=2026"]),
        ("https://cdn.example.com/a.png?token=t0k3n&v=2", ["t0k3n"], ["v=2"]),
        ("https://acct.blob.core.windows.net/c/a.png?sv=2024&sig=s1gnature", ["s1gnature"], ["sv=2024"]),
        ("s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/a.png", ["wJalrXUtnFEMI"], ["bucket/a.png"]),
        ("/local/path/a.png", [], ["/local/path/a.png"]),
    ],
)
def test_redact_uri(uri, hidden, kept):
    shown = redact_uri(uri)
    assert all(h not in shown for h in hidden) and all(k in shown for k in kept), shown
    message = redact_text(f"logo {uri!r} cannot be read: HTTP 403 for {uri}")
    assert all(h not in message for h in hidden), message


def test_registered_secrets_pem_blocks_and_log_records_are_masked(caplog):
    register_secret("correct-horse-battery-staple")
    pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
    text = redact_text(f"key {pem} password correct-horse-battery-staple")
    assert "MIIEvQ" not in text and "correct-horse" not in text
    problem = Problem(3, "a", "music_uri", "plan", "asset", "music 'https://u:p4ssw0rd@h/x.mp3' failed",
                      details={"uri": "https://h/x.mp3?token=zzz123"})  # fmt: skip
    assert "p4ssw0rd" not in problem.message and "zzz123" not in str(problem.details)
    logger = logging.getLogger("moviegen.test.redaction")
    handler = logging.Handler()
    records: list[str] = []
    handler.emit = lambda record: records.append(logging.Formatter().format(record))  # type: ignore[method-assign]
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("fetching %s", "https://cdn.example.com/a.png?token=l0gt0ken")
        try:
            raise OSError("403 for https://bob:hunter22@cdn.example.com/x")
        except OSError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    assert records and not any("l0gt0ken" in r or "hunter22" in r for r in records), records


def test_validate_command_prints_markup_like_text_literally(tmp_path):
    """Rich markup in a catalog value ("[/bold]") is printed as text, never interpreted (or crashing)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "catalog.parquet"
    write_catalog([row("a", style="[/bold]"), row("[red]b"), row("ok")], str(path))
    moviegen = str(Path(sys.executable).with_name("moviegen"))
    result = subprocess.run([moviegen, "validate", str(path)], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 1, result.stderr
    text = " ".join(result.stderr.split())
    assert "unknown style '[/bold]'" in text and "'[red]b' is not a slug" in text and "1 of 3 rows would run" in text
