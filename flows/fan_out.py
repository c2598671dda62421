"""Fan-out for both executors: batches on this machine's device, or shards on the GPU work pool.

Problem: one campaign has to run on a laptop and on a fleet of GPU machines with the same stages,
and a GPU machine that dies must cost only its own shard.

Solution: ``generate_and_render`` is the in-process fan-out (the campaign flow uses it for the
local executor, each render-shard flow run for its shard). ``run_shards`` is the distributed one:
one ``render-shard`` flow run per shard through ``run_deployment``, parameters that are URIs only,
one API call per poll for every shard's state, and a shard that fails or crashes (a worker killed
with its machine is marked Crashed by the heartbeat automation, see deployments/) started again
while it has retries left. Flow runs are linked to the campaign's flow run as subflows.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, WorkerFilter, WorkerFilterStatus
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import MissingContextError
from prefect.futures import PrefectFuture, wait
from prefect.logging import get_logger, get_run_logger
from prefect.states import Cancelling

from moviegen.config import ScaleOutSettings
from moviegen.costs import SHARD, TIMINGS_SCHEMA, load_cost_model, timing_row
from moviegen.generation.generate import grouping_batch_size
from moviegen.publish.manifest import published_renditions
from moviegen.records import CampaignPlan, Master, Rendition
from moviegen.run.context import RunContext
from moviegen.run.masters import make_batches
from moviegen.run.shards import (
    Shard,
    ShardLayout,
    ShardOutcome,
    gather_shards,
    plan_shards,
    read_shard_result,
    shard_report,
    work_item,
    write_shard_catalogs,
)
from moviegen.spec import Problem
from moviegen.store import OutputRoot, utc_now
from tasks import generate_batch_task, load_models_task, render_batch_task

# Every render-shard run carries it; the crash automations of deployments/setup.py match on it.
SHARD_TAG = "moviegen-shard"


def generate_and_render(plan: CampaignPlan, ctx: RunContext) -> tuple[list[Master], list[Rendition], dict[str, float]]:
    """Make a plan's clips on this machine: models loaded once, batch by batch on the device, each
    batch's channels rendered (one task per batch) while the next batch generates.

    Returns the masters, the renditions and the seconds each model took to load.
    """
    clips = [clip for clip, _ in plan.todo]
    channels_by_key = {clip.clip_key: channels for clip, channels in plan.todo}
    loads = load_models_task(clips, ctx) if clips else {}
    masters: list[Master] = []
    pending: list[PrefectFuture[list[Rendition]]] = []
    for batch in make_batches(clips, ctx):
        made = generate_batch_task(batch, ctx)
        masters.extend(made)
        pending.append(render_batch_task.submit([(m, channels_by_key[m.clip.clip_key]) for m in made], ctx))
    wait(pending)
    return masters, [rendition for future in pending for rendition in future.result()], loads


def online_workers(work_pool: str) -> int:
    """How many workers of the pool are online now (0 when the pool does not exist)."""
    with get_client(sync_client=True) as client:
        try:
            workers = client.read_workers_for_work_pool(
                work_pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))
            )
        except Exception:  # no such pool: the shards will wait for one, as Prefect does
            return 0
    return len(workers)


def run_shards(
    layout: ShardLayout,
    parameters: dict[str, dict[str, Any]],
    scaleout: ScaleOutSettings,
    out: OutputRoot,
    run_id: str,
) -> list[ShardOutcome]:
    """Run every shard as a ``render-shard`` flow run on the work pool and wait for all of them.

    1. Start one flow run per shard (``run_deployment`` with ``timeout=0``: all start at once).
    2. Poll every unfinished run's state in one API call; a run past ``shard_timeout_s`` is cancelled.
    3. A run that ends Failed or Crashed (or timed out) is started again while the shard has
       retries left; one cancelled by a person is not. A shard's result is read from the JSON
       it wrote under the output root.
    """
    try:
        logger = get_run_logger()
    except MissingContextError:  # called outside a flow run (a script, a test)
        logger = get_logger("moviegen.run.shards")
    attempts: dict[str, list[dict[str, Any]]] = {s.shard_id: [] for s in layout.shards}
    results: dict[str, Any] = {}
    running: dict[UUID, tuple[Shard, float]] = {}

    # 1. Start every shard.
    def start(shard: Shard) -> None:
        number = len(attempts[shard.shard_id]) + 1
        run = run_deployment(
            scaleout.deployment,
            parameters=parameters[shard.shard_id],
            timeout=0,
            flow_run_name=f"{run_id}-{shard.shard_id}-{number}",
            tags=["moviegen", SHARD_TAG, f"moviegen-run:{run_id}"],
        )
        attempts[shard.shard_id].append({"flow_run_id": str(run.id), "name": run.name, "state": "SCHEDULED"})
        running[run.id] = (shard, time.monotonic())
        logger.info("started %s (%d clips) as flow run %s", shard.shard_id, len(shard.items), run.name)

    for shard in layout.shards:
        start(shard)

    # 2. Poll until every shard has finished or given up.
    with get_client(sync_client=True) as client:
        while running:
            time.sleep(scaleout.poll_s)
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(running))))
            for run in runs:
                shard, started = running[run.id]
                state = run.state
                timed_out = (
                    scaleout.shard_timeout_s is not None
                    and (state is None or not state.is_final())
                    and time.monotonic() - started > scaleout.shard_timeout_s
                )
                if timed_out:
                    message = f"no result after {scaleout.shard_timeout_s:g} s (shard_timeout_s)"
                    client.set_flow_run_state(run.id, Cancelling(message=message), force=True)
                elif state is None or not state.is_final():
                    continue
                del running[run.id]
                attempt = attempts[shard.shard_id][-1]
                attempt.update(_attempt_facts(run, timed_out))

                # 3. Read the result, or retry.
                if attempt["state"] == "COMPLETED":
                    result = read_shard_result(out, run_id, shard.shard_id)
                    if result is not None:
                        results[shard.shard_id] = result
                        continue
                    attempt["message"] = "completed without writing its result"
                retry = len(attempts[shard.shard_id]) <= scaleout.shard_retries
                if attempt["state"] == "CANCELLED" and not timed_out:
                    retry = False  # somebody cancelled it on purpose
                logger.warning(
                    "%s ended %s (%s)%s",
                    shard.shard_id,
                    attempt["state"],
                    attempt.get("message") or "no message",
                    "; starting it again" if retry else "; giving up on it",
                )
                if retry:
                    start(shard)
    return [ShardOutcome(s, results.get(s.shard_id), attempts[s.shard_id]) for s in layout.shards]


def _attempt_facts(run: FlowRun, timed_out: bool) -> dict[str, Any]:
    """What run.json keeps of one attempt: final state, message, times, and the overhead around its body."""
    state = run.state
    facts: dict[str, Any] = {
        "state": "TIMED_OUT" if timed_out else (state.type.value if state else "UNKNOWN"),
        "message": state.message if state else None,
        "created": run.created.isoformat() if run.created else None,
        "start_time": run.start_time.isoformat() if run.start_time else None,
        "end_time": run.end_time.isoformat() if run.end_time else None,
    }
    if run.created and run.end_time:
        facts["wall_s"] = round((run.end_time - run.created).total_seconds(), 3)
    return facts


def shard_overhead(outcome: ShardOutcome) -> float | None:
    """Seconds a finished shard spent outside its own body: queueing, process start, imports, engine."""
    if outcome.result is None or not outcome.attempts or "wall_s" not in outcome.attempts[-1]:
        return None
    return max(0.0, outcome.attempts[-1]["wall_s"] - outcome.result.seconds)


@dataclass
class Distributed:
    """What the shards of one run made, in the campaign's own terms."""

    masters: list[Master] = field(default_factory=list)
    renditions: list[Rendition] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    shards: list[dict[str, Any]] = field(default_factory=list)
    model_loads: dict[str, int] = field(default_factory=dict)


