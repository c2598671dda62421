"""Row checks: every problem names the row, the column and what to do; good rows still go through."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from moviegen.assets import UriPolicy, check_uri
from moviegen.catalog.schema import (
    ANCHOR_NAMES,
    COLUMNS,
    COLUMNS_BY_NAME,
    CONTROL_CHARS,
    HASHTAG_PATTERN,
    ID_PATTERN,
    LOGO_POSITIONS,
    LOOK_CHOICES,
    LOOK_NUMBERS,
    MAX_BEST_OF,
    MAX_CAPTION_CHARS,
    MAX_DURATION_S,
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    MAX_TITLE_CHARS,
    MAX_TRANSITION_S,
    MAX_URI_CHARS,
    MIN_DURATION_S,
    MIN_EDIT_STRENGTH,
    MIN_TRANSITION_S,
    Column,
    default_seed,
    describe,
    shortened,
)
from moviegen.catalog.shots import Check, check_shots, shot_specs, shots_fit
from moviegen.config import MAX_LORA_SCALE, MIN_LORA_SCALE
from moviegen.models.registry import ASPECTS, UnknownModelError, resolve_for_task, resolve_model
from moviegen.presets import ROW_LOOK_FIELDS, ChannelPreset, builtin_luts
from moviegen.redact import redact_uri
from moviegen.spec import CONTINUITIES, TRANSITIONS, ClipSpec, Problem


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
    for name in (c.name for c in COLUMNS if c.required and c.name not in counts):
        message = f"required column {name!r} is missing: add it ({COLUMNS_BY_NAME[name].doc})"
        result.problems.append(Problem(None, None, name, "schema", "missing_column", message))
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
        clip_id = shortened(raw_clip, 80) if isinstance(raw_clip, str) else None
        campaign_id = shortened(raw_campaign, 80) if isinstance(raw_campaign, str) else None
        values: dict[str, Any] = {}
        row_problems: list[Problem] = []
        for col in COLUMNS:
            raw = data[col.name][i] if col.name in data else None
            if col.name == "shots":
                values["shots"], shot_problems = check_shots(raw, checkers)
                row_problems += [Problem(i, clip_id, c, "schema", r, m, campaign_id) for c, r, m in shot_problems]
                continue
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
        length_column = "duration_s"
        if values.get("shots") and not row_problems:  # the ad lasts what its shots do
            given = data["duration_s"][i] if "duration_s" in data else None
            shot_problems = shots_fit(values, given, model_problems)
            row_problems += [Problem(i, clip_id, c, "schema", r, m, campaign_id) for c, r, m in shot_problems]
            length_column = "shots" if given is None else "duration_s"
        if "channels" in values and "duration_s" in values and not row_problems:
            row_problems.extend(_duration_fits_channels(i, clip_id, campaign_id, values, channels, length_column))
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
                shots=shot_specs(values["shots"], seed),
                transition=values["transition"],
                transition_s=values["transition_s"],
                continuity=values["continuity"],
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
        reason = f"{type(exc).__name__}: {shortened(str(exc), 120)}"
    if known is None:
        try:
            return column.cast(pa.string()).to_pylist(), None
        except (pa.ArrowException, ValueError, OverflowError, TypeError):
            return [None] * rows, None
    message = f"column {name!r} has type {column.type} whose values cannot be read ({reason}): write it as {known.type}"
    return [], Problem(None, None, name, "schema", "unreadable_column", message)


_OK = ""


def _checkers(channels: set[str], styles: set[str], policy: UriPolicy) -> dict[str, Check]:
    def text(max_chars: int, *, required: bool = False, empty_ok: bool = True) -> Check:
        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            if raw is None:
                if required:
                    return None, f"{col.name} is empty: give every row a {col.name}", "missing"
                return col.default, None, _OK
            if not isinstance(raw, str):
                return None, f"{col.name} must be text, got {describe(raw)}", "type"
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
            return None, f"{col.name} must be text, got {describe(raw)}", "type"
        if not ID_PATTERN.fullmatch(raw):
            return (
                None,
                (
                    f"{col.name} {shortened(raw)!r} is not a slug: use 1-64 letters, digits, '-' or '_', "
                    "starting with a letter or digit"
                ),
                "slug",
            )
        return raw, None, _OK

    def name_list(allowed: set[str] | None, *, required: bool) -> Check:
        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            if raw is None:
                if required:
                    return None, f"{col.name} is empty: list at least one of {_names(allowed)}", "missing"
                return col.default, None, _OK
            if isinstance(raw, str) or not isinstance(raw, list | tuple):
                return None, f"{col.name} must be a list of names, got {describe(raw)}", "type"
            items: list[str] = []
            for item in raw:
                if not isinstance(item, str):
                    return None, f"{col.name} must hold only text, found {describe(item)}", "type"
                item = item.strip()
                if allowed is not None and item not in allowed:
                    return (
                        None,
                        (f"unknown {col.name[:-1]} {shortened(item)!r}: use one of {_names(allowed)}"),
                        f"unknown_{col.name[:-1]}",
                    )
                if allowed is None:
                    item = item.lstrip("#")
                    if not HASHTAG_PATTERN.fullmatch(item):
                        return None, f"hashtag {shortened(item)!r} must be one word of letters, digits or _", "hashtag"
                if item not in items:
                    items.append(item)
            if required and not items:
                return None, f"{col.name} is empty: list at least one of {_names(allowed)}", "missing"
            return tuple(items), None, _OK

        return check

    def number(lo: float, hi: float, *, integer: bool) -> Check:
        kind = "an integer" if integer else "a number"

        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            if raw is None:
                return col.default, None, _OK
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                return None, f"{col.name} must be {kind}, got {describe(raw)}", "type"
            if isinstance(raw, float) and (not math.isfinite(raw) or (integer and not raw.is_integer())):
                return None, f"{col.name} must be {kind}, got {raw!r}", "type"
            if not lo <= raw <= hi:
                span = f"{lo} to {hi}" if integer else f"{lo:g} to {hi:g}"  # seeds: 4294967295, not 4.29497e+09
                return None, f"{col.name} {raw} is out of range: use {span}", "range"
            return (int(raw) if integer else float(raw)), None, _OK

        return check

    def choice(allowed: set[str]) -> Check:
        def check(raw: Any, col: Column) -> tuple[Any, str | None, str]:
            if raw is None or raw == "":
                return col.default, None, _OK
            if not isinstance(raw, str):
                return None, f"{col.name} must be text, got {describe(raw)}", "type"
            if raw.strip() not in allowed:
                return (
                    None,
                    f"unknown {col.name} {shortened(raw)!r}: use one of {_names(allowed)}",
                    f"unknown_{col.name}",
                )
            return raw.strip(), None, _OK

        return check

    def lora_list(raw: Any, col: Column) -> tuple[Any, str | None, str]:
        if raw is None:
            return (), None, _OK
        if isinstance(raw, str) or not isinstance(raw, list | tuple):
            return None, f"{col.name} must be a list of {{uri, scale}} (or of URIs), got {describe(raw)}", "type"
        if len(raw) > MAX_LORAS:
            return None, f"{col.name} lists {len(raw)} adapters; use {MAX_LORAS} at most", "too_many"
        adapters = []
        for i, item in enumerate(raw):
            entry = {"uri": item, "scale": None} if isinstance(item, str) else item
            if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str) or not entry["uri"].strip():
                return None, f"{col.name}[{i}] needs a uri (a .safetensors path or URL), got {describe(item)}", "type"
            scale = 1.0 if entry.get("scale") is None else entry["scale"]
            if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
                return None, f"{col.name}[{i}].scale must be a number, got {describe(scale)}", "type"
            if not MIN_LORA_SCALE <= scale <= MAX_LORA_SCALE:
                message = f"{col.name}[{i}].scale {scale:g} is outside {MIN_LORA_SCALE:g} to {MAX_LORA_SCALE:g}"
                return None, message, "out_of_range"
            value = entry["uri"].strip()
            problem = check_uri(value, "lora", policy)
            if problem:
                return None, f"{col.name}[{i}] {shortened(redact_uri(value), 60)!r}: {problem}", "uri"
            adapters.append((value, float(scale)))
        return tuple(adapters), None, _OK

    def uri(kind: str, names: Iterable[str] = ()) -> Check:
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
                return None, f"{col.name} {shortened(redact_uri(value), 60)!r}: {problem}{hint}", "uri"
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
        "transition": choice(set(TRANSITIONS)),
        "transition_s": number(MIN_TRANSITION_S, MAX_TRANSITION_S, integer=False),
        "continuity": choice(set(CONTINUITIES)),
    }


def _duration_fits_channels(
    row: int,
    clip_id: str | None,
    campaign_id: str | None,
    values: dict,
    presets: Mapping[str, ChannelPreset],
    column: str = "duration_s",
) -> list[Problem]:
    too_long = [c for c in values["channels"] if c in presets and values["duration_s"] > presets[c].max_duration_s]
    return [
        Problem(
            row,
            clip_id,
            column,
            "schema",
            "too_long_for_channel",
            f"{'the shots last' if column == 'shots' else 'duration_s'} {values['duration_s']:g}"
            f"{' s, which is' if column == 'shots' else ' is'} longer than {c} allows "
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
