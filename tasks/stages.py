"""One task per pipeline stage."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from moviegen.catalog.check import CatalogValidation
from moviegen.records import CampaignPlan, Master, Rendition
from moviegen.run.context import RunContext
from moviegen.run.masters import generate_masters, load_models
from moviegen.run.planning import plan_campaign, prune_campaign
from moviegen.run.renditions import render_batch
from moviegen.run.screening import load_and_validate, screen_prompts
from moviegen.run.summary import RunSummary, finish_run, record_rejections, record_timings
from moviegen.spec import ClipPlan, ClipSpec, Problem


@task(name="validate-catalog", cache_policy=NO_CACHE, persist_result=False)
def validate_catalog_task(catalog_uri: str, ctx: RunContext) -> CatalogValidation:
    """Read the catalog and check every row (CPU, seconds for thousands of rows)."""
    return load_and_validate(catalog_uri, ctx)


@task(name="prompt-gate", cache_policy=NO_CACHE, persist_result=False)
def prompt_gate_task(validation: CatalogValidation, ctx: RunContext) -> CatalogValidation:
    """Check every valid row's text against its campaign's safety policy (CPU, a classifier batch)."""
    return screen_prompts(validation, ctx)


@task(name="record-rejections", cache_policy=NO_CACHE, persist_result=False)
def record_rejections_task(problems: list[Problem], ctx: RunContext) -> int:
    """Append rejected rows to the output root's ``rejected/`` dataset."""
    return record_rejections(problems, ctx)


@task(name="prune", cache_policy=NO_CACHE, persist_result=False)
def prune_task(validation: CatalogValidation, ctx: RunContext) -> list[dict]:
    """Retire the published renditions of rows that left the catalog (moves files within the output root)."""
    return prune_campaign(validation, ctx)


@task(name="plan-campaign", cache_policy=NO_CACHE, persist_result=False)
def plan_campaign_task(specs: list[ClipSpec], ctx: RunContext) -> CampaignPlan:
    """Resolve models and leave out renditions that are already published."""
    return plan_campaign(specs, ctx)


@task(name="load-models", tags=["gpu"], cache_policy=NO_CACHE, persist_result=False)
def load_models_task(clips: list[ClipPlan], ctx: RunContext) -> dict[str, float]:
    """Load the models the clips need onto the run's device, once per process (GPU memory, disk reads)."""
    return load_models(clips, ctx)


def _batch_run_name() -> str:
    """``generate-<first clip_id>+<more>``, so the UI shows which clips a batch holds."""
    clips = task_run.parameters["batch"]
    return f"generate-{clips[0].spec.clip_id}" + (f"+{len(clips) - 1}" if len(clips) > 1 else "")


@task(
    name="generate-batch",
    tags=["gpu"],
    task_run_name=_batch_run_name,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def generate_batch_task(batch: list[ClipPlan], ctx: RunContext) -> list[Master]:
    """Generate one batch of clips in one pipeline call (uses the run's device: one GPU, or the CPU).

    Each clip then passes the frame gate on the CPU; a clip it holds back comes back without a path.
    """
    return generate_masters(batch, ctx)


def _render_run_name() -> str:
    """``render-<first clip_id>+<more>``: the clips whose channels the task renders."""
    work = task_run.parameters["work"]
    return f"render-{work[0][0].clip.spec.clip_id}" + (f"+{len(work) - 1}" if len(work) > 1 else "")


@task(
    name="render-batch",
    tags=["ffmpeg"],
    task_run_name=_render_run_name,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def render_batch_task(work: list[tuple[Master, list[str]]], ctx: RunContext) -> list[Rendition]:
    """Encode, check and publish every channel of one generated batch (ffmpeg and CPU cores,
    ``render_workers`` renditions at a time); each rendition succeeds or fails on its own."""
    return render_batch(work, ctx)


@task(name="record-timings", cache_policy=NO_CACHE, persist_result=False)
def record_timings_task(
    masters: list[Master], renditions: list[Rendition], loads: dict[str, float], ctx: RunContext
) -> int:
    """Append what generation, encodes and model loads took to ``timings/`` (the cost model's data)."""
    return record_timings(masters, renditions, loads, ctx)


@task(name="finish-run", cache_policy=NO_CACHE, persist_result=False)
def finish_run_task(
    ctx: RunContext,
    validation: CatalogValidation,
    plan: CampaignPlan,
    masters: list[Master],
    renditions: list[Rendition],
    executor: str = "prefect",
    retired: list[dict] | None = None,
    shards: list[dict] | None = None,
    model_loads: dict[str, int] | None = None,
) -> RunSummary:
    """Record clip problems and write run.json and the report."""
    return finish_run(
        ctx, validation, plan, masters, renditions, executor, retired=retired, shards=shards, model_loads=model_loads
    )
