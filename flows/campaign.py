"""The campaign flow: one catalog in, published renditions, manifest and report out.

Generation runs batch by batch on the run's device (one GPU, or the CPU); each batch's renditions
are submitted to the task runner at once, so ffmpeg encodes overlap with the next batch's
generation. The number of encodes running at once is capped by ``render_workers``.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.artifacts import ProgressTracker, publish_run_artifacts
from moviegen.config import load_settings
from moviegen.pipeline import Master, Rendition, make_batches, renditions_to_make, start_run
from moviegen.redact import install_log_redaction
from tasks import (
    finish_run_task,
    generate_batch_task,
    plan_campaign_task,
    prompt_gate_task,
    record_rejections_task,
    render_publish_task,
    validate_catalog_task,
)

# Threads for render tasks; the encodes actually running at once are capped by render_workers (<= 16).
RENDER_THREADS = 16


@flow(name="campaign", task_runner=ThreadPoolTaskRunner(max_workers=RENDER_THREADS), log_prints=False)
def campaign(
    catalog: str,
    out: str | None = None,
    config: str | None = None,
    preview: bool = False,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Turn every valid row of ``catalog`` into published, per-channel renditions under ``out``.

    Returns run.json's facts; the run's exit status is ``result["exit_code"]``.
    """
    settings = load_settings(config, out=out, preview=preview or None)
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):  # also when a worker runs the flow
        install_log_redaction(logging.getLogger(name))
    ctx = start_run(settings, run_id)
    tracker = ProgressTracker(ctx.run_id)  # the run's progress, in the Prefect UI while it goes

    # 1. Load the catalog, validate every row and run the prompt gate; rows that fail either go
    #    to rejected/ and the rest go on.
    validation = prompt_gate_task(validate_catalog_task(catalog, ctx), ctx)
    record_rejections_task(validation.problems, ctx)

    # 2. Plan: resolve models and leave out what is already published.
    plan = plan_campaign_task(validation.specs, ctx)
    channels_by_key = {clip.clip_key: channels for clip, channels in plan.todo}

    # 3. Fan out: generate batch by batch (each clip then passes the frame gate or goes to
    #    quarantine/), render each batch's channels while the next one generates.
    masters: list[Master] = []
    pending: list[PrefectFuture[Rendition]] = []
    for batch in make_batches([clip for clip, _ in plan.todo], settings.generation.batch_size):
        for master in generate_batch_task(batch, ctx):
            masters.append(master)
            for channel in renditions_to_make(master, channels_by_key[master.clip.clip_key]):
                pending.append(render_publish_task.submit(master, channel, ctx))

    # 4. Gather every rendition, then record problems and write run.json and the report.
    wait(pending)
    renditions = [future.result() for future in pending]
    summary = finish_run_task(ctx, validation, plan, masters, renditions)
    result = summary.to_json()

    # 5. The same summary in the Prefect UI: a table of clips and a markdown summary.
    publish_run_artifacts(result, tracker)
    return result
