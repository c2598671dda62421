"""Shared test set-up: an isolated Prefect home, an offline hub, one tiny model per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before anything imports prefect or huggingface_hub: tests never touch the user's Prefect home,
# never reach the network, and share one tiny-model build per session.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="moviegen-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.pop("PREFECT_API_URL", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["XDG_CACHE_HOME"] = str(_SESSION_DIR / "cache")
os.environ["XDG_CONFIG_HOME"] = str(_SESSION_DIR / "config")  # the development signer goes here, not in ~/.config
for name in [n for n in os.environ if n.startswith("MOVIEGEN_")]:
    del os.environ[name]

import pytest  # noqa: E402

from moviegen.catalog.schema import write_catalog  # noqa: E402
from moviegen.config import GenerationSettings, Settings  # noqa: E402


def _find_moviegenbench() -> Path | None:
    """Movie Gen Bench lives in ``shared/`` beside the checkout (read there, never copied in)."""
    explicit = os.environ.get("MOVIEGENBENCH_DIR")
    if explicit:
        return Path(explicit)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "benchmarks" / "moviegenbench"
        if candidate.is_dir():
            return candidate
    return None


MOVIEGENBENCH = _find_moviegenbench()


@pytest.fixture(scope="session")
def moviegenbench() -> Path:
    """The Movie Gen Bench folder; tests that need it skip, saying why, on a machine without it."""
    if MOVIEGENBENCH is None:
        pytest.skip("Movie Gen Bench not found: set MOVIEGENBENCH_DIR or place shared/ beside the checkout")
    return MOVIEGENBENCH


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return _SESSION_DIR / "cache" / "moviegen"


@pytest.fixture(scope="session")
def tiny_model(cache_dir: Path) -> Path:
    """The tiny Wan pipeline, built and saved once per test session."""
    from moviegen.models.tiny import ensure_tiny_model

    return ensure_tiny_model(cache_dir)


@pytest.fixture(scope="session")
def prefect_api():
    """A real, temporary Prefect API (ephemeral server on a throw-away database)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# The tiny models' random weights make full-frame noise, which at small sizes can take 2-4 of the
# watermark's 32 bits with it; campaigns that test other features record the mark instead of refusing
# on it. The watermark and provenance tests set watermark_gate="required" (the product's default).
FAST_CONFIG = "generation:\n  steps: 2\n  batch_size: 4\nwatermark_gate: recorded\n"


def fast_settings(out: Path, **overrides) -> Settings:
    """Settings for quick tests: the tiny model with 2 steps, output under ``out``."""
    return Settings(out=str(out), generation=GenerationSettings(steps=2), **{"watermark_gate": "recorded", **overrides})


@pytest.fixture
def fast_config(tmp_path: Path) -> Path:
    """A YAML config file with the quick test settings, for flows and the CLI."""
    path = tmp_path / "moviegen.yaml"
    path.write_text(FAST_CONFIG)
    return path


def row(clip_id: str, **fields) -> dict:
    """A valid catalog row for tests; keyword arguments replace or add columns."""
    base = {
        "campaign_id": "test-camp",
        "clip_id": clip_id,
        "prompt": f"a slow pan over a colourful test scene number {clip_id}",
        "channels": ["youtube"],
        "duration_s": 1.0,
        "seed": 7,
    }
    base.update(fields)
    return base


@pytest.fixture
def catalog_file(tmp_path: Path):
    """Write catalog rows with the explicit schema; returns the path."""

    def write(rows: list[dict], name: str = "catalog.parquet") -> Path:
        path = tmp_path / name
        write_catalog(rows, str(path))
        return path

    return write


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> Path:
    """A real photograph (scikit-image's astronaut, 512x512) as a PNG: the reference image."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("inputs") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def real_clip(tmp_path_factory) -> Path:
    """A real clip: a 2 s camera pan across a photograph (scikit-image's coffee), H.264 MP4 at 30 fps."""
    import subprocess

    from PIL import Image
    from skimage import data

    from moviegen.media import ffmpeg_binary

    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(data.coffee()).save(folder / "coffee.png")  # 600x400
    path = folder / "pan.mp4"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-loop", "1", "-i", str(folder / "coffee.png"), "-vf",
         "crop=320:240:x='t*120':y=80,format=yuv420p", "-t", "2", "-r", "30", "-c:v", "libx264", str(path)],
        check=True,
    )  # fmt: skip
    return path


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--regenerate-golden", action="store_true", help="Rewrite tests/data/golden_keys.json (keys meant to change)."
    )
