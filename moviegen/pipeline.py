"""The stages of a campaign run as plain functions, and the plain in-process loop over them.

``flows/campaign.py`` composes exactly these stages under Prefect; ``run_campaign_plain`` runs
them without any orchestration, which is the baseline for measuring Prefect's overhead.

    catalog -> validate -> prompt gate -> plan (skip what is published) -> batch
            -> generate masters -> frame gate (or quarantine)
            -> per channel: render (one ffmpeg pass, visible AI label drawn last) -> watermark embed
               -> the single encode -> XMP label metadata -> signed C2PA manifest (the last writes)
               -> delivery gate (preset, watermark read back, provenance) -> publish -> manifest row
            -> report
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from moviegen import __version__, progress
from moviegen.adherence import AdherenceScore, ScorerError, best_candidate, load_scorer, scorer_identity
from moviegen.assets import AssetError, UriPolicy, fetch_asset
from moviegen.catalog import CatalogReadError, CatalogValidation, read_catalog, validate_catalog
from moviegen.config import ConfigError, Settings
from moviegen.costs import GENERATE, LOAD, RENDER, TIMINGS_SCHEMA, timing_row
from moviegen.delivery import DeliveryVerdict, gate_rendition
from moviegen.generate import (
    Device,
    GeneratedClip,
    GenerationRequest,
    LoraAdapter,
    PipelineOptions,
    batch_size_for,
    model_revision,
    pick_device,
    process_pipeline_cache,
    use_deterministic_algorithms,
)
from moviegen.marking import BATCH_FRAMES, WatermarkPlan, WatermarkProcessor, mark_master, plan_watermark
from moviegen.media import MediaError, write_master
from moviegen.models.registry import ModelInfo, UnknownModelError, resolve_for_task, resolve_model
from moviegen.overlays import FontError
from moviegen.presets import ChannelPreset, Style, channel_presets, styles
from moviegen.provenance import (
    ProvenanceError,
    SigningIdentity,
    add_provenance,
    check_trust_anchors,
    disclosure_flags,
    label_for,
    label_layer,
    load_signing_identity,
    provenance_facts,
)
from moviegen.publish import (
    MANIFEST_SCHEMA,
    PUBLISHED,
    REJECTED_SCHEMA,
    RETIRED,
    OutputRoot,
    adopt_interrupted,
    clear_intent,
    latest_renditions,
    new_run_id,
    pending_intents,
    published_paths,
    published_renditions,
    record_intent,
    retired_paths,
    sha256_file,
    utc_now,
)
from moviegen.redact import redact_uri
from moviegen.reliability import (
    detached,
    failure_rule,
    generate_resilient,
    mark_interrupted_runs,
    retry,
    run_started,
    sweep_work_dir,
)
from moviegen.render import (
    RenditionSpec,
    render_rendition,
    rendition_key,
    rendition_slot,
    rendition_spec,
    set_rendition_slots,
    write_poster,
)
from moviegen.report import clip_records, run_counts, write_report
from moviegen.safety import (
    SCORES_SCHEMA,
    PolicySet,
    check_clip,
    check_master,
    load_policies,
    prepare_detector,
    quarantine_clip,
    record_scores,
    score_row,
    screen_catalog,
)
from moviegen.safety.moderator import moderation_for
from moviegen.soundtrack import AudioModelError, audio_request, compose_bed, generate_soundtracks
from moviegen.spec import ClipPlan, ClipSpec, Problem
from moviegen.watermark import WatermarkError, default_watermarker

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What every stage of one run needs: settings, identity, where things go, device, presets."""

    settings: Settings
    run_id: str
    out: OutputRoot
    work_dir: Path
    device: Device
    presets: dict[str, ChannelPreset]
    styles: dict[str, Style]
    started_at: datetime
    policies: PolicySet
    # Loaded once per run; repr=False keeps the private key out of any repr of the context.
    signer: SigningIdentity = field(repr=False)
    interrupted_runs: list[str] = field(default_factory=list)  # killed runs this one resumes


def start_run(settings: Settings, run_id: str | None = None) -> RunContext:
    """Open the output root and scratch folder and choose the device for a new run.

    Loads what every rendition needs up front (the signing identity, the trust anchors, the
    watermark models), so a bad configuration stops the run now (ConfigError) rather than
    failing every rendition later; then clears what a killed run left behind.
    """
    retries = settings.retries
    out = OutputRoot(
        settings.out.rstrip("/") + "/preview" if settings.preview else settings.out,
        write_attempts=retries.write_attempts,
        retry_delay_s=retries.delay_s,
    )
    if settings.work_dir:
        work_dir = Path(settings.work_dir)
    elif out.is_local:
        work_dir = Path(out.root) / ".work"
    else:
        work_dir = settings.cache_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    set_rendition_slots(settings.render_workers)
    policies = load_policies(settings.safety.policy, settings.safety.campaign_policies)
    for policy in policies.all():
        prepare_detector(policy)  # a bad detector name or label fails the run now, not clip by clip
    try:
        signer = load_signing_identity(settings.provenance)
        check_trust_anchors(settings.provenance)
        default_watermarker()
    except (ProvenanceError, WatermarkError) as exc:
        raise ConfigError(str(exc)) from None
    device = pick_device(settings.generation.device, settings.generation.dtype)
    if settings.generation.deterministic:
        use_deterministic_algorithms(device)  # process-wide: before any generation
    ctx = RunContext(
        settings=settings,
        run_id=run_id or new_run_id(),
        out=out,
        work_dir=work_dir,
        device=device,
        presets=channel_presets(settings.channels),
        styles=styles(settings.styles),
        started_at=utc_now(),
        policies=policies,
        signer=signer,
    )
    # A killed run's leftovers: temporary files of dead writers, and its "running" run.json. (What it
    # published without recording is adopted when its clips are planned: plan_campaign.)
    out.clean_staging(retries.stale_temp_s)
    sweep_work_dir(work_dir)
    ctx.interrupted_runs = mark_interrupted_runs(out, ctx.run_id)
    if not out.exists("runs", ctx.run_id, "run.json"):  # a shard joins its campaign's run: that one is on record
        run_started(out, ctx.run_id, ctx.started_at)
    return ctx


# 1. Load and validate --------------------------------------------------------------------------


def load_and_validate(catalog_uri: str, ctx: RunContext) -> CatalogValidation:
    """Read the catalog and check every row; raises CatalogReadError when it cannot be read at all."""
    started = time.perf_counter()
    table = read_catalog(catalog_uri)
    validation = validate_catalog(
        table,
        channels=ctx.presets,
        styles=ctx.styles,
        default_model=ctx.settings.generation.model,
        uri_policy=UriPolicy.from_settings(ctx.settings.inputs),
    )
    validation.seconds["validate"] = time.perf_counter() - started
    progress.start("validate", validation.rows)
    progress.advance("validate", validation.rows)
    return validation