def run_distributed(
    catalog: str, config: str | None, preview: bool, plan: CampaignPlan, ctx: RunContext
) -> Distributed:
    """Make a plan's clips on the GPU work pool, one render-shard flow run per shard.

    1. Price every clip with the cost model calibrated from this output root's ``timings/``.
    2. Cut the clips into shards (one per online worker of the pool, unless ``scaleout.shards``).
    3. Write each shard's rows as Parquet under ``runs/<run_id>/shards/`` and run the shards.
    4. Gather their results, and record each shard's fixed cost for the next estimate.
    """
    settings, scaleout = ctx.settings, ctx.settings.scaleout
    if not plan.todo:
        return Distributed()

    # 1. Price.
    cost = load_cost_model(ctx.out)
    items = [work_item(clip.spec, channels, settings, ctx.presets, cost, clip) for clip, channels in plan.todo]

    # 2. Cut.
    count = scaleout.shards or max(1, online_workers(scaleout.work_pool))
    layout = plan_shards(items, count, grouping_batch_size(settings.generation), cost)

    # 3. Write and run: parameters are URIs and flags, never pixels.
    urls = write_shard_catalogs(catalog, layout, ctx.out, ctx.run_id)
    config = config or os.environ.get("MOVIEGEN_CONFIG")
    common = {
        "out": OutputRoot(settings.out).absolute_url,
        "run_id": ctx.run_id,
        "config": str(Path(config).resolve()) if config else None,
        "preview": preview,
    }
    parameters = {sid: {"shard_catalog": url, "shard_id": sid, **common} for sid, url in urls.items()}
    outcomes = run_shards(layout, parameters, scaleout, ctx.out, ctx.run_id)

    # 4. Gather (for a shard that never finished, what it published before it died still counts).
    published = published_renditions(ctx.out) if any(o.result is None for o in outcomes) else {}
    masters, renditions, problems = gather_shards(plan, outcomes, ctx.run_id, published)
    now = utc_now()
    finished = [o for o in outcomes if o.result is not None]
    rows = [
        timing_row(ctx.run_id, SHARD, None, o.shard.shard_id, o.result.device, seconds, now)
        for o in finished
        if (seconds := shard_overhead(o)) is not None
    ]
    ctx.out.append_rows("timings", TIMINGS_SCHEMA, rows, ctx.run_id)
    loads: Counter[str] = Counter()
    for o in finished:
        loads.update(o.result.model_loads)
    return Distributed(masters, renditions, problems, [shard_report(o) for o in outcomes], dict(loads))
