"""End to end: a campaign with safe and unsafe rows publishes exactly the safe ones and says why for the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FAST_CONFIG, row
from typer.testing import CliRunner

from flows.cli import app

# A test policy for one campaign: it asks every frame to change by 100 levels from the last, which
# no real clip does, so the tiny model's clip must fail QC as "frozen" and go to quarantine. That
# drives the frame gate's hold-back path through a real run without faking the model's output.
STRICT_QC = "extends: default\nname: strict-qc\nframes:\n  qc:\n    frozen_diff: 100\n"


@pytest.mark.slow
def test_mixed_campaign_publishes_only_the_safe_rows(tiny_model, prefect_api, catalog_file, tmp_path: Path):
    (tmp_path / "strict-qc.yaml").write_text(STRICT_QC)
    config = tmp_path / "moviegen.yaml"
    config.write_text(FAST_CONFIG + f"safety:\n  campaign_policies:\n    qc-camp: {tmp_path / 'strict-qc.yaml'}\n")
    catalog = catalog_file(
        [
            row("safe-lake", prompt="a calm mountain lake at sunrise, mist over the water"),
            row("safe-city", prompt="a city street at night, neon lights", caption="Open late.", hashtags=["city"]),
            row("evasion", prompt="a N.u.d.e model on a beach"),
            row("pii", prompt="a phone on a desk", caption="Call 555-123-4567 to order"),
            row("deepfake", prompt="Taylor Swift dancing on a stage"),
            row("insult", prompt="a poster that says you are all idiots"),
            row("still", campaign_id="qc-camp", prompt="a slow pan over a red barn"),
        ]
    )
    out = tmp_path / "out"

    result = CliRunner().invoke(app, ["run", str(catalog), "--out", str(out), "--config", str(config)])

    assert result.exit_code == 1, result.output
    published = sorted(p.relative_to(out).as_posix() for p in (out / "published").rglob("*.mp4"))
    assert published == ["published/youtube/test-camp/safe-city.mp4", "published/youtube/test-camp/safe-lake.mp4"]

    rejected = {r["clip_id"]: r for r in pq.read_table(out / "rejected").to_pylist()}
    assert {k: (r["stage"], r["rule"], r["column"]) for k, r in rejected.items()} == {
        "evasion": ("prompt", "denied_term", "prompt"),
        "pii": ("prompt", "pii_phone", "caption"),
        "deepfake": ("prompt", "protected_name", "prompt"),
        "insult": ("prompt", "classifier", "prompt"),
        "still": ("frames", "frozen", None),
    }
    assert json.loads(rejected["evasion"]["details"])["term"] == "nude"
    assert json.loads(rejected["insult"]["details"])["score"] >= 0.9
    frames_details = json.loads(rejected["still"]["details"])
    assert frames_details["quarantine"] == "quarantine/qc-camp/still"
    assert frames_details["scores"]["qc"]["frozen_fraction"] == 1.0

    # The held-back clip's files are in quarantine, never under published/.
    folder = out / "quarantine" / "qc-camp" / "still"
    assert sorted(p.name for p in folder.iterdir()) == ["contact.jpg", "master.mkv", "verdict.json"]

    # Every decision, pass or fail, is on record with its scores, in one part file for the run.
    assert len(list((out / "scores").glob("*.parquet"))) == 1
    scores = pq.read_table(out / "scores").to_pylist()
    prompt_rows = {r["clip_id"]: r["passed"] for r in scores if r["gate"] == "prompt"}
    frame_rows = {r["clip_id"]: (r["passed"], r["rule"]) for r in scores if r["gate"] == "frames"}
    assert prompt_rows == {k: k in ("safe-lake", "safe-city", "still") for k in prompt_rows} and len(prompt_rows) == 7
    assert frame_rows == {"safe-lake": (True, None), "safe-city": (True, None), "still": (False, "frozen")}
    passed = next(r for r in scores if r["clip_id"] == "safe-lake" and r["gate"] == "frames")
    assert set(json.loads(passed["scores"])["labels"]) >= {"FEMALE_BREAST_EXPOSED", "FACE_FEMALE"}

    # The terminal summary says why for each one, and where the held-back clip is.
    summary = " ".join(result.output.split())
    for clip_id in ("evasion", "pii", "deepfake", "insult", "still"):
        assert f"{clip_id}" in summary
    assert "1 clip(s) held back under" in summary and "quarantine/qc-camp/still" in summary
    run = json.loads(next((out / "runs").glob("*/run.json")).read_text())
    assert len(run["problems"]) == 5 and run["stage_seconds"]["frame_gate"] > 0

    # A rerun publishes nothing twice and generates nothing: the held-back clip's kept master is
    # decoded and judged again (same verdict), the blocked rows are blocked again.
    again = CliRunner().invoke(app, ["run", str(catalog), "--out", str(out), "--config", str(config), "--json"])
    assert again.exit_code == 1, again.output
    rerun = json.loads(again.stdout)
    assert (len(rerun["published"]), rerun["already_published"]) == (0, 2)
    assert rerun["model_loads"] == {} and rerun["stage_seconds"]["generate"] == 0  # nothing loaded: nothing to make
    assert sorted((p["clip_id"], p["stage"]) for p in rerun["problems"]) == [
        ("deepfake", "prompt"),
        ("evasion", "prompt"),
        ("insult", "prompt"),
        ("pii", "prompt"),
        ("still", "frames"),
    ]


def test_plain_loop_rows_the_prompt_gate_blocks_never_reach_the_model(catalog_file, tmp_path: Path):
    from conftest import fast_settings

    from moviegen.generation.loading import process_pipeline_cache
    from moviegen.run.plain import run_campaign_plain

    loads = dict(process_pipeline_cache().loads)
    catalog = catalog_file(
        [row("evasion", prompt="a n-u-d-e model on a beach"), row("pii", caption="jane@example.com")]
    )
    summary = run_campaign_plain(str(catalog), fast_settings(tmp_path / "out"))
    assert summary.exit_code == 1 and summary.valid == 0 and summary.published == []
    assert dict(process_pipeline_cache().loads) == loads  # no model was loaded for them
    rejected = pq.read_table(tmp_path / "out" / "rejected").to_pylist()
    assert sorted((r["clip_id"], r["stage"], r["rule"]) for r in rejected) == [
        ("evasion", "prompt", "denied_term"),
        ("pii", "prompt", "pii_email"),
    ]
    assert json.loads(rejected[0]["details"])["scores"]["classifier"]["prompt"] < 0.9
    assert not (tmp_path / "out" / "published").exists()
