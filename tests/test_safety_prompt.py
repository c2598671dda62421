"""The prompt gate: evasions are caught, benign look-alikes pass, every block says why."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import row
from typer.testing import CliRunner

from flows.cli import app
from moviegen.catalog.check import validate_catalog
from moviegen.presets import channel_presets, styles
from moviegen.safety import PolicyError, load_policies, load_policy, prompt_gate, screen_catalog
from moviegen.safety.text import TermIndex, find_pii, variants
from moviegen.spec import ClipSpec

REPO = Path(__file__).resolve().parents[1]


def spec(prompt: str, **fields) -> ClipSpec:
    return ClipSpec(row=0, campaign_id="c", clip_id="x", prompt=prompt, channels=("youtube",), **fields)


@pytest.fixture(scope="module")
def gate():
    return prompt_gate(load_policy())


def blocked(gate, text: str, **fields) -> list[tuple[str, str]]:
    """(rule, what matched) for each reason the default policy blocks a prompt."""
    verdict = gate.check([spec(text, **fields)])[0]
    return [
        (f.rule, f.details.get("term") or f.details.get("name") or f.details.get("kind") or "")
        for f in verdict.findings
    ]


# Each evasion of a denied term, protected name or classifier-flagged text, and what it must read as.
EVASIONS = [
    ("a N.u.d.e woman on a beach", "nude"),
    ("a nüde woman on a beach", "nude"),
    ("a NUD3 model on a beach", "nude"),
    ("a n u d e figure on a beach", "nude"),
    ("a nu-de statue in a park", "nude"),
    ("a nuuuude man in a park", "nude"),
    ("a ｎｕｄｅ (fullwidth) figure", "nude"),
    ("a nudе figure with a Cyrillic e", "nude"),
    ("a nu\u200bde figure with a zero-width space", "nude"),
    ("a n a k e d man walking", "naked"),
    ("the p0rn set of a film", "porn"),
    ("a s3x tape scene", "sex tape"),
    ("a $ex tape scene", "sex tape"),
    ("ch1ld p0rn on a screen", "child porn"),
    ("self-harm tips on a poster", "self harm"),
    ("a ki11 yourself sign", "kill yourself"),
    ("a f.u.c.k sign on a wall", "fuck"),
    ("a deep-fake of someone", "deep fake"),
    ("B E H E A D I N G scene", "beheading"),
    ("Obama giving a speech", "Obama"),
    ("TaylorSwift on stage", "Taylor Swift"),
    ("Joe   Biden waving", "Joe Biden"),
    ("P u t i n at a desk", "Putin"),
    ("#t4ylor sw1ft singing", "Taylor Swift"),
]


@pytest.mark.parametrize(("text", "reads_as"), EVASIONS)
def test_evasions_are_caught(gate, text, reads_as):
    hits = blocked(gate, text)
    assert any(what == reads_as for _, what in hits), hits


# Benign words that contain a denied term, or look like PII, and must pass.
BENIGN = [
    "Scunthorpe United fans cheer in the stand",
    "1960s London street with mod fashion and scooters",  # a decade, not a house number
    "an assistant carries coffee through the office",
    "a therapist's office with soft light",
    "spices on a wooden table, top view",
    "a Sussex cottage in the rain",
    "a cocktail glass on a bar",
    "a classic pen is on the desk",
    "shiitake mushrooms sizzling in a pan",
    "hello! what a view over the bay",
    "the trump card lands on the table",
    "a musk ox grazing on the tundra",
    "a drake swims in the pond",
    "a snowball fight in the park",
    "10 ducks cross the road at dawn",
    "a montage of 1920 1930 1940 fashion",
    "shot on 35mm film, 4K, 24fps",
    "the buttress of a gothic cathedral",
    "a pedestrian crossing a busy street",
    "a cat sits.It looks up at the moon",
    "three screens at 1280 720 1080 lines",
    "version 2.5.1 of the app on a phone",
]


@pytest.mark.parametrize("text", BENIGN)
def test_benign_lookalikes_pass(gate, text):
    assert blocked(gate, text) == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("contact jane.doe@example.com for details", "email"),
        ("mail jane (at) example (dot) com", "email"),
        ("call 555-123-4567 today", "phone"),
        ("call +44 20 7946 0958 today", "phone"),
        ("call (555) 123 4567 today", "phone"),
        ("call 020 7946 0958 today", "phone"),
        ("order at example.de/shop today", "url"),
        ("a house at 221B Baker Street, London", "street_address"),
        ("a parade on 1600 Pennsylvania Avenue", "street_address"),
        ("visit www.example.org for more", "url"),
        ("see https://example.net/deal now", "url"),
        ("see shop.example.com/deal now", "url"),
    ],
)
def test_pii_is_found(text, kind):
    assert [hit.kind for hit in find_pii(text)] == [kind]


def test_allowed_domains_are_not_pii():
    assert find_pii("shop at www.example.com or help@example.com", allowed_domains=["example.com"]) == []
    assert [h.kind for h in find_pii("shop at www.other.com", allowed_domains=["example.com"])] == ["url"]


def test_variants_undo_separators_and_leetspeak():
    assert ["nude"] in variants("N.u.d.e")
    assert ["a", "naked", "man"] in variants("a n a k e d man")
    assert ["kill"] in variants("KI11")


def test_term_index_matches_whole_words_plurals_and_phrases():
    index = TermIndex({"x": ["ass", "spic", "self harm"]})
    assert [h.term for h in index.find("asses and more")] == ["ass"]
    assert index.find("an assistant passes the class") == []
    assert index.find("spices") == []
    assert [h.term for h in index.find("SELFHARM")] == ["self harm"]


def test_classifier_blocks_offensive_text_and_keeps_scores(gate):
    verdict = gate.check([spec("you are all idiots, this product sucks")])[0]
    assert [f.rule for f in verdict.findings] == ["classifier"]
    assert verdict.scores["classifier"]["prompt"] >= 0.9
    benign = gate.check([spec("a slow pan over a mountain lake at sunrise")])[0]
    assert benign.passed and benign.scores["classifier"]["prompt"] < 0.5


def test_caption_and_hashtags_are_checked_but_negative_prompt_is_not(gate):
    verdict = gate.check([spec("a beach at sunset", caption="call 555-123-4567", hashtags=("nsfw",))])[0]
    assert {(f.field, f.rule) for f in verdict.findings} == {("caption", "pii_phone"), ("hashtags", "denied_term")}
    # Asking the model to stay away from a concept is what a negative prompt is for.
    assert gate.check([spec("a beach at sunset", negative_prompt="nudity, gore, text")])[0].passed


def test_negative_prompt_is_checked_when_guidance_would_pull_towards_it(gate):
    verdict = gate.check([spec("a beach at sunset", negative_prompt="nudity, gore", guidance=0.5)])[0]
    assert {(f.field, f.rule) for f in verdict.findings} == {("negative_prompt", "denied_term")}


def test_length_limits(gate):
    assert blocked(gate, "sunset") == [("too_short", "")]
    assert blocked(gate, "a beach " * 200) == [("too_long", "")]
    verdict = gate.check([spec("a beach at sunset", caption="y" * 501)])[0]
    assert [(f.field, f.rule) for f in verdict.findings] == [("caption", "too_long")]


def test_one_problem_per_field_and_rule_with_row_column_and_fix(gate):
    problems = gate.check([spec("a nude and naked model, porn")])[0].problems()
    assert len(problems) == 1
    p = problems[0]
    assert (p.row, p.clip_id, p.column, p.stage, p.rule) == (0, "x", "prompt", "prompt", "denied_term")
    assert "remove it or rephrase" in p.message and "sexual" in p.message
    assert p.details["also"] == ["naked", "porn"] and p.details["policy"] == "default"


def test_brand_policy_extends_the_default(tmp_path):
    brand = load_policy(REPO / "catalogs" / "brand-policy.example.yaml")
    default = load_policy()
    assert brand.prompt.denied_terms == default.prompt.denied_terms
    assert "Nike" in brand.prompt.protected_names["brands"] and "Obama" in brand.prompt.protected_names["real_people"]
    assert brand.prompt.limits["prompt"] == default.prompt.limits["prompt"]
    gate = prompt_gate(brand)
    verdict = gate.check([spec("a runner in n1ke shoes", caption="new drop at www.example.com")])[0]
    assert [(f.field, f.rule) for f in verdict.findings] == [("prompt", "protected_name")]
    assert load_policy(REPO / "catalogs" / "policy.yaml").digest == load_policy().digest


def test_bad_policies_say_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: default\nname: bad\nprompt:\n  pii: [email, passport]\n")
    with pytest.raises(PolicyError, match=r"prompt\.pii.*passport"):
        load_policy(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\nname: loop\n")
    with pytest.raises(PolicyError, match="extends itself"):
        load_policy(loop)
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "missing.yaml")


def validation_of(rows: list[dict]):
    return validate_catalog(
        pa.Table.from_pylist(rows), channels=channel_presets(), styles=styles(), default_model="tiny-wan"
    )


def test_screen_catalog_uses_each_campaigns_policy(tmp_path):
    strict = tmp_path / "strict.yaml"
    strict.write_text("extends: default\nname: strict\nprompt:\n  protected_names:\n    brands: [Acme]\n")
    policies = load_policies("default", {"camp-b": str(strict)})
    rows = [
        row("a1", campaign_id="camp-a", prompt="an Acme rocket on a launch pad"),
        row("b1", campaign_id="camp-b", prompt="an Acme rocket on a launch pad"),
        row("b2", campaign_id="camp-b", prompt="a quiet forest at dawn"),
        row("bad", campaign_id="camp-b", prompt="a n.a.k.e.d runner"),
    ]
    screening = screen_catalog(validation_of(rows), policies)
    assert [s.clip_id for s in screening.validation.specs] == ["a1", "b2"]
    assert [(p.clip_id, p.stage, p.rule) for p in screening.validation.problems] == [
        ("b1", "prompt", "protected_name"),
        ("bad", "prompt", "denied_term"),
    ]
    assert len(screening.verdicts) == 4 and all("classifier" in v.scores for v in screening.verdicts)


def test_validate_cli_runs_the_prompt_gate(catalog_file):
    path = catalog_file(
        [row("ok"), row("pii", caption="write to jane@example.com"), row("name", prompt="Elon Musk on Mars")]
    )
    result = CliRunner().invoke(app, ["validate", str(path), "--json"])
    assert result.exit_code == 1, result.output
    payload = json.loads(result.stdout)
    assert (payload["rows"], payload["valid"]) == (3, 1)
    assert [(p["row"], p["clip_id"], p["column"], p["stage"], p["rule"]) for p in payload["problems"]] == [
        (1, "pii", "caption", "prompt", "pii_email"),
        (2, "name", "prompt", "prompt", "protected_name"),
    ]
    assert all(p["message"] for p in payload["problems"])
    text = CliRunner().invoke(app, ["validate", str(path)])
    assert "prompt" in text.output and "row 2, clip_id name, column prompt" in text.output


def test_validate_cli_rejects_a_bad_policy_with_exit_2(catalog_file, tmp_path, monkeypatch):
    monkeypatch.setenv("MOVIEGEN_SAFETY__POLICY", str(tmp_path / "missing.yaml"))
    result = CliRunner().invoke(app, ["validate", str(catalog_file([row("ok")]))])
    assert result.exit_code == 2 and "does not exist" in " ".join(result.output.split())


# The default configuration's verdicts on Movie Gen Bench (the policy's rules, then the default
# moderator): every prompt there is benign, so each block is a false positive. At most 5 are
# allowed; each one listed here is explained in docs/safety.md. The rules alone block none.
EXPLAINED_BENCH_BLOCKS: dict[int, str] = {
    29: "moderator: a long close-up of a grey-haired man deep in thought reads as self_harm (0.59)",
    385: "moderator: 'people relaxing at beach, then a shark jumps out of the water' reads as self_harm",
    858: "moderator: a 19th century scuba diver running down a busy street reads as graphic_violence",
    859: "moderator: a flying monster spewing fire that engulfs buildings reads as graphic_violence",
    877: "moderator: 'macro shot of a man stuck inside a lightbulb' reads as graphic_violence",
}


def test_movie_gen_bench_false_positives_are_few_and_explained(gate, moviegenbench, cache_dir):
    from moviegen.config import ModeratorSettings
    from moviegen.safety.moderator import Moderation

    prompts = (moviegenbench / "MovieGenVideoBench.txt").read_text(encoding="utf-8").splitlines()
    specs = [
        ClipSpec(row=i, campaign_id="bench", clip_id=f"p{i}", prompt=p.strip(), channels=("youtube",))
        for i, p in enumerate(prompts)
        if p.strip()
    ]
    assert len(specs) == 1003
    ruled = gate.check(specs)
    assert all(v.passed for v in ruled)
    moderation = Moderation(ModeratorSettings(), cache_dir)
    verdicts = moderation.review(ruled)
    assert moderation.ran, moderation.error
    blocked_rows = {v.spec.row: [f.rule for f in v.findings] for v in verdicts if not v.passed}
    assert len(blocked_rows) <= 5
    assert set(blocked_rows) == set(EXPLAINED_BENCH_BLOCKS), blocked_rows
    assert all(rules == ["moderator"] for rules in blocked_rows.values())
