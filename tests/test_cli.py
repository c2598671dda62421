"""The moviegen command as users and CI call it: exit statuses, messages and JSON contracts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FAST_CONFIG, row

MOVIEGEN = str(Path(sys.executable).with_name("moviegen"))


def moviegen(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MOVIEGEN, *args], capture_output=True, text=True, cwd=cwd, env=os.environ.copy())


def test_validate_json_contract_and_exit_status(catalog_file):
    good = catalog_file([row("a"), row("b")], "good.parquet")
    result = moviegen("validate", str(good), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    # The contract's three keys, and the default moderator's summary beside them.
    assert {k: payload[k] for k in ("rows", "valid", "problems")} == {"rows": 2, "valid": 2, "problems": []}
    assert set(payload) == {"rows", "valid", "problems", "moderator"}
    assert (payload["moderator"]["model"], payload["moderator"]["ran"]) == ("minilm-prompt-guard", True)

    bad = catalog_file([row("a"), row("b", prompt=""), row("c", channels=["fax"])], "bad.parquet")
    result = moviegen("validate", str(bad), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["rows"] == 3 and report["valid"] == 1
    assert [(p["row"], p["clip_id"], p["column"], p["stage"], p["rule"]) for p in report["problems"]] == [
        (1, "b", "prompt", "schema", "empty"),
        (2, "c", "channels", "schema", "unknown_channel"),
    ]
    assert all(set(p) == {"row", "clip_id", "column", "stage", "rule", "message"} for p in report["problems"])

    human = moviegen("validate", str(bad))
    assert human.returncode == 1
    assert "row 2, clip_id c, column channels: unknown channel 'fax': use one of" in human.stderr


def test_unreadable_catalog_exits_2_with_advice(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    for args in (["run", str(junk)], ["run", str(tmp_path / "missing.parquet")], ["validate", str(junk)]):
        result = moviegen(*args)
        assert result.returncode == 2, args
        assert "error:" in result.stderr and ("Parquet" in result.stderr or "does not exist" in result.stderr)


def test_missing_required_column_cannot_run(tmp_path):
    path = tmp_path / "nochannels.parquet"
    pq.write_table(pa.table({"campaign_id": ["c"], "clip_id": ["a"], "prompt": ["p"]}), path)
    result = moviegen("validate", str(path), "--json")
    assert result.returncode == 1
    [problem] = json.loads(result.stdout)["problems"]
    assert problem["row"] is None and problem["column"] == "channels" and problem["rule"] == "missing_column"


def test_bad_configuration_exits_2_naming_the_key(tmp_path, catalog_file):
    catalog = catalog_file([row("a")])
    config = tmp_path / "bad.yaml"
    config.write_text("generation:\n  batch_size: 0\nrender_wokers: 3\n")
    result = moviegen("run", str(catalog), "--config", str(config))
    assert result.returncode == 2
    assert "generation.batch_size" in result.stderr and "render_wokers" in result.stderr
    env_result = subprocess.run(
        [MOVIEGEN, "validate", str(catalog)],
        capture_output=True,
        text=True,
        env={**os.environ, "MOVIEGEN_RENDER_WORKERS": "many"},
    )
    assert env_result.returncode == 2 and "render_workers" in env_result.stderr


def test_channels_and_models_are_listed():
    channels = moviegen("channels")
    assert channels.returncode == 0 and "tiktok" in channels.stdout and "1080x1920" in channels.stdout
    models = moviegen("models")
    assert models.returncode == 0 and "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in models.stdout


@pytest.mark.slow
def test_run_publishes_and_reports(tmp_path, catalog_file, tiny_model):
    catalog = catalog_file([row("a", channels=["x"]), row("b", channels=["fax"])])
    config = tmp_path / "fast.yaml"
    config.write_text(FAST_CONFIG)
    out = tmp_path / "out"
    result = moviegen("run", str(catalog), "--out", str(out), "--config", str(config), "--json")
    assert result.returncode == 1, result.stderr  # row b was rejected
    report = json.loads(result.stdout)
    assert [r["path"] for r in report["published"]] == ["published/x/test-camp/a.mp4"]
    assert (out / "published/x/test-camp/a.mp4").is_file()
    assert [(p["row"], p["column"]) for p in report["problems"]] == [(1, "channels")]

    again = moviegen("run", str(catalog), "--out", str(out), "--config", str(config))
    assert again.returncode == 1
    assert "0 renditions published, 1 already published, 1 rejected" in " ".join(again.stderr.split())
    assert "report:" in again.stderr


def test_run_says_what_to_do_when_the_prefect_api_does_not_start(tmp_path, catalog_file):
    catalog = catalog_file([row("a", channels=["x"])])
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0"}  # it cannot start in 0 s
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [MOVIEGEN, "run", str(catalog), "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env
    )
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert "the built-in Prefect API did not start in time (0 s); nothing ran" in said
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in said and "Traceback" not in said
    assert not (tmp_path / "out" / "published").exists()
