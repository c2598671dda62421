"""Run configuration: defaults < config file (YAML or TOML) < ``MOVIEGEN_*`` environment variables.

Nested keys use ``__`` in the environment, e.g. ``MOVIEGEN_GENERATION__BATCH_SIZE=2``.

Over 500 lines on purpose: every setting, its default, its limits and its validation in one module,
which is what a user reads to configure a run.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from moviegen.layout import LabelPosition
from moviegen.netguard import HostPolicy

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


CacheName = Literal["none", "first_block", "mag", "taylorseer", "faster"]
MIN_LORA_SCALE, MAX_LORA_SCALE = -4.0, 4.0  # for generation.loras and the catalog's loras column


class LoraSettings(BaseModel):
    """One LoRA adapter: a safetensors file (any URI the input policy allows) and how strongly it applies."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, description="The adapter's .safetensors file (path or URI).")
    scale: float = Field(
        1.0, ge=MIN_LORA_SCALE, le=MAX_LORA_SCALE, description="How strongly the adapter applies (1.0: as trained)."
    )


class GenerationSettings(BaseModel):
    """How clips are generated; per-row catalog columns override the model defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(TINY_MODEL_ID, description="Default model: a registry name, hub id or local folder.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=64)] = Field(
        "auto",
        description="Most clips per pipeline call. auto: one on a GPU for full-size models (batching buys no "
        "throughput there and costs its memory), 4 for the tiny built-in models (faster on a CPU).",
    )
    deterministic: bool = Field(
        False,
        description="Bit-identical reruns: one clip per call and deterministic algorithms (on CUDA a clip's "
        "pixels otherwise depend slightly on the batch it ran in). Costs the batching speed-up.",
    )
    steps: int | None = Field(None, ge=1, le=200, description="Overrides the model's default steps.")
    allow_pickle: bool = Field(False, description="Allow non-safetensors weights (unsafe).")
    loras: list[LoraSettings] = Field(
        default_factory=list, description="LoRA adapters applied to every clip (a row's `loras` come after these)."
    )
    # GPU efficiency options (docs/models.md says when to use each). Each applies only where it
    # can: offload, torch.compile and float8 on CUDA; VAE tiling and the step caches on every device.
    offload: Literal["none", "model", "sequential", "group"] = Field(
        "none",
        description="CUDA memory: model = whole models move to the GPU in turn; sequential = layer by layer "
        "(slowest, least memory); group = layers in groups with prefetching (near model speed, little memory).",
    )
    vae_tiling: bool = Field(False, description="Decode (and encode) frames in overlapping tiles: less memory, 720p+.")
    compile: bool = Field(False, description="torch.compile the transformer's repeated blocks (CUDA only).")
    attention_backend: str | None = Field(
        None,
        description="diffusers' attention backend for the transformer (none: let PyTorch choose, which picked "
        "cuDNN attention on an H200 and was the fastest measured there).",
    )
    cache: CacheName = Field(
        "none",
        description="Reuse transformer outputs across denoising steps (faster, approximate): first_block "
        "(First Block Cache), mag (MagCache), taylorseer (TaylorSeer), faster (FasterCache).",
    )
    cache_threshold: float = Field(
        0.05, gt=0.0, le=1.0, description="first_block and mag: how much may change before recomputing."
    )
    cache_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Further settings of the chosen cache, by diffusers' names (e.g. taylorseer: cache_interval).",
    )
    quantize: Literal["none", "float8"] = Field(
        "none", description="float8: the transformer's weights in float8 through torchao (CUDA, optional extra)."
    )

    @field_validator("attention_backend")
    @classmethod
    def _known_backend(cls, backend: str | None) -> str | None:
        if backend is None:
            return None
        from diffusers.models.attention_dispatch import AttentionBackendName  # late: diffusers is heavy

        names = [b.value for b in AttentionBackendName]
        if backend not in names:
            raise ValueError(f"unknown attention backend {backend!r}; diffusers has {', '.join(names)}")
        return backend

    @model_validator(mode="after")
    def _cache_options_known(self) -> GenerationSettings:
        from moviegen.step_caches import cache_config  # late: it imports diffusers

        if self.cache_options and self.cache == "none":
            raise ValueError("cache_options is set but cache is none: choose a cache (first_block, mag, ...)")
        if self.cache != "none":
            cache_config(self.cache, self.cache_threshold, self.cache_options, steps=self.steps or 50)
        return self


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
        known = disclosure_data()["platforms"]
        if platform is not None and platform not in known:
            raise ValueError(f"unknown platform {platform!r}; use one of {', '.join(sorted(known))}")
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


# Llama Guard 3's hazard categories (its own output names them S1..S14).
LLAMA_GUARD_CATEGORIES = {
    "S1": "violent crimes",
    "S2": "non-violent crimes",
    "S3": "sex-related crimes",
    "S4": "child sexual exploitation",
    "S5": "defamation",
    "S6": "specialized advice",
    "S7": "privacy",
    "S8": "intellectual property",
    "S9": "indiscriminate weapons",
    "S10": "hate",
    "S11": "suicide and self-harm",
    "S12": "sexual content",
    "S13": "elections",
    "S14": "code interpreter abuse",
}
SHIELD_POLICY = (
    '"No Dangerous, Sexual, Hateful or Violent Content": the text shall not describe sexual content, '
    "minors in a sexual or revealing way, graphic or mass violence, self-harm, hate towards a group of "
    "people, or illegal drug use."
)


# The kind of each registry guard that is not generative, so that naming the model is enough.
MODERATOR_KINDS = {"minilm-prompt-guard": "embedding", "tiny-shieldgemma": "classifier", "shieldgemma-2b": "classifier"}


class ModeratorSettings(BaseModel):
    """A model-based second opinion in the prompt gate (off when ``model`` is empty).

    ``generative`` guards (Llama Guard style) write "safe" or "unsafe" and their category codes; the
    score is the probability of "unsafe" as the first verdict token. ``classifier`` guards
    (ShieldGemma style) answer Yes or No to whether the text breaks ``policy``; the score is the
    probability of Yes. ``embedding`` guards (the default ``minilm-prompt-guard``) score a sentence
    embedding with a linear head; the score is the probability of the unsafe categories. A row
    whose score reaches ``threshold`` is blocked.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        "minilm-prompt-guard",
        description="Registry name (minilm-prompt-guard, llama-guard-3-1b, ...), hub id or local folder; "
        "empty or null: no moderator.",
    )
    kind: Literal["generative", "classifier", "embedding"] = Field(
        "generative", description="How the model gives its verdict (a registry guard's own kind when not set)."
    )
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="Score at or above which a row is blocked.")
    head: str | None = Field(
        None, description="An embedding guard's head (safetensors); default: the folder's own or the built-in one."
    )
    on_error: Literal["block", "allow"] = Field(
        "block", description="When the model cannot load or fails: block every row (fail closed) or allow them."
    )
    categories: dict[str, str] = Field(
        default_factory=lambda: dict(LLAMA_GUARD_CATEGORIES),
        description="A generative guard's category codes and what they mean.",
    )
    policy: str = Field(SHIELD_POLICY, description="The policy a classifier guard is asked about.")
    max_new_tokens: int = Field(12, ge=1, le=64, description="Tokens a generative guard may write.")
    batch_size: int = Field(8, ge=1, description="Rows per model call.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    dtype: str = Field("auto", description="auto, float32, bfloat16 or float16.")
    allow_pickle: bool = Field(False, description="Allow pickle weights in a local folder (they can run code).")

    @model_validator(mode="after")
    def _registry_kind(self) -> ModeratorSettings:
        if "kind" not in self.model_fields_set and self.model in MODERATOR_KINDS:
            self.kind = MODERATOR_KINDS[self.model]  # type: ignore[assignment]
        return self


class SafetySettings(BaseModel):
    """Which safety policy files apply (see moviegen/data/policy.yaml for what a policy holds)."""

    policy: str = Field("default", description="Policy file for every campaign; 'default' is the built-in one.")
    campaign_policies: dict[str, str] = Field(
        default_factory=dict, description="Policy file per campaign_id (a brand's own rules), overriding `policy`."
    )
    moderator: ModeratorSettings = Field(
        default_factory=ModeratorSettings, description="A model-based second opinion in the prompt gate."
    )


# Schemes a catalog row's files (logo_uri, music_uri, lut, reference_image, source_video) may use by
# default; moviegen fetches them itself through fsspec (memory:// holds in-process test files).
DEFAULT_INPUT_SCHEMES = ("file", "http", "https", "s3", "gs", "gcs", "az", "abfs", "abfss", "memory")


class InputSettings(BaseModel):
    """Where a catalog row may pull files from: logo_uri, music_uri, lut, reference_image and source_video.

    A local path (or ``file://``) counts as the ``file`` scheme. With ``allowed_folders`` set, a
    local file must resolve (symlinks and ``..`` followed) inside one of them; unset, any readable
    local file may be named, which suits a laptop but not a shared server.
    """

    model_config = ConfigDict(extra="forbid")

    allowed_schemes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_INPUT_SCHEMES),
        description="URI schemes rows may use; 'file' covers local paths. Remove 'file' to refuse local files.",
    )
    allowed_folders: list[Path] | None = Field(
        None, description="Local folders rows may read from (none: anywhere the process can read)."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Non-public http(s) hosts rows may fetch from (names, addresses, CIDR ranges); public hosts "
        "always may. Loopback, private, link-local, unique-local, multicast and unspecified addresses are refused.",
    )

    @field_validator("allowed_schemes")
    @classmethod
    def _known_schemes(cls, schemes: list[str]) -> list[str]:
        lowered = [s.strip().lower() for s in schemes]
        bad = [s for s in lowered if not s.isascii() or not s.replace("+", "").isalnum()]
        if bad:
            raise ValueError(f"not a URI scheme: {', '.join(map(repr, bad))} (write e.g. https or s3)")
        return lowered

    @field_validator("allowed_hosts")
    @classmethod
    def _host_entries(cls, hosts: list[str]) -> list[str]:
        HostPolicy.parse(hosts)  # raises ValueError naming the bad entry
        return hosts


