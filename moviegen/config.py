"""Run configuration: defaults < config file (YAML or TOML) < ``MOVIEGEN_*`` environment variables.

Nested keys use ``__`` in the environment, e.g. ``MOVIEGEN_GENERATION__BATCH_SIZE=2``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

TINY_MODEL_ID = "moviegen/tiny-wan"


def default_cache_dir() -> Path:
    """Where built models and the development signer live (``$MOVIEGEN_CACHE_DIR`` or XDG cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moviegen"


class GenerationSettings(BaseModel):
    """How clips are generated; per-row catalog columns override the model defaults."""

    model: str = Field(TINY_MODEL_ID, description="Default model: a registry name, hub id or local folder.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(4, ge=1, le=64, description="Most clips per pipeline call.")
    steps: int | None = Field(None, ge=1, le=200, description="Overrides the model's default steps.")
    allow_pickle: bool = Field(False, description="Allow non-safetensors weights (unsafe).")


class SafetySettings(BaseModel):
    """Which safety policy files apply (see moviegen/data/policy.yaml for what a policy holds)."""

    policy: str = Field("default", description="Policy file for every campaign; 'default' is the built-in one.")
    campaign_policies: dict[str, str] = Field(
        default_factory=dict, description="Policy file per campaign_id (a brand's own rules), overriding `policy`."
    )


class Settings(BaseSettings):
    """Everything a run can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="MOVIEGEN_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    out: str = Field("out", description="Output root: a local folder or any fsspec URL.")
    work_dir: str | None = Field(None, description="Local scratch for masters; default <out>/.work for local outputs.")
    cache_dir: Path = Field(default_factory=default_cache_dir)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    render_workers: int = Field(2, ge=1, le=16, description="Renditions encoded at once.")
    preview: bool = Field(
        False, description="Quick drafts: a quarter of the steps, written under <out>/preview instead of <out>."
    )
    channels: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Extra or overridden channel presets, by name."
    )
    styles: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Extra named styles.")
    safety: SafetySettings = Field(default_factory=SafetySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the config file, which is passed in as init values.
        return env_settings, init_settings


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and what to do."""


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read settings from an optional YAML/TOML file, ``MOVIEGEN_*`` variables and explicit overrides.

    ``MOVIEGEN_CONFIG`` names the file when ``config_file`` is not given. Explicit overrides (for
    example the CLI's ``--out``) win over everything else.
    """
    config_file = config_file or os.environ.get("MOVIEGEN_CONFIG")
    values: dict[str, Any] = {}
    if config_file:
        values = _read_config_file(Path(config_file))
    try:
        settings = Settings(**values)
        if overrides:
            settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
            Settings.model_validate(settings.model_dump())
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        source = f" in {config_file}" if config_file else ""
        raise ConfigError(f"invalid configuration{source}:\n" + "\n".join(lines)) from None
    return settings


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass an existing YAML or TOML file")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data
