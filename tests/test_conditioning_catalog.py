"""The new catalog columns: validation (row, column, what to do), planning, and the clip_key's inputs."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest
from conftest import fast_settings, row

from moviegen.catalog.check import validate_catalog
from moviegen.config import TINY_MODEL_ID
from moviegen.presets import channel_presets, styles
from moviegen.run.context import start_run
from moviegen.run.planning import plan_campaign
from moviegen.run.screening import load_and_validate


def check(rows):
    names = list(dict.fromkeys(k for r in rows for k in r))  # every row's columns (from_pylist reads the first's)
    table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
    return validate_catalog(table, channels=channel_presets(), styles=styles(), default_model=TINY_MODEL_ID)


def test_new_columns_become_spec_fields(photo, real_clip):
    result = check(
        [
            row("ref", reference_image=str(photo), best_of=3, audio_prompt="  waves and gulls "),
            row("edit", source_video=str(real_clip), edit_strength=0.4),
        ]
    )
    assert result.problems == []
    ref, edit = result.specs
    assert (ref.task, ref.reference_image, ref.best_of, ref.audio_prompt) == ("i2v", str(photo), 3, "waves and gulls")
    assert (edit.task, edit.source_video, edit.edit_strength, edit.best_of) == ("v2v", str(real_clip), 0.4, 1)


@pytest.mark.parametrize(
    ("fields", "column", "rule", "says"),
    [
        ({"reference_image": "shot.gif"}, "reference_image", "uri", "must end in .png"),
        ({"reference_image": "ftp://brand/shot.png"}, "reference_image", "uri", "scheme 'ftp' is not allowed"),
        ({"reference_image": "missing.png"}, "reference_image", "uri", "does not exist"),
        ({"source_video": "clip.m3u8"}, "source_video", "uri", "must end in .mp4"),
        ({"edit_strength": 0.5}, "edit_strength", "needs_source", "add one or remove it"),
        ({"edit_strength": 2.0}, "edit_strength", "range", "use 0.05 to 1"),
        ({"best_of": 9}, "best_of", "range", "use 1 to 8"),
        ({"best_of": 1.5}, "best_of", "type", "must be an integer"),
        ({"audio_prompt": "rain\x07"}, "audio_prompt", "control_chars", "remove them"),
    ],
)
def test_bad_values_name_the_row_column_and_fix(fields, column, rule, says):
    result = check([row("ok"), row("bad", **fields)])
    assert [s.clip_id for s in result.specs] == ["ok"]
    [problem] = result.problems
    assert (problem.row, problem.clip_id, problem.column, problem.rule) == (1, "bad", column, rule)
    assert says in problem.message


def test_one_task_per_row_on_a_model_that_runs_it(photo, real_clip):
    both = check([row("both", reference_image=str(photo), source_video=str(real_clip))])
    assert [(p.column, p.rule) for p in both.problems] == [("source_video", "conflict")]
    ltx_edit = check([row("ltx", model="tiny-ltx", source_video=str(real_clip))])
    [problem] = ltx_edit.problems
    assert (problem.column, problem.rule) == ("source_video", "unsupported_task")
    assert "cannot do video-to-video: use one of" in problem.message
    assert check([row("ltx", model="tiny-ltx", reference_image=str(photo))]).problems == []


def test_clip_key_includes_the_reference_inputs_content(tmp_path, photo, catalog_file, tiny_model):
    copy = tmp_path / "copy.png"
    shutil.copy(photo, copy)
    ctx = start_run(fast_settings(tmp_path / "out"))
    rows = [row("a", reference_image=str(photo)), row("b", reference_image=str(copy)), row("t2v")]
    plan = plan_campaign(load_and_validate(str(catalog_file(rows)), ctx).specs, ctx)
    a, b, t2v = (clip for clip, _ in plan.todo)
    assert a.model.info.name == "tiny-wan-i2v" and a.request.task == "i2v"
    assert a.request.identity()["reference_sha256"] == b.request.identity()["reference_sha256"]
    assert "reference_path" not in a.request.identity()  # where the copy is does not matter
    assert a.clip_key != t2v.clip_key
    # the plain text-to-video identity is unchanged (clip keys of earlier runs stay valid)
    assert set(t2v.request.identity()) == {"prompt", "negative_prompt", "seed", "width", "height", "num_frames",
                                           "steps", "guidance"}  # fmt: skip
    from PIL import Image

    Image.open(photo).rotate(90).save(copy)  # same path, new content: a new clip
    plan = plan_campaign(load_and_validate(str(catalog_file(rows)), ctx).specs, ctx)
    assert plan.todo[1][0].clip_key != b.clip_key


def test_a_reference_that_cannot_be_fetched_rejects_the_row_before_generation(tmp_path, catalog_file, tiny_model):
    import fsspec

    with fsspec.open("memory://brand/readme.txt", "w") as f:
        f.write("the product shot was never uploaded")
    rows = [row("ok"), row("gone", reference_image="memory://brand/shot.png")]
    ctx = start_run(fast_settings(tmp_path / "out"))
    plan = plan_campaign(load_and_validate(str(catalog_file(rows)), ctx).specs, ctx)
    assert [clip.spec.clip_id for clip, _ in plan.todo] == ["ok"]
    [problem] = plan.problems
    assert (problem.row, problem.column, problem.stage, problem.rule) == (1, "reference_image", "plan", "asset")
