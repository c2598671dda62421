"""Prompt adherence: CLIP scores on sampled frames (tiny CLIP built offline), best-of-N keeps the best seed
and records every candidate's score in scores/."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import fast_settings, row

from moviegen.config import AdherenceSettings
from moviegen.generation.adherence import AdherenceScore, ScorerError, best_candidate, load_scorer, resolve_scorer
from moviegen.generation.device import pick_device
from moviegen.models.tiny import ensure_tiny_model
from moviegen.run.context import start_run
from moviegen.run.masters import generate_masters, make_batches
from moviegen.run.planning import plan_campaign
from moviegen.run.screening import load_and_validate

CPU = pick_device("cpu")


def test_tiny_clip_is_a_real_clip_model_and_tokenizer(cache_dir):
    from transformers import AutoProcessor, CLIPModel, CLIPTokenizer

    folder = ensure_tiny_model(cache_dir, "tiny-clip")
    processor = AutoProcessor.from_pretrained(folder)
    assert isinstance(processor.tokenizer, CLIPTokenizer)
    ids = processor.tokenizer("the astronaut and the moon").input_ids
    assert ids[0] == processor.tokenizer.bos_token_id and ids[-1] == processor.tokenizer.eos_token_id
    assert len(ids) < len("the astronaut and the moon") + 2  # BPE merges join letters
    assert CLIPModel.from_pretrained(folder).config.text_config.eos_token_id == processor.tokenizer.eos_token_id


def test_scores_sampled_frames_of_a_real_photograph(cache_dir):
    from skimage import data

    scorer = load_scorer("tiny-clip", CPU, cache_dir)
    frames = np.stack([data.astronaut()[:, i : i + 384] for i in range(0, 120, 10)])  # a 12-frame pan
    score = scorer.score(frames, "an astronaut in a white suit", max_frames=4)
    assert score.frames == (0, 4, 7, 11) and len(score.per_frame) == 4
    assert score.clip_score == pytest.approx(np.mean(score.per_frame))
    assert all(0.0 <= s <= 100.0 for s in score.per_frame) and -1.0 <= score.similarity <= 1.0
    again = scorer.score(frames, "an astronaut in a white suit", max_frames=4)
    assert again == score  # deterministic
    assert scorer.score(frames, "a bowl of soup on a table", max_frames=4).similarity != score.similarity
    assert load_scorer("tiny-clip", CPU, cache_dir) is scorer  # loaded once per process


def test_best_candidate_prefers_similarity_and_the_rows_own_seed_on_ties():
    def s(similarity):
        return AdherenceScore(max(0.0, similarity) * 100, similarity, (), ())

    assert best_candidate([s(-0.3), s(-0.1), s(-0.2)]) == 1
    assert best_candidate([s(0.2), s(0.2)]) == 0


def test_unknown_scorer_says_what_to_use(tmp_path):
    with pytest.raises(ScorerError, match=r"no config\.json"):
        resolve_scorer(str(tmp_path))
    with pytest.raises(ScorerError, match="tiny-clip"):
        resolve_scorer("not a model")
    assert resolve_scorer("clip-vit-base-patch32") == "openai/clip-vit-base-patch32"


def test_best_of_keeps_the_best_seed_and_records_every_candidate(tmp_path, catalog_file, tiny_model):
    settings = fast_settings(tmp_path / "out", adherence=AdherenceSettings(model="tiny-clip", frames=4))
    ltx = {"model": "tiny-ltx", "duration_s": 0.5}  # the fastest tiny build
    path = catalog_file([row("pick", best_of=3, **ltx), row("single", **ltx)])
    ctx = start_run(settings)
    plan = plan_campaign(load_and_validate(str(path), ctx).specs, ctx)
    clips = {clip.spec.clip_id: clip for clip, _ in plan.todo}
    assert clips["pick"].seeds == (7, 8, 9) and clips["single"].seeds == (7,)
    assert clips["pick"].clip_key != clips["single"].clip_key
    masters = [m for batch in make_batches(clips.values(), ctx) for m in generate_masters(batch, ctx)]
    assert all(m.path is not None for m in masters), [m.problem for m in masters]
    scores = {r["clip_id"]: json.loads(r["scores"]) for r in pq.read_table(tmp_path / "out" / "scores").to_pylist()
              if r["gate"] == "adherence"}  # fmt: skip
    pick = scores["pick"]
    assert [c["seed"] for c in pick["candidates"]] == [7, 8, 9]
    best = max(pick["candidates"], key=lambda c: c["similarity"])
    assert pick["chosen_seed"] == best["seed"] and pick["clip_score"] == best["clip_score"]
    assert len({c["similarity"] for c in pick["candidates"]}) == 3  # three different videos were scored
    assert {m.clip.spec.clip_id: m.seed for m in masters}["pick"] == pick["chosen_seed"]
    assert len(scores["single"]["candidates"]) == 1  # every clip is scored when a scorer is configured


def test_best_of_without_a_scorer_is_refused_at_planning(tmp_path, catalog_file):
    ctx = start_run(fast_settings(tmp_path / "out"))
    plan = plan_campaign(load_and_validate(str(catalog_file([row("pick", best_of=2)])), ctx).specs, ctx)
    [problem] = plan.problems
    assert (problem.column, problem.stage) == ("best_of", "plan") and "adherence.model" in problem.message
    assert plan.todo == []


def test_min_score_holds_back_a_clip_that_misses_the_prompt(tmp_path, catalog_file, tiny_model):
    adherence = AdherenceSettings(model="tiny-clip", frames=2, min_score=99.0)
    ctx = start_run(fast_settings(tmp_path / "out", adherence=adherence))
    plan = plan_campaign(
        load_and_validate(str(catalog_file([row("miss", model="tiny-ltx", duration_s=0.5)])), ctx).specs, ctx
    )
    [master] = generate_masters([plan.todo[0][0]], ctx)
    assert master.path is None and master.problem.stage == "adherence" and master.problem.rule == "min_score"
    assert (tmp_path / "out" / "quarantine" / "test-camp" / "miss" / "verdict.json").is_file()
