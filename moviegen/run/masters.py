"""Masters: batches, model loading, generation with fall-backs, best-of, adherence, soundtracks, the frame gate."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from moviegen import progress
from moviegen.generation.adherence import AdherenceScore, best_candidate, load_scorer
from moviegen.generation.continuation import continue_clip
from moviegen.generation.generate import GeneratedClip, batch_size_for
from moviegen.generation.loading import process_pipeline_cache
from moviegen.generation.options import PipelineOptions
from moviegen.generation.resilient import generate_resilient
from moviegen.generation.shots import assemble_shots, fit_shot
from moviegen.generation.soundtrack import generate_soundtracks
from moviegen.media import read_frames, write_frame, write_master
from moviegen.records import Master
from moviegen.reliability import detached, failure_rule
from moviegen.run.context import RunContext
from moviegen.safety import (
    check_clip,
    check_master,
    quarantine_clip,
    record_scores,
    score_row,
)
from moviegen.spec import ClipPlan, LoraAdapter, Problem

log = logging.getLogger(__name__)


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


def load_models(clips: Iterable[ClipPlan], ctx: RunContext) -> dict[str, float]:
    """Load every model the clips need before generating; return seconds per model (for the cost model).

    Loading up front keeps load time out of the first batch's generation time. A model that
    cannot load is left to ``generate_masters``, which reports it clip by clip.
    """
    seconds: dict[str, float] = {}
    cache = process_pipeline_cache()
    settings = ctx.settings.generation
    options = PipelineOptions.from_settings(settings)  # part of the cache key: load what generation will use
    calls = [shot for c in clips for shot in (c.shots or (c,))]  # a multi-shot row needs its shots' models
    needed = {(c.model.location, c.loras, c.request.task): (c.model, c.request.task, c.loras) for c in calls}
    for c in calls:  # a long clip's continuation model, loaded as continue_segments will ask for it
        if c.continuation is not None:
            loras = continuation_loras(c)
            needed.setdefault((c.continuation.location, loras, "i2v"), (c.continuation, "i2v", loras))
    for model, task, loras in needed.values():
        started = time.perf_counter()
        loads_before = cache.loads[model.location]
        try:
            cache.get(model, ctx.device, ctx.settings.cache_dir, settings.allow_pickle, task, options, loras)
        except Exception as exc:
            log.warning("model %s did not load ahead of generation: %s", model.requested, exc)
            continue
        if cache.loads[model.location] > loads_before:
            seconds[model.info.name] = time.perf_counter() - started
    return seconds


def continuation_loras(clip: ClipPlan) -> tuple[LoraAdapter, ...]:
    """The adapters a clip's continuation runs with: the row's, when it continues on the same weights."""
    assert clip.continuation is not None
    return clip.loras if clip.continuation.location == clip.model.location else ()  # adapters fit their weights


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
        if clip.shots:
            results[clip.clip_key] = generate_shots(clip, ctx)
        elif path.is_file():
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
    failed = sum(1 for m in masters if m.problem is not None and m.problem.stage == "generate" and not m.clip.shots)
    if failed:  # a clip that could not be generated never reaches the frame gate (generate_shots counts its own)
        progress.drop("frame_gate", failed)
    return masters


def generate_shots(clip: ClipPlan, ctx: RunContext) -> Master:
    """A multi-shot row's master: its shots generated (or reused) in order, each through the frame
    gate, then assembled at their frame counts with the row's transition.

    A shot with ``continuity: last_frame`` starts from the last frame of the shot before. The first
    shot that fails holds back the row, its problem naming the shot (``shots[2].prompt``); the
    shots generated before it stay cached for the next run.
    """
    made: list[np.ndarray] = []
    shots: list[Master] = []
    for k, shot in enumerate(clip.shots):
        path = master_path(shot, ctx)
        if path.is_file():
            master = check_frames(Master(shot, path, reused=True), ctx)
        else:
            if shot.after is not None:
                start = ctx.work_dir / "shots" / f"{shot.clip_key}-start.png"
                write_frame(made[-1][-1], start)
                shot = replace(shot, request=replace(shot.request, reference_path=str(start)))
            got: dict[str, Master] = {}
            failure = _attempt(lambda shot=shot, got=got: got.update(_generate([shot], ctx)))
            master = got[shot.clip_key] if failure is None else _failed(shot, "generate", failure)
        if master.problem is not None or master.path is None:
            gated = master.problem is not None and master.problem.stage != "generate"
            progress.drop("frame_gate", len(clip.shots) - k - gated)
            assert master.problem is not None
            return Master(clip, None, problem=shot_problem(clip, k, master.problem), fallbacks=master.fallbacks)
        shots.append(master)
        made.append(read_frames(master.path))
    path = master_path(clip, ctx)
    if not path.is_file():
        extend = dict(clip.spec.look).get("extend") or ctx.styles[clip.spec.style].extend
        pieces = [fit_shot(frames, count, extend) for frames, count in zip(made, clip.shot_frames, strict=True)]
        write_master(assemble_shots(pieces, clip.transition, clip.transition_frames), clip.fps, path)
    return Master(
        clip,
        path,
        reused=all(m.reused for m in shots),
        seconds=sum(m.seconds for m in shots),
        nan_fraction=max(m.nan_fraction for m in shots),
        seed=clip.spec.seed,
        fallbacks=tuple(dict.fromkeys(note for m in shots for note in m.fallbacks)),
        gate_seconds=sum(m.gate_seconds for m in shots),
        shots=tuple(shots),
    )


def shot_problem(clip: ClipPlan, shot: int, problem: Problem) -> Problem:
    """A shot's problem as its row's: the column and message name the shot, the details keep its key."""
    details = {**problem.details, "clip_key": clip.clip_key, "shot": shot, "shot_clip_key": clip.shots[shot].clip_key}
    return replace(
        problem, column=f"shots[{shot}].prompt", message=f"shots[{shot}]: {problem.message}", details=details
    )


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
        continued_s = 0.0
        if clip.segments > 1:
            started_continuing, notes = time.perf_counter(), list(fallbacks)
            try:
                output = continue_segments(output, clip, clip.seeds[chosen], notes, ctx)
            except Exception as exc:  # this clip only: the others of its batch go on
                masters[clip.clip_key] = _failed(clip, "generate", detached(exc), tried=tuple(notes))
                continue
            fallbacks = tuple(dict.fromkeys(notes))
            continued_s = time.perf_counter() - started_continuing
        path = write_master(output.frames, clip.fps, master_path(clip, ctx))
        master = Master(
            clip,
            path,
            seconds=seconds + continued_s,
            continued_s=continued_s,
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


def continue_segments(
    first: GeneratedClip, clip: ClipPlan, seed: int, notes: list[str], ctx: RunContext
) -> GeneratedClip:
    """A clip longer than one call: ``first`` continued segment by segment on the family's image-to-video
    pipeline (the same weights' for LTX-Video, the companion model's for Wan and CogVideoX)."""
    assert clip.continuation is not None
    settings = ctx.settings.generation
    pipe = process_pipeline_cache().get(
        clip.continuation,
        ctx.device,
        ctx.settings.cache_dir,
        settings.allow_pickle,
        task="i2v",
        options=PipelineOptions.from_settings(settings),
        loras=continuation_loras(clip),
    )
    frame_dir = ctx.work_dir / "segments"
    return continue_clip(first, clip, seed, pipe, ctx.device, frame_dir, ctx.settings.retries.oom_fallback, notes)


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
