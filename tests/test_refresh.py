"""Refresh: an edited catalog regenerates what changed, keeps the history, and --prune retires what left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FAST_CONFIG, fast_settings, row

from moviegen.catalog.check import CatalogValidation
from moviegen.publish.manifest import manifest_history, published_renditions
from moviegen.spec import ClipSpec, Problem
from moviegen.store import MANIFEST_SCHEMA, OutputRoot, published_paths, sha256_file, utc_now

MOVIEGEN = str(Path(sys.executable).with_name("moviegen"))


def manifest_row(clip_id: str, run_id: str, key: str, minutes: int, campaign_id: str = "camp", **extra) -> dict:
    return {
        "run_id": run_id,
        "campaign_id": campaign_id,
        "clip_id": clip_id,
        "channel": "x",
        "path": f"published/x/{campaign_id}/{clip_id}.mp4",
        "clip_key": f"clip-{key}",
        "rendition_key": key,
        "sha256": f"sha-{key}",
        "published_at": utc_now() - timedelta(minutes=60 - minutes),
        **extra,
    }


def publish_files(out: Path, clip_id: str, campaign_id: str = "camp", content: bytes = b"video") -> None:
    for part in published_paths("x", campaign_id, clip_id).values():
        path = out.joinpath(*part)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if part[-1].endswith(".mp4") else b"{}")


def test_parts_written_before_the_refresh_columns_read_as_published(tmp_path):
    old_schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name not in ("status", "supersedes")])
    (tmp_path / "manifest").mkdir()
    old = manifest_row("a", "run-1", "k1", 0)
    pq.write_table(pa.Table.from_pylist([old], schema=old_schema), tmp_path / "manifest" / "part-run-1.parquet")
    publish_files(tmp_path, "a")
    out = OutputRoot(str(tmp_path))
    [current] = published_renditions(out).values()
    assert current["rendition_key"] == "k1" and current["status"] is None
    [history] = manifest_history(out)
    assert history["status"] == "published" and history["state"] == "current"


def test_history_marks_superseded_and_retired_rows(tmp_path):
    out = OutputRoot(str(tmp_path))
    rows = [
        manifest_row("a", "run-1", "a1", 0, status="published"),
        manifest_row("b", "run-1", "b1", 0, status="published"),
        manifest_row("a", "run-2", "a2", 10, status="published", supersedes="a1"),
        manifest_row("b", "run-3", "b1", 20, status="retired", supersedes="b1"),
    ]
    out.append_rows("manifest", MANIFEST_SCHEMA, rows, "mixed")
    publish_files(tmp_path, "a")
    history = {(r["clip_id"], r["run_id"]): r for r in manifest_history(out)}
    assert history[("a", "run-1")]["state"] == "superseded" and history[("a", "run-1")]["superseded_by"] == "run-2"
    assert history[("a", "run-2")]["state"] == "current" and history[("a", "run-2")]["supersedes"] == "a1"
    assert history[("b", "run-1")]["state"] == "superseded" and history[("b", "run-1")]["superseded_by"] == "run-3"
    assert history[("b", "run-3")]["state"] == "retired"
    assert set(published_renditions(out)) == {("camp", "a", "x")}


def generated_masters(out: Path) -> set[str]:
    """The generated masters kept under .work (not their watermarked copies, ``<clip_key>.mark-*.mkv``)."""
    return {p.name for p in (out / ".work" / "masters").glob("*.mkv") if ".mark-" not in p.name}


@pytest.fixture
def ctx(tmp_path):
    from moviegen.run.context import start_run

    return start_run(fast_settings(tmp_path / "out"), run_id="run-prune")


def _validation(*specs: ClipSpec, problems: tuple[Problem, ...] = ()) -> CatalogValidation:
    return CatalogValidation(rows=len(specs) + len(problems), specs=list(specs), problems=list(problems))


def _spec(clip_id: str, campaign_id: str = "camp", channels: tuple[str, ...] = ("x",)) -> ClipSpec:
    return ClipSpec(row=0, campaign_id=campaign_id, clip_id=clip_id, prompt="p", channels=channels)


def test_prune_retires_only_what_left_this_campaigns_catalog(ctx):
    from moviegen.run.planning import prune_campaign

    out, root = ctx.out, Path(ctx.out.root)
    rows = [
        manifest_row("keep", "run-1", "k", 0, status="published"),
        manifest_row("gone", "run-1", "g", 0, status="published"),
        manifest_row("broken", "run-1", "b", 0, status="published"),
        manifest_row("other", "run-1", "o", 0, campaign_id="another", status="published"),
    ]
    out.append_rows("manifest", MANIFEST_SCHEMA, rows, "run-1")
    for r in rows:
        publish_files(root, r["clip_id"], r["campaign_id"], content=r["clip_id"].encode())
    # "broken" is still in the catalog but invalid now: it keeps its rendition.
    broken = Problem(1, "broken", "channels", "schema", "unknown_channel", "unknown channel", "camp")
    retired = prune_campaign(_validation(_spec("keep"), problems=(broken,)), ctx)

    assert [(r["clip_id"], r["status"], r["supersedes"], r["run_id"]) for r in retired] == [
        ("gone", "retired", "g", "run-prune")
    ]
    assert retired[0]["path"] == "retired/x/camp/gone/g.mp4"
    assert (root / "retired/x/camp/gone/g.mp4").read_bytes() == b"gone"
    assert (root / "retired/x/camp/gone/g.json").is_file() and (root / "retired/x/camp/gone/g.jpg").is_file()
    assert not (root / "published/x/camp/gone.mp4").exists()
    assert set(published_renditions(out)) == {("camp", "keep", "x"), ("camp", "broken", "x"), ("another", "other", "x")}
    # A second prune has nothing left to do.
    assert prune_campaign(_validation(_spec("keep"), problems=(broken,)), ctx) == []


def test_a_prune_killed_half_way_is_finished_by_the_next(ctx):
    from moviegen.run.planning import prune_campaign

    out, root = ctx.out, Path(ctx.out.root)
    out.append_rows("manifest", MANIFEST_SCHEMA, [manifest_row("gone", "run-1", "g", 0, status="published")], "run-1")
    publish_files(root, "gone")
    # The video was moved, then the run died before the sidecar, the poster and the manifest row.
    out.move(("published", "x", "camp", "gone.mp4"), ("retired", "x", "camp", "gone", "g.mp4"))
    [retired] = prune_campaign(_validation(_spec("keep")), ctx)
    assert retired["status"] == "retired"
    assert sorted(p.name for p in (root / "retired/x/camp/gone").iterdir()) == ["g.jpg", "g.json", "g.mp4"]
    assert not list((root / "published").rglob("gone.*"))


def test_a_channel_dropped_from_a_row_is_retired(ctx):
    from moviegen.run.planning import prune_campaign

    out, root = ctx.out, Path(ctx.out.root)
    rows = [manifest_row("a", "run-1", "a1", 0, status="published")]
    rows.append({**rows[0], "channel": "youtube", "path": "published/youtube/camp/a.mp4", "rendition_key": "a2"})
    out.append_rows("manifest", MANIFEST_SCHEMA, rows, "run-1")
    publish_files(root, "a")
    retired = prune_campaign(_validation(_spec("a", channels=("x",))), ctx)
    assert [(r["channel"], r["rendition_key"]) for r in retired] == [("youtube", "a2")]


@pytest.mark.slow
def test_edited_catalog_regenerates_two_retires_one_and_touches_nothing_else(tmp_path, tiny_model):
    """Edit two rows of a published catalog and remove one; rerun with --prune."""
    from moviegen.catalog.schema import write_catalog
    from moviegen.run.plain import run_campaign_plain

    out = tmp_path / "out"
    config = tmp_path / "fast.yaml"
    config.write_text(FAST_CONFIG)
    first = [row(c, channels=["x"], seed=i) for i, c in enumerate("abcd")]
    v1, v2 = tmp_path / "v1.parquet", tmp_path / "v2.parquet"
    write_catalog(first, str(v1))
    run1 = run_campaign_plain(str(v1), fast_settings(out))
    assert run1.exit_code == 0 and len(run1.published) == 4
    before = {
        p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, sha256_file(p)) for p in out.rglob("*") if p.is_file()
    }
    masters_before = generated_masters(out)
    keys_before = {r["clip_id"]: r for r in run1.published}

    # b gets a new prompt, c a new seed, d leaves the catalog; a stays as it was.
    edited = [first[0], {**first[1], "prompt": "a different scene entirely"}, {**first[2], "seed": 99}]
    write_catalog(edited, str(v2))
    result = subprocess.run(
        [MOVIEGEN, "run", str(v2), "--out", str(out), "--config", str(config), "--prune", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"},  # a busy machine starts slowly
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run2 = json.loads(result.stdout)

    # Exactly b and c were regenerated (new clip keys, new masters) and replaced in place.
    assert sorted(r["clip_id"] for r in run2["published"]) == ["b", "c"]
    assert run2["already_published"] == 1
    for r in run2["published"]:
        old = keys_before[r["clip_id"]]
        assert r["clip_key"] != old["clip_key"] and r["supersedes"] == old["rendition_key"]
        assert sha256_file(out / r["path"]) == r["sha256"] != old["sha256"]
        sidecar = json.loads((out / r["path"]).with_suffix(".json").read_text())
        assert sidecar["clip_key"] == r["clip_key"]
    masters_after = generated_masters(out)
    assert masters_before < masters_after and len(masters_after - masters_before) == 2

    # d was retired: moved out of published/, whole, with the manifest saying so.
    [retired] = run2["retired"]
    assert (retired["clip_id"], retired["status"], retired["supersedes"]) == (
        "d",
        "retired",
        keys_before["d"]["rendition_key"],
    )
    assert not list((out / "published").rglob("d.*"))
    assert sha256_file(out / retired["path"]) == keys_before["d"]["sha256"]

    # Nothing else was touched: a's files, and every other file of the first run that was not b's, c's or d's.
    for rel, (mtime, sha) in before.items():
        if rel.startswith("published/") and rel.rsplit("/", 1)[-1][0] in "bcd":
            continue
        if rel.startswith(("published/", "manifest/", "rejected/", "runs/", ".work/masters/")):
            path = out / rel
            assert path.is_file() and (path.stat().st_mtime_ns, sha256_file(path)) == (mtime, sha), rel

    # The manifest tells the history.
    history = {(r["clip_id"], r["run_id"], r["status"]): r for r in manifest_history(OutputRoot(str(out)))}
    r1, r2 = run1.run_id, run2["run_id"]
    assert len(history) == 7
    assert history[("a", r1, "published")]["state"] == "current"
    for clip in "bc":
        assert history[(clip, r1, "published")]["state"] == "superseded"
        assert history[(clip, r1, "published")]["superseded_by"] == r2
        assert history[(clip, r2, "published")]["state"] == "current"
    assert history[("d", r1, "published")]["superseded_by"] == r2
    assert history[("d", r2, "retired")]["state"] == "retired"

    # Running the edited catalog again changes nothing.
    again = run_campaign_plain(str(v2), fast_settings(out), prune=True)
    assert again.published == [] and again.retired == [] and again.already_published == 3
