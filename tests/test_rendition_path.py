"""One rendition's whole path on real files: label, watermark, encode, XMP, C2PA, delivery gate, publish.

A photograph panned into a 16 fps master stands in for a generated clip (no model needed), and a
small 9:16 channel keeps every encode and watermark read quick. The gate is tested on final files
made the way the pipeline makes them, then broken the way they break in practice: a watermark lost
in a re-encode from the unmarked master, credentials never signed or invalidated by a later edit,
label metadata never written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from skimage import data as photos
from test_watermark import panned_clip

from moviegen.config import GenerationSettings, ProvenanceSettings, Settings
from moviegen.media import write_master
from moviegen.models.registry import resolve_model
from moviegen.provenance import (
    NO_CREDENTIALS,
    add_provenance,
    ensure_dev_signer,
    provenance_facts,
    read_credentials,
    read_label_metadata,
    sign_credentials,
    write_label_metadata,
)
from moviegen.provenance.delivery import gate_rendition
from moviegen.records import Master
from moviegen.render.encode import render_rendition
from moviegen.run.context import start_run
from moviegen.run.planning import plan_rendition
from moviegen.run.renditions import delivery_problems, render_and_publish
from moviegen.spec import ClipPlan, ClipSpec, GenerationRequest
from moviegen.store import MANIFEST_SCHEMA, OutputRoot, sha256_file
from moviegen.watermark.marking import BATCH_FRAMES, WatermarkProcessor, plan_watermark
from moviegen.watermark.model import default_watermarker
from moviegen.watermark.payload import MIN_BIT_ACCURACY, WATERMARK_VERSION, payload_bits, payload_for
from moviegen.watermark.readback import verify_video

MASTER_SIZE = (640, 360)  # 16:9, like the models' landscape masters
# Real channels: the mark is embedded at a working size derived from the frame's own size, so
# its robustness is a property of the delivered size (tiny test channels would behave otherwise),
# and the model costs the same per frame at any size. tiktok: a 9:16 crop, the mark goes into the
# rendition's frames; youtube: a scale-up of the whole 16:9 master, the mark goes into the master.
PHONE, WIDE = "tiktok", "youtube"


@pytest.fixture(scope="module")
def master_file(tmp_path_factory) -> Path:
    """16 frames at 16 fps panned over a photograph, written as the pipeline's lossless master."""
    frames = panned_clip(photos.astronaut(), 16, *MASTER_SIZE)
    return write_master(frames, 16, tmp_path_factory.mktemp("master") / "master.mkv")


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    out = tmp_path_factory.mktemp("out")
    return Settings(out=str(out), generation=GenerationSettings(steps=2))


def clip_plan(channels: tuple[str, ...], style: str = "none", **spec_fields) -> ClipPlan:
    spec = ClipSpec(
        row=0,
        campaign_id="launch",
        clip_id="astronaut",
        prompt="a slow pan over an astronaut portrait",
        channels=channels,
        duration_s=0.5,
        style=style,
        **spec_fields,
    )
    width, height = MASTER_SIZE
    request = GenerationRequest(
        spec.prompt, "", seed=1, width=width, height=height, num_frames=16, steps=2, guidance=5.0
    )
    return ClipPlan(spec=spec, model=resolve_model("tiny-wan"), model_revision="rev", request=request, fps=16)


@pytest.fixture(scope="module")
def finals(master_file: Path, settings: Settings, tmp_path_factory) -> dict[str, Path]:
    """The phone rendition rendered the pipeline's way (label, watermark, one encode) and without the mark."""
    ctx = start_run(settings)
    clip = clip_plan((PHONE,), caption="One small step")
    planned = plan_rendition(clip, PHONE, ctx)
    folder = tmp_path_factory.mktemp("finals")
    marked, stripped = folder / "marked.mp4", folder / "stripped.mp4"
    processor = WatermarkProcessor(planned.mark.payload)
    render_rendition(master_file, planned.spec, marked, processor=processor, batch_frames=BATCH_FRAMES)
    # Stripped: the same rendition re-encoded from the unmarked master, as a pirate copy would be.
    render_rendition(master_file, planned.spec, stripped)
    return {"marked": marked, "stripped": stripped, "clip": clip, "planned": planned, "ctx": ctx}