def screen_prompts(validation: CatalogValidation, ctx: RunContext) -> CatalogValidation:
    """Prompt gate: rows the campaign's policy blocks leave the run here and never reach the model.

    Returns the validation with blocked rows moved to problems (stage ``prompt``); every checked
    row's scores go to ``scores/``, so a reviewer also sees why a row passed.
    """
    started = time.perf_counter()
    progress.start("prompt_gate", len(validation.specs))
    moderation = moderation_for(ctx.settings.safety.moderator, ctx.settings.cache_dir)
    screening = screen_catalog(validation, ctx.policies, moderation)
    if screening.moderator is not None:
        log.info("prompt moderator: %s", screening.moderator)
    rows = []
    for v in screening.verdicts:
        spec, rule = v.spec, (v.findings[0].rule if v.findings else None)
        scores = {**v.scores, "findings": [{"field": f.field, "rule": f.rule, **f.details} for f in v.findings]}
        rows.append(
            score_row(ctx.run_id, spec.campaign_id, spec.clip_id, spec.row, "prompt", v.passed, rule, v.policy, scores)
        )
    record_scores(ctx.out, rows, ctx.run_id)
    progress.advance("prompt_gate", len(validation.specs))
    return replace(screening.validation, seconds={**validation.seconds, "prompt_gate": time.perf_counter() - started})


# 2. Plan ---------------------------------------------------------------------------------------


@dataclass
class CampaignPlan:
    """What a run will do: clips to make (with the channels still missing) and what is already out."""

    todo: list[tuple[ClipPlan, tuple[str, ...]]] = field(default_factory=list)
    already_published: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: float = 0.0
    adopted: int = 0  # renditions an interrupted run published but did not record (now in the manifest)

    @property
    def renditions(self) -> int:
        return sum(len(channels) for _, channels in self.todo)


