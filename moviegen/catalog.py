"""The campaign catalog: its explicit Parquet schema, reading, and row-by-row validation.

Validation never stops at the first problem: every problem is reported with its row (counted
from 0, as in pandas and pyarrow), clip_id, column and what to do, and the valid rows go on.
``catalogs/README.md`` documents the same columns for people.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from moviegen.assets import UriPolicy, check_uri
from moviegen.config import MAX_LORA_SCALE, MIN_LORA_SCALE
from moviegen.models.registry import ASPECTS, UnknownModelError, resolve_for_task, resolve_model
from moviegen.presets import ROW_LOOK_FIELDS, ChannelPreset, builtin_luts
from moviegen.redact import redact_text, redact_uri
from moviegen.spec import ClipSpec, Problem

# Used with fullmatch: "$" alone would also accept a trailing newline ("clip\n" is no slug).
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
HASHTAG_PATTERN = re.compile(r"\w{1,100}")
# C0/C1 control characters other than tab and newline, and Unicode bidi overrides.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
MAX_PROMPT_CHARS = 2000
MAX_CAPTION_CHARS = 2200  # the longest caption a supported platform takes (TikTok)
MIN_DURATION_S, MAX_DURATION_S = 0.5, 60.0
MAX_TITLE_CHARS = 100
MAX_URI_CHARS = 2000
LOGO_POSITIONS = ("top_left", "top_right", "bottom_left", "bottom_right")
ANCHOR_NAMES = ("center", "top", "bottom", "left", "right")
# Look columns: (low, high) for numbers, allowed names for choices; the same bounds as Style's fields.
LOOK_NUMBERS = {
    "brightness": (-1.0, 1.0),
    "contrast": (0.0, 3.0),
    "saturation": (0.0, 3.0),
    "gamma": (0.1, 3.0),
    "vignette": (0.0, 1.0),
    "grain": (0.0, 1.0),
    "speed": (0.25, 4.0),
}
LOOK_CHOICES = {"motion": ("duplicate", "blend", "interpolate"), "extend": ("loop", "hold")}
MIN_EDIT_STRENGTH = 0.05
MAX_BEST_OF = 8
MAX_LORAS = 4
# A catalog is text and links; bigger than this is a mistake or an attack (a decompression bomb).
MAX_CATALOG_ROWS = 1_000_000
MAX_CATALOG_BYTES = 1 << 30


@dataclass(frozen=True)
class Column:
    """One catalog column: its Parquet type, whether it is required, its default and its meaning."""

    name: str
    type: pa.DataType
    required: bool
    default: Any
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column("campaign_id", pa.string(), True, None, "Campaign slug: letters, digits, - and _ (max 64)."),
    Column("clip_id", pa.string(), True, None, "Clip slug, unique within its campaign."),
    Column("prompt", pa.string(), True, None, f"What to generate (1-{MAX_PROMPT_CHARS} characters)."),
    Column("channels", pa.list_(pa.string()), True, None, "Channel preset names (`moviegen channels`)."),
    Column("negative_prompt", pa.string(), False, "", "What to keep out of the video."),
    Column("duration_s", pa.float64(), False, 3.0, f"Seconds, {MIN_DURATION_S}-{MAX_DURATION_S}."),
    Column("seed", pa.int64(), False, None, "0-4294967295; default derived from campaign_id and clip_id."),
    Column("model", pa.string(), False, None, "Registry name, hub id or local folder; default from config."),
    Column("style", pa.string(), False, "none", "Named look (`moviegen channels --styles`): warm, cinematic, ..."),
    Column("caption", pa.string(), False, "", f"Post text and burned-in caption (max {MAX_CAPTION_CHARS})."),
    Column("hashtags", pa.list_(pa.string()), False, (), "Hashtags without '#'."),
    Column("aspect", pa.string(), False, "16:9", "Aspect of the generated master: " + ", ".join(ASPECTS)),
    Column("steps", pa.int32(), False, None, "Denoising steps (1-200); default from the model."),
    Column("guidance", pa.float32(), False, None, "Guidance scale (0-30); default from the model."),
    # Rendition columns: what is burned in, brand and sound, framing, and the row's own look.
    Column("title", pa.string(), False, "", f"Large title at the top for the first seconds (max {MAX_TITLE_CHARS})."),
    Column("cta", pa.string(), False, "", f"Call to action on an end card, last 1.5 s (max {MAX_TITLE_CHARS})."),
    Column("logo_uri", pa.string(), False, None, "Logo image (PNG, JPEG, WebP): a path or URL."),
    Column("logo_position", pa.string(), False, "top_right", "Logo corner: " + ", ".join(LOGO_POSITIONS) + "."),
    Column("music_uri", pa.string(), False, None, "Music bed (MP3, WAV, M4A, OGG, FLAC): a path or URL; else silence."),
    Column("fit", pa.string(), False, None, "crop (fill the frame) or pad (all, over a blur); default per channel."),
    Column("anchor", pa.string(), False, None, "What a crop keeps: " + ", ".join(ANCHOR_NAMES) + "; default center."),
    Column("lut", pa.string(), False, None, "A shipped LUT (teal_orange, film_fade, sepia) or a .cube path or URL."),
    Column("brightness", pa.float64(), False, None, "-1 to 1 (0 = unchanged); replaces the style's value."),
    Column("contrast", pa.float64(), False, None, "0 to 3 (1 = unchanged)."),
    Column("saturation", pa.float64(), False, None, "0 to 3 (1 = unchanged, 0 = black and white)."),
    Column("gamma", pa.float64(), False, None, "0.1 to 3 (1 = unchanged)."),
    Column("vignette", pa.float64(), False, None, "Darkened corners, 0 (none) to 1 (strong)."),
    Column("grain", pa.float64(), False, None, "Film grain, 0 (none) to 1 (heavy)."),
    Column("speed", pa.float64(), False, None, "Playback speed, 0.25 to 4 (0.5 = half speed)."),
    Column("motion", pa.string(), False, None, "Frame-rate conversion: duplicate, blend, interpolate (slow)."),
    Column("extend", pa.string(), False, None, "Clip shorter than duration_s: loop, or hold the last frame."),
    # Generation beyond text-to-video: personalisation, edits, soundtrack, prompt adherence.
    Column(
        "reference_image", pa.string(), False, None,
        "Image-to-video: the video starts from this image (a product shot, a mascot); PNG, JPEG, WebP path or URL.",
    ),
    Column(
        "source_video", pa.string(), False, None,
        "Video-to-video: edit this clip (MP4, MOV, MKV, WebM path or URL); the prompt describes the result.",
    ),
    Column(
        "edit_strength", pa.float64(), False, None,
        f"With source_video: how far the edit may move from the clip, {MIN_EDIT_STRENGTH:g}-1 (default 0.6).",
    ),
    Column("audio_prompt", pa.string(), False, "", "A soundtrack to generate (text-to-audio), mixed under the video."),
    Column(
        "loras", pa.list_(pa.struct([("uri", pa.string()), ("scale", pa.float64())])), False, (),
        f"LoRA adapters (.safetensors path or URL, scale {MIN_LORA_SCALE:g} to {MAX_LORA_SCALE:g}, default 1) "
        "applied after generation.loras; a list of {uri, scale} or of URIs.",
    ),
    Column(
        "best_of", pa.int32(), False, 1,
        f"Generate 1-{MAX_BEST_OF} candidates (seed, seed+1, ...) and keep the one that best matches the prompt.",
    ),
)  # fmt: skip
COLUMNS_BY_NAME = {c.name: c for c in COLUMNS}
CATALOG_SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=not c.required) for c in COLUMNS])


class CatalogReadError(Exception):
    """The catalog cannot be read at all (exit status 2)."""


@dataclass
class CatalogValidation:
    """The outcome of validating a catalog: the rows that can run and every problem found."""

    rows: int
    specs: list[ClipSpec] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds (validate, prompt_gate)

    @property
    def fatal(self) -> bool:
        """True when nothing can run because the catalog as a whole is unusable."""
        return any(p.row is None for p in self.problems) and not self.specs


def read_catalog(uri: str) -> pa.Table:
    """Read a Parquet catalog from a local path or fsspec URL.

    Raises CatalogReadError (never a raw pyarrow or fsspec error) when the file is missing, is not
    Parquet, is truncated, or is larger than MAX_CATALOG_ROWS rows / MAX_CATALOG_BYTES uncompressed.
    Messages show the URI without its credentials.
    """
    shown = redact_uri(uri)
    try:
        with fsspec.open(uri, "rb") as f:
            parquet = pq.ParquetFile(f)
            meta = parquet.metadata
            if meta.num_rows > MAX_CATALOG_ROWS:
                raise CatalogReadError(
                    f"catalog {shown} has {meta.num_rows} rows; split it into catalogs of at most {MAX_CATALOG_ROWS}"
                )
            size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            if size > MAX_CATALOG_BYTES:
                raise CatalogReadError(
                    f"catalog {shown} holds {size // 2**20} MiB of data; a catalog holds text and links, at most "
                    f"{MAX_CATALOG_BYTES // 2**20} MiB: keep media in files the rows link to"
                )
            return parquet.read()
    except CatalogReadError:
        raise
    except FileNotFoundError:
        raise CatalogReadError(f"catalog {shown} does not exist: check the path or URL") from None
    except IsADirectoryError:
        raise CatalogReadError(f"catalog {shown} is a folder: name one Parquet file") from None
    except ImportError as exc:
        raise CatalogReadError(f"catalog {shown} needs a driver that is not installed ({exc})") from None
    except (pa.ArrowException, OSError, ValueError, TypeError, EOFError, MemoryError, IndexError) as exc:
        reason = redact_text(_clip(" ".join(str(exc).split()), 200))
        raise CatalogReadError(
            f"catalog {shown} is not a readable Parquet file ({type(exc).__name__}: {reason}); write it with "
            "pandas.DataFrame.to_parquet or pyarrow.parquet.write_table"
        ) from None


def write_catalog(rows: Iterable[dict[str, Any]], path: str) -> None:
    """Write catalog rows with the explicit schema (unknown keys are kept as extra columns)."""
    rows = list(rows)
    extra = sorted({k for r in rows for k in r} - set(COLUMNS_BY_NAME))
    present = [c for c in CATALOG_SCHEMA if any(c.name in r for r in rows) or not c.nullable]
    table = pa.Table.from_pylist(rows, schema=pa.schema(present))
    for name in extra:
        table = table.append_column(name, pa.array([r.get(name) for r in rows]))
    with fsspec.open(path, "wb") as f:
        pq.write_table(table, f)


def default_seed(campaign_id: str, clip_id: str) -> int:
    """A stable seed per clip when the catalog gives none."""
    digest = hashlib.sha256(f"{campaign_id}/{clip_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def validate_catalog(
    table: pa.Table,
    *,
    channels: Mapping[str, ChannelPreset],
    styles: Iterable[str],
    default_model: str,
    uri_policy: UriPolicy | None = None,
) -> CatalogValidation:
    """Check every row against the schema and the channel presets; return valid rows as specs and all problems.

    ``uri_policy`` says which schemes and local folders the file columns may name (default: the
    built-in schemes, any folder). Never raises on a bad table: everything wrong is a Problem.
    """
    result = CatalogValidation(rows=table.num_rows)
    names = table.column_names
    counts: dict[str, int] = defaultdict(int)
    for name in names:
        counts[name] += 1
    for name, n in counts.items():
        if n > 1 and name in COLUMNS_BY_NAME:
            message = f"column {name!r} appears {n} times: keep one (which one is meant is unknowable)"
            result.problems.append(Problem(None, None, name, "schema", "duplicate_column", message))
    missing = [c.name for c in COLUMNS if c.required and c.name not in counts]
    for name in missing:
        result.problems.append(
            Problem(
                None,
                None,
                name,
                "schema",
                "missing_column",
                f"required column {name!r} is missing: add it ({COLUMNS_BY_NAME[name].doc})",
            )
        )
    data: dict[str, list[Any]] = {}
    for index, name in enumerate(names):
        if counts[name] > 1:
            continue  # a known column given twice is a problem above; an unknown one is left out
        values, problem = _column_values(table.column(index), name, table.num_rows)
        if problem is not None:
            result.problems.append(problem)
        else:
            data[name] = values
    if result.problems:
        return result

    checkers = _checkers(set(channels), set(styles), uri_policy or UriPolicy())
    extra_names = [n for n in data if n not in COLUMNS_BY_NAME]
    model_problems: dict[str, str | None] = {}

    candidates: list[ClipSpec] = []
    for i in range(table.num_rows):
        # Problems name the row's ids even when they are invalid (control characters made visible).
        raw_clip, raw_campaign = data["clip_id"][i], data["campaign_id"][i]
        clip_id = _clip(raw_clip, 80) if isinstance(raw_clip, str) else None
        campaign_id = _clip(raw_campaign, 80) if isinstance(raw_campaign, str) else None
        values: dict[str, Any] = {}
        row_problems: list[Problem] = []
        for col in COLUMNS:
            raw = data[col.name][i] if col.name in data else None
            value, message, rule = checkers[col.name](raw, col)
            if message:
                row_problems.append(Problem(i, clip_id, col.name, "schema", rule, message, campaign_id))
            else:
                values[col.name] = value
        if "model" in values:
            model = values["model"] or default_model
            if model not in model_problems:
                try:
                    resolve_model(model)
                    model_problems[model] = None
                except UnknownModelError as exc:
                    model_problems[model] = str(exc)
            if model_problems[model]:
                row_problems.append(
                    Problem(i, clip_id, "model", "schema", "unknown_model", model_problems[model], campaign_id)
                )
            values["model"] = model
        if "channels" in values and "duration_s" in values:
            row_problems.extend(_duration_fits_channels(i, clip_id, campaign_id, values, channels))
        row_problems.extend(_conditioning_fits(i, clip_id, campaign_id, values, model_problems))
        if row_problems:
            result.problems.extend(row_problems)
            continue
        seed = values["seed"]
        if seed is None:
            seed = default_seed(values["campaign_id"], values["clip_id"])
        candidates.append(
            ClipSpec(
                row=i,
                campaign_id=values["campaign_id"],
                clip_id=values["clip_id"],
                prompt=values["prompt"],
                channels=tuple(values["channels"]),
                negative_prompt=values["negative_prompt"],
                duration_s=values["duration_s"],
                seed=seed,
                model=values["model"],
                style=values["style"],
                caption=values["caption"],
                hashtags=tuple(values["hashtags"]),
                aspect=values["aspect"],
                steps=values["steps"],
                guidance=values["guidance"],
                title=values["title"],
                cta=values["cta"],
                logo_uri=values["logo_uri"],
                logo_position=values["logo_position"],
                music_uri=values["music_uri"],
                fit=values["fit"],
                anchor=values["anchor"],
                look=tuple((k, values[k]) for k in ROW_LOOK_FIELDS if values[k] is not None),
                reference_image=values["reference_image"] or None,
                source_video=values["source_video"] or None,
                edit_strength=values["edit_strength"],
                audio_prompt=values["audio_prompt"].strip(),
                best_of=values["best_of"],
                loras=values["loras"],
                extra={n: _jsonable(data[n][i]) for n in extra_names},
            )
        )

    result.specs = _reject_duplicates(candidates, data, result.problems)
    result.problems.sort(key=lambda p: (p.row if p.row is not None else -1, p.column or ""))
    return result


def _column_values(column: pa.ChunkedArray, name: str, rows: int) -> tuple[list[Any], Problem | None]:
    """A column's values as Python objects, or the problem that makes the column unreadable.

    A known column is cast to its schema type first when it can be (int32 seeds, large strings,
    dictionary-encoded text); one that cannot be read at all is a catalog problem. An unknown column
    that cannot be read is kept as text, or as nulls (it is only carried to the report).
    """
    known = COLUMNS_BY_NAME.get(name)
    try:
        return column.to_pylist(), None
    except (pa.ArrowException, ValueError, OverflowError, TypeError, KeyError) as exc:
        reason = f"{type(exc).__name__}: {_clip(str(exc), 120)}"
    if known is None:
        try:
            return column.cast(pa.string()).to_pylist(), None
        except (pa.ArrowException, ValueError, OverflowError, TypeError):
            return [None] * rows, None
    message = f"column {name!r} has type {column.type} whose values cannot be read ({reason}): write it as {known.type}"
    return [], Problem(None, None, name, "schema", "unreadable_column", message)


_Check = Callable[[Any, Column], tuple[Any, str | None, str]]
_OK = ""


def _checkers(channels: set[str], styles: set[str], policy: UriPolicy) -> dict[str, _Check]:
    def text(max_chars: int, *, required: bool = False, empty_ok: bool = True) -> _Check:
        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            if raw is None:
                if required:
                    return None, f"{col.name} is empty: give every row a {col.name}", "missing"
                return col.default, None, _OK
            if not isinstance(raw, str):
                return None, f"{col.name} must be text, got {_describe(raw)}", "type"
            if CONTROL_CHARS.search(raw):
                return None, f"{col.name} contains control characters: remove them", "control_chars"
            if not empty_ok and not raw.strip():
                return None, f"{col.name} is empty: write what the video should show", "empty"
            if len(raw) > max_chars:
                return None, f"{col.name} has {len(raw)} characters; shorten it to {max_chars} at most", "too_long"
            return raw.strip() if required else raw, None, _OK

        return check

    def slug(raw: Any, col: Column) -> tuple[Any, str | None, str]:
        if raw is None:
            return None, f"{col.name} is empty: give every row a {col.name}", "missing"
        if not isinstance(raw, str):
            return None, f"{col.name} must be text, got {_describe(raw)}", "type"
        if not ID_PATTERN.fullmatch(raw):
            return (
                None,
                (
                    f"{col.name} {_clip(raw)!r} is not a slug: use 1-64 letters, digits, '-' or '_', "
                    "starting with a letter or digit"
                ),
                "slug",
            )
        return raw, None, _OK

    def name_list(allowed: set[str] | None, *, required: bool) -> _Check:
        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            if raw is None:
                if required:
                    return None, f"{col.name} is empty: list at least one of {_names(allowed)}", "missing"
                return col.default, None, _OK
            if isinstance(raw, str) or not isinstance(raw, list | tuple):
                return None, f"{col.name} must be a list of names, got {_describe(raw)}", "type"
            items: list[str] = []
            for item in raw:
                if not isinstance(item, str):
                    return None, f"{col.name} must hold only text, found {_describe(item)}", "type"
                item = item.strip()
                if allowed is not None and item not in allowed:
                    return (
                        None,
                        (f"unknown {col.name[:-1]} {_clip(item)!r}: use one of {_names(allowed)}"),
                        f"unknown_{col.name[:-1]}",
                    )
                if allowed is None:
                    item = item.lstrip("#")
                    if not HASHTAG_PATTERN.fullmatch(item):
                        return None, f"hashtag {_clip(item)!r} must be one word of letters, digits or _", "hashtag"
                if item not in items:
                    items.append(item)
            if required and not items:
                return None, f"{col.name} is empty: list at least one of {_names(allowed)}", "missing"
            return tuple(items), None, _OK

        return check

    def number(lo: float, hi: float, *, integer: bool) -> _Check:
        kind = "an integer" if integer else "a number"

        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            if raw is None:
                return col.default, None, _OK
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                return None, f"{col.name} must be {kind}, got {_describe(raw)}", "type"
            if isinstance(raw, float) and (not math.isfinite(raw) or (integer and not raw.is_integer())):
                return None, f"{col.name} must be {kind}, got {raw!r}", "type"
            if not lo <= raw <= hi:
                return None, f"{col.name} {raw} is out of range: use {lo:g} to {hi:g}", "range"
            return (int(raw) if integer else float(raw)), None, _OK

        return check

    def choice(allowed: set[str]) -> _Check:
        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            if raw is None or raw == "":
                return col.default, None, _OK
            if not isinstance(raw, str):
                return None, f"{col.name} must be text, got {_describe(raw)}", "type"
            if raw.strip() not in allowed:
                return None, f"unknown {col.name} {_clip(raw)!r}: use one of {_names(allowed)}", f"unknown_{col.name}"
            return raw.strip(), None, _OK

        return check

    def lora_list(raw: Any, col: Column) -> tuple[Any, str | None, str]:
        if raw is None:
            return (), None, _OK
        if isinstance(raw, str) or not isinstance(raw, list | tuple):
            return None, f"{col.name} must be a list of {{uri, scale}} (or of URIs), got {_describe(raw)}", "type"
        if len(raw) > MAX_LORAS:
            return None, f"{col.name} lists {len(raw)} adapters; use {MAX_LORAS} at most", "too_many"
        adapters = []
        for i, item in enumerate(raw):
            entry = {"uri": item, "scale": None} if isinstance(item, str) else item
            if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str) or not entry["uri"].strip():
                return None, f"{col.name}[{i}] needs a uri (a .safetensors path or URL), got {_describe(item)}", "type"
            scale = 1.0 if entry.get("scale") is None else entry["scale"]
            if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
                return None, f"{col.name}[{i}].scale must be a number, got {_describe(scale)}", "type"
            if not MIN_LORA_SCALE <= scale <= MAX_LORA_SCALE:
                message = f"{col.name}[{i}].scale {scale:g} is outside {MIN_LORA_SCALE:g} to {MAX_LORA_SCALE:g}"
                return None, message, "out_of_range"
            value = entry["uri"].strip()
            problem = check_uri(value, "lora", policy)
            if problem:
                return None, f"{col.name}[{i}] {_clip(redact_uri(value), 60)!r}: {problem}", "uri"
            adapters.append((value, float(scale)))
        return tuple(adapters), None, _OK

    def uri(kind: str, names: Iterable[str] = ()) -> _Check:
        named = set(names)

        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            value, message, rule = text(MAX_URI_CHARS)(raw, col)
            if message or value is None or not value.strip():
                return (None if not message else value), message, rule
            value = value.strip()
            if value in named:
                return value, None, _OK
            problem = check_uri(value, kind, policy)  # type: ignore[arg-type]
            if problem:
                hint = f" (or one of {_names(named)})" if named else ""
                return None, f"{col.name} {_clip(redact_uri(value), 60)!r}: {problem}{hint}", "uri"
            return value, None, _OK

        return check

    return {
        "campaign_id": slug,
        "clip_id": slug,
        "prompt": text(MAX_PROMPT_CHARS, required=True, empty_ok=False),
        "channels": name_list(channels, required=True),
        "negative_prompt": text(MAX_PROMPT_CHARS),
        "duration_s": number(MIN_DURATION_S, MAX_DURATION_S, integer=False),
        "seed": number(0, 2**32 - 1, integer=True),
        "model": text(1000),
        "style": choice(styles),
        "caption": text(MAX_CAPTION_CHARS),
        "hashtags": name_list(None, required=False),
        "aspect": choice(set(ASPECTS)),
        "steps": number(1, 200, integer=True),
        "guidance": number(0, 30, integer=False),
        "title": text(MAX_TITLE_CHARS),
        "cta": text(MAX_TITLE_CHARS),
        "logo_uri": uri("logo"),
        "logo_position": choice(set(LOGO_POSITIONS)),
        "music_uri": uri("music"),
        "fit": choice({"crop", "pad"}),
        "anchor": choice(set(ANCHOR_NAMES)),
        "lut": uri("lut", builtin_luts()),
        **{name: number(lo, hi, integer=False) for name, (lo, hi) in LOOK_NUMBERS.items()},
        **{name: choice(set(names)) for name, names in LOOK_CHOICES.items()},
        "reference_image": uri("image"),
        "source_video": uri("video"),
        "edit_strength": number(MIN_EDIT_STRENGTH, 1.0, integer=False),
        "audio_prompt": text(MAX_PROMPT_CHARS),
        "best_of": number(1, MAX_BEST_OF, integer=True),
        "loras": lora_list,
    }


def _duration_fits_channels(
    row: int, clip_id: str | None, campaign_id: str | None, values: dict, presets: Mapping[str, ChannelPreset]
) -> list[Problem]:
    too_long = [c for c in values["channels"] if c in presets and values["duration_s"] > presets[c].max_duration_s]
    return [
        Problem(
            row,
            clip_id,
            "duration_s",
            "schema",
            "too_long_for_channel",
            f"duration_s {values['duration_s']:g} is longer than {c} allows "
            f"({presets[c].max_duration_s:g} s): shorten it or drop the channel",
            campaign_id,
        )
        for c in too_long
    ]


def _conditioning_fits(
    row: int, clip_id: str | None, campaign_id: str | None, values: dict, model_problems: dict[str, str | None]
) -> list[Problem]:
    """A row asks for one task (a reference image or a clip to edit, not both) that its model can run."""

    def problem(column: str, rule: str, message: str) -> Problem:
        return Problem(row, clip_id, column, "schema", rule, message, campaign_id)

    reference, source = values.get("reference_image"), values.get("source_video")
    if reference and source:
        return [
            problem(
                "source_video",
                "conflict",
                "give either reference_image (image-to-video) or source_video (video-to-video), not both",
            )
        ]
    if values.get("edit_strength") is not None and not source and "source_video" in values:
        return [problem("edit_strength", "needs_source", "edit_strength applies to source_video: add one or remove it")]
    task = "i2v" if reference else "v2v" if source else None
    model = values.get("model")
    if task is None or not model or model_problems.get(model):
        return []
    try:
        resolve_for_task(resolve_model(model), task)
    except UnknownModelError as exc:
        return [problem("reference_image" if task == "i2v" else "source_video", "unsupported_task", str(exc))]
    return []


def _reject_duplicates(specs: list[ClipSpec], data: dict[str, list], problems: list[Problem]) -> list[ClipSpec]:
    """Rows that share (campaign_id, clip_id), valid or not, are all rejected: which one is meant is unknowable."""
    rows_by_key: dict[tuple[Any, Any], list[int]] = defaultdict(list)
    for i, (campaign, clip) in enumerate(zip(data["campaign_id"], data["clip_id"], strict=True)):
        if isinstance(campaign, str) and isinstance(clip, str):
            rows_by_key[(campaign, clip)].append(i)
    duplicated = {key: rows for key, rows in rows_by_key.items() if len(rows) > 1}
    if not duplicated:
        return specs
    kept = []
    for spec in specs:
        rows = duplicated.get((spec.campaign_id, spec.clip_id))
        if rows is None:
            kept.append(spec)
            continue
        others = ", ".join(str(r) for r in rows if r != spec.row)
        problems.append(
            Problem(
                spec.row,
                spec.clip_id,
                "clip_id",
                "schema",
                "duplicate",
                f"clip_id {spec.clip_id!r} of campaign {spec.campaign_id!r} also appears in row(s) {others}: "
                "give each row its own clip_id",
                spec.campaign_id,
            )
        )
    return kept


def _describe(value: Any) -> str:
    kind = {
        str: "text",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "a mapping",
        bytes: "bytes",
    }.get(type(value), type(value).__name__)
    return f"{kind} {_clip(repr(value))}"


def _clip(text: str, limit: int = 40) -> str:
    text = CONTROL_CHARS.sub("?", str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(allowed: set[str] | None) -> str:
    return ", ".join(sorted(allowed or ()))


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)
