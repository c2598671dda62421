"""The distributed executor on a real Prefect server with two GPU-pool process workers.

One server for the module: work pools and crash detection from deployments/setup.py, both
deployments from deployments/prefect.yaml, workers ``gpu-0`` and ``gpu-1`` (pool ``gpu``) and
``campaign-0`` (pool ``campaign``). In order:

1. a 6-clip campaign with ``--executor deployments``: shards ran on both workers, every rendition
   published once, the manifest complete;
2. a data team emits ``catalog.published`` for a catalog with 2 more clips: the trigger starts a
   campaign run, and one GPU worker is killed with its flow run in the middle of it (a lost
   machine): its shard is marked Crashed by the heartbeat automation and reported, the other
   shard's clips are published;
3. a rerun completes what the lost worker did not make, publishing nothing twice;
4. the CI workflow's command (deployments/ci-refresh.yml) passes for a clean run and fails for
   a run that rejected a row;
5. a shard that keeps failing is retried, then given up and reported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cluster import BIN, LocalCluster
from conftest import row

from moviegen.catalog.schema import write_catalog
from moviegen.costs import TIMINGS_SCHEMA
from moviegen.store import MANIFEST_SCHEMA, OutputRoot, sha256_file

pytestmark = pytest.mark.slow

CONFIG = """\
generation:
  steps: 2
  batch_size: 4
watermark_gate: recorded
scaleout:
  shard_retries: 0
  poll_s: 1
