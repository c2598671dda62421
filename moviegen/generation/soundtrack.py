"""Soundtracks: text-to-audio from a row's ``audio_prompt``, made into the clip's music bed.

Problem: a marketing clip needs sound that fits it, and a brand's music bed (``music_uri``) is not
always there or not enough on its own.
Solution: a diffusers text-to-audio pipeline (Stable Audio's layout: T5 text encoder, DiT, Oobleck
VAE) generates a soundtrack per clip at the clip's length, in the generate stage, written as a WAV
beside the master. The render takes it as the clip's music bed, so the renditions' sound rules
apply unchanged: trimmed (or looped) to the rendition, faded out, -14 LUFS, true peak -1.5 dB.
With both an audio prompt and a music bed, the two are brought to the same loudness and mixed
(``compose_bed``), and the mix is what the render normalises. Decision: mix rather than choose,
since an audio prompt usually describes ambience or effects ("waves, gulls") that sit under music.

    audio_prompt -> AudioRequest (prompt, seed, seconds, steps, guidance, model@revision)
      -> generate_soundtracks (batched per length) -> soundtracks/<sound_key>.wav
      -> compose_bed (+ music_uri at equal loudness) -> RenditionSpec.music -> render (-14 LUFS)
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moviegen.assets import Asset, fetch_asset
from moviegen.generation.device import Device, device_lock
from moviegen.generation.loading import from_pretrained, loaded_models, location_revision
from moviegen.media import run_ffmpeg
from moviegen.models.locations import resolve_location
from moviegen.models.tiny import TINY_PREFIX, local_location
from moviegen.spec import stable_hash


@dataclass(frozen=True)
class AudioModelInfo:
    """A text-to-audio model and its defaults."""

    name: str
    source: str  # hub id, or moviegen/tiny-... for a locally built one
    steps: int
    guidance: float
    notes: str = ""
    pipeline_class: str = "StableAudioPipeline"


AUDIO_MODELS: dict[str, AudioModelInfo] = {
    m.name: m
    for m in [
        AudioModelInfo(
            "tiny-stable-audio",
            "moviegen/tiny-stable-audio",
            steps=8,
            guidance=7.0,
            notes="Random weights, built offline: noise with the real shapes (44.1 kHz stereo, up to about 6 s).",
        ),
        AudioModelInfo(
            "stable-audio-open-1.0",
            "stabilityai/stable-audio-open-1.0",
            steps=100,
            guidance=7.0,
            notes="44.1 kHz stereo sound effects and music, up to 47 s; gated on the hub (accept its licence first).",
        ),
    ]
}


class AudioModelError(ValueError):
    """The audio model setting names nothing loadable."""


def resolve_audio_model(value: str) -> tuple[str, AudioModelInfo]:
    """(location for from_pretrained or a tiny id, defaults) for an ``audio.model`` value."""
    location = resolve_location(
        value,
        {info.name: info.source for info in AUDIO_MODELS.values()},
        what="audio model",
        holds="a StableAudioPipeline",
        error=AudioModelError,
        hub_id_allowed=lambda hub_id: "audio" in hub_id.lower(),  # a video model's id is a mistake, not a guess
    )
    known = next((info for info in AUDIO_MODELS.values() if info.source == location), None)
    if known is not None:
        return location, known
    defaults = AUDIO_MODELS["stable-audio-open-1.0"]
    return location, AudioModelInfo(**{**asdict(defaults), "name": value.strip(), "source": value.strip()})


@dataclass(frozen=True)
class AudioRequest:
    """Everything a generated soundtrack depends on; its ``key`` names the WAV."""

    prompt: str
    seed: int
    seconds: float
    steps: int
    guidance: float
    model: str  # location (hub id, folder, or tiny id)
    revision: str

    @property
    def key(self) -> str:
        return stable_hash({"v": 1, **asdict(self)})


def audio_request(
    prompt: str, seed: int, seconds: float, settings: Any, cache_dir: Path, revisions: dict[str, str] | None = None
) -> AudioRequest:
    """The soundtrack request for a row (``settings`` is Settings.audio)."""
    source, info = resolve_audio_model(settings.model)
    revisions = {} if revisions is None else revisions
    if source not in revisions:
        revisions[source] = location_revision(local_location(source, cache_dir))
    return AudioRequest(
        prompt=prompt,
        seed=seed,
        seconds=round(float(seconds), 3),
        steps=settings.steps or info.steps,
        guidance=settings.guidance if settings.guidance is not None else info.guidance,
        model=source,
        revision=revisions[source],
    )


def soundtrack_path(work_dir: Path, request: AudioRequest) -> Path:
    return work_dir / "soundtracks" / f"{request.key}.wav"


def load_audio_pipeline(source: str, device: Device, cache_dir: Path, allow_pickle: bool = False) -> Any:
    """The audio pipeline for ``source``, loaded once per process and device."""

    def load() -> Any:
        _, info = resolve_audio_model(source)
        location = local_location(source, cache_dir)
        pipe = from_pretrained(
            info.pipeline_class, source, location, device, allow_pickle, tiny=source.startswith(TINY_PREFIX)
        )
        return pipe.to(device.name)

    return loaded_models().get(("audio", source, device.name, device.dtype_name), load)


def max_seconds(pipe: Any) -> float:
    """The longest audio one call of this pipeline makes."""
    return pipe.transformer.config.sample_size * pipe.vae.hop_length / pipe.vae.config.sampling_rate


def generate_soundtracks(
    requests: list[AudioRequest], work_dir: Path, device: Device, cache_dir: Path, allow_pickle: bool = False
) -> dict[str, Path]:
    """Generate the WAVs that are not on disk yet (batched per model, length, steps and guidance); key -> path.

    A request longer than the model can make in one call gets the model's longest; the render
    loops the bed to the rendition's length.
    """
    import torch

    paths = {r.key: soundtrack_path(work_dir, r) for r in requests}
    groups: dict[tuple[Any, ...], list[AudioRequest]] = defaultdict(list)
    for r in {r.key: r for r in requests}.values():
        if not paths[r.key].is_file():
            groups[(r.model, r.seconds, r.steps, r.guidance)].append(r)
    for (model, seconds, steps, guidance), group in groups.items():
        pipe = load_audio_pipeline(model, device, cache_dir, allow_pickle)
        length = min(seconds, max_seconds(pipe))
        generator_device = "cpu" if device.name == "mps" else device.name
        with device_lock(device), torch.inference_mode(), warnings.catch_warnings():
            # torchsde's Brownian interval complains about float rounding at the schedule's ends: harmless.
            warnings.filterwarnings("ignore", message="Should have t", category=UserWarning)
            out = pipe(
                prompt=[r.prompt for r in group],
                audio_end_in_s=length,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=[torch.Generator(generator_device).manual_seed(r.seed) for r in group],
                output_type="np",
            )
        rate = int(pipe.vae.config.sampling_rate)
        for r, audio in zip(group, np.asarray(out.audios, dtype=np.float32), strict=True):
            write_wav(audio, rate, paths[r.key])
    return paths


def write_wav(audio: np.ndarray, rate: int, path: Path) -> Path:
    """Write (channels, samples) float audio as 16-bit PCM WAV; atomic. Non-finite samples become silence."""
    audio = np.nan_to_num(np.asarray(audio, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if audio.ndim == 1:
        audio = audio[None]
    channels = audio.shape[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.{threading.get_ident()}.wav")
    try:
        run_ffmpeg(
            ["-f", "f32le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0", "-c:a", "pcm_s16le", "-f", "wav",
             str(tmp)],
            input_bytes=np.ascontiguousarray(np.clip(audio, -1.0, 1.0).T).tobytes(),
            what="writing a soundtrack",
        )  # fmt: skip
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# Same loudness for both parts of a mixed bed; the render then brings the mix to the channel's target.
MIX_LOUDNESS_LUFS = -20.0


def compose_bed(generated: Path, music: Asset | None, seconds: float, asset_dir: Path) -> Asset:
    """The clip's music bed: the generated soundtrack, or it mixed with the row's music at equal loudness.

    Returned as a checked asset (content-addressed copy) that the render uses like any ``music_uri``.
    """
    if music is None:
        return fetch_asset(str(generated), "music", asset_dir)
    digest = hashlib.sha256(f"{generated.name}|{music.sha256}|{seconds:.3f}|v1".encode()).hexdigest()[:24]
    out = asset_dir / "beds" / f"bed-{digest}.wav"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.{threading.get_ident()}.wav")
        norm = f"loudnorm=I={MIX_LOUDNESS_LUFS:g}:TP=-2:LRA=11,aresample=48000,aformat=channel_layouts=stereo"
        graph = (
            f"[0:a]{norm}[g];[1:a]{norm}[m];"
            f"[g][m]amix=inputs=2:duration=shortest:normalize=0,atrim=end={seconds:.6f}[out]"
        )
        try:
            run_ffmpeg(
                # Both loop: a soundtrack shorter than the clip (the model's longest) repeats like a music bed.
                ["-stream_loop", "-1", "-i", f"file:{generated}", "-stream_loop", "-1", "-f",
                 music.input_format or "wav", "-i",
                 music.ffmpeg_url, "-filter_complex", graph, "-map", "[out]", "-c:a", "pcm_s16le", "-f", "wav",
                 str(tmp)],
                what="mixing the soundtrack with the music bed",
            )  # fmt: skip
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return fetch_asset(str(out), "music", asset_dir)