class ScaleOutSettings(BaseModel):
    """The distributed executor (``--executor deployments``): where shards run and how failures are handled."""

    model_config = ConfigDict(extra="forbid")

    deployment: str = Field("render-shard/render-shard", description="The render-shard deployment: flow/deployment.")
    work_pool: str = Field("gpu", description="The GPU work pool; its online workers decide the shard count.")
    shards: int | None = Field(
        None, ge=1, le=4096, description="Shards per run; default one per online worker of work_pool."
    )
    shard_retries: int = Field(1, ge=0, le=10, description="Times a shard that fails or crashes is started again.")
    shard_timeout_s: float | None = Field(
        None, gt=0, description="A shard not finished this long after it was started is cancelled and retried."
    )
    poll_s: float = Field(2.0, gt=0, le=60, description="Seconds between checks of the shards' states.")


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


class ReviewSettings(BaseModel):
    """Brand or legal review before publishing: which campaigns' renditions wait under review/ for approval."""

    model_config = ConfigDict(extra="forbid")

    required: bool = Field(False, description="Every campaign's renditions wait for approval under <out>/review.")
    campaigns: dict[str, bool] = Field(
        default_factory=dict, description="Per campaign_id: true or false, over `required` for that campaign."
    )

    def required_for(self, campaign_id: str) -> bool:
        """Whether ``campaign_id``'s renditions go to review instead of straight to published/."""
        return self.campaigns.get(campaign_id, self.required)