"""
FIRST = [row(f"c{i:02d}", channels=["x"], seed=i) for i in range(6)]
MORE = [row(f"c{i:02d}", channels=["x"], seed=i) for i in range(6, 8)]


def manifest(out: Path) -> list[dict]:
    return OutputRoot(str(out)).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()


def run_moviegen(cluster: LocalCluster, *args: str) -> tuple[int, dict]:
    result = cluster.run([str(BIN / "moviegen"), *args, "--json"], timeout=900)
    assert result.stdout.strip(), result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("cluster")
    paths = {"base": base, "out": base / "out", "config": base / "moviegen.yaml", "first": base / "first.parquet"}
    paths["config"].write_text(CONFIG)
    write_catalog(FIRST, str(paths["first"]))
    # One torch thread per worker: two workers share the machine's two cores, as two GPUs would not.
    with LocalCluster(base, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) as c:
        c.start_server()
        c.setup_pools("--gpu-slots", "2", "--crash-after", "45")
        deploy_env = {"MOVIEGEN_OUT": str(paths["out"]), "MOVIEGEN_CONFIG": str(paths["config"])}
        c.deploy({**deploy_env, "MOVIEGEN_CATALOG": str(paths["first"])})
        for name in ("gpu-0", "gpu-1"):
            c.start_worker("gpu", name)
        c.start_worker("campaign", "campaign-0")
        c.wait_workers("gpu", ["gpu-0", "gpu-1"])
        c.wait_workers("campaign", ["campaign-0"])
        try:
            yield c, paths
        finally:
            for name in ("gpu-0", "gpu-1", "campaign-0", "server"):
                print(f"----- {name}.log\n{c.log(name, 3000)}")


def test_deployments_from_prefect_yaml(cluster):
    c, paths = cluster
    campaign = c.api_get("/deployments/name/campaign/campaign")
    assert campaign["work_pool_name"] == "campaign"
    assert [s["schedule"]["cron"] for s in campaign["schedules"]] == ["0 6 * * 1-5"]
    assert campaign["parameters"]["executor"] == "deployments"
    assert campaign["parameters"]["out"] == str(paths["out"])
    assert campaign["global_concurrency_limit"]["limit"] == 1
    review = c.api_get("/deployments/name/review/review")  # Prefect's run form is the reviewer's page
    assert review["work_pool_name"] == "campaign"
    fields = review["parameter_openapi_schema"]["properties"]
    assert {"campaign_id", "clip_ids", "decision", "reviewer", "note"} <= set(fields)
    assert sorted(fields["decision"]["enum"]) == ["approve", "reject"]
    shard = c.api_get("/deployments/name/render-shard/render-shard")
    assert shard["work_pool_name"] == "gpu"
    assert shard["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
    assert c.api_get("/work_pools/gpu")["concurrency_limit"] == 2
    # The scheduler made the cron schedule's next runs (it cannot with SQLAlchemy 2.1: see pyproject.toml).
    scheduled = wait_for(
        lambda: [r for r in c.flow_runs("campaign") if r["state_type"] == "SCHEDULED"], 120, "scheduled campaign runs"
    )
    assert all(r["expected_start_time"].endswith("T06:00:00Z") for r in scheduled)


def test_campaign_fans_out_over_both_workers(cluster):
    c, paths = cluster
    out = paths["out"]
    code, result = run_moviegen(
        c, "run", str(paths["first"]), "--executor", "deployments", "--out", str(out), "--config", str(paths["config"])
    )
    assert code == 0, result["problems"]
    assert result["executor"] == "deployments"
    assert sorted(r["clip_id"] for r in result["published"]) == [f"c{i:02d}" for i in range(6)]

    shards = result["shards"]
    assert len(shards) == 2 and all(s["state"] == "COMPLETED" for s in shards)
    assert {s["worker"] for s in shards} == {"gpu-0", "gpu-1"}, "both workers made a shard"
    assert sorted(clip for s in shards for clip in s["clip_ids"]) == [f"c{i:02d}" for i in range(6)]
    assert sorted(s["clips"] for s in shards) == [3, 3], "six alike clips: three per shard"

    rows = manifest(out)
    assert sorted((r["clip_id"], r["channel"]) for r in rows) == [(f"c{i:02d}", "x") for i in range(6)]
    assert {r["run_id"] for r in rows} == {result["run_id"]}
    for r in rows:
        assert r["sha256"] == sha256_file(out / r["path"]) and r["status"] == "published"
    published = sorted(p.relative_to(out).as_posix() for p in (out / "published").rglob("*.mp4"))
    assert published == [f"published/x/test-camp/c{i:02d}.mp4" for i in range(6)]
    assert [p.name for p in (out / "manifest").iterdir()] == [f"part-{result['run_id']}.parquet"]

    # The shard flow runs are subflows of the campaign's, on the gpu pool.
    runs = [r for r in c.flow_runs("render-shard") if r["name"].startswith(result["run_id"])]
    assert len(runs) == 2 and all(r["parent_task_run_id"] for r in runs)
    assert all(r["work_pool_name"] == "gpu" and r["state_type"] == "COMPLETED" for r in runs)
    # Timings for the cost model: clips, encodes, model loads and the shards' fixed cost.
    timings = OutputRoot(str(out)).read_rows("timings", TIMINGS_SCHEMA)
    kinds = timings.column("kind").to_pylist()
    assert kinds.count("generate") == 6 and kinds.count("render") == 6 and kinds.count("shard") == 2


def test_event_starts_a_run_and_a_lost_worker_costs_only_its_shard(cluster):
    c, paths = cluster
    out = paths["out"]
    catalog = paths["base"] / "more.parquet"
    write_catalog(FIRST + MORE, str(catalog))

    # 1. A data team announces a new catalog, as documented.
    c.check(
        [
            str(BIN / "prefect"), "event", "emit", "catalog.published",
            "--resource-id", "moviegen.catalog.spring-sale",
            "--payload", json.dumps({"catalog": str(catalog)}),
        ]
    )  # fmt: skip
    triggered = wait_for(
        lambda: [r for r in c.flow_runs("campaign") if r["parameters"].get("catalog") == str(catalog)],
        120,
        "the campaign run the event starts",
    )[0]
    assert triggered["deployment_id"] == c.api_get("/deployments/name/campaign/campaign")["id"]

    # 2. Kill a GPU worker with its flow run once that run has sent a heartbeat (a lost machine).
    def busy_worker():
        for name in ("gpu-0", "gpu-1"):
            found = c.flow_run_process(name)
            if found:
                beats = c.api_post(
                    "/events/filter",
                    {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]},
                                "resource": {"id": [f"prefect.flow-run.{found[1]}"]}}},
                )  # fmt: skip
                if beats["events"]:
                    return name, found[1]
        return None

    victim, lost_run = wait_for(busy_worker, 300, "a shard running on a GPU worker", interval=0.5)
    c.stop(victim)
    survivor = "gpu-1" if victim == "gpu-0" else "gpu-0"

    # 3. The heartbeat automation marks the lost run Crashed; the campaign run finishes and reports it.
    run = wait_for(
        lambda: (
            (r := c.api_get(f"/flow_runs/{triggered['id']}"))["state_type"] in ("COMPLETED", "FAILED", "CRASHED") and r
        ),
        600,
        "the campaign run to finish",
        interval=2,
    )
    assert run["state_type"] == "COMPLETED"
    assert c.api_get(f"/flow_runs/{lost_run}")["state_type"] == "CRASHED"
    [report] = [
        json.loads(p.read_text())
        for p in (out / "runs").glob("*/run.json")
        if any(s["attempts"][0]["flow_run_id"] == lost_run for s in json.loads(p.read_text())["shards"])
    ]
    lost = [s for s in report["shards"] if s["attempts"][0]["flow_run_id"] == lost_run]
    kept = [s for s in report["shards"] if s["attempts"][0]["flow_run_id"] != lost_run]
    assert len(lost) == 1 and lost[0]["state"] == "CRASHED" and len(lost[0]["attempts"]) == 1  # no retries here
    assert kept and all(s["state"] == "COMPLETED" and s["worker"] == survivor for s in kept)
    assert report["exit_code"] == 1
    failed = {p["clip_id"] for p in report["problems"] if p["stage"] == "shard"}
    made = {r["clip_id"] for r in report["published"]}
    assert failed and failed | made == {f"c{i:02d}" for i in range(6, 8)} and not failed & made
    assert set(lost[0]["clip_ids"]) >= failed
    assert report["already_published"] == 6

    # 4. A rerun makes exactly what is missing, on the surviving worker.
    code, rerun = run_moviegen(
        c, "run", str(catalog), "--executor", "deployments", "--out", str(out), "--config", str(paths["config"])
    )
    assert code == 0, rerun["problems"]
    assert {r["clip_id"] for r in rerun["published"]} == failed
    assert rerun["already_published"] == 8 - len(failed)
    assert all(s["worker"] == survivor for s in rerun["shards"])
    rows = manifest(out)
    assert sorted((r["clip_id"], r["channel"]) for r in rows) == [(f"c{i:02d}", "x") for i in range(8)]


def test_ci_command_waits_and_fails_when_the_run_fails(cluster):
    """``prefect deployment run ... --watch`` as in deployments/ci-refresh.yml."""
    c, paths = cluster
    bad = paths["base"] / "with-a-bad-row.parquet"
    write_catalog([*FIRST, row("fax", channels=["fax"])], str(bad))

    def ci(catalog: Path):
        return c.run(
            [
                str(BIN / "prefect"), "deployment", "run", "campaign/campaign",
                "--param", f"catalog={catalog}", "--param", "prune=true", "--param", "fail_on_problems=true",
                "--watch", "--watch-timeout", "600",
            ],
            timeout=700,
        )  # fmt: skip

    clean = ci(paths["first"])  # already published: the run has nothing to make and nothing to reject
    assert clean.returncode == 0, clean.stdout[-2000:] + clean.stderr[-2000:]
    failing = ci(bad)
    assert failing.returncode == 1, failing.stdout[-2000:]
    assert "Failed" in failing.stdout + failing.stderr


def test_a_failing_shard_is_retried_then_reported(cluster):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.fan_out import run_shards
    from moviegen.config import ScaleOutSettings
    from moviegen.costs import CostModel
    from moviegen.run.shards import ShardLayout, WorkItem, plan_shards

    c, paths = cluster
    item = WorkItem(0, "test-camp", "ghost", "tiny-wan", ("tiny",), 1.0, 0.0)
    layout: ShardLayout = plan_shards([item], 1, 4, CostModel(device="cpu"))
    [shard] = layout.shards
    missing = paths["base"] / "no-such-shard.parquet"
    parameters = {
        shard.shard_id: {
            "shard_catalog": str(missing),
            "shard_id": shard.shard_id,
            "out": str(paths["out"]),
            "run_id": "retry-test",
            "config": str(paths["config"]),
            "preview": False,
        }
    }
    with temporary_settings({PREFECT_API_URL: c.api}):
        [outcome] = run_shards(
            layout, parameters, ScaleOutSettings(shard_retries=1, poll_s=1), OutputRoot(str(paths["out"])), "retry-test"
        )
    assert outcome.result is None
    assert [a["state"] for a in outcome.attempts] == ["FAILED", "FAILED"]
    assert all("does not exist" in (a["message"] or "") for a in outcome.attempts), outcome.attempts
