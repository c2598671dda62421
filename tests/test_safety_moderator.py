"""The model-based moderator: real loading and scoring on tiny random-weight guards, wired into the gate."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import fast_settings, row
from typer.testing import CliRunner

from flows.cli import app
from moviegen.config import ModeratorSettings, SafetySettings
from moviegen.safety.moderator import ModeratorError, load_moderator, parse_guard_output, resolve_moderator


def guard(cache_dir: Path, name: str, kind: str, threshold: float):
    return load_moderator(ModeratorSettings(model=name, kind=kind, threshold=threshold), cache_dir)


def test_generative_score_is_the_probability_of_unsafe_at_the_first_verdict_token(cache_dir):
    import torch

    moderator = guard(cache_dir, "tiny-llama-guard", "generative", 0.5)
    assert type(moderator.model).__name__ == "LlamaForCausalLM"
    folder = cache_dir / "models" / "tiny-llama-guard-v1"
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    text = "a quiet lake at dawn"
    (verdict,) = moderator.judge([text])
    prompt = moderator.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    ids = moderator.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        logits = moderator.model(**ids).logits[0, -1].float()
    # The random model writes neither verdict word, so its first token is the verdict position.
    assert parse_guard_output(verdict.output, {})[0] is None
    expected = float(torch.softmax(logits, dim=-1)[moderator.unsafe_id])
    assert verdict.score == pytest.approx(expected, rel=1e-4) and 0.0 < verdict.score < 1.0
    assert verdict.unsafe is (verdict.score >= 0.5)
    assert guard(cache_dir, "tiny-llama-guard", "generative", 0.0).judge([text])[0].unsafe is True
    assert guard(cache_dir, "tiny-llama-guard", "generative", 1.0).judge([text])[0].unsafe is False


def test_classifier_score_is_the_probability_of_yes(cache_dir):
    import torch

    from moviegen.safety.moderator import SHIELD_PROMPT

    moderator = guard(cache_dir, "tiny-shieldgemma", "classifier", 0.5)
    assert type(moderator.model).__name__ == "Gemma2ForCausalLM"
    texts = ["a quiet lake at dawn", "a crowded market at noon"]
    verdicts = moderator.judge(texts)
    ids = moderator.tokenizer(
        SHIELD_PROMPT.format(text=texts[1], policy=moderator.settings.policy), return_tensors="pt"
    )
    with torch.inference_mode():
        logits = moderator.model(**ids).logits[0, -1].float()
    expected = float(torch.softmax(logits[[moderator.yes_id, moderator.no_id]], dim=-1)[0])
    assert verdicts[1].score == pytest.approx(expected, abs=1e-4)  # batched with left padding = alone
    assert [v.unsafe for v in guard(cache_dir, "tiny-shieldgemma", "classifier", 0.0).judge(texts)] == [True, True]
    assert [v.unsafe for v in guard(cache_dir, "tiny-shieldgemma", "classifier", 1.0).judge(texts)] == [False, False]


@pytest.mark.parametrize(
    ("output", "verdict", "categories"),
    [
        ("safe", "safe", ()),
        ("\n\nunsafe\nS1,S10", "unsafe", ("S1 violent crimes", "S10 hate")),
        ("unsafe\nS4", "unsafe", ("S4 child sexual exploitation",)),
        ("unsafe\nX9", "unsafe", ("X9",)),
        ("zq!#", None, ()),
    ],
)
def test_generative_output_is_parsed(output, verdict, categories):
    assert parse_guard_output(output, ModeratorSettings().categories) == (verdict, categories)


def test_moderator_names_are_resolved_or_refused(tmp_path):
    assert resolve_moderator("llama-guard-3-1b") == "meta-llama/Llama-Guard-3-1B"
    assert resolve_moderator("tiny-llama-guard") == "moviegen/tiny-llama-guard"
    with pytest.raises(ModeratorError, match=r"no config\.json"):
        resolve_moderator(str(tmp_path))
    with pytest.raises(ModeratorError, match="unknown moderator"):
        resolve_moderator("not a model")
    with pytest.raises(ValueError):
        ModeratorSettings(model="tiny-llama-guard", kind="generative", colour="red")


def test_campaign_gate_writes_moderator_verdicts_to_scores(catalog_file, tmp_path):
    from moviegen.run.plain import run_campaign_plain

    catalog = catalog_file([row("calm"), row("calm2"), row("ruled", prompt="a n-u-d-e model on a beach")])
    moderator = ModeratorSettings(model="tiny-llama-guard", kind="generative", threshold=0.0)
    settings = fast_settings(tmp_path / "out", safety=SafetySettings(moderator=moderator))
    summary = run_campaign_plain(str(catalog), settings)
    assert summary.exit_code == 1 and summary.published == []
    rejected = {r["clip_id"]: r["rule"] for r in pq.read_table(tmp_path / "out" / "rejected").to_pylist()}
    assert rejected == {"calm": "moderator", "calm2": "moderator", "ruled": "denied_term"}
    scores = {r["clip_id"]: json.loads(r["scores"]) for r in pq.read_table(tmp_path / "out" / "scores").to_pylist()}
    judged = scores["calm"]["moderator"]
    assert judged["model"] == "tiny-llama-guard" and judged["unsafe"] is True and 0.0 < judged["score"] < 1.0
    assert "moderator" not in scores["ruled"]  # the rules had already blocked it


def write_config(tmp_path: Path, **moderator) -> Path:
    lines = "".join(f"    {k}: {v}\n" for k, v in moderator.items())
    path = tmp_path / "moviegen.yaml"
    path.write_text(f"safety:\n  moderator:\n{lines}")
    return path


def test_validate_says_the_moderator_ran(catalog_file, tmp_path):
    config = write_config(tmp_path, model="tiny-shieldgemma", kind="classifier", threshold=1.0)
    path = catalog_file([row("ok")])
    result = CliRunner().invoke(app, ["validate", str(path), "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["moderator"]
    assert (summary["model"], summary["ran"], summary["rows"], summary["error"]) == ("tiny-shieldgemma", True, 1, None)
    text = CliRunner().invoke(app, ["validate", str(path), "--config", str(config)])
    assert "moderator: tiny-shieldgemma ran on 1 row(s)" in " ".join(text.output.split())


@pytest.mark.parametrize("broken", ["missing", "pickle", "garbage"])
def test_a_moderator_that_cannot_run_fails_closed_unless_allowed(catalog_file, tmp_path, broken):
    folder = tmp_path / "guard"
    if broken != "missing":
        folder.mkdir()
        (folder / "config.json").write_text('{"model_type": "llama"}' if broken == "pickle" else "{not json")
        if broken == "pickle":
            (folder / "pytorch_model.bin").write_bytes(b"\x80")
    path = catalog_file([row("ok"), row("ruled", prompt="a n-u-d-e model on a beach")])
    config = write_config(tmp_path, model=str(folder))
    result = CliRunner().invoke(app, ["validate", str(path), "--config", str(config), "--json"])
    assert result.exit_code == 1, result.output
    payload = json.loads(result.stdout)
    assert [(p["clip_id"], p["rule"]) for p in payload["problems"]] == [
        ("ok", "moderator_unavailable"),
        ("ruled", "denied_term"),
    ]
    assert "on_error: allow" in payload["problems"][0]["message"]
    assert payload["moderator"]["ran"] is False and payload["moderator"]["error"]
    if broken == "pickle":
        assert "pickle" in payload["moderator"]["error"]
    allowed = write_config(tmp_path, model=str(folder), on_error="allow")
    result = CliRunner().invoke(app, ["validate", str(path), "--config", str(allowed), "--json"])
    assert [p["rule"] for p in json.loads(result.stdout)["problems"]] == ["denied_term"]


def test_a_bad_moderator_setting_is_a_configuration_error(catalog_file, tmp_path):
    config = write_config(tmp_path, model="tiny-llama-guard", colour="red")
    result = CliRunner().invoke(app, ["validate", str(catalog_file([row("ok")])), "--config", str(config)])
    assert result.exit_code == 2 and "colour" in result.output


# The embedding guard (minilm-prompt-guard, the default): a real encoder from a PyPI package -----

# A dev row of the evaluation set that the rules pass and the guard's head blocks. (Its sibling
# "gangster curb-stomps a rival until his skull caves in" is one the round-9 head misses, in sample.)
PARAPHRASE = "Bare-knuckle fight that ends with one guy stomping the other's head on the curb until it splits open"


def test_embedding_guard_scores_the_encoders_layers_with_its_head(cache_dir):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from moviegen.safety.guard_head import layer_features, pooled_states
    from moviegen.safety.moderator import MINILM_GUARD, moderator_folder

    settings = ModeratorSettings()  # the default configuration's moderator
    assert (settings.model, settings.kind) == ("minilm-prompt-guard", "embedding")
    moderator = load_moderator(settings, cache_dir)
    assert type(moderator.model).__name__ == "BertModel"
    texts = [
        PARAPHRASE,
        "Close-up of a man eating a banana.",
        "a kids' swimwear catalogue, bright beach",
        "Time-lapse of clouds over a mountain lake.",
    ]
    states = pooled_states(moderator.model, moderator.tokenizer, texts, "cpu")
    assert states.shape == (4, 7, 384)  # the embeddings and six layers, each mean-pooled
    # The last is the sentence embedding the sentence-transformers library makes from the same folder.
    library = SentenceTransformer(moderator_folder(MINILM_GUARD, cache_dir), device="cpu")
    assert np.allclose(states[:, -1], library.encode(texts, normalize_embeddings=True), atol=1e-5)
    head = moderator.head
    assert head.layers == (1, 2, 3, 4, 5, 6) and head.weight.shape[1] == 6 * 384
    probs, near = head.probabilities(layer_features(states, head.layers)), head.nearness(states[:, -1])
    safe = [i for i, c in enumerate(head.classes) if c in head.safe]
    verdicts = moderator.judge(texts)
    for verdict, p, n in zip(verdicts, probs, near, strict=True):
        expected = 1.0 - p[safe].sum() if n >= head.min_similarity else 0.0
        assert verdict.score == pytest.approx(expected, abs=1e-5)
        assert verdict.unsafe is (verdict.score >= 0.5)
    assert verdicts[0].unsafe and verdicts[0].categories == ("graphic_violence",)
    assert [v.unsafe for v in verdicts[1:]] == [False, False, False]
    # Far from every unsafe example the head does not speak (the loop above: its score is 0.0).
    assert near[3] < head.min_similarity <= near[0]


def test_guard_heads_round_trip_and_misfits_are_refused(tmp_path, cache_dir):
    import numpy as np

    from moviegen.safety.guard_head import fit_head, load_head, save_head
    from moviegen.safety.moderator import guard_head_for

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    x[:20, 0] += 2.0
    x[20:40, 1] += 2.0
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = ["hate"] * 20 + ["drugs"] * 20 + ["safe_generic"] * 20
    head = fit_head(x, labels, "test", min_similarity=0.1)
    assert not head.weight.flags["C_CONTIGUOUS"]  # scikit-learn's order: saved as it reads, not as laid out
    save_head(head, tmp_path / "h.safetensors")
    back = load_head(tmp_path / "h.safetensors")
    assert np.array_equal(back.weight, head.weight) and back.classes == ("drugs", "hate", "safe_generic")
    assert (back.min_similarity, back.neighbours, back.examples.shape) == (0.1, 3, (40, 8))
    assert back.unsafe_scores(x[:2]) == head.unsafe_scores(x[:2])
    # A head over several layers (texts, states, size) keeps the last state's examples for its reach.
    states = np.stack([np.roll(x, k, axis=1) for k in range(3)], axis=1)
    layered = fit_head(states, labels, "test", layers=(0, 2), min_similarity=0.1)
    assert layered.weight.shape == (3, 16) and layered.examples.shape == (40, 8)
    assert np.allclose(layered.examples.astype(np.float32), states[:40, -1], atol=1e-3)
    save_head(layered, tmp_path / "layered.safetensors")
    assert load_head(tmp_path / "layered.safetensors").unsafe_scores(states[:3]) == layered.unsafe_scores(states[:3])
    with pytest.raises(ValueError, match=r"reads hidden states \[0, 2\] but the encoder gives 1"):
        layered.unsafe_scores(x[:2])
    with pytest.raises(ValueError, match="8-d embeddings but the encoder gives 384-d"):
        back.probabilities(np.zeros((1, 384), dtype=np.float32))
    (tmp_path / "junk.safetensors").write_bytes(b"not a head")
    with pytest.raises(ValueError, match="is not a guard head"):
        load_head(tmp_path / "junk.safetensors")
    with pytest.raises(ModeratorError, match="without a head"):
        guard_head_for(ModeratorSettings(model=str(tmp_path), kind="embedding"), str(tmp_path), str(tmp_path))


def test_default_guard_end_to_end_catalog_gate_scores(catalog_file, tmp_path):
    from moviegen.run.plain import run_campaign_plain

    catalog = catalog_file([row("para", prompt=PARAPHRASE), row("ruled", prompt="a n-u-d-e model on a beach")])
    result = CliRunner().invoke(app, ["validate", str(catalog), "--json"])
    payload = json.loads(result.stdout)
    assert [(p["clip_id"], p["rule"]) for p in payload["problems"]] == [("para", "moderator"), ("ruled", "denied_term")]
    assert "'minilm-prompt-guard'" in payload["problems"][0]["message"]
    assert "categories: graphic_violence" in payload["problems"][0]["message"]
    assert (payload["moderator"]["kind"], payload["moderator"]["ran"], payload["moderator"]["rows"]) == (
        "embedding",
        True,
        1,
    )
    summary = run_campaign_plain(str(catalog), fast_settings(tmp_path / "out"))
    assert summary.exit_code == 1 and summary.published == []
    scores = {r["clip_id"]: json.loads(r["scores"]) for r in pq.read_table(tmp_path / "out" / "scores").to_pylist()}
    judged = scores["para"]["moderator"]
    assert (judged["model"], judged["kind"], judged["unsafe"], judged["categories"]) == (
        "minilm-prompt-guard",
        "embedding",
        True,
        ["graphic_violence"],
    )
    assert "nearness" in judged["output"] and "moderator" not in scores["ruled"]


def test_a_misfit_head_fails_closed(catalog_file, tmp_path):
    import numpy as np

    from moviegen.safety.guard_head import GuardHead, save_head

    classes = ("hate", "safe_generic")
    save_head(GuardHead(classes, np.zeros((2, 16), np.float32), np.zeros(2, np.float32)), tmp_path / "h.safetensors")
    config = write_config(tmp_path, model="minilm-prompt-guard", head=str(tmp_path / "h.safetensors"))
    result = CliRunner().invoke(app, ["validate", str(catalog_file([row("ok")])), "--config", str(config), "--json"])
    payload = json.loads(result.stdout)
    assert [p["rule"] for p in payload["problems"]] == ["moderator_unavailable"]
    assert "16-d embeddings" in payload["moderator"]["error"]


def training_script():
    """scripts/train_prompt_guard.py as a module (scripts/ is no package)."""
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "train_prompt_guard.py"
    spec = importlib.util.spec_from_file_location("train_prompt_guard", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_head_is_fitted_on_todays_dev_split_and_rules():
    from moviegen.safety.guard_head import BUILTIN_HEAD, load_head

    script = training_script()
    head = load_head(BUILTIN_HEAD)
    assert head.layers == script.DEFAULTS["layers"]
    # Editing the dev split or the default policy without refitting the head fails here.
    assert head.trained_on == script.fingerprint(script.dev_rows(), **script.DEFAULTS), (
        "the eval set or the default policy changed since the head was fitted: "
        "rerun .venv/bin/python scripts/train_prompt_guard.py"
    )


def test_the_training_script_fits_and_writes_a_head(tmp_path):
    import csv
    import subprocess
    import sys

    from moviegen.safety.guard_head import load_head

    script = training_script()
    rows, per_category = [], {}
    for r in script.dev_rows():  # the first 24 dev rows of each category
        if per_category.setdefault(r["category"], 0) < 24:
            per_category[r["category"]] += 1
            rows.append(r)
    small = tmp_path / "eval.csv"
    with small.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "category", "split"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "head.safetensors"
    options = ["--max-false-positives", "0.05", "--layers", "2,4,6"]
    command = [sys.executable, str(Path(script.__file__)), "--eval-set", str(small), "--out", str(out), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"dev rows {len(rows)}" in done.stdout and "sexual_minors" in done.stdout
    head = load_head(out)
    assert head.layers == (2, 4, 6) and head.examples.shape == (24 * 7, 384)
    assert head.trained_on == script.fingerprint(rows, 16.0, (2, 4, 6), 0.05)
    assert set(head.classes) == set(per_category)


@pytest.mark.parametrize(
    ("text", "excluded", "read"),
    [
        ("a beach volleyball match, no nudity", ["nudity"], "a beach volleyball match, "),
        ("a spooky tour, no blood or gore.", ["gore"], "a spooky tour, ."),
        ("a horror scene without nudity", ["nudity"], "a horror scene "),
        ("a zombie party, gore-free!", ["gore"], "a zombie party, !"),
        # Not at a clause's end: the words stay, so the moderator still reads them.
        ("a battle film, no gore held back", ["gore"], "a battle film, no gore held back"),
        ("a nudity scene", ["nudity"], "a nudity scene"),  # named, not excluded
    ],
)
def test_clause_final_exclusions_are_cut_from_the_moderators_text(text, excluded, read):
    from moviegen.safety.text import without_exclusions

    assert without_exclusions(text, excluded) == read


def test_the_default_gate_passes_copy_that_excludes_a_denied_term(cache_dir):
    from moviegen.safety import load_policy, prompt_gate
    from moviegen.safety.moderator import Moderation, moderated_text
    from moviegen.spec import ClipSpec

    texts = ["a beach volleyball match, no nudity", "a horror scene without nudity", "teen dancers, no lingerie"]
    specs = [ClipSpec(i, "c", f"x{i}", t, ("youtube",)) for i, t in enumerate(texts)]
    ruled = prompt_gate(load_policy()).check(specs)
    assert [v.scores["excluded"] for v in ruled[:2]] == [["nudity"], ["nudity"]]
    assert moderated_text(ruled[0]) == "a beach volleyball match, "
    # An encoder reads "without nudity" as nudity: the moderator, shown the whole text, blocks it.
    whole = load_moderator(ModeratorSettings(), cache_dir).judge(texts[:2])
    assert whole[1].unsafe and whole[1].categories == ("nudity",)
    moderation = Moderation(ModeratorSettings(), cache_dir)
    verdicts = moderation.review(ruled)
    assert moderation.ran and [v.passed for v in verdicts] == [True, True, False]
    # The zero-tolerance rule is never excused by a negation, whatever the moderator reads.
    assert [f.rule for f in verdicts[2].findings] == ["combination_sexual_minors"]
