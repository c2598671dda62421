"""Plan: each valid row resolved to a clip and its renditions' keys; what is published already is left out."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from moviegen import progress
from moviegen.assets import AssetError, UriPolicy, fetch_asset
from moviegen.catalog.check import CatalogValidation
from moviegen.config import Settings
from moviegen.generation.adherence import ScorerError, scorer_identity
from moviegen.generation.loading import model_revision
from moviegen.generation.options import PipelineOptions
from moviegen.generation.shots import shot_frame_counts
from moviegen.generation.soundtrack import AudioModelError, audio_request
from moviegen.models.registry import (
    ModelInfo,
    ModelRef,
    UnknownModelError,
    continuation_model,
    resolve_for_task,
    resolve_model,
)
from moviegen.presets import Style
from moviegen.provenance import (
    label_layer,
)
from moviegen.publish.manifest import (
    adopt_interrupted,
    clear_intent,
    latest_renditions,
    latest_reviews,
    pending_intents,
    published_renditions,
)
from moviegen.records import CampaignPlan
from moviegen.render.overlays import FontError
from moviegen.render.spec import RenditionSpec, render_rule, rendition_key, rendition_spec
from moviegen.run.context import RunContext
from moviegen.spec import DEFAULT_EDIT_STRENGTH, ClipPlan, ClipSpec, GenerationRequest, LoraAdapter, Problem
from moviegen.store import (
    MANIFEST_SCHEMA,
    PENDING_REVIEW,
    PUBLISHED,
    RETIRED,
    WITHDRAWN,
    move_rendition,
    published_paths,
    retired_paths,
    review_paths,
    utc_now,
)
from moviegen.watermark.marking import WatermarkPlan, plan_watermark


class PlanError(ValueError):
    """A valid row that cannot be planned with this run's configuration; names the column to fix."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


def plan_clip(
    spec: ClipSpec, ctx: RunContext, revisions: dict[str, str] | None = None, after: ClipPlan | None = None
) -> ClipPlan:
    """Resolve a spec against its model's defaults into exactly what to generate.

    A row with a reference image or a source clip runs on the model (or companion model) that can
    do that task, and its input is fetched and checked here, before any GPU time: its content hash
    is part of the clip_key. A shot with ``after`` (``continuity: last_frame``) starts from that
    shot's last frame, image-to-video, and its key follows that shot's. A multi-shot row is
    planned shot by shot (``plan_shots``). Raises AssetError or PlanError (both naming the column)
    when it cannot.
    """
    revisions = {} if revisions is None else revisions
    if spec.shots:
        return plan_shots(spec, ctx, revisions)
    settings = ctx.settings
    after = None if spec.reference_image else after  # a shot's own reference image wins
    try:
        ref = resolve_for_task(resolve_model(spec.model), "i2v" if after is not None else spec.task)
    except UnknownModelError as exc:
        raise PlanError(str(exc), "continuity" if after is not None else "model") from None
    if ref.location not in revisions:
        revisions[ref.location] = model_revision(ref, settings.cache_dir)
    info = ref.info
    conditioning = conditioning_inputs(spec, ctx.work_dir / "assets", ctx.uri_policy)
    request = replace(generation_request(spec, info, settings), **conditioning)
    if after is not None:  # the start frame's path is known once that shot is generated
        request = replace(request, task="i2v")
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
    audio = soundtrack_for(spec, settings, revisions)
    options = PipelineOptions.from_settings(settings.generation).identity()
    if info.scheduler_shift is not None:  # a distilled entry's sampling, on weights other entries share
        options = (*options, ("scheduler_shift", f"{info.scheduler_shift:g}"))
    segments, companion = continuation_for(spec, ref, ctx.styles[spec.style])
    if companion is not None and companion.location not in revisions:
        revisions[companion.location] = model_revision(companion, settings.cache_dir)
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
        loras=lora_adapters(spec, ctx.uri_policy, settings, ctx.work_dir / "assets"),
        segments=segments,
        continuation=companion,
        continuation_revision=revisions[companion.location] if companion is not None else None,
        after=after.clip_key if after is not None else None,
    )


