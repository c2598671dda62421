"""Renditions: render, watermark, label, sign, gate and publish one channel of one clip atomically."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from moviegen import __version__, progress
from moviegen.assets import AssetError
from moviegen.generation.soundtrack import compose_bed
from moviegen.media import MediaError
from moviegen.provenance import (
    ProvenanceError,
    add_provenance,
    disclosure_flags,
    label_for,
    provenance_facts,
)
from moviegen.provenance.delivery import DeliveryVerdict, gate_rendition
from moviegen.publish.manifest import clear_intent, record_intent, superseded_key
from moviegen.records import Master, Rendition
from moviegen.reliability import retry
from moviegen.render.encode import render_rendition, rendition_slot, write_poster
from moviegen.render.overlays import FontError
from moviegen.render.spec import RenditionSpec, render_rule
from moviegen.run.context import RunContext
from moviegen.run.masters import clip_problem
from moviegen.run.planning import PlannedRendition, plan_rendition
from moviegen.spec import ClipPlan, Problem
from moviegen.store import (
    MANIFEST_SCHEMA,
    PENDING_REVIEW,
    PUBLISHED,
    published_paths,
    review_paths,
    sha256_file,
    utc_now,
)
from moviegen.watermark.marking import BATCH_FRAMES, WatermarkProcessor, mark_master

log = logging.getLogger(__name__)

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
        return Rendition(clip, channel, problems=[clip_problem(clip, "render", render_rule(exc), str(exc), channel)])
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
        problem = clip_problem(clip, "render", render_rule(exc), str(exc), channel)
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
    leaves the next run enough to adopt the published video rather than make it again. With review
    on for the campaign the same files go under ``review/`` with a ``pending_review`` row instead
    (``moviegen.publish.review`` publishes them once approved).
    """
    spec, info = clip.spec, verdict.report.info
    waits = ctx.settings.review.required_for(spec.campaign_id)
    paths = (review_paths if waits else published_paths)(channel, spec.campaign_id, spec.clip_id)
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
        "segments": clip.segments,
        "shots": clip.shots_record(),
        "transition": clip.transition if clip.shots else None,
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
        "status": PENDING_REVIEW if waits else PUBLISHED,
        "supersedes": supersedes,
        "watermark_bit_accuracy": round(verdict.watermark.bit_accuracy, 4),
        "watermark_passes": watermark_passes,
        "c2pa_state": credentials["state"],
        "c2pa_signer": (credentials["signer"] or {}).get("common_name"),
        "label": label.text if label else None,
        "loras": json.dumps(clip.loras_record()) if clip.loras else None,
        "segments": clip.segments,
        "shots": len(clip.shots) or 1,
    }
    record_intent(ctx.out, row)
    ctx.out.put_file(poster, *paths["poster"])
    ctx.out.write_json(sidecar, *paths["sidecar"])
    ctx.out.put_file(video, *paths["video"])
    ctx.out.append_rows("manifest", MANIFEST_SCHEMA, [row], ctx.run_id)
    clear_intent(ctx.out, planned.key)
    return row
