"""The output root: atomic writes, safe paths, Parquet datasets."""

from __future__ import annotations

import pytest

from moviegen.store import MANIFEST_SCHEMA, OutputRoot, UnsafePathError, new_run_id, utc_now


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


# Crash safety --------------------------------------------------------------------------------------


def dead_pid() -> int:
    """The id of a process that has exited (a killed run's)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_staged_leftovers_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    import os
    import socket

    out = OutputRoot(str(tmp_path))
    staging = tmp_path / ".staging"
    staging.mkdir()
    host = socket.gethostname()
    dead = staging / f"{host}~{dead_pid()}-0123abcd-a.mp4.tmp"
    live = staging / f"{host}~{os.getpid()}-0123abcd-b.mp4.tmp"
    foreign_old = staging / "other-host~12-0123abcd-c.mp4.tmp"
    foreign_new = staging / "other-host~13-0123abcd-d.mp4.tmp"
    for path in (dead, live, foreign_old, foreign_new):
        path.write_bytes(b"partial")
    os.utime(foreign_old, (1, 1))
    assert out.clean_staging(stale_after_s=3600) == 2
    assert sorted(p.name for p in staging.iterdir()) == sorted([live.name, foreign_new.name])


def test_compaction_keeps_rows_of_an_earlier_compaction(tmp_path):
    out = OutputRoot(str(tmp_path))
    run = new_run_id()
    for clip in ("a", "b"):
        out.append_rows("manifest", MANIFEST_SCHEMA, [manifest_row(run, clip)], run)
    out.compact_run("manifest", MANIFEST_SCHEMA, run)
    out.append_rows("manifest", MANIFEST_SCHEMA, [manifest_row(run, "c")], run)  # e.g. adopted later
    out.compact_run("manifest", MANIFEST_SCHEMA, run)
    assert [p.name for p in (tmp_path / "manifest").iterdir()] == [f"part-{run}.parquet"]
    assert sorted(out.read_rows("manifest", MANIFEST_SCHEMA).column("clip_id").to_pylist()) == ["a", "b", "c"]


def test_an_interrupted_publish_is_adopted_only_when_its_video_landed_whole(tmp_path):
    from moviegen.publish.manifest import adopt_interrupted, pending_intents, record_intent
    from moviegen.store import sha256_file

    out = OutputRoot(str(tmp_path / "out"))
    video = tmp_path / "a.mp4"
    video.write_bytes(b"the whole video" * 100)
    killed, rerun = new_run_id(), new_run_id()
    landed = manifest_row(killed, "a", rendition_key="k1", sha256=sha256_file(video), bytes=1500)
    record_intent(out, landed)
    out.put_file(video, "published", "youtube", "c", "a.mp4")
    never = manifest_row(killed, "b", rendition_key="k2", sha256=sha256_file(video))
    record_intent(out, never)  # killed before its video moved into place
    replaced = manifest_row(killed, "a", rendition_key="k3", sha256="f" * 64)
    record_intent(out, replaced)  # the file at its path is another rendition's
    assert pending_intents(out) == {"k1", "k2", "k3"}

    row = adopt_interrupted(out, "k1", rerun)
    assert row is not None and row["run_id"] == killed
    assert adopt_interrupted(out, "k2", rerun) is None
    assert adopt_interrupted(out, "k3", rerun) is None
    assert pending_intents(out) == set()
    manifest = out.read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
    assert [(r["clip_id"], r["rendition_key"], r["run_id"]) for r in manifest] == [("a", "k1", killed)]
    assert manifest[0]["published_at"] == landed["published_at"]
    [part] = [p.name for p in (tmp_path / "out" / "manifest").iterdir()]
    assert part.startswith(f"part-{rerun}-")  # written by the adopting run; the row names the one that made it


def test_a_killed_runs_record_and_scratch_are_recognised(tmp_path):
    import json
    import socket

    from moviegen.run.context import mark_interrupted_runs, run_started, sweep_work_dir

    out = OutputRoot(str(tmp_path / "out"))
    pid = dead_pid()
    killed, elsewhere, current = new_run_id(), new_run_id(), new_run_id()
    out.write_json({"run_id": killed, "status": "running", "host": socket.gethostname(), "pid": pid}, "runs", killed,
                   "run.json")  # fmt: skip
    out.write_json({"run_id": elsewhere, "status": "running", "host": "another-machine", "pid": pid}, "runs",
                   elsewhere, "run.json")  # fmt: skip
    run_started(out, current, utc_now())
    assert mark_interrupted_runs(out, current) == [killed]
    record = json.loads((tmp_path / "out/runs" / killed / "run.json").read_text())
    assert record["status"] == "interrupted" and record["resumed_by"] == current
    assert json.loads((tmp_path / "out/runs" / current / "run.json").read_text())["status"] == "running"

    work = tmp_path / "work"
    (work / "masters").mkdir(parents=True)
    (work / "renders" / f"{pid}-key").mkdir(parents=True)
    (work / "renders" / f"{pid}-key" / ".a.tmp1-2.mp4").write_bytes(b"x")
    (work / "masters" / f".k.tmp{pid}.mkv").write_bytes(b"half a master")
    (work / "masters" / "k.mkv").write_bytes(b"a whole master")
    assert sweep_work_dir(work) == 2
    assert [p.name for p in (work / "masters").iterdir()] == ["k.mkv"] and list((work / "renders").iterdir()) == []
