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
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
os.environ.pop("PREFECT_API_URL", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["XDG_CACHE_HOME"] = str(_SESSION_DIR / "cache")
for name in [n for n in os.environ if n.startswith("MOVIEGEN_")]:
    del os.environ[name]

import pytest  # noqa: E402

from moviegen.catalog import write_catalog  # noqa: E402
from moviegen.config import GenerationSettings, Settings  # noqa: E402

# shared/ sits beside the repository (CI, /work/main) or further up (a worktree under /work/wt/).
SHARED = next((p / "shared" for p in Path(__file__).resolve().parents[1:] if (p / "shared").is_dir()), Path("shared"))
MOVIEGENBENCH = SHARED / "benchmarks" / "moviegenbench"


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


FAST_CONFIG = "generation:\n  steps: 2\n  batch_size: 4\n"


def fast_settings(out: Path, **overrides) -> Settings:
    """Settings for quick tests: the tiny model with 2 steps, output under ``out``."""
    return Settings(out=str(out), generation=GenerationSettings(steps=2), **overrides)


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
