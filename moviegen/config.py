"""Run configuration: defaults < config file (YAML or TOML) < ``MOVIEGEN_*`` environment variables.

Nested keys use ``__`` in the environment, e.g. ``MOVIEGEN_GENERATION__BATCH_SIZE=2``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

TINY_MODEL_ID = "moviegen/tiny-wan"


def default_cache_dir() -> Path:
    """Where built models live (``$XDG_CACHE_HOME/moviegen``, else ``~/.cache/moviegen``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moviegen"


def default_config_dir() -> Path:
    """The user's moviegen configuration folder (``$XDG_CONFIG_HOME/moviegen``, else ``~/.config/moviegen``).

    The development signing certificate and key live here, in ``dev-signer/``.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "moviegen"


class GenerationSettings(BaseModel):
    """How clips are generated; per-row catalog columns override the model defaults."""

    model: str = Field(TINY_MODEL_ID, description="Default model: a registry name, hub id or local folder.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(4, ge=1, le=64, description="Most clips per pipeline call.")
    steps: int | None = Field(None, ge=1, le=200, description="Overrides the model's default steps.")
    allow_pickle: bool = Field(False, description="Allow non-safetensors weights (unsafe).")
    # GPU efficiency options (docs/README-issue9.md says when to use each). Each applies only where it
    # can: offload and torch.compile on CUDA; VAE tiling and the step cache on every device.
    offload: Literal["none", "model", "sequential", "group"] = Field(
        "none",
        description="CUDA memory: model = whole models move to the GPU in turn; sequential = layer by layer "
        "(slowest, least memory); group = layers in groups with prefetching (near model speed, little memory).",
    )
    vae_tiling: bool = Field(False, description="Decode (and encode) frames in overlapping tiles: less memory, 720p+.")
    compile: bool = Field(False, description="torch.compile the transformer's repeated blocks (CUDA only).")
    cache: Literal["none", "first_block"] = Field(
        "none", description="Reuse transformer outputs across denoising steps (First Block Cache): faster, approximate."
    )
    cache_threshold: float = Field(
        0.05, gt=0.0, le=1.0, description="First Block Cache: how much the first block may change before recomputing."
    )


class AudioSettings(BaseModel):
    """Soundtracks generated from a row's ``audio_prompt`` (text-to-audio with a diffusers pipeline)."""

    model: str = Field("tiny-stable-audio", description="Registry name, hub id or local folder of the audio model.")
    steps: int | None = Field(None, ge=1, le=500, description="Overrides the audio model's default steps.")
    guidance: float | None = Field(None, ge=0.0, le=30.0, description="Overrides the audio model's guidance scale.")


class AdherenceSettings(BaseModel):
    """Prompt adherence: CLIP image-text similarity of sampled frames, recorded per clip in ``scores/``."""

    model: str | None = Field(
        None,
        description="CLIP model (registry name, hub id such as openai/clip-vit-base-patch32, or a local folder); "
        "none: clips are not scored and best_of is refused.",
    )
    frames: int = Field(8, ge=1, le=64, description="Frames sampled evenly from each clip.")
    min_score: float | None = Field(
        None, ge=0.0, le=100.0, description="Hold back clips whose best CLIP score is lower (none: record only)."
    )


LabelPosition = Literal["top_left", "top_right", "bottom_left", "bottom_right", "top", "bottom"]


class LabelSettings(BaseModel):
    """The visible "AI-generated" mark drawn into every rendition (sizes are fractions of the frame's short side)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    text: str = Field("AI-generated", min_length=1, max_length=48, description="What the mark says.")
    position: LabelPosition = "top_left"
    size: float = Field(0.035, ge=0.01, le=0.2, description="Text height / the frame's short side.")
    margin: float = Field(0.04, ge=0.0, le=0.3, description="Distance from the edges / the frame's short side.")
    color: str = Field("white", pattern=r"^[A-Za-z]+(@[01](\.\d+)?)?$|^#[0-9A-Fa-f]{6}(@[01](\.\d+)?)?$")
    box_color: str = Field("black@0.5", pattern=r"^[A-Za-z]+(@[01](\.\d+)?)?$|^#[0-9A-Fa-f]{6}(@[01](\.\d+)?)?$")

    @field_validator("text")
    @classmethod
    def _printable(cls, text: str) -> str:
        if not text.isprintable() or text != text.strip():
            raise ValueError("label text must be one line of printable characters without leading/trailing spaces")
        return text


class ChannelProvenance(BaseModel):
    """Per-channel disclosure: which platform's flags the sidecar carries, and label overrides."""

    model_config = ConfigDict(extra="forbid")

    platform: str | None = Field(None, description="A platform in moviegen/data/disclosure.yaml (youtube, tiktok...).")
    label: dict[str, Any] = Field(default_factory=dict, description="Overrides of provenance.label for this channel.")

    @field_validator("platform")
    @classmethod
    def _known_platform(cls, platform: str | None) -> str | None:
        from moviegen.provenance.disclosure import platforms  # late: that module imports this one

        if platform is not None and platform not in platforms():
            raise ValueError(f"unknown platform {platform!r}; use one of {', '.join(sorted(platforms()))}")
        return platform

    @field_validator("label")
    @classmethod
    def _valid_label(cls, label: dict[str, Any]) -> dict[str, Any]:
        LabelSettings(**label)  # same keys and limits as provenance.label
        return label


class ProvenanceSettings(BaseModel):
    """Content Credentials (C2PA) signing, IPTC label metadata, the visible label and disclosure flags.

    Without ``cert_chain``/``private_key`` a development certificate is generated on first use in
    ``dev_signer_dir``; production configures its own chain and key (for example through
    ``MOVIEGEN_PROVENANCE__CERT_CHAIN`` and ``MOVIEGEN_PROVENANCE__PRIVATE_KEY``). The key is only
    ever held as a path or a secret string, never printed.
    """

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    cert_chain: Path | None = Field(None, description="PEM certificate chain, signing certificate first.")
    private_key: Path | None = Field(None, description="PEM private key file of the signing certificate.")
    private_key_pem: SecretStr | None = Field(None, description="The PEM key itself (e.g. from a CI secret).")
    private_key_password: SecretStr | None = Field(None, description="Password of an encrypted PEM key.")
    timestamp_url: str | None = Field(None, description="RFC 3161 time-stamp authority URL (none: no time-stamp).")
    trust_anchors: list[Path] = Field(
        default_factory=list, description="PEM files of root certificates that make credentials Trusted."
    )
    require_trusted: bool = Field(False, description="Delivery gate wants Trusted, not only Valid, credentials.")
    allow_dev_signer: bool = Field(True, description="Sign with the development certificate when none is set.")
    dev_signer_dir: Path = Field(default_factory=lambda: default_config_dir() / "dev-signer")
    description: str = Field(
        "AI-generated video made with {generator} from the model {model}.",
        max_length=500,
        description="XMP description; {generator}, {model}, {campaign_id}, {clip_id} and {channel} are filled in.",
    )
    label: LabelSettings = Field(default_factory=LabelSettings)
    channels: dict[str, ChannelProvenance] = Field(default_factory=dict, description="Per-channel disclosure, by name.")


class SafetySettings(BaseModel):
    """Which safety policy files apply (see moviegen/data/policy.yaml for what a policy holds)."""

    policy: str = Field("default", description="Policy file for every campaign; 'default' is the built-in one.")
    campaign_policies: dict[str, str] = Field(
        default_factory=dict, description="Policy file per campaign_id (a brand's own rules), overriding `policy`."
    )


class RetrySettings(BaseModel):
    """Transient failures: how often each step is tried, and which fall-backs are allowed."""

    model_config = ConfigDict(extra="forbid")

    write_attempts: int = Field(
        3, ge=1, le=10, description="Tries per write to the output root (flaky shares, buckets)."
    )
    encode_attempts: int = Field(
        2, ge=1, le=5, description="Tries per rendition encode (ffmpeg) before it is rejected."
    )
    delay_s: float = Field(0.5, ge=0.0, le=60.0, description="Wait before a second try; doubled for each further one.")
    oom_fallback: bool = Field(
        True, description="Out of memory: halve the batch, then CPU offload (CUDA), then VAE tiling, before rejecting."
    )
    stale_temp_s: float = Field(
        21600, ge=0.0, description="Temporary files of another machine's run older than this are removed as leftovers."
    )


class Settings(BaseSettings):
    """Everything a run can be configured with."""

    # hide_input_in_errors: a validation error never echoes a value (it could be a key or a token).
    model_config = SettingsConfigDict(
        env_prefix="MOVIEGEN_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        hide_input_in_errors=True,
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
    provenance: ProvenanceSettings = Field(default_factory=ProvenanceSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    audio: AudioSettings = Field(default_factory=AudioSettings)
    adherence: AdherenceSettings = Field(default_factory=AdherenceSettings)
    retries: RetrySettings = Field(default_factory=RetrySettings)

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