def with_provenance(settings: Settings, **provenance) -> Settings:
    values = {**settings.provenance.model_dump(), **provenance}
    return settings.model_copy(update={"provenance": ProvenanceSettings.model_validate(values)})


def final_copy(finals: dict, name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.mp4"
    shutil.copy(finals[name], path)
    return path


def gate(finals: dict, path: Path, provenance: ProvenanceSettings):
    planned = finals["planned"]
    return gate_rendition(path, planned.spec.preset, planned.spec.duration_s, planned.mark.payload, provenance)


# The processor ---------------------------------------------------------------------------------


def test_processor_embeds_each_run_of_identical_frames_once():
    rng = np.random.default_rng(3)
    a, b, c = (rng.integers(0, 256, (144, 256, 3), dtype=np.uint8) for _ in range(3))
    payload = payload_for("clip", PHONE)
    processor = WatermarkProcessor(payload)
    first = processor(np.stack([a, a, b, b, b]))
    second = processor(np.stack([b, c]))  # b repeats across the batch boundary
    assert (processor.embedded, processor.reused) == (3, 4)
    assert np.array_equal(first[0], first[1]) and np.array_equal(first[2], first[4])
    assert np.array_equal(second[0], first[4])
    # Reusing a marked frame gives exactly what embedding the distinct frames does.
    assert np.array_equal(first[[0, 2]], default_watermarker().embed(np.stack([a, b]), payload))
    assert not np.array_equal(first[0], a)


def test_placement_master_only_for_pure_scaling_with_an_untouched_look(settings):
    ctx = start_run(settings)
    wide = plan_rendition(clip_plan((WIDE,)), WIDE, ctx)
    assert wide.mark.placement == "master"
    assert wide.mark.payload == payload_for(clip_plan((WIDE,)).clip_key, "master")
    # A crop to another aspect anywhere in the row, or a grade after the mark: each rendition is marked.
    assert plan_rendition(clip_plan((WIDE, PHONE)), WIDE, ctx).mark.placement == "rendition"
    mono_clip = clip_plan((WIDE,), style="mono")
    mono = plan_rendition(mono_clip, WIDE, ctx)
    assert mono.mark.placement == "rendition"
    assert mono.mark.payload == payload_for(mono_clip.clip_key, WIDE)
    # Placement and payload are part of the rendition key.
    assert wide.key != mono.key
    same = plan_watermark("k", WIDE, MASTER_SIZE, [wide.spec])
    assert same.processor_key.startswith(WATERMARK_VERSION) and same.processor_key.endswith(same.payload_hex)


def test_label_is_the_last_layer_and_in_the_key(settings):
    ctx = start_run(settings)
    planned = plan_rendition(clip_plan((PHONE,), caption="Hello"), PHONE, ctx)
    assert [layer.text for layer in planned.spec.text_layers()] == ["Hello", "AI-generated"]
    unlabelled = with_provenance(settings, channels={PHONE: {"label": {"enabled": False}}})
    other = plan_rendition(clip_plan((PHONE,), caption="Hello"), PHONE, start_run(unlabelled))
    assert [layer.text for layer in other.spec.text_layers()] == ["Hello"]
    assert other.key != planned.key


# The delivery gate on final files ----------------------------------------------------------------


def test_gate_passes_the_pipelines_final_file(finals, tmp_path):
    video = final_copy(finals, "marked", tmp_path)
    facts = provenance_facts(finals["clip"], PHONE, finals["planned"].mark.payload_hex)
    add_provenance(video, facts, finals["ctx"].settings.provenance, finals["ctx"].signer)
    verdict = gate(finals, video, finals["ctx"].settings.provenance)
    assert verdict.ok, [f.message for f in verdict.failures]
    assert verdict.watermark.bit_accuracy >= MIN_BIT_ACCURACY
    assert verdict.provenance.credentials["state"] == "Valid"


def test_gate_refuses_a_stripped_watermark(finals, tmp_path):
    video = final_copy(finals, "stripped", tmp_path)
    facts = provenance_facts(finals["clip"], PHONE, finals["planned"].mark.payload_hex)
    add_provenance(video, facts, finals["ctx"].settings.provenance, finals["ctx"].signer)
    verdict = gate(finals, video, finals["ctx"].settings.provenance)
    [failure] = verdict.failures  # preset and provenance are fine: only the mark is missing
    assert failure.rule == "watermark" and "NOT verified" in failure.message
    assert failure.details["bit_accuracy"] < MIN_BIT_ACCURACY
    # watermark_gate "recorded" (synthetic test content only): still read back, never refusing.
    planned = finals["planned"]
    recorded = gate_rendition(
        video, planned.spec.preset, planned.spec.duration_s, planned.mark.payload, finals["ctx"].settings.provenance,
        watermark_required=False,
    )  # fmt: skip
    assert recorded.ok and not recorded.watermark.passed
    assert recorded.watermark.bit_accuracy == pytest.approx(failure.details["bit_accuracy"], abs=1e-4)


def test_gate_refuses_missing_or_broken_credentials(finals, tmp_path):
    provenance = finals["ctx"].settings.provenance
    facts = provenance_facts(finals["clip"], PHONE, finals["planned"].mark.payload_hex)
    unsigned = final_copy(finals, "marked", tmp_path)
    write_label_metadata(unsigned, facts, provenance)  # signing skipped
    [failure] = gate(finals, unsigned, provenance).failures
    assert (failure.rule, failure.details["c2pa_state"]) == ("provenance", NO_CREDENTIALS)
    assert "no C2PA Content Credentials" in failure.message

    tampered = final_copy(finals, "marked", tmp_path)
    add_provenance(tampered, facts, provenance, finals["ctx"].signer)
    write_label_metadata(tampered, replace(facts, model="another-model"), provenance)  # an edit after signing
    [failure] = gate(finals, tampered, provenance).failures
    assert (failure.rule, failure.details["c2pa_state"]) == ("provenance", "Invalid")


def test_gate_refuses_a_file_without_label_metadata(finals, tmp_path):
    provenance = finals["ctx"].settings.provenance
    video = final_copy(finals, "marked", tmp_path)
    facts = provenance_facts(finals["clip"], PHONE, finals["planned"].mark.payload_hex)
    sign_credentials(video, facts, provenance, finals["ctx"].signer)  # XMP never written
    assert read_credentials(video, provenance)["state"] == "Valid"
    [failure] = gate(finals, video, provenance).failures
    assert failure.rule == "provenance" and "XMP" in failure.message
    assert read_label_metadata(video)["digital_source_type"] is None


def test_refusals_become_delivery_problems_naming_the_rule(finals, tmp_path):
    """What render_and_publish records for each refused final file: stage delivery, the failed check as rule."""
    provenance, clip = finals["ctx"].settings.provenance, finals["clip"]
    facts = provenance_facts(clip, PHONE, finals["planned"].mark.payload_hex)
    stripped = final_copy(finals, "stripped", tmp_path / "stripped")
    add_provenance(stripped, facts, provenance, finals["ctx"].signer)
    unlabelled = final_copy(finals, "marked", tmp_path / "unlabelled")
    sign_credentials(unlabelled, facts, provenance, finals["ctx"].signer)
    unsigned = final_copy(finals, "marked", tmp_path / "unsigned")
    write_label_metadata(unsigned, facts, provenance)
    found = {
        name: [(p.stage, p.rule, p.message, p.details["channel"]) for p in delivery_problems(clip, PHONE, verdict)]
        for name, verdict in (
            ("stripped", gate(finals, stripped, provenance)),
            ("unlabelled", gate(finals, unlabelled, provenance)),
            ("unsigned", gate(finals, unsigned, provenance)),
        )
    }
    [(stage, rule, message, channel)] = found["stripped"]
    assert (stage, rule, channel) == ("delivery", "watermark", PHONE) and "NOT verified" in message
    [(stage, rule, message, _)] = found["unlabelled"]
    assert (stage, rule) == ("delivery", "provenance") and "trainedAlgorithmicMedia" in message
    [(stage, rule, message, _)] = found["unsigned"]
    assert (stage, rule) == ("delivery", "provenance") and "no C2PA Content Credentials" in message


# The stage function -----------------------------------------------------------------------------


@pytest.mark.parametrize("channel", [PHONE, WIDE])
def test_render_and_publish_publishes_a_signed_marked_labelled_file(channel, master_file, settings):
    ctx = start_run(settings)
    clip = clip_plan((channel,))
    result = render_and_publish(Master(clip, master_file), channel, ctx)
    assert result.problems == [] and result.row is not None
    row = result.row
    video = Path(ctx.out.root) / row["path"]
    assert row["sha256"] == sha256_file(video)  # the final, signed file
    assert (row["c2pa_state"], row["label"]) == ("Valid", "AI-generated")
    assert verify_video(video, int(row["watermark_payload"], 16)).verified
    assert row["watermark_bit_accuracy"] >= MIN_BIT_ACCURACY
    assert set(result.seconds) == {"render", "watermark", "provenance", "delivery", "publish"}
    assert row["watermark_passes"] == 1
    sidecar = json.loads(video.with_suffix(".json").read_text())
    assert sidecar["disclosure"]["ai_generated"] is True and sidecar["disclosure"]["content_credentials"] is True
    assert sidecar["watermark_payload"] == row["watermark_payload"]
    manifest = OutputRoot(ctx.out.url).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
    assert row["rendition_key"] in {r["rendition_key"] for r in manifest}


def test_a_second_pass_strengthens_the_mark():
    frames = panned_clip(photos.coffee(), 4, 256, 144)
    payload = payload_for("clip", PHONE)
    marker = default_watermarker()
    once = WatermarkProcessor(payload)(frames.copy())
    twice = WatermarkProcessor(payload, passes=2)(frames.copy())
    signs = payload_bits(payload).astype(np.float32) * 2 - 1

    def weakest(marked: np.ndarray) -> float:  # the worst bit's mean logit, towards its expected value
        return float((marker.read_frames(marked, payload).logits.mean(axis=0) * signs).min())

    assert weakest(twice) > weakest(once)
    with pytest.raises(ValueError, match="passes"):
        WatermarkProcessor(payload, passes=0)


def test_a_signing_failure_is_a_provenance_problem_and_nothing_is_published(master_file, settings, tmp_path):
    broken = with_provenance(settings, description="{prompt}").model_copy(update={"out": str(tmp_path / "out")})
    ctx = start_run(broken)
    result = render_and_publish(Master(clip_plan((PHONE,)), master_file), PHONE, ctx)
    [problem] = result.problems
    assert (problem.stage, problem.rule, problem.details["channel"]) == ("provenance", "error", PHONE)
    assert "provenance.description" in problem.message
    assert result.row is None and not (tmp_path / "out" / "published").exists()


def test_credentials_not_trusted_by_the_required_anchors_are_refused_at_delivery(master_file, settings, tmp_path):
    """require_trusted with another organisation's root: signed and Valid, but refused, and nothing published."""
    foreign_root = ensure_dev_signer(tmp_path / "other-signer") / "cert.pem"
    strict = with_provenance(settings, require_trusted=True, trust_anchors=[foreign_root]).model_copy(
        update={"out": str(tmp_path / "out")}
    )
    ctx = start_run(strict)
    result = render_and_publish(Master(clip_plan((PHONE,)), master_file), PHONE, ctx)
    [problem] = result.problems
    assert (problem.stage, problem.rule, problem.details["c2pa_state"]) == ("delivery", "provenance", "Valid")
    assert "not Trusted" in problem.message and "provenance.trust_anchors" in problem.message
    assert result.row is None and not (tmp_path / "out" / "published").exists()
