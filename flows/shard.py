"""The render-shard flow: one shard of a campaign, made on one GPU worker.

Problem: a campaign's clips must be made on many GPU machines without a home-made queue, and a
retry must neither redo nor lose what a crashed attempt already published.

Solution: the campaign flow starts this flow through the ``render-shard`` deployment on the
``gpu`` work pool, once per shard, with URIs only: the shard's rows as a Parquet catalog, the
output root, the configuration file. It runs the same stages as the local executor under the
campaign's run id, so the manifest says which run published what; planning skips what is
already published, so a retried shard makes only what is missing. Its result goes to
``runs/<run_id>/shards/<shard_id>.json`` for the campaign to gather.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.fan_out import generate_and_render
from moviegen.config import load_settings
from moviegen.run.context import start_run
from moviegen.run.plain import BATCHES_IN_FLIGHT
from moviegen.run.shards import restore_catalog_rows, shard_result, write_shard_result
from tasks import plan_campaign_task, record_timings_task, validate_catalog_task


@flow(name="render-shard", task_runner=ThreadPoolTaskRunner(max_workers=BATCHES_IN_FLIGHT), log_prints=False)
def render_shard(
    shard_catalog: str,
    out: str,
    run_id: str,
    shard_id: str,
    config: str | None = None,
    preview: bool = False,
) -> dict[str, Any]:
    """Make one shard's clips on this worker's device and publish them under ``out`` as run ``run_id``."""
    started = time.perf_counter()
    settings = load_settings(config, out=out, preview=preview or None)
    ctx = start_run(settings, run_id)

    # 1. The shard's rows, validated again on this machine, numbered as in the campaign's catalog.
    validation = restore_catalog_rows(validate_catalog_task(shard_catalog, ctx), shard_catalog)

    # 2. Plan: what an earlier attempt of this shard already published is left out.
    plan = plan_campaign_task(validation.specs, ctx)

    # 3. The local executor's fan-out, on this worker's GPU.
    setup_seconds = time.perf_counter() - started
    masters, renditions, loads = generate_and_render(plan, ctx)
    record_timings_task(masters, renditions, loads, ctx)

    # 4. The result, for the campaign to gather.
    loads_by_model = ctx.model_loads()
    result = shard_result(
        shard_id, ctx, validation, plan, masters, renditions, loads_by_model, loads, started, setup_seconds
    )
    write_shard_result(result, ctx.out)
    return {
        "shard": shard_id,
        "published": sum(r.row is not None for r in renditions),
        "problems": len(result.problems) + sum(m["problem"] is not None for m in result.masters),
        "worker": result.worker,
    }
