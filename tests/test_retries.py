"""Fault injection: out-of-memory errors from the real pipeline, a failing ffmpeg, a flaky destination.

Faults are real where the machine allows: torch's own OutOfMemoryError raised from the tiny
pipeline's ``__call__``, a real ffmpeg behind a wrapper script that fails its first encode, and a
real fsspec filesystem (local files) that drops its first writes. Each is retried or falls back,
and what keeps failing is rejected with its stage and rule while the rest of the campaign goes on.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import ClassVar

import fsspec
import numpy as np
import pytest
import torch
from conftest import fast_settings, row
from fsspec.implementations.local import LocalFileSystem

from moviegen import media
from moviegen.generation.device import pick_device
from moviegen.generation.generate import generate_batch
from moviegen.generation.loading import PipelineCache
from moviegen.generation.resilient import generate_resilient
from moviegen.models.registry import resolve_model
from moviegen.reliability import is_out_of_memory, retry
from moviegen.spec import GenerationRequest
from moviegen.store import MANIFEST_SCHEMA, REJECTED_SCHEMA, OutputRoot

CPU = pick_device("cpu")


def requests(n: int) -> list[GenerationRequest]:
    return [GenerationRequest(f"a red kite number {i}", "", 10 + i, 96, 64, 9, 2, 5.0) for i in range(n)]


@pytest.fixture
def pipe(cache_dir, tiny_model):
    return PipelineCache().get(resolve_model("tiny-wan"), CPU, cache_dir)


def out_of_memory_when(monkeypatch, pipe, fails):
    """Make the pipeline raise torch.OutOfMemoryError whenever ``fails(prompts, call_number)`` says so."""
    cls, real_call, calls = type(pipe), type(pipe).__call__, []

    def call(self, *args, **kwargs):
        calls.append((list(kwargs["prompt"]), bool(getattr(self.vae, "use_tiling", False))))
        if fails(kwargs["prompt"], len(calls)):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", call)
    return calls


def test_out_of_memory_halves_the_batch_and_keeps_the_pixels(pipe, monkeypatch):
    batch = requests(4)
    expected = [c.frames for c in generate_batch(pipe, batch[:2], CPU) + generate_batch(pipe, batch[2:], CPU)]
    calls = out_of_memory_when(monkeypatch, pipe, lambda prompts, n: len(prompts) > 2)
    notes: list[str] = []
    clips = generate_resilient(pipe, batch, CPU, notes=notes)
    assert [len(p) for p, _ in calls] == [4, 2, 2]  # one failed call of 4, then two halves
    assert notes == ["out of memory with 4 clips in one call: split into 2 + 2"]
    assert all(np.array_equal(a.frames, b) for a, b in zip(clips, expected, strict=True))  # seeded per clip


def test_one_clip_out_of_memory_tries_vae_tiling_then_gives_up(pipe, monkeypatch):
    calls = out_of_memory_when(monkeypatch, pipe, lambda prompts, n: True)
    notes: list[str] = []
    [result] = generate_resilient(pipe, requests(1), CPU, notes=notes)
    assert isinstance(result, torch.OutOfMemoryError)  # returned in the clip's place: the caller rejects it
    # CPU offload applies to CUDA only, so on this machine VAE tiling is the one fall-back left.
    assert calls == [(["a red kite number 0"], False), (["a red kite number 0"], True)]
    assert notes == ["out of memory with one clip: VAE tiling (frames decoded in overlapping tiles)"]
    assert not pipe.vae.use_tiling  # only for that call: later clips keep the pixels their clip_key promises


def test_other_errors_are_not_retried_as_memory_errors(pipe, monkeypatch):
    calls = []
    real_call = type(pipe).__call__

    def broken(self, *args, **kwargs):
        calls.append(1)
        raise ValueError("bad shape")

    monkeypatch.setattr(type(pipe), "__call__", broken)
    with pytest.raises(ValueError):
        generate_resilient(pipe, requests(2), CPU)
    assert len(calls) == 1 and real_call is not broken
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_retry_gives_up_after_its_attempts():
    seen = []

    def flaky():
        seen.append(1)
        if len(seen) < 3:
            raise OSError("try again")
        return "done"

    assert retry(flaky, 3, (OSError,), "flaky step") == "done" and len(seen) == 3
    seen.clear()
    with pytest.raises(OSError):
        retry(flaky, 2, (OSError,), "flaky step")
    assert len(seen) == 2


# A flaky destination: a real local filesystem that drops writes ---------------------------------


class FlakyFileSystem(LocalFileSystem):
    """Local files behind a "network" that fails a write whenever ``fail(path)`` says so."""

    protocol = "flaky"
    root_marker = "/"
    failures: ClassVar[list[str]] = []
    fail = staticmethod(lambda path: False)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        return super()._strip_protocol(path[len("flaky://") :] if path.startswith("flaky://") else path)

    def _maybe_fail(self, path):
        if type(self).fail(str(path)):
            type(self).failures.append(str(path))
            raise ConnectionResetError(f"connection reset while writing {path}")

    def put_file(self, lpath, rpath, *args, **kwargs):
        self._maybe_fail(rpath)
        return super().put_file(lpath, rpath, *args, **kwargs)

    def _open(self, path, mode="rb", *args, **kwargs):
        if "w" in mode:
            self._maybe_fail(path)
        return super()._open(path, mode, *args, **kwargs)


@pytest.fixture
def flaky(monkeypatch):
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    FlakyFileSystem.clear_instance_cache()
    monkeypatch.setattr(FlakyFileSystem, "failures", [])
    return FlakyFileSystem


def test_a_dropped_write_is_retried_and_nothing_partial_stays(flaky, monkeypatch, tmp_path):
    firsts: set[str] = set()

    def first_try_of_each(path):  # the first write of every file fails
        name = path.rsplit("-", 1)[-1]
        if name in firsts:
            return False
        firsts.add(name)
        return True

    monkeypatch.setattr(flaky, "fail", staticmethod(first_try_of_each))
    out = OutputRoot(f"flaky://{tmp_path}/out", retry_delay_s=0.0)
    src = tmp_path / "v.mp4"
    src.write_bytes(b"video" * 1000)
    assert out.put_file(src, "published", "youtube", "c", "a.mp4") == "published/youtube/c/a.mp4"
    out.write_json({"a": 1}, "published", "youtube", "c", "a.json")
    assert len(flaky.failures) == 2  # each file's first write failed, the second went through
    assert (tmp_path / "out/published/youtube/c/a.mp4").read_bytes() == src.read_bytes()
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file() and ".tmp" in p.name] == []

    monkeypatch.setattr(flaky, "fail", staticmethod(lambda path: True))
    with pytest.raises(ConnectionResetError):
        out.put_file(src, "published", "youtube", "c", "b.mp4")
    assert not (tmp_path / "out/published/youtube/c/b.mp4").exists()
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file() and ".tmp" in p.name] == []


# One campaign meeting all three faults ----------------------------------------------------------


def failing_ffmpeg(tmp_path: Path, fail_encodes: int) -> Path:
    """A wrapper around the real ffmpeg that fails its first ``fail_encodes`` H.264 encodes."""
    from moviegen.media import ffmpeg_binary

    real = ffmpeg_binary()
    counter = tmp_path / "encodes"
    script = tmp_path / "ffmpeg"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *libx264*)\n'
        f'  echo x >> "{counter}"\n'
        f'  if [ "$(wc -l < "{counter}")" -le {fail_encodes} ]; then echo "injected encode failure" >&2; exit 1; fi;;\n'
        "esac\n"
        f'exec "{real}" "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


# The clip that never fits in memory (a scene: the default moderator read a bare "a heavy scene" as self-harm).
HEAVY = "a heavy freight train crossing a bridge at dusk"


@pytest.mark.slow
def test_campaign_survives_memory_encode_and_destination_faults(
    flaky, monkeypatch, request, tmp_path, catalog_file, tiny_model, cache_dir
):
    from moviegen.config import RetrySettings
    from moviegen.generation.loading import process_pipeline_cache
    from moviegen.run.plain import run_campaign_plain

    # 1. The clip "heavy" never fits in memory; every other call fails once before it fits.
    pipe = process_pipeline_cache().get(resolve_model("tiny-wan"), CPU, cache_dir)
    calls = out_of_memory_when(monkeypatch, pipe, lambda prompts, n: any("heavy" in p for p in prompts))
    # 2. The first encode fails (then the retry succeeds); 3. the first write of every video is dropped.
    monkeypatch.setenv("MOVIEGEN_FFMPEG", str(failing_ffmpeg(tmp_path, 1)))
    media.ffmpeg_binary.cache_clear()  # found once per process: look again, now, and after the test
    request.addfinalizer(media.ffmpeg_binary.cache_clear)
    tried: set[str] = set()

    def first_video_write(path):
        video = path.endswith(".mp4.tmp") and path.rsplit("-", 1)[-1] not in tried
        if video:
            tried.add(path.rsplit("-", 1)[-1])
        return video

    monkeypatch.setattr(flaky, "fail", staticmethod(first_video_write))
    catalog = catalog_file(
        [
            row("light", seed=1, channels=["mini"]),
            row("heavy", seed=2, channels=["mini"], prompt=HEAVY),
            row("other", seed=3, channels=["mini"]),
        ]
    )
    settings = fast_settings(
        f"flaky://{tmp_path}/out",
        work_dir=str(tmp_path / "work"),
        retries=RetrySettings(delay_s=0.0),
        render_workers=1,
        channels={"mini": {"label": "Mini", "width": 320, "height": 180, "fps": 15, "max_duration_s": 60}},
    )
    settings.generation.batch_size = 3
    summary = run_campaign_plain(str(catalog), settings)

    published = sorted(r["clip_id"] for r in summary.published)
    assert published == ["light", "other"]  # the rest of the campaign went on
    [problem] = summary.problems
    assert (problem.clip_id, problem.stage, problem.rule) == ("heavy", "generate", "out_of_memory")
    assert "OutOfMemoryError" in problem.message
    rejected = OutputRoot(str(tmp_path / "out")).read_rows("rejected", REJECTED_SCHEMA).to_pylist()
    assert [(r["clip_id"], r["stage"], r["rule"]) for r in rejected] == [("heavy", "generate", "out_of_memory")]
    # Fall-backs taken: the batch of 3 was split, then one clip at a time, then VAE tiling for "heavy";
    # "light" and "other" were generated once each (not again after "heavy" failed).
    assert [(p, tiled) for p, tiled in calls] == [
        (
            [
                "a slow pan over a colourful test scene number light",
                HEAVY,
                "a slow pan over a colourful test scene number other",
            ],
            False,
        ),
        (["a slow pan over a colourful test scene number light"], False),
        ([HEAVY, "a slow pan over a colourful test scene number other"], False),
        ([HEAVY], False),
        ([HEAVY], True),
        (["a slow pan over a colourful test scene number other"], False),
    ]
    assert {n.split(": ", 1)[1] for n in summary.fallbacks} >= {
        "out of memory with 3 clips in one call: split into 1 + 2",
        "out of memory with one clip: VAE tiling (frames decoded in overlapping tiles)",
    }
    assert not pipe.vae.use_tiling
    assert int((tmp_path / "encodes").read_text().count("x")) == 3  # one failed encode, retried; then one more
    assert len(flaky.failures) == 2  # each video's first write was dropped and retried
    manifest = OutputRoot(str(tmp_path / "out")).read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
    assert sorted(r["clip_id"] for r in manifest) == ["light", "other"]
    for entry in manifest:
        assert (tmp_path / "out" / entry["path"]).stat().st_size == entry["bytes"]
    assert os.listdir(tmp_path / "out" / ".staging") == []
