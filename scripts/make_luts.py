"""Regenerate the 3D LUTs shipped in ``moviegen/data/luts``: ``python scripts/make_luts.py``.

Each look is a small colour formula written out as a 17-point .cube file (the Adobe/Resolve
format ffmpeg's lut3d reads), so the files can be checked against their source here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 17
LUMA = np.array([0.2126, 0.7152, 0.0722])


def teal_orange(rgb: np.ndarray) -> np.ndarray:
    """Blockbuster look: teal shadows, orange highlights and skin, a gentle S-curve."""
    luma = rgb @ LUMA
    shadows, highlights = (1 - luma) ** 2, luma**2
    teal, orange = np.array([-0.10, 0.02, 0.08]), np.array([0.08, 0.02, -0.08])
    out = rgb + shadows[..., None] * teal + highlights[..., None] * orange
    return 0.5 + (out - 0.5) * 1.08 - 0.04 * np.sin(2 * np.pi * (out - 0.5))


def film_fade(rgb: np.ndarray) -> np.ndarray:
    """Faded print: lifted blacks, soft whites, muted colour with a warm middle."""
    luma = (rgb @ LUMA)[..., None]
    muted = luma + (rgb - luma) * 0.8
    warm = muted + np.array([0.03, 0.01, -0.02]) * (1 - np.abs(2 * luma - 1))
    return 0.06 + warm * 0.88


def sepia(rgb: np.ndarray) -> np.ndarray:
    """Old photograph: the classic sepia matrix."""
    matrix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])
    return rgb @ matrix.T


LOOKS = {"teal_orange": teal_orange, "film_fade": film_fade, "sepia": sepia}


def write_cube(name: str, look, path: Path) -> None:
    steps = np.linspace(0.0, 1.0, SIZE)
    # .cube order: red changes fastest, then green, then blue.
    b, g, r = np.meshgrid(steps, steps, steps, indexing="ij")
    rgb = np.stack([r, g, b], axis=-1).reshape(-1, 3)
    out = np.clip(look(rgb), 0.0, 1.0)
    lines = [f'TITLE "{name}"', f"LUT_3D_SIZE {SIZE}", "DOMAIN_MIN 0 0 0", "DOMAIN_MAX 1 1 1"]
    lines += [f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in out]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def main() -> None:
    folder = Path(__file__).resolve().parents[1] / "moviegen" / "data" / "luts"
    folder.mkdir(parents=True, exist_ok=True)
    for name, look in LOOKS.items():
        write_cube(name, look, folder / f"{name}.cube")
        print(f"wrote {folder / name}.cube")


if __name__ == "__main__":
    main()
