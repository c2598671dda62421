"""Review before publishing: a real campaign with review on, decisions from the CLI and the Prefect flow, reruns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import fast_settings, row

from moviegen.catalog.schema import write_catalog
from moviegen.config import ReviewSettings
from moviegen.publish.manifest import latest_renditions, manifest_history
from moviegen.publish.review import ReviewError, approve, pending_reviews, reject
from moviegen.run.plain import run_campaign_plain
from moviegen.store import MANIFEST_SCHEMA, REJECTED_SCHEMA, OutputRoot, sha256_file

pytestmark = pytest.mark.slow

MOVIEGEN = str(Path(sys.executable).with_name("moviegen"))
CLIPS = ("a", "b", "c", "d")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MOVIEGEN, *args], capture_output=True, text=True, env=os.environ.copy())


def files_under(out: Path, folder: str) -> set[str]:
    return {str(p.relative_to(out)) for p in (out / folder).rglob("*.mp4")} if (out / folder).exists() else set()


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory, tiny_model):
    """One campaign run with review on for its campaign (and off for another), shared by the checks below."""
    base = tmp_path_factory.mktemp("review")
    catalog = base / "catalog.parquet"
    rows = [row(clip) for clip in CLIPS] + [row("free", campaign_id="no-review")]
    write_catalog(rows, str(catalog))
    settings = fast_settings(base / "out", review=ReviewSettings(campaigns={"test-camp": True}))
    summary = run_campaign_plain(str(catalog), settings)
    return catalog, settings, base / "out", rows, summary


def test_with_review_on_nothing_is_published_until_approved(reviewed):
    _, _, out, _, summary = reviewed
    assert summary.exit_code == 0, summary.problems  # all valid rows are published or waiting
    assert files_under(out, "published") == {"published/youtube/no-review/free.mp4"}  # its campaign has no review
    assert files_under(out, "review") == {f"review/youtube/test-camp/{c}.mp4" for c in CLIPS}
    assert sorted(r["clip_id"] for r in summary.pending_review) == list(CLIPS)
    assert [r["clip_id"] for r in summary.published] == ["free"]
    run = json.loads((out / "runs" / summary.run_id / "run.json").read_text())
    assert run["counts"]["renditions_pending_review"] == 4 and run["counts"]["pending_review"] == 4
    report = (out / "runs" / summary.run_id / "report.html").read_text()
    assert "Waiting for review (4)" in report and "moviegen review approve test-camp" in report


def test_review_list_prints_the_stable_json(reviewed):
    _, _, out, _, _ = reviewed
    listed = cli("review", "list", "--out", str(out), "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert [e["clip_id"] for e in entries] == list(CLIPS)
    assert set(entries[0]) == {"campaign_id", "clip_id", "channel", "path", "rendition_key"}
    assert entries[0]["path"] == "review/youtube/test-camp/a.mp4"


def test_approve_rejects_and_reruns(reviewed, prefect_api):
    catalog, settings, out, rows, _ = reviewed
    root = OutputRoot(str(out))
    reviewed_sha = sha256_file(out / "review/youtube/test-camp/a.mp4")

    # 1. Approve clip a from the CLI: the file that was reviewed is the one published.
    approved = cli("review", "approve", "test-camp", "a", "--by", "Dana (brand)", "--note", "ok", "--out", str(out))
    assert approved.returncode == 0, approved.stderr
    assert sha256_file(out / "published/youtube/test-camp/a.mp4") == reviewed_sha
    assert not (out / "review/youtube/test-camp/a.mp4").exists()
    row_a = latest_renditions(root)[("test-camp", "a", "youtube")]
    assert (row_a["status"], row_a["reviewed_by"], row_a["review_note"]) == ("published", "Dana (brand)", "ok")
    assert row_a["reviewed_at"] is not None and row_a["sha256"] == reviewed_sha
    sidecar = json.loads((out / "published/youtube/test-camp/a.json").read_text())
    assert sidecar["reviewed_by"] == "Dana (brand)"

    # 2. Reject clip b from the Prefect flow (a real flow run): recorded, never published.
    from flows.review import review

    result = review(campaign_id="test-camp", decision="reject", reviewer="Lee (legal)", clip_ids=["b"],
                    note="logo too small", out=str(out))  # fmt: skip
    assert [r["clip_id"] for r in result["renditions"]] == ["b"]
    assert not (out / "published/youtube/test-camp/b.mp4").exists()
    [rejected] = [r for r in root.read_rows("rejected", REJECTED_SCHEMA).to_pylist() if r["stage"] == "review"]
    assert (rejected["clip_id"], rejected["rule"], rejected["reason"]) == ("b", "reviewer", "logo too small")
    assert files_under(out, "retired") and all("/b/" in f for f in files_under(out, "retired"))

    # 3. A file changed after rendering is refused and stays waiting.
    with (out / "review/youtube/test-camp/c.mp4").open("ab") as f:
        f.write(b"\0")
    tampered = cli("review", "approve", "test-camp", "c", "--by", "Dana", "--out", str(out))
    assert tampered.returncode == 1 and "changed since it was rendered" in " ".join(tampered.stderr.split())
    assert [r["clip_id"] for r in pending_reviews(root)] == ["c", "d"]
    with pytest.raises(ReviewError, match=r"nothing of campaign 'test-camp', clips b is waiting"):
        approve(root, "test-camp", ["b"], "Dana")
    with pytest.raises(ReviewError, match="needs a note"):
        reject(root, "test-camp", ["d"], "Dana", " ")

    # 4. A rerun of the same catalog renders nothing: approved is published, b's rejection stands,
    #    c and d still wait. Clip c's tampered file would be caught again by approve, not re-rendered.
    rerun = run_campaign_plain(str(catalog), settings)
    assert rerun.generated == 0 and rerun.published == [] and rerun.exit_code == 0
    assert sorted(r["clip_id"] for r in rerun.pending_review) == ["c", "d"]
    statuses = {c["clip_id"]: c["status"] for c in rerun.clips}
    assert statuses == {"a": "already_published", "b": "review_rejected", "c": "pending_review",
                        "d": "pending_review", "free": "already_published"}  # fmt: skip

    # 5. Clip d edited while waiting: its new rendition supersedes the waiting one (history kept).
    old_d = pending_reviews(root, "test-camp", ["d"])[0]["rendition_key"]
    edited = [r if r["clip_id"] != "d" else {**r, "caption": "New: now in blue"} for r in rows]
    write_catalog(edited, str(catalog))
    third = run_campaign_plain(str(catalog), settings)
    assert [r["clip_id"] for r in third.pending_review if r["run_id"] == third.run_id] == ["d"]
    new_d = pending_reviews(root, "test-camp", ["d"])[0]
    assert new_d["rendition_key"] != old_d and new_d["supersedes"] == old_d
    history = {(r["clip_id"], r["rendition_key"], r["status"]): r["state"] for r in manifest_history(root)}
    assert history[("d", old_d, "pending_review")] == "superseded"
    assert history[("a", row_a["rendition_key"], "pending_review")] == "approved"
    write_catalog(rows, str(catalog))


def test_prune_withdraws_a_waiting_rendition_whose_row_left(reviewed, tmp_path):
    """After the test above: c and d wait. Without c in the catalog, --prune withdraws it; back, it waits again."""
    catalog, settings, out, rows, _ = reviewed
    root = OutputRoot(str(out))
    without_c = tmp_path / "without-c.parquet"
    write_catalog([r for r in rows if r["clip_id"] != "c"], str(without_c))
    pruned = run_campaign_plain(str(without_c), settings, prune=True)
    [withdrawn] = pruned.retired
    assert (withdrawn["clip_id"], withdrawn["status"]) == ("c", "withdrawn")
    assert not (out / "review/youtube/test-camp/c.mp4").exists()
    assert (out / withdrawn["path"]).is_file() and withdrawn["path"].startswith("retired/youtube/test-camp/c/")
    assert [r["clip_id"] for r in pending_reviews(root)] == ["d"]
    assert (out / "published/youtube/test-camp/a.mp4").is_file()  # a is still in the catalog: kept
    history = {(r["clip_id"], r["status"]): r["state"] for r in manifest_history(root)}
    assert history[("c", "withdrawn")] == "withdrawn" and history[("c", "pending_review")] == "superseded"

    back = run_campaign_plain(str(catalog), settings)
    assert back.generated == 0  # its master is reused: only the rendition is made again, for review
    assert [r["clip_id"] for r in back.pending_review if r["run_id"] == back.run_id] == ["c"]
    assert [r["clip_id"] for r in pending_reviews(root)] == ["c", "d"]


def test_an_approval_killed_before_its_record_is_finished_by_the_next_look(tmp_path, tiny_model):
    """kill -9 between moving the approved video into published/ and writing its manifest row."""
    catalog = tmp_path / "catalog.parquet"
    write_catalog([row("k")], str(catalog))
    out = tmp_path / "out"
    run_campaign_plain(str(catalog), fast_settings(out, review=ReviewSettings(required=True)))
    victim = textwrap.dedent(f"""
        import os, signal
        from moviegen.publish.review import approve
        from moviegen.store import OutputRoot
        real = OutputRoot.append_rows
        def append_rows(self, dataset, *args, **kwargs):
            if dataset == "manifest":
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, dataset, *args, **kwargs)
        OutputRoot.append_rows = append_rows
        approve(OutputRoot({str(out)!r}), "test-camp", ["k"], "Sam")
    """)
    killed = subprocess.run([sys.executable, "-c", victim], capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "published/youtube/test-camp/k.mp4").exists()  # the video landed, its row did not
    root = OutputRoot(str(out))
    assert ("test-camp", "k", "youtube") not in latest_renditions(root)

    listed = cli("review", "list", "--out", str(out), "--json")  # the next look settles the approval
    assert json.loads(listed.stdout) == []
    row_k = latest_renditions(root)[("test-camp", "k", "youtube")]
    assert (row_k["status"], row_k["reviewed_by"]) == ("published", "Sam")
    assert len([r for r in root.read_rows("manifest", MANIFEST_SCHEMA).to_pylist() if r["status"] == "published"]) == 1
