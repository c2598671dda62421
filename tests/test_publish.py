"""The output root: atomic writes, safe paths, Parquet datasets."""

from __future__ import annotations

import pytest

from moviegen.publish import MANIFEST_SCHEMA, OutputRoot, UnsafePathError, new_run_id, utc_now


def manifest_row(run_id: str, clip: str, **kw) -> dict:
    row = {
        "run_id": run_id,
        "campaign_id": "c",
        "clip_id": clip,
        "channel": "youtube",
        "path": f"published/youtube/c/{clip}.mp4",
        "clip_key": "k",
        "rendition_key": "r",
        "sha256": "0" * 64,
        "width": 1920,
        "height": 1080,
        "fps": 30.0,
        "duration_s": 1.0,
        "published_at": utc_now(),
    }
    row.update(kw)
    return row


@pytest.mark.parametrize("bad", ["..", "../etc", "a/../../b", ".hidden", "a b", "x\x00y", "", "é"])
def test_paths_outside_the_layout_are_refused(tmp_path, bad):
    out = OutputRoot(str(tmp_path))
    with pytest.raises(UnsafePathError):
        out.path("published", bad, "clip.mp4")


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    out = OutputRoot(str(tmp_path / "out"))
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    assert out.put_file(src, "published", "youtube", "c", "a.mp4") == "published/youtube/c/a.mp4"
    out.write_json({"a": 1}, "published", "youtube", "c", "a.json")
    files = sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["a.json", "a.mp4"]


def test_dataset_parts_are_read_together_and_compacted_per_run(tmp_path):
    out = OutputRoot(str(tmp_path))
    run_a, run_b = new_run_id(), new_run_id()
    for clip in ("a", "b", "c"):
        out.append_rows("manifest", MANIFEST_SCHEMA, [manifest_row(run_a, clip)], run_a)
    out.append_rows("manifest", MANIFEST_SCHEMA, [manifest_row(run_b, "d")], run_b)
    assert out.read_rows("manifest", MANIFEST_SCHEMA).num_rows == 4
    out.compact_run("manifest", MANIFEST_SCHEMA, run_a)
    names = sorted(p.name for p in (tmp_path / "manifest").iterdir())
    assert names == sorted([f"part-{run_a}.parquet", *[n for n in names if n.startswith(f"part-{run_b}-")]])
    table = out.read_rows("manifest", MANIFEST_SCHEMA)
    assert sorted(table.column("clip_id").to_pylist()) == ["a", "b", "c", "d"]
    assert table.schema == MANIFEST_SCHEMA


def test_interrupted_compaction_does_not_duplicate_rows(tmp_path):
    out = OutputRoot(str(tmp_path))
    run = new_run_id()
    rows = [manifest_row(run, clip) for clip in ("a", "b")]
    for r in rows:
        out.append_rows("manifest", MANIFEST_SCHEMA, [r], run)
    # the compacted part was written but the small parts were not deleted yet
    out.append_rows("manifest", MANIFEST_SCHEMA, rows, run)
    assert out.read_rows("manifest", MANIFEST_SCHEMA).num_rows == 2


def test_empty_dataset_reads_as_empty_table(tmp_path):
    table = OutputRoot(str(tmp_path)).read_rows("manifest", MANIFEST_SCHEMA)
    assert table.num_rows == 0 and table.schema == MANIFEST_SCHEMA


def test_fsspec_memory_filesystem_works_as_output_root(tmp_path):
    out = OutputRoot("memory://moviegen-test-root")
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc")
    out.put_file(src, "published", "x", "c", "a.mp4")
    assert out.exists("published", "x", "c", "a.mp4") and not out.is_local
    run = new_run_id()
    out.append_rows("manifest", MANIFEST_SCHEMA, [manifest_row(run, "a")], run)
    assert out.read_rows("manifest", MANIFEST_SCHEMA).num_rows == 1