WEBHOOK_EVENTS = ("pending_review", "published", "rejected", "retired")
WebhookEvent = Literal["pending_review", "published", "rejected", "retired"]


class WebhookSettings(BaseModel):
    """One receiver of rendition events (a DAM, a social scheduler, a chat bridge): see moviegen/publish/webhooks.py.

    The URL is the operator's own configuration (it may hold a token, as Slack's do): it is
    redacted wherever it is shown and not held to the row inputs' host policy.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="A slug naming the receiver; part of every Idempotency-Key.")
    url: SecretStr = Field(..., description="http(s) URL each event is POSTed to.")
    secret_env: str | None = Field(
        None, description="Environment variable holding the HMAC secret for X-Moviegen-Signature (none: unsigned)."
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS), description="Which events to send (default: all)."
    )
    channels: list[str] | None = Field(None, description="Only renditions for these channels (none: every channel).")
    attempts: int = Field(5, ge=1, le=20, description="Tries per event on connection errors, timeouts and 5xx.")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Seconds one request may take.")
    retry_delay_s: float = Field(1.0, ge=0, le=60, description="Wait before the second try; doubled each time.")

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        if not name or not name.replace("-", "").replace("_", "").isalnum() or not name.isascii() or len(name) > 64:
            raise ValueError("write the webhook's name as a slug (letters, digits, - and _), e.g. dam")
        return name

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: SecretStr) -> SecretStr:
        if not url.get_secret_value().lower().startswith(("http://", "https://")):
            raise ValueError("a webhook URL starts with https:// (or http://)")
        return url


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
    render_workers: int = Field(
        2,
        ge=1,
        le=16,
        description="Renditions made at once (encode to delivery gate); `moviegen plan` says what fits a worker's "
        "cores and GPU (docs/scale-out.md).",
    )
    watermark_gate: Literal["required", "recorded"] = Field(
        "required",
        description=(
            "required: a rendition whose watermark does not read back is refused at delivery. recorded: it is "
            "published with a warning and its bit accuracy in the manifest (for synthetic test content only)."
        ),
    )
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
    inputs: InputSettings = Field(default_factory=InputSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)
    webhooks: list[WebhookSettings] = Field(
        default_factory=list, description="Receivers of rendition events: pending_review, published, rejected, retired."
    )
    scaleout: ScaleOutSettings = Field(default_factory=ScaleOutSettings)
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
    example the CLI's ``--out``) win over everything else. Raises ConfigError (never echoing a
    value: it could be a key or a token); the settings' secrets are registered for redaction.
    """
    config_file = config_file or os.environ.get("MOVIEGEN_CONFIG")
    values: dict[str, Any] = {}
    if config_file:
        values = _read_config_file(Path(config_file))
    source = f" in {config_file}" if config_file else ""
    try:
        settings = Settings(**values)
        if overrides:
            given = {k: v for k, v in overrides.items() if v is not None}  # each replaces its whole key
            settings = Settings.model_validate({**settings.model_dump(), **given})
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"invalid configuration{source}:\n" + "\n".join(lines)) from None
    except SettingsError as exc:
        # A MOVIEGEN_* variable holding a mapping or list that is not valid JSON: name it, never its value.
        raise ConfigError(f"invalid configuration: {_first_line(str(exc))}: write it as JSON") from None
    register_settings_secrets(settings)
    _warn_unknown_variables()
    return settings


