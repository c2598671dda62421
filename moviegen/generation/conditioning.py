"""Conditioning inputs: a reference image (image-to-video) and a source clip (video-to-video).

Problem: a product shot or a phone clip comes at any size, aspect and frame rate, but a model
generates at its own size, rate and frame count.
Solution: the reference image is cropped to fill the generated size around its centre (never
stretched) and resized; the source clip is resampled to the model's rate, cropped and scaled the
same way, and cut (or its last frame held) to exactly the planned frame count, in one ffmpeg pass.
Both read only the local, checked copy that ``moviegen.assets.fetch_asset`` made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moviegen.media import run_ffmpeg


def load_reference_image(path: Path, size: tuple[int, int]):  # -> PIL.Image.Image
    """The reference image as RGB, cropped to ``size``'s aspect around the centre and resized to ``size``."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        return ImageOps.fit(image, size, method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def read_source_clip(path: Path, size: tuple[int, int], fps: float, frames: int) -> np.ndarray:
    """Decode the source clip as ``frames`` uint8 RGB frames (F, H, W, 3) at ``fps``, filling ``size``.

    A clip shorter than ``frames`` at that rate holds its last frame to the end.
    """
    width, height = size
    chain = ",".join(
        [
            f"fps={fps:g}",
            f"scale={width}:{height}:force_original_aspect_ratio=increase:flags=lanczos",
            f"crop={width}:{height}",
            "setsar=1",
            f"tpad=stop_mode=clone:stop={frames}",
        ]
    )
    raw = run_ffmpeg(
        ["-i", f"file:{path}", "-an", "-vf", chain, "-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "rgb24",
         "pipe:1"],
        what=f"reading the source clip {path.name}",
    )  # fmt: skip
    clip = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    if len(clip) != frames:
        raise ValueError(f"source clip {path.name} gave {len(clip)} frames, expected {frames}")
    return clip