class PlanError(ValueError):
    """A valid row that cannot be planned with this run's configuration; names the column to fix."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


DEFAULT_EDIT_STRENGTH = 0.6


def plan_clip(spec: ClipSpec, ctx: RunContext, revisions: dict[str, str] | None = None) -> ClipPlan:
    """Resolve a spec against its model's defaults into exactly what to generate.

    A row with a reference image or a source clip runs on the model (or companion model) that can
    do that task, and its input is fetched and checked here, before any GPU time: its content hash
    is part of the clip_key. Raises AssetError or PlanError (both naming the column) when it cannot.
    """
    settings = ctx.settings
    try:
        ref = resolve_for_task(resolve_model(spec.model), spec.task)
    except UnknownModelError as exc:
        raise PlanError(str(exc), "model") from None
    revisions = {} if revisions is None else revisions
    if ref.location not in revisions:
        revisions[ref.location] = model_revision(ref, settings.cache_dir)
    info = ref.info
    request = replace(generation_request(spec, info, settings), **conditioning_inputs(spec, ctx.work_dir / "assets"))
    scorer = None
    if spec.best_of > 1:
        if not settings.adherence.model:
            raise PlanError(
                f"best_of {spec.best_of} needs a prompt-adherence model to choose with: set adherence.model in the "
                "configuration (e.g. openai/clip-vit-base-patch32) or use best_of 1",
                "best_of",
            )
        scorer = _cached(revisions, f"scorer:{settings.adherence.model}", ScorerError, "best_of",
                         lambda: scorer_identity(settings.adherence.model, settings.cache_dir))  # fmt: skip
    audio = None
    if spec.audio_prompt:
        try:
            audio = audio_request(
                spec.audio_prompt, spec.seed, spec.duration_s, settings.audio, settings.cache_dir, revisions
            )
        except AudioModelError as exc:
            raise PlanError(str(exc), "audio_prompt") from None
    options = PipelineOptions.from_settings(settings.generation).identity()
    if info.scheduler_shift is not None:  # a distilled entry's sampling, on weights other entries share
        options = (*options, ("scheduler_shift", f"{info.scheduler_shift:g}"))
    return ClipPlan(
        spec=spec,
        model=ref,
        model_revision=revisions[ref.location],
        request=request,
        fps=info.fps,
        best_of=spec.best_of,
        scorer=scorer,
        options=options,
        audio=audio,
        loras=lora_adapters(spec, settings, ctx.work_dir / "assets"),
    )


def lora_adapters(spec: ClipSpec, settings: Settings, asset_dir: Path) -> tuple[LoraAdapter, ...]:
    """The configuration's LoRA adapters, then the row's, fetched under the input policy and checked.

    Each is identified by its content hash and scale (part of the clip_key); raises AssetError
    naming the column (``loras``) when one cannot be fetched or is not a safetensors file.
    """
    wanted = [(lora.uri, lora.scale) for lora in settings.generation.loras] + list(spec.loras)
    policy = UriPolicy.from_settings(settings.inputs)
    adapters = []
    for uri, scale in wanted:
        asset = _fetch_input(uri, "lora", asset_dir, "loras", policy)
        adapters.append(LoraAdapter(asset.sha256, scale, str(asset.path), uri))
    return tuple(adapters)


def generation_request(spec: ClipSpec, info: ModelInfo, settings: Settings) -> GenerationRequest:
    """What a row asks its model for: size, frames, steps and guidance, with the model's defaults filled in.

    Needs no model files and fetches no inputs (``plan_clip`` adds the conditioning), so
    ``moviegen plan`` sizes a campaign with exactly what a run would generate.
    """
    width, height = info.size_for(spec.aspect)
    steps = spec.steps or settings.generation.steps or info.steps
    return GenerationRequest(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        seed=spec.seed,
        width=width,
        height=height,
        num_frames=info.frames_for(spec.duration_s),
        steps=preview_steps(steps) if settings.preview else steps,
        guidance=spec.guidance if spec.guidance is not None else info.guidance,
        task=spec.task,
        fps=info.fps,
    )


def conditioning_inputs(spec: ClipSpec, asset_dir: Path) -> dict[str, Any]:
    """The reference image or source clip, fetched and checked: content hash (identity) and local copy."""
    if spec.reference_image:
        image = _fetch_input(spec.reference_image, "image", asset_dir, "reference_image")
        return {"reference_sha256": image.sha256, "reference_path": str(image.path)}
    if spec.source_video:
        clip = _fetch_input(spec.source_video, "video", asset_dir, "source_video")
        strength = spec.edit_strength if spec.edit_strength is not None else DEFAULT_EDIT_STRENGTH
        return {"source_sha256": clip.sha256, "source_path": str(clip.path), "strength": strength}
    return {}


def _fetch_input(uri: str, kind: Any, asset_dir: Path, column: str, policy: UriPolicy | None = None) -> Any:
    try:
        return fetch_asset(uri, kind, asset_dir, policy)
    except AssetError as exc:
        raise AssetError(str(exc), column=column) from None


def _cached(memo: dict[str, str], key: str, error: type[Exception], column: str, compute: Any) -> str:
    if key not in memo:
        try:
            memo[key] = compute()
        except error as exc:
            raise PlanError(str(exc), column) from None
    return memo[key]


def preview_steps(steps: int) -> int:
    """Steps for a preview draft: a quarter of the full run's, at least 2."""
    return max(2, steps // 4)


def plan_campaign(specs: Iterable[ClipSpec], ctx: RunContext) -> CampaignPlan:
    """Plan every valid row and leave out renditions already published with the same rendition key.

    Announces how many clips and renditions the later stages will handle (progress events). A
    rendition whose publish a killed run left unfinished (see ``moviegen.publish.adopt_interrupted``)
    is adopted when its video landed whole, and planned again otherwise.
    """
    started = time.perf_counter()
    plan = CampaignPlan()
    published = published_renditions(ctx.out)
    pending = pending_intents(ctx.out)
    revisions: dict[str, str] = {}
    for spec in specs:
        try:
            clip = plan_clip(spec, ctx, revisions)
        except (AssetError, PlanError) as exc:
            rule = "asset" if isinstance(exc, AssetError) else "plan"
            plan.problems.append(Problem(spec.row, spec.clip_id, exc.column, "plan", rule, str(exc), spec.campaign_id))
            continue
        try:  # fetches the row's logo, music and LUT, and finds fonts for its text: before any GPU time
            keys = {channel: rendition_key_for(clip, channel, ctx) for channel in spec.channels}
        except (AssetError, FontError) as exc:
            column = getattr(exc, "column", None)
            problem = Problem(spec.row, spec.clip_id, column, "render", _rule(exc), str(exc), spec.campaign_id)
            plan.problems.append(problem)
            continue
        missing = []
        for channel in spec.channels:
            row = published.get((spec.campaign_id, spec.clip_id, channel))
            if row is not None and row["rendition_key"] == keys[channel]:
                plan.already_published.append(row)
                if keys[channel] in pending:  # killed after the manifest row, before the intent went
                    clear_intent(ctx.out, keys[channel])
            elif (
                keys[channel] in pending and (row := adopt_interrupted(ctx.out, keys[channel], ctx.run_id)) is not None
            ):
                plan.already_published.append(row)
                plan.adopted += 1
            else:
                missing.append(channel)
        if missing:
            plan.todo.append((clip, tuple(missing)))
    plan.seconds = time.perf_counter() - started
    for stage, total in (("generate", len(plan.todo)), ("frame_gate", len(plan.todo)),
                         ("render", plan.renditions), ("publish", plan.renditions)):  # fmt: skip
        progress.start(stage, total)
    return plan


def rendition_spec_for(clip: ClipPlan, channel: str, ctx: RunContext) -> RenditionSpec:
    """The catalog row's rendition for one channel (assets fetched into the run's scratch folder).

    The channel's visible AI label, when its policy has one, is the last text layer: drawn over everything.
    """
    preset, style = ctx.presets[channel], ctx.styles[clip.spec.style]
    label = label_layer(channel, (preset.width, preset.height), ctx.settings.provenance)
    layers = (label,) if label else ()
    return rendition_spec(clip.spec, preset, style, asset_dir=ctx.work_dir / "assets", layers=layers)


@dataclass(frozen=True)
class PlannedRendition:
    """One channel's rendition of a clip: what to render, where its watermark goes, and its key."""

    channel: str
    spec: RenditionSpec
    mark: WatermarkPlan
    key: str


def plan_rendition(clip: ClipPlan, channel: str, ctx: RunContext) -> PlannedRendition:
    """Spec, watermark plan and rendition key of one channel (the placement looks at every channel of the row)."""
    specs = {name: rendition_spec_for(clip, name, ctx) for name in clip.spec.channels}
    master_size = (clip.request.width, clip.request.height)
    mark = plan_watermark(clip.clip_key, channel, master_size, list(specs.values()))
    return PlannedRendition(
        channel, specs[channel], mark, rendition_key(clip.rendition_source_key, specs[channel], mark.processor_key)
    )


def rendition_key_for(clip: ClipPlan, channel: str, ctx: RunContext) -> str:
    """The key planning compares with the manifest: label, watermark payload and placement included."""
    return plan_rendition(clip, channel, ctx).key


def prune_campaign(validation: CatalogValidation, ctx: RunContext) -> list[dict[str, Any]]:
    """``--prune``: retire the published renditions of rows (or channels) that left the catalog.

    Only the campaigns this catalog names are looked at, so one campaign's catalog never retires
    another's videos. A row still in the catalog keeps its renditions even when it is invalid now
    (its problem is reported; remove the row to retire them). Returns the manifest rows written.
    """
    wanted = {(s.campaign_id, s.clip_id, channel) for s in validation.specs for channel in s.channels}
    still_listed = {(p.campaign_id, p.clip_id) for p in validation.problems if p.clip_id}
    campaigns = {s.campaign_id for s in validation.specs} | {p.campaign_id for p in validation.problems}
    retired = []
    for key, row in sorted(latest_renditions(ctx.out).items()):
        campaign_id, clip_id, _ = key
        if (row["status"] or PUBLISHED) != PUBLISHED or campaign_id not in campaigns:
            continue
        if key not in wanted and (campaign_id, clip_id) not in still_listed:
            retired.append(retire_rendition(row, ctx))
    return retired


def retire_rendition(row: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Move a rendition's files from ``published/`` to ``retired/`` and append its "retired" manifest row.

    The video moves first (a rename on local disks), so the rendition stops being published at
    once. A run killed half way is finished by the next ``--prune``: the manifest row is written
    last and the retired paths depend on the rendition, not on the run.
    """
    source = published_paths(row["channel"], row["campaign_id"], row["clip_id"])
    target = retired_paths(row["channel"], row["campaign_id"], row["clip_id"], row["rendition_key"])
    for part in ("video", "sidecar", "poster"):
        ctx.out.move(source[part], target[part])
    retired = {
        **row,
        "run_id": ctx.run_id,
        "path": "/".join(target["video"]),
        "status": RETIRED,
        "supersedes": row["rendition_key"],
        "published_at": utc_now(),
    }
    ctx.out.append_rows("manifest", MANIFEST_SCHEMA, [retired], ctx.run_id)
    return retired


def make_batches(clips: Iterable[ClipPlan], ctx: RunContext) -> list[list[ClipPlan]]:
    """Group clips that can share one pipeline call (same model, size, frames, steps, guidance, adapters).

    Each group is cut into batches of the clips per call this machine's device takes for its model
    (``generation.batch_size``, resolved by ``batch_size_for``).
    """
    groups: dict[tuple[Any, ...], list[ClipPlan]] = defaultdict(list)
    for clip in clips:
        groups[clip.batch_key].append(clip)
    batches = []
    for group in groups.values():
        size = batch_size_for(ctx.settings.generation, ctx.device, group[0].model)
        batches += [group[i : i + size] for i in range(0, len(group), size)]
    return batches


# 3. Generate -----------------------------------------------------------------------------------


@dataclass
class Master:
    """A clip's generated master file, or why there is none."""

    clip: ClipPlan
    path: Path | None
    seconds: float = 0.0
    reused: bool = False
    nan_fraction: float = 0.0
    problem: Problem | None = None
    gate_seconds: float = 0.0
    soundtrack: Path | None = None  # the generated soundtrack (WAV), when the row has an audio prompt
    seed: int | None = None  # the seed that made it (best-of-N may choose another than the row's)
    fallbacks: tuple[str, ...] = ()  # memory fall-backs its generation took (see generate_resilient)


def load_models(clips: Iterable[ClipPlan], ctx: RunContext) -> dict[str, float]:
    """Load every model the clips need before generating; return seconds per model (for the cost model).

    Loading up front keeps load time out of the first batch's generation time. A model that
    cannot load is left to ``generate_masters``, which reports it clip by clip.
    """
    seconds: dict[str, float] = {}
    cache = process_pipeline_cache()
    settings = ctx.settings.generation
    options = PipelineOptions.from_settings(settings)  # part of the cache key: load what generation will use
    for clip in {(c.model.location, c.loras): c for c in clips}.values():
        started = time.perf_counter()
        loads_before = cache.loads[clip.model.location]
        try:
            cache.get(
                clip.model, ctx.device, ctx.settings.cache_dir, settings.allow_pickle, options=options, loras=clip.loras
            )
        except Exception as exc:
            log.warning("model %s did not load ahead of generation: %s", clip.model.requested, exc)
            continue
        if cache.loads[clip.model.location] > loads_before:
            seconds[clip.model.info.name] = time.perf_counter() - started
    return seconds


def master_path(clip: ClipPlan, ctx: RunContext) -> Path:
    return ctx.work_dir / "masters" / f"{clip.clip_key}.mkv"


def generate_masters(batch: list[ClipPlan], ctx: RunContext) -> list[Master]:
    """Generate one batch in a single pipeline call; reuse masters already on disk for the same clip_key.

    Every master then passes the frame gate (``check_frames``): a clip it holds back comes back
    with no path and its problem. A failing batch is retried clip by clip, so one bad clip only
    costs itself.
    """
    results: dict[str, Master] = {}
    needed = []
    for clip in batch:
        path = master_path(clip, ctx)
        if path.is_file():
            results[clip.clip_key] = check_frames(Master(clip, path, reused=True), ctx)
        else:
            needed.append(clip)
    if needed:
        failure = _attempt(lambda: results.update(_generate(needed, ctx)))
        if failure is not None and len(needed) == 1:
            results[needed[0].clip_key] = _failed(needed[0], "generate", failure)
        elif failure is not None:
            log.warning("batch of %d failed (%s); retrying clip by clip", len(needed), failure)
            for clip in needed:
                single = _attempt(lambda clip=clip: results.update(_generate([clip], ctx)))
                if single is not None:
                    results[clip.clip_key] = _failed(clip, "generate", single)
    masters = add_soundtracks([results[clip.clip_key] for clip in batch], ctx)
    progress.advance("generate", len(batch))
    failed = sum(1 for m in masters if m.problem is not None and m.problem.stage == "generate")
    if failed:  # a clip that could not be generated never reaches the frame gate
        progress.drop("frame_gate", failed)
    return masters


def _attempt(step: Any) -> BaseException | None:
    """Run ``step``; its error, detached from the failed call's frames (so their tensors can be freed), or None."""
    try:
        step()
    except Exception as exc:
        return detached(exc)
    return None


def _generate(clips: list[ClipPlan], ctx: RunContext) -> dict[str, Master]:
    """Generate every candidate of these clips (best-of-N: one per seed), keep each clip's best, gate it."""
    settings = ctx.settings.generation
    started = time.perf_counter()
    options = PipelineOptions.from_settings(settings)
    task = clips[0].request.task
    pipe = process_pipeline_cache().get(
        clips[0].model,
        ctx.device,
        ctx.settings.cache_dir,
        settings.allow_pickle,
        task=task,
        options=options,
        loras=clips[0].loras,
    )
    candidates = [replace(clip.request, seed=seed) for clip in clips for seed in clip.seeds]
    outputs: list[tuple[GeneratedClip | BaseException, tuple[str, ...]]] = []
    size = batch_size_for(settings, ctx.device, clips[0].model)
    for i in range(0, len(candidates), size):
        chunk, notes = candidates[i : i + size], []
        made = generate_resilient(pipe, chunk, ctx.device, ctx.settings.retries.oom_fallback, notes)
        outputs += [(output, tuple(notes)) for output in made]
    seconds = (time.perf_counter() - started) / len(clips)
    masters = {}
    for clip in clips:
        mine, outputs = outputs[: clip.best_of], outputs[clip.best_of :]
        fallbacks = tuple(dict.fromkeys(note for _, notes in mine for note in notes))
        error = next((o for o, _ in mine if isinstance(o, BaseException)), None)
        if error is not None:  # out of memory whatever the fall-back: this clip only is rejected
            masters[clip.clip_key] = replace(_failed(clip, "generate", error, tried=fallbacks), fallbacks=fallbacks)
            continue
        generated = [o for o, _ in mine if isinstance(o, GeneratedClip)]
        chosen, scores = choose_candidate(clip, generated, ctx)
        output = generated[chosen]
        path = write_master(output.frames, clip.fps, master_path(clip, ctx))
        master = Master(
            clip,
            path,
            seconds=seconds,
            nan_fraction=output.nan_fraction,
            seed=clip.seeds[chosen],
            fallbacks=fallbacks,
        )
        # The frames are still in memory: gating them here saves decoding the master again.
        master = check_frames(master, ctx, output.frames)
        if scores:
            master = check_adherence(master, scores, chosen, ctx)
        masters[clip.clip_key] = master
    return masters


def choose_candidate(clip: ClipPlan, outputs: list[GeneratedClip], ctx: RunContext) -> tuple[int, list[AdherenceScore]]:
    """Score each candidate against the prompt (when a scorer is configured); the best one's index and all scores."""
    adherence = ctx.settings.adherence
    if not adherence.model:
        return 0, []
    scorer = load_scorer(adherence.model, ctx.device, ctx.settings.cache_dir, ctx.settings.generation.allow_pickle)
    scores = [scorer.score(o.frames, clip.request.prompt, adherence.frames) for o in outputs]
    return best_candidate(scores), scores


def check_adherence(master: Master, scores: list[AdherenceScore], chosen: int, ctx: RunContext) -> Master:
    """Record every candidate's prompt-adherence score (gate ``adherence``) and, with ``adherence.min_score``,
    hold back a clip whose best score is below it (quarantined like the frame gate's)."""
    clip, spec = master.clip, master.clip.spec
    policy = ctx.policies.for_campaign(spec.campaign_id)
    best = scores[chosen]
    minimum = ctx.settings.adherence.min_score
    passed = master.path is None or minimum is None or best.clip_score >= minimum
    details = {
        "model": ctx.settings.adherence.model,
        "best_of": clip.best_of,
        "chosen_seed": clip.seeds[chosen],
        "clip_score": round(best.clip_score, 4),
        "similarity": round(best.similarity, 6),
        "min_score": minimum,
        "candidates": [{"seed": seed, **s.to_json()} for seed, s in zip(clip.seeds, scores, strict=True)],
    }
    rule = None if passed else "min_score"
    row = score_row(
        ctx.run_id, spec.campaign_id, spec.clip_id, spec.row, "adherence", passed, rule, policy, details, clip.clip_key
    )
    record_scores(ctx.out, [row], ctx.run_id)
    if passed or master.path is None:
        return master
    message = f"CLIP score {best.clip_score:.2f} is below adherence.min_score {minimum:g}"
    verdict = {"run_id": ctx.run_id, "clip_key": clip.clip_key, "rule": rule, "message": message, "scores": details}
    folder = quarantine_clip(ctx.out, spec.campaign_id, spec.clip_id, master.path, None, verdict)
    master.path.unlink(missing_ok=True)  # regenerate and judge again next run (the threshold may change)
    problem = clip_problem(clip, "adherence", "min_score", f"{message}; held in {folder}/", scores=details)
    return replace(master, path=None, problem=problem)


def add_soundtracks(masters: list[Master], ctx: RunContext) -> list[Master]:
    """Generate the soundtracks of the clips that passed and have an audio prompt (a WAV each, reused when present).

    A soundtrack that cannot be made holds its clip back (stage ``soundtrack``): publishing it
    silent would not be what the row asked for.
    """
    wanted = [m for m in masters if _wants_sound(m)]
    if not wanted:
        return masters
    settings = ctx.settings
    try:
        paths = generate_soundtracks(
            [m.clip.audio for m in wanted],
            ctx.work_dir,
            ctx.device,
            settings.cache_dir,
            settings.generation.allow_pickle,
        )
    except Exception as exc:
        return [_failed(m.clip, "soundtrack", exc) if _wants_sound(m) else m for m in masters]
    return [replace(m, soundtrack=paths[m.clip.sound_key]) if _wants_sound(m) else m for m in masters]


def _wants_sound(master: Master) -> bool:
    return master.path is not None and master.clip.audio is not None


def check_frames(master: Master, ctx: RunContext, frames: np.ndarray | None = None) -> Master:
    """Frame gate: QC on every frame and the detector on sampled ones, by the campaign's policy.

    Reads ``frames`` when given (just generated), else decodes the master file. A clip that passes
    comes back as it was; one that fails is put in ``quarantine/`` and comes back with no path and
    its problem, so it never reaches a channel. Scores are recorded either way. A gate that cannot
    run holds the clip back too: nothing unchecked is published.
    """
    if master.path is None:
        return master
    checked = _gate_frames(master, ctx, frames)
    progress.advance("frame_gate")
    return checked


def _gate_frames(master: Master, ctx: RunContext, frames: np.ndarray | None) -> Master:
    assert master.path is not None
    clip, spec = master.clip, master.clip.spec
    policy = ctx.policies.for_campaign(spec.campaign_id)
    started = time.perf_counter()
    nan_fraction = None if master.reused else master.nan_fraction  # a reused master's NaN share is unknown
    try:
        if frames is None:
            result = check_master(master.path, nan_fraction, policy, (clip.request.width, clip.request.height))
        else:
            result = check_clip(frames, nan_fraction, policy)
        row = score_row(
            ctx.run_id, spec.campaign_id, spec.clip_id, spec.row, "frames", result.passed, result.rule, policy,
            result.scores, clip.clip_key,
        )  # fmt: skip
        record_scores(ctx.out, [row], ctx.run_id)
        if result.passed:
            return replace(master, gate_seconds=time.perf_counter() - started)
        verdict = {
            "run_id": ctx.run_id,
            "clip_key": clip.clip_key,
            "rule": result.rule,
            "message": result.message,
            "failures": result.failures,
            "scores": result.scores,
            "policy": policy.name,
            "policy_digest": policy.digest,
        }
        folder = quarantine_clip(ctx.out, spec.campaign_id, spec.clip_id, master.path, result.sampled, verdict)
    except Exception as exc:
        problem = clip_problem(clip, "frames", "error", f"the frame gate could not run: {type(exc).__name__}: {exc}")
        return replace(master, path=None, problem=problem)
    if nan_fraction:
        # A reused master's NaN share is unknown (NaNs were zeroed), so regenerate this one to judge it again.
        master.path.unlink(missing_ok=True)
    details = {"quarantine": folder, "failures": result.failures, "scores": result.scores}
    problem = clip_problem(clip, "frames", result.rule or "failed", f"{result.message}; held in {folder}/", **details)
    return replace(master, path=None, problem=problem, gate_seconds=time.perf_counter() - started)


def _failed(
    clip: ClipPlan, stage: str, exc: BaseException, channel: str | None = None, tried: Sequence[str] = ()
) -> Master:
    """A clip that failed at ``stage``; ``tried`` names the fall-backs taken before giving up."""
    message = f"{type(exc).__name__}: {exc}"
    details: dict[str, Any] = {}
    if tried:
        message += " (tried: " + "; ".join(tried) + ")"
        details["fallbacks"] = list(tried)
    problem = clip_problem(clip, stage, failure_rule(exc), message, channel, **details)
    return Master(clip, None, problem=problem)


def clip_problem(
    clip: ClipPlan, stage: str, rule: str, message: str, channel: str | None = None, **details: Any
) -> Problem:
    """A problem with one generated clip (or one of its renditions)."""
    spec = clip.spec
    if channel:
        details["channel"] = channel
    return Problem(
        spec.row, spec.clip_id, None, stage, rule, message, spec.campaign_id, {"clip_key": clip.clip_key, **details}
    )


# 4. Render, check and publish ------------------------------------------------------------------


@dataclass
class Rendition:
    """One channel's outcome for one clip: a manifest row when published, else its problems."""

    clip: ClipPlan
    channel: str
    row: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# A mark the delivery gate cannot read back (content can pull one bit the wrong way in every frame)
# is embedded once more with twice the embed passes, into the rendition's own frames even when the
# plan put it into the master; only such renditions pay for the second render.
WATERMARK_PASSES = (1, 2)


def render_and_publish(master: Master, channel: str, ctx: RunContext) -> Rendition:
    """Render one channel's MP4 from the master, watermark, label and sign it, gate it, and publish it atomically.

    1. render: one ffmpeg pass, the watermark embed on its frames (or a marked master), one encode;
    2. provenance: XMP label metadata, then the signed C2PA manifest (the last writes to the file);
    3. delivery gate on the final file: preset, watermark read back, provenance (when only the
       watermark fails, 1-3 run once more with a stronger mark: WATERMARK_PASSES);
    4. publish: poster, sidecar, video, manifest row.

    At most ``render_workers`` renditions run 1-4 at once in a process (the plain loop's threads
    and the Prefect task runner's alike); the others wait for a slot.
    """
    if master.path is None:
        raise ValueError(f"clip {master.clip.spec.clip_id} has no master to render: {master.problem}")
    with rendition_slot():
        return _render_and_publish(master, channel, ctx)


def _render_and_publish(master: Master, channel: str, ctx: RunContext) -> Rendition:
    clip, spec = master.clip, master.clip.spec
    timings: dict[str, float] = defaultdict(float)
    reached: set[str] = set()  # the progress stages this rendition got through
    try:
        planned = plan_rendition(clip, channel, ctx)
    except (AssetError, FontError) as exc:
        _drop_unreached(reached)
        return Rendition(clip, channel, problems=[clip_problem(clip, "render", _rule(exc), str(exc), channel)])
    scratch = ctx.work_dir / "renders" / f"{os.getpid()}-{planned.key}"  # the pid: a later run sweeps a dead one's
    video = scratch / f"{spec.clip_id}.mp4"
    try:
        # The generated soundtrack (if any) becomes the music bed once, before the passes; the key already covers it.
        started = time.perf_counter()
        planned = replace(planned, spec=with_soundtrack(planned.spec, master, ctx))
        timings["render"] += time.perf_counter() - started
        for passes in WATERMARK_PASSES:
            verdict = make_final(master, planned, video, passes, ctx, timings)
            if verdict.ok or passes == WATERMARK_PASSES[-1] or {f.rule for f in verdict.failures} != {"watermark"}:
                break
            log.warning(
                "%s/%s on %s: %s; embedding it again with %d passes into the rendition's frames",
                spec.campaign_id, spec.clip_id, channel, verdict.watermark.message, passes + 1,
            )  # fmt: skip
            # A master mark that did not survive this rendition goes into its own frames instead (same
            # payload, so the planned key and the manifest row still agree).
            planned = replace(planned, mark=replace(planned.mark, placement="rendition"))
        progress.advance("render")
        reached.add("render")
        if not verdict.ok:
            return Rendition(clip, channel, seconds=dict(timings), problems=delivery_problems(clip, channel, verdict))
        if not verdict.watermark.passed:  # watermark_gate "recorded": published, and said so
            log.warning("%s/%s on %s: %s (published: watermark_gate is 'recorded')",
                        spec.campaign_id, spec.clip_id, channel, verdict.watermark.message)  # fmt: skip

        # 4. Publish.
        started = time.perf_counter()
        poster = write_poster(video, scratch / f"{spec.clip_id}.jpg", at_s=min(1.0, spec.duration_s / 2))
        row = publish_rendition(clip, channel, planned, video, poster, verdict, passes, ctx)
        timings["publish"] += time.perf_counter() - started
        progress.advance("publish")
        reached.add("publish")
    except ProvenanceError as exc:
        problem = clip_problem(clip, "provenance", "error", str(exc), channel)
        return Rendition(clip, channel, seconds=dict(timings), problems=[problem])
    except (MediaError, AssetError, FontError) as exc:
        problem = clip_problem(clip, "render", _rule(exc), str(exc), channel)
        return Rendition(clip, channel, seconds=dict(timings), problems=[problem])
    except OSError as exc:  # the destination kept failing (after OutputRoot's own retries)
        problem = clip_problem(clip, "publish", "destination", f"{type(exc).__name__}: {exc}", channel)
        return Rendition(clip, channel, seconds=dict(timings), problems=[problem])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        _drop_unreached(reached)
    return Rendition(clip, channel, row=row, seconds=dict(timings))


def make_final(
    master: Master,
    planned: PlannedRendition,
    video: Path,
    passes: int,
    ctx: RunContext,
    timings: dict[str, float],
) -> DeliveryVerdict:
    """Steps 1-3 of a rendition: render with the watermark, add provenance, and gate the final file.

    Adds the seconds of each step to ``timings`` (``watermark`` is the embed's own share of the render).
    """
    assert master.path is not None
    clip, channel, rendition, mark = master.clip, planned.channel, planned.spec, planned.mark
    # 1. Render, with the watermark embedded before the single encode (or already in the master).
    started = time.perf_counter()
    if mark.placement == "master":
        marked = ctx.work_dir / "masters" / f"{clip.clip_key}.mark-{mark.payload_hex}-x{passes}.mkv"
        source, processor = mark_master(master.path, mark, marked, passes=passes), None
    else:
        source, processor = master.path, WatermarkProcessor(mark.payload, passes=passes)
    embed_seconds = time.perf_counter() - started
    retries = ctx.settings.retries
    retry(
        lambda: render_rendition(source, rendition, video, processor=processor, batch_frames=BATCH_FRAMES),
        retries.encode_attempts,
        (MediaError,),
        f"rendering {channel} of {clip.spec.clip_id}",
        retries.delay_s,
    )
    embed_seconds += processor.seconds if processor else 0.0
    timings["watermark"] += embed_seconds
    timings["render"] += time.perf_counter() - started - embed_seconds

    # 2. Provenance: the last writes to the file.
    started = time.perf_counter()
    add_provenance(video, provenance_facts(clip, channel, mark.payload_hex), ctx.settings.provenance, ctx.signer)
    timings["provenance"] += time.perf_counter() - started

    # 3. Delivery gate on the final file.
    started = time.perf_counter()
    required = ctx.settings.watermark_gate == "required"
    verdict = gate_rendition(
        video, rendition.preset, rendition.duration_s, mark.payload, ctx.settings.provenance, required
    )
    timings["delivery"] += time.perf_counter() - started
    return verdict


def delivery_problems(clip: ClipPlan, channel: str, verdict: DeliveryVerdict) -> list[Problem]:
    """One ``delivery`` problem per failed gate check, its rule naming the check: preset, watermark or provenance."""
    return [clip_problem(clip, "delivery", f.rule, f.message, channel, **f.details) for f in verdict.failures]


# Batches whose renditions can wait for a rendition slot at once (threads that mostly wait are cheap).
BATCHES_IN_FLIGHT = 16


def render_batch(work: Sequence[tuple[Master, Sequence[str]]], ctx: RunContext) -> list[Rendition]:
    """Render and publish every channel of a generated batch's clips, ``render_workers`` at a time.

    ``work`` pairs each master with its channels; a clip held back by the frame gate makes none.
    One call per batch (one Prefect task) rather than one per rendition keeps the orchestration's
    cost per clip small; each rendition still succeeds or fails on its own.
    """
    pairs = [(master, channel) for master, channels in work for channel in renditions_to_make(master, channels)]
    if not pairs:
        return []
    with ThreadPoolExecutor(max_workers=min(len(pairs), ctx.settings.render_workers)) as pool:
        # Each thread runs in a copy of the caller's context, so a Prefect run's logs and progress
        # events still belong to its flow run.
        futures = [
            pool.submit(contextvars.copy_context().run, render_and_publish, master, channel, ctx)
            for master, channel in pairs
        ]
        return [future.result() for future in futures]


def renditions_to_make(master: Master, channels: Sequence[str]) -> tuple[str, ...]:
    """The channels to render for a generated clip: all of them, or none when the clip was held back
    (its renditions then leave the render and publish progress totals)."""
    if master.path is not None:
        return tuple(channels)
    for stage in ("render", "publish"):
        progress.drop(stage, len(channels))
    return ()


def _drop_unreached(reached: set[str]) -> None:
    # A rendition that stopped early (asset, render or delivery problem) never reaches the later stages.
    for stage in ("render", "publish"):
        if stage not in reached:
            progress.drop(stage)


def with_soundtrack(rendition: RenditionSpec, master: Master, ctx: RunContext) -> RenditionSpec:
    """Hand the clip's generated soundtrack to the render as its music bed (mixed with the row's music, if any).

    The rendition key was computed before this, from the soundtrack's request (``rendition_source_key``).
    """
    if master.soundtrack is None:
        return rendition
    bed = compose_bed(master.soundtrack, rendition.music, rendition.duration_s, ctx.work_dir / "assets")
    return replace(rendition, music=bed)


def _rule(exc: Exception) -> str:
    return "asset" if isinstance(exc, AssetError) else "font" if isinstance(exc, FontError) else "ffmpeg"


def publish_rendition(
    clip: ClipPlan,
    channel: str,
    planned: PlannedRendition,
    video: Path,
    poster: Path,
    verdict: DeliveryVerdict,
    watermark_passes: int,
    ctx: RunContext,
) -> dict[str, Any]:
    """Put poster, sidecar and video into ``published/`` (video last) and append the manifest row.

    ``video`` is the final, signed file the delivery gate passed: its sha256 is what the row records.
    The row is written as an intent first (``journal/``), so a run killed before the row lands
    leaves the next run enough to adopt the published video rather than make it again.
    """
    spec, info = clip.spec, verdict.report.info
    paths = published_paths(channel, spec.campaign_id, spec.clip_id)
    supersedes = superseded_key(paths, planned.key, ctx.out)
    label = label_for(channel, ctx.settings.provenance)
    sidecar = {
        "campaign_id": spec.campaign_id,
        "clip_id": spec.clip_id,
        "channel": channel,
        "caption": spec.caption,
        "hashtags": list(spec.hashtags),
        "disclosure": disclosure_flags(channel, ctx.settings.provenance),
        "video": paths["video"][-1],
        "poster": paths["poster"][-1],
        "clip_key": clip.clip_key,
        "rendition_key": planned.key,
        "watermark_payload": planned.mark.payload_hex,
        "model": clip.model.requested,
        "loras": clip.loras_record(),
        "generator": f"moviegen {__version__}",
    }
    credentials = verdict.provenance.credentials
    row = {
        "run_id": ctx.run_id,
        "campaign_id": spec.campaign_id,
        "clip_id": spec.clip_id,
        "channel": channel,
        "path": "/".join(paths["video"]),
        "clip_key": clip.clip_key,
        "rendition_key": planned.key,
        "watermark_payload": planned.mark.payload_hex,
        "sha256": sha256_file(video),
        "bytes": video.stat().st_size,
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "duration_s": round(info.frames / info.fps, 6) if info.fps else info.duration_s,
        "frames": info.frames,
        "model": clip.model.requested,
        "seed": spec.seed,
        "style": spec.style,
        "published_at": utc_now(),
        "status": PUBLISHED,
        "supersedes": supersedes,
        "watermark_bit_accuracy": round(verdict.watermark.bit_accuracy, 4),
        "watermark_passes": watermark_passes,
        "c2pa_state": credentials["state"],
        "c2pa_signer": (credentials["signer"] or {}).get("common_name"),
        "label": label.text if label else None,
        "loras": json.dumps(clip.loras_record()) if clip.loras else None,
    }
    record_intent(ctx.out, row)
    ctx.out.put_file(poster, *paths["poster"])
    ctx.out.write_json(sidecar, *paths["sidecar"])
    ctx.out.put_file(video, *paths["video"])
    ctx.out.append_rows("manifest", MANIFEST_SCHEMA, [row], ctx.run_id)
    clear_intent(ctx.out, planned.key)
    return row


def superseded_key(paths: dict[str, tuple[str, ...]], key: str, out: OutputRoot) -> str | None:
    """The rendition_key of the published rendition that publishing ``key`` at ``paths`` replaces, if any."""
    if not out.exists(*paths["video"]):
        return None
    previous = (out.read_json(*paths["sidecar"]) or {}).get("rendition_key")
    return previous if previous != key else None


# 5. Record and report --------------------------------------------------------------------------


def record_timings(
    masters: Iterable[Master], renditions: Iterable[Rendition], loads: dict[str, float], ctx: RunContext
) -> int:
    """Append what generation, encodes and model loads really took to ``timings/`` (the cost model's data)."""
    now, device = utc_now(), ctx.device.name
    rows = [timing_row(ctx.run_id, LOAD, model, None, device, seconds, now) for model, seconds in loads.items()]
    for m in masters:
        if m.reused or m.seconds <= 0:
            continue
        r, item = m.clip.request, f"{m.clip.spec.campaign_id}/{m.clip.spec.clip_id}"
        per_candidate = m.seconds / m.clip.best_of  # the cost model prices one generation; best-of-N makes N
        rows.append(
            timing_row(ctx.run_id, GENERATE, m.clip.model.info.name, item, device, per_candidate, now,
                       r.width, r.height, r.num_frames, r.steps)
        )  # fmt: skip
    for r in renditions:
        if r.row is not None and "render" in r.seconds:
            # A rendition costs its encode and everything around it (watermark, signing, the delivery
            # gate's read-back): measured on one core, the encode was 1.1 s of 9.5 s.
            row, item = r.row, f"{r.clip.spec.campaign_id}/{r.clip.spec.clip_id}"
            rows.append(
                timing_row(ctx.run_id, RENDER, r.channel, item, device, sum(r.seconds.values()), now,
                           row["width"], row["height"], row["frames"])
            )  # fmt: skip
    ctx.out.append_rows("timings", TIMINGS_SCHEMA, rows, ctx.run_id)
    return len(rows)


def record_rejections(problems: Iterable[Problem], ctx: RunContext) -> int:
    """Append problems to ``rejected/``; return how many were written."""
    now = utc_now()
    rows = [
        {
            "run_id": ctx.run_id,
            "campaign_id": p.campaign_id,
            "clip_id": p.clip_id,
            "row": p.row,
            "column": p.column,
            "stage": p.stage,
            "rule": p.rule,
            "reason": p.message,
            "details": json.dumps(p.details, default=str),
            "rejected_at": now,
        }
        for p in problems
    ]
    ctx.out.append_rows("rejected", REJECTED_SCHEMA, rows, ctx.run_id)
    return len(rows)


@dataclass
class RunSummary:
    """What a run did, for the terminal, run.json and the exit status."""

    run_id: str
    out: str
    rows: int
    valid: int
    published: list[dict[str, Any]]
    already_published: int
    problems: list[Problem]
    seconds: float
    stage_seconds: dict[str, float]
    model_loads: dict[str, int]
    executor: str = "local"
    retired: list[dict[str, Any]] = field(default_factory=list)
    shards: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)  # one record per catalog row (moviegen.report)
    started_at: datetime | None = None
    report: dict[str, Any] = field(default_factory=dict)  # where the HTML report went and what it cost
    generated: int = 0  # clips generated by this run (masters made, not reused)
    reused_masters: int = 0  # clips whose master an earlier (maybe killed) run had already made
    adopted: int = 0  # renditions an interrupted run published, recorded by this one
    interrupted_runs: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when everything valid was published, 1 when something was rejected or failed."""
        return 1 if self.problems else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": "finished",
            "out": redact_uri(self.out),
            "generator": f"moviegen {__version__}",
            "executor": self.executor,
            "rows": self.rows,
            "valid_rows": self.valid,
            "published": self.published,
            "already_published": self.already_published,
            "adopted": self.adopted,
            "generated": self.generated,
            "reused_masters": self.reused_masters,
            "interrupted_runs": self.interrupted_runs,
            "fallbacks": self.fallbacks,
            "problems": [{**p.to_json(), "campaign_id": p.campaign_id, "details": p.details} for p in self.problems],
            "seconds": round(self.seconds, 3),
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
            "model_loads": self.model_loads,
            "retired": self.retired,
            "shards": self.shards,
            "exit_code": self.exit_code,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "counts": run_counts(self.clips, len(self.published), self.already_published),
            "clips": self.clips,
            "report": self.report,
        }


def finish_run(
    ctx: RunContext,
    validation: CatalogValidation,
    plan: CampaignPlan,
    masters: list[Master],
    renditions: list[Rendition],
    executor: str = "local",
    retired: list[dict[str, Any]] | None = None,
    shards: list[dict[str, Any]] | None = None,
    model_loads: dict[str, int] | None = None,
) -> RunSummary:
    """Record clip problems, write the report and ``runs/<run_id>/run.json``; return the summary.

    run.json keeps one record per catalog row (status, channels, gates, seconds per stage) and
    ``report.html`` shows the same facts with contact sheets (``moviegen.report``). ``retired`` are
    the rows ``prune_campaign`` wrote; the distributed executor passes its ``shards`` (where each
    ran, attempts, state) and the workers' ``model_loads``.
    """
    problems = [*validation.problems, *plan.problems]
    problems += [m.problem for m in masters if m.problem is not None]
    problems += [p for r in renditions for p in r.problems]
    record_rejections(problems[len(validation.problems) :], ctx)
    for run_id in [ctx.run_id, *ctx.interrupted_runs]:  # a killed run left its small parts behind
        ctx.out.compact_run("manifest", MANIFEST_SCHEMA, run_id)
        ctx.out.compact_run("scores", SCORES_SCHEMA, run_id)
    stage_seconds: dict[str, float] = defaultdict(float, {**validation.seconds, "plan": plan.seconds})
    for m in masters:
        stage_seconds["generate"] += m.seconds
        stage_seconds["frame_gate"] += m.gate_seconds
    for r in renditions:
        for stage, seconds in r.seconds.items():
            stage_seconds[stage] += seconds
    summary = RunSummary(
        run_id=ctx.run_id,
        out=ctx.out.url,
        rows=validation.rows,
        valid=len(validation.specs),
        published=[_jsonable_row(r.row) for r in renditions if r.row is not None],
        already_published=len(plan.already_published),
        problems=problems,
        seconds=(utc_now() - ctx.started_at).total_seconds(),
        stage_seconds=dict(stage_seconds),
        model_loads=dict(process_pipeline_cache().loads) if model_loads is None else model_loads,
        executor=executor,
        retired=[_jsonable_row(r) for r in retired or []],
        shards=shards or [],
        clips=clip_records(ctx.out, ctx.run_id, validation, plan, masters, renditions, problems),
        started_at=ctx.started_at,
        generated=sum(1 for m in masters if m.seconds > 0 and not m.reused),
        reused_masters=sum(1 for m in masters if m.reused),
        adopted=plan.adopted,
        interrupted_runs=ctx.interrupted_runs,
        fallbacks=[f"{m.clip.spec.clip_id}: {note}" for m in masters for note in m.fallbacks],
    )
    summary.report = write_report(ctx.out, summary.to_json())
    ctx.out.write_json(summary.to_json(), "runs", ctx.run_id, "run.json")
    return summary


def _jsonable_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


# The plain loop --------------------------------------------------------------------------------


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


__all__ = [
    "BATCHES_IN_FLIGHT",
    "CampaignPlan",
    "CatalogReadError",
    "Master",
    "Rendition",
    "RunContext",
    "RunSummary",
    "check_frames",
    "finish_run",
    "generate_masters",
    "generation_request",
    "load_and_validate",
    "load_models",
    "make_batches",
    "plan_campaign",
    "prune_campaign",
    "record_rejections",
    "record_timings",
    "render_and_publish",
    "render_batch",
    "renditions_to_make",
    "retire_rendition",
    "run_campaign_plain",
    "screen_prompts",
    "start_run",
]
