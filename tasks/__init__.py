"""Prefect tasks: thin wrappers around ``moviegen`` stages adding names, tags, retries and timeouts.

No business logic lives here: each task body is one call into ``moviegen.run``.
Idempotency comes from clip and rendition keys, not from Prefect's cache, so caching is off.
"""

from tasks.stages import (
    finish_run_task,
    generate_batch_task,
    load_models_task,
    plan_campaign_task,
    prompt_gate_task,
    prune_task,
    record_rejections_task,
    record_timings_task,
    render_batch_task,
    validate_catalog_task,
)

__all__ = [
    "finish_run_task",
    "generate_batch_task",
    "load_models_task",
    "plan_campaign_task",
    "prompt_gate_task",
    "prune_task",
    "record_rejections_task",
    "record_timings_task",
    "render_batch_task",
    "validate_catalog_task",
]
