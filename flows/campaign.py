"""The campaign flow: one catalog in, published renditions, manifest and report out.

With the local executor (the default) generation runs batch by batch on this machine's device
(one GPU, or the CPU); each batch's renditions are one render-batch task submitted to the task
runner, so the encodes overlap with the next batch's generation. The number of renditions made at
once is capped by ``render_workers``. With the deployments executor the clips are cut into shards that
run as ``render-shard`` flow runs on the GPU work pool (see flows/fan_out.py and deployments/).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Literal

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.artifacts import ProgressTracker, emit_review_waiting, publish_run_artifacts
from flows.fan_out import generate_and_render, run_distributed
from moviegen.config import Settings, load_settings
from moviegen.redact import install_log_redaction
from moviegen.run.context import start_run
from moviegen.run.plain import BATCHES_IN_FLIGHT
from tasks import (
    finish_run_task,
    plan_campaign_task,
    prompt_gate_task,
    prune_task,
    record_rejections_task,
    record_timings_task,
    validate_catalog_task,
)

# Settings a caller in this process already loaded for the next campaign call (the CLI loads them to
# fail fast before the Prefect API starts). Handed over in memory, never as a flow parameter: a
# parameter is stored by the Prefect API, and settings may carry secrets.
_HANDED_OVER: ContextVar[tuple[tuple[str | None, str | None, bool], Settings] | None] = ContextVar(
    "moviegen_settings_handed_over", default=None
)


@contextmanager
def settings_handed_over(settings: Settings, config: str | None, preview: bool) -> Iterator[None]:
    """Within this block, a ``campaign`` call with this config, ``settings.out`` and preview uses ``settings``."""
    token = _HANDED_OVER.set(((config or None, settings.out, preview), settings))
    try:
        yield
    finally:
        _HANDED_OVER.reset(token)


def settings_for_run(config: str | None, out: str | None, preview: bool) -> Settings:
    """The settings handed over for exactly these arguments, else loaded from ``config``: once per run."""
    handed = _HANDED_OVER.get()
    if handed is not None and handed[0] == (config, out, preview):
        return handed[1]
    return load_settings(config, out=out, preview=preview or None)


@flow(name="campaign", task_runner=ThreadPoolTaskRunner(max_workers=BATCHES_IN_FLIGHT), log_prints=False)
def campaign(
    catalog: str,
    out: str | None = None,
    config: str | None = None,
    preview: bool = False,
    run_id: str | None = None,
    executor: Literal["local", "deployments"] = "local",
    prune: bool = False,
    fail_on_problems: bool = False,
) -> dict[str, Any]:
    """Turn every valid row of ``catalog`` into published, per-channel renditions under ``out``.

    ``executor="deployments"`` makes the clips on the GPU work pool, one render-shard flow run per
    shard; ``prune`` retires the renditions of rows that left the catalog. Returns run.json's
    facts; the run's exit status is ``result["exit_code"]``. With ``fail_on_problems`` a run that
    rejected or failed anything ends Failed (after writing its report), so a CI job that waits
    for it fails too.
    """
    if not catalog or "{{" in catalog:
        raise ValueError(f"catalog {catalog!r} is not a catalog URI: pass the Parquet catalog's path or URL")
    # A deployment parameter left empty (an unset {{ $VAR }} in prefect.yaml) means "not given".
    config, out = config or None, out or None
    settings = settings_for_run(config, out, preview)
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):  # also when a worker runs the flow
        install_log_redaction(logging.getLogger(name))
    ctx = start_run(settings, run_id)
    tracker = ProgressTracker(ctx.run_id)  # the run's progress, in the Prefect UI while it goes

    # 1. Load the catalog, validate every row and run the prompt gate; rows that fail either go
    #    to rejected/ and the rest go on.
    validation = prompt_gate_task(validate_catalog_task(catalog, ctx), ctx)
    record_rejections_task(validation.problems, ctx)

    # 2. Retire what left the catalog (on request), then plan: resolve models and leave out what
    #    is already published.
    retired = prune_task(validation, ctx) if prune else []
    plan = plan_campaign_task(validation.specs, ctx)

    # 3. Fan out. Locally: generate batch by batch (each clip then passes the frame gate or goes
    #    to quarantine/), render each batch's channels while the next one generates. Distributed:
    #    the same stages in one render-shard flow run per shard on the GPU work pool.
    facts: dict[str, Any] = {"executor": "prefect"}
    if executor == "deployments":
        shards = run_distributed(catalog, config, preview, plan, ctx)
        plan = replace(plan, problems=[*plan.problems, *shards.problems])
        masters, renditions = shards.masters, shards.renditions
        facts = {"executor": "deployments", "shards": shards.shards, "model_loads": shards.model_loads}
    else:
        masters, renditions, loads = generate_and_render(plan, ctx)
        record_timings_task(masters, renditions, loads, ctx)

    # 4. Record problems and write the manifest's run report.
    summary = finish_run_task(ctx, validation, plan, masters, renditions, retired=retired, **facts)
    result = summary.to_json()

    # 5. The same summary in the Prefect UI: a table of clips and a markdown summary; an event per
    #    campaign waiting for review, for the automations that tell people (deployments/notifications.py).
    publish_run_artifacts(result, tracker)
    emit_review_waiting(result)
    if fail_on_problems and summary.exit_code:
        raise CampaignProblems(
            f"{len(summary.problems)} row(s) or clip(s) were rejected or failed; "
            f"see {ctx.out.url}/runs/{ctx.run_id}/report.html"
        )
    return result


class CampaignProblems(RuntimeError):
    """The run finished, but some rows or clips were rejected or failed (``fail_on_problems``)."""
