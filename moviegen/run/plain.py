"""The plain in-process loop over the stages (no orchestration)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from moviegen.config import Settings
from moviegen.records import Master
from moviegen.run.context import start_run
from moviegen.run.masters import generate_masters, load_models, make_batches
from moviegen.run.planning import plan_campaign, prune_campaign
from moviegen.run.renditions import render_batch
from moviegen.run.screening import load_and_validate, screen_prompts
from moviegen.run.summary import RunSummary, finish_run, record_rejections, record_timings

# Batches whose renditions can wait for a rendition slot at once (threads that mostly wait are cheap).
BATCHES_IN_FLIGHT = 16


def run_campaign_plain(
    catalog_uri: str, settings: Settings, run_id: str | None = None, prune: bool = False
) -> RunSummary:
    """Run a whole campaign with no orchestration: the same stages as the Prefect flow, in order.

    Generation is sequential on the device; each batch's renditions are made on threads while the
    next batch generates, as in the flow.
    """
    ctx = start_run(settings, run_id)
    validation = screen_prompts(load_and_validate(catalog_uri, ctx), ctx)
    record_rejections(validation.problems, ctx)
    retired = prune_campaign(validation, ctx) if prune else []
    plan = plan_campaign(validation.specs, ctx)
    loads = load_models([clip for clip, _ in plan.todo], ctx)
    channels_by_key = {clip.clip_key: channels for clip, channels in plan.todo}
    masters: list[Master] = []
    futures = []
    with ThreadPoolExecutor(max_workers=BATCHES_IN_FLIGHT) as pool:
        for batch in make_batches([clip for clip, _ in plan.todo], ctx):
            made = generate_masters(batch, ctx)
            masters.extend(made)
            futures.append(pool.submit(render_batch, [(m, channels_by_key[m.clip.clip_key]) for m in made], ctx))
        renditions = [rendition for future in futures for rendition in future.result()]
    record_timings(masters, renditions, loads, ctx)
    return finish_run(ctx, validation, plan, masters, renditions, executor="plain", retired=retired)