# MOVIEGEN_* variables that are not settings: the config file and tool paths (moviegen/media.py, provenance).
NON_SETTING_VARIABLES = {"CONFIG", "FFMPEG", "FFPROBE", "EXIFTOOL"}


def _warn_unknown_variables() -> None:
    """A mistyped MOVIEGEN_* variable is otherwise silently ignored: say so (its name only, never its value)."""
    import logging

    for name in os.environ:
        if not name.startswith("MOVIEGEN_"):
            continue
        head = name.removeprefix("MOVIEGEN_").split("__")[0]
        if head not in NON_SETTING_VARIABLES and head.lower() not in Settings.model_fields:
            logging.getLogger(__name__).warning(
                "environment variable %s is not a moviegen setting and is ignored: settings are %s (nested with __)",
                name,
                ", ".join(f"MOVIEGEN_{f.upper()}" for f in Settings.model_fields),
            )


def register_settings_secrets(settings: Settings) -> None:
    """Register the configuration's secret strings, so redaction masks them wherever they would appear."""
    from moviegen.redact import register_secret  # late: keeps this module's imports minimal

    for hook in settings.webhooks:  # a webhook URL often is its own credential (Slack's, Teams')
        url = hook.url.get_secret_value()
        register_secret(url)
        path = url.split("://", 1)[-1].partition("/")[2]
        if len(path) >= 16:
            register_secret(path)
    provenance = settings.provenance
    for secret in (provenance.private_key_pem, provenance.private_key_password):
        if secret is not None:
            register_secret(secret.get_secret_value())
            for line in secret.get_secret_value().splitlines():  # a PEM body line alone is still the key
                if len(line) >= 16 and not line.startswith("-----"):
                    register_secret(line)


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass an existing YAML or TOML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text: save it as UTF-8 YAML or TOML") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        # Only the problem and where: the YAML error's own text quotes the line, which may hold a secret.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {type(data).__name__}")
    return data


@cache
def disclosure_data() -> dict[str, Any]:
    """``moviegen/data/disclosure.yaml``: the platforms' AI-content rules and the channels' platforms."""
    return yaml.safe_load(resources.files("moviegen.data").joinpath("disclosure.yaml").read_text(encoding="utf-8"))