def plan_shots(spec: ClipSpec, ctx: RunContext, revisions: dict[str, str]) -> ClipPlan:
    """A multi-shot row: each shot planned as a clip of its own (with ``continuity: last_frame``,
    after the one before it), and the assembled master's plan around them.

    The row's plan keeps the first shot's model and size, asks for the assembled frame count, and
    carries the row's soundtrack (one under the whole ad); its clip_key hashes the shots' keys and
    the assembly. Problems name the shot's column (``shots[1].reference_image``).
    """
    shots: list[ClipPlan] = []
    for k, shot_spec in enumerate(spec.shot_specs()):
        after = shots[-1] if shots and spec.continuity == "last_frame" else None
        try:
            shots.append(plan_clip(shot_spec, ctx, revisions, after))
        except (AssetError, PlanError) as exc:
            row_wide = exc.column in ("model", "best_of", "continuity", "loras")  # the row's columns, not the shot's
            column = exc.column if row_wide else f"shots[{k}].{exc.column}"
            raise type(exc)(f"shots[{k}]: {exc}", column=column) from None
    first = shots[0]
    sizes = {(s.request.width, s.request.height, s.fps) for s in shots}
    if len(sizes) > 1:
        raise PlanError(f"the shots' models make different sizes or rates {sorted(sizes)}: use one model", "model")
    frames = shot_frame_counts([s.duration_s for s in spec.shots], first.fps)
    over = 0 if spec.transition == "cut" else min(round(spec.transition_s * first.fps), min(frames) // 2)
    audio = soundtrack_for(spec, ctx.settings, revisions)  # one under the whole ad
    plan = replace(
        first,
        spec=spec,
        request=replace(
            first.request,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            seed=spec.seed,
            task="t2v",
            reference_sha256=None,
            reference_path=None,
        ),
        best_of=1,
        scorer=None,
        audio=audio,
        segments=sum(s.segments for s in shots),  # the calls (best-of aside) that made the ad
        continuation=None,
        continuation_revision=None,
        after=None,
        shots=tuple(shots),
        shot_frames=frames,
        transition=spec.transition,
        transition_frames=over,
    )
    return replace(plan, request=replace(plan.request, num_frames=plan.frames))


def soundtrack_for(spec: ClipSpec, settings: Settings, revisions: dict[str, str]) -> Any:
    """The row's soundtrack request (``audio_prompt``), as long as the row; None without one."""
    if not spec.audio_prompt:
        return None
    try:
        return audio_request(
            spec.audio_prompt, spec.seed, spec.duration_s, settings.audio, settings.cache_dir, revisions
        )
    except AudioModelError as exc:
        raise PlanError(str(exc), "audio_prompt") from None


def continuation_for(spec: ClipSpec, ref: ModelRef, style: Style) -> tuple[int, ModelRef | None]:
    """How a row longer than its model's clip is made: (calls, the model continuing it), or (1, None).

    Continued (``extend: continue``) unless the row or its style asks to loop or hold; needs the
    family's image-to-video pipeline (a row on a family without one loops, as before). A
    video-to-video row is as long as its source clip allows and is not continued.
    """
    asked = dict(spec.look).get("extend") or (style.extend if "extend" in style.model_fields_set else "continue")
    segments = ref.info.segments_for(spec.duration_s)
    if asked != "continue" or segments == 1 or spec.task == "v2v":
        return 1, None
    companion = continuation_model(ref)
    return (segments, companion) if companion is not None else (1, None)


def lora_adapters(spec: ClipSpec, policy: UriPolicy, settings: Settings, asset_dir: Path) -> tuple[LoraAdapter, ...]:
    """The configuration's LoRA adapters, then the row's, fetched under the input policy and checked.

    Each is identified by its content hash and scale (part of the clip_key); raises AssetError
    naming the column (``loras``) when one cannot be fetched or is not a safetensors file.
    """
    wanted = [(lora.uri, lora.scale) for lora in settings.generation.loras] + list(spec.loras)
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


def conditioning_inputs(spec: ClipSpec, asset_dir: Path, policy: UriPolicy) -> dict[str, Any]:
    """The reference image or source clip, fetched under ``policy`` and checked: content hash and local copy."""
    if spec.reference_image:
        image = _fetch_input(spec.reference_image, "image", asset_dir, "reference_image", policy)
        return {"reference_sha256": image.sha256, "reference_path": str(image.path)}
    if spec.source_video:
        clip = _fetch_input(spec.source_video, "video", asset_dir, "source_video", policy)
        strength = spec.edit_strength if spec.edit_strength is not None else DEFAULT_EDIT_STRENGTH
        return {"source_sha256": clip.sha256, "source_path": str(clip.path), "strength": strength}
    return {}


def _fetch_input(uri: str, kind: Any, asset_dir: Path, column: str, policy: UriPolicy) -> Any:
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
    reviews = latest_reviews(ctx.out)
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
            problem = Problem(spec.row, spec.clip_id, column, "render", render_rule(exc), str(exc), spec.campaign_id)
            plan.problems.append(problem)
            continue
        missing = []
        for channel in spec.channels:
            slot = (spec.campaign_id, spec.clip_id, channel)
            row = published.get(slot)
            if row is not None and row["rendition_key"] == keys[channel]:
                plan.already_published.append(row)
                if keys[channel] in pending:  # killed after the manifest row, before the intent went
                    clear_intent(ctx.out, keys[channel])
            elif (
                keys[channel] in pending and (row := adopt_interrupted(ctx.out, keys[channel], ctx.run_id)) is not None
            ):
                plan.already_published.append(row)
                plan.adopted += 1
            elif (
                (review := reviews.get(slot)) is not None
                and review["rendition_key"] == keys[channel]
                and review["status"] != WITHDRAWN  # its row left the catalog and came back: to review afresh
            ):
                waiting = review["status"] == PENDING_REVIEW
                if waiting and not ctx.out.fs.exists(f"{ctx.out.root}/{review['path']}"):
                    missing.append(channel)  # its file was removed by hand: render it for review again
                else:  # waiting, or decided: a reviewer's rejection stands for this rendition
                    (plan.awaiting_review if waiting else plan.rejected_in_review).append(review)
            else:
                missing.append(channel)
        if missing:
            plan.todo.append((clip, tuple(missing)))
    plan.seconds = time.perf_counter() - started
    gated = sum(len(clip.shots) or 1 for clip, _ in plan.todo)  # the frame gate checks every shot
    for stage, total in (("generate", len(plan.todo)), ("frame_gate", gated),
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
    return rendition_spec(
        clip.spec, preset, style, asset_dir=ctx.work_dir / "assets", layers=layers, policy=ctx.uri_policy
    )


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
    """``--prune``: retire the published renditions of rows (or channels) that left the catalog, and
    withdraw their renditions waiting for review.

    Only the campaigns this catalog names are looked at, so one campaign's catalog never retires
    another's videos. A row still in the catalog keeps its renditions even when it is invalid now
    (its problem is reported; remove the row to retire them). Returns the manifest rows written.
    """
    wanted = {(s.campaign_id, s.clip_id, channel) for s in validation.specs for channel in s.channels}
    still_listed = {(p.campaign_id, p.clip_id) for p in validation.problems if p.clip_id}
    campaigns = {s.campaign_id for s in validation.specs} | {p.campaign_id for p in validation.problems}

    def left(key: tuple[str, str, str]) -> bool:
        return key[0] in campaigns and key not in wanted and key[:2] not in still_listed

    retired = []
    for key, row in sorted(latest_renditions(ctx.out).items()):
        if (row["status"] or PUBLISHED) == PUBLISHED and left(key):
            retired.append(retire_rendition(row, ctx))
    for key, row in sorted(latest_reviews(ctx.out).items()):
        if row["status"] == PENDING_REVIEW and left(key):
            retired.append(retire_rendition(row, ctx, WITHDRAWN))
    return retired


def retire_rendition(row: dict[str, Any], ctx: RunContext, status: str = RETIRED) -> dict[str, Any]:
    """Move a rendition's files to ``retired/`` and append its manifest row: "retired" for a published
    one, "withdrawn" for one waiting under ``review/``.

    The video moves first (a rename on local disks), so the rendition stops being published at
    once. A run killed half way is finished by the next ``--prune``: the manifest row is written
    last and the retired paths depend on the rendition, not on the run.
    """
    where = review_paths if status == WITHDRAWN else published_paths
    source = where(row["channel"], row["campaign_id"], row["clip_id"])
    target = retired_paths(row["channel"], row["campaign_id"], row["clip_id"], row["rendition_key"])
    move_rendition(ctx.out, source, target)
    retired = {
        **row,
        "run_id": ctx.run_id,
        "path": "/".join(target["video"]),
        "status": status,
        "supersedes": row["rendition_key"],
        "published_at": utc_now(),
    }
    ctx.out.append_rows("manifest", MANIFEST_SCHEMA, [retired], ctx.run_id)
    return retired
