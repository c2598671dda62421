"""The catalog's columns, limits and Parquet schema; reading and writing catalogs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from moviegen.config import MAX_LORA_SCALE, MIN_LORA_SCALE
from moviegen.layout import ANCHOR_NAMES, CORNERS
from moviegen.models.registry import ASPECTS
from moviegen.redact import redact_text, redact_uri
from moviegen.spec import DEFAULT_EDIT_STRENGTH, TRANSITIONS

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

LOGO_POSITIONS = CORNERS


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

LOOK_CHOICES = {"motion": ("duplicate", "blend", "interpolate"), "extend": ("continue", "loop", "hold")}

MIN_EDIT_STRENGTH = 0.05

MAX_BEST_OF = 8

MAX_LORAS = 4

MAX_SHOTS = 12

MIN_TRANSITION_S, MAX_TRANSITION_S = 0.05, 5.0

SHOT_FIELDS = {
    "prompt": pa.string(),
    "duration_s": pa.float64(),
    "negative_prompt": pa.string(),
    "seed": pa.int64(),
    "reference_image": pa.string(),
}

SHOT_TYPE = pa.list_(pa.struct(list(SHOT_FIELDS.items())))

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
    Column("extend", pa.string(), False, None, "Row longer than its model's clip: continue, loop, or hold it."),
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
        f"With source_video: how far the edit may move from the clip, {MIN_EDIT_STRENGTH:g}-1"
        f" (default {DEFAULT_EDIT_STRENGTH:g}).",
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
    # Multi-shot rows: a storyboard of shots generated one by one and assembled into one ad.
    Column(
        "shots", SHOT_TYPE, False, (),
        f"Up to {MAX_SHOTS} shots in order, each {{prompt, duration_s}} and optionally negative_prompt, seed and "
        "reference_image; the ad lasts their sum (less crossfades). The row's prompt still describes the whole ad.",
    ),
    Column("transition", pa.string(), False, "cut", "How shots join: " + ", ".join(TRANSITIONS) + " (dip to black)."),
    Column(
        "transition_s", pa.float64(), False, 0.5,
        f"Seconds a crossfade or fade takes, {MIN_TRANSITION_S:g}-{MAX_TRANSITION_S:g}, at most half the shortest.",
    ),
    Column(
        "continuity", pa.string(), False, "none",
        "none, or last_frame: each shot after the first starts from the previous shot's last frame (image-to-video).",
    ),
)  # fmt: skip

COLUMNS_BY_NAME = {c.name: c for c in COLUMNS}

CATALOG_SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=not c.required) for c in COLUMNS])


class CatalogReadError(Exception):
    """The catalog cannot be read at all (exit status 2)."""


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
        reason = redact_text(shortened(" ".join(str(exc).split()), 200))
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


def shortened(text: str, limit: int = 40) -> str:
    text = CONTROL_CHARS.sub("?", str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """A value as a problem message quotes it: its kind and a shortened repr."""
    kind = {
        str: "text",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        dict: "a mapping",
        bytes: "bytes",
    }.get(type(value), type(value).__name__)
    return f"{kind} {shortened(repr(value))}"
