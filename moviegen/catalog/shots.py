"""The ``shots`` column: each shot's values checked (problems name it as ``shots[2].prompt``) and a
multi-shot row's cross-checks (its length, its transitions, the image-to-video its shots need)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moviegen.catalog.schema import (
    COLUMNS_BY_NAME,
    MAX_DURATION_S,
    MAX_SHOTS,
    MIN_DURATION_S,
    SHOT_FIELDS,
    Column,
    describe,
)
from moviegen.models.registry import UnknownModelError, resolve_for_task, resolve_model
from moviegen.spec import ShotSpec

# A column's checker, as catalog.check builds them: (raw, column) -> (value, message or None, rule).
Check = Callable[[Any, Column], tuple[Any, str | None, str]]

REQUIRED_SHOT_FIELDS = ("prompt", "duration_s")


def check_shots(raw: Any, checkers: dict[str, Check]) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """The ``shots`` column of one row: its shots (seeds not filled in yet), and (column, rule, message)
    for every bad value, the column naming the shot (``shots[2].prompt``)."""
    if raw is None or (isinstance(raw, list | tuple) and not raw):
        return [], []
    if isinstance(raw, str) or not isinstance(raw, list | tuple):
        return [], [("shots", "type", f"shots must be a list of {{prompt, duration_s}} structs, got {describe(raw)}")]
    if len(raw) > MAX_SHOTS:
        return [], [("shots", "too_many", f"shots lists {len(raw)} shots; use {MAX_SHOTS} at most (or split the ad)")]
    shots, problems = [], []
    for k, item in enumerate(raw):
        where = f"shots[{k}]"
        if not isinstance(item, dict):
            problems.append((where, "type", f"{where} must be a {{prompt, duration_s}} struct, got {describe(item)}"))
            continue
        unknown = sorted(str(name) for name in item if name not in SHOT_FIELDS)
        if unknown:
            message = f"{where} has unknown field(s) {', '.join(unknown)}: a shot takes {', '.join(SHOT_FIELDS)}"
            problems.append((f"{where}.{unknown[0]}", "unknown_field", message))
        shot = {}
        for name, kind in SHOT_FIELDS.items():
            column = Column(f"{where}.{name}", kind, name in REQUIRED_SHOT_FIELDS, COLUMNS_BY_NAME[name].default, "")
            value = item.get(name)
            if value is None and column.required:
                what = "what the shot shows" if name == "prompt" else f"seconds, {MIN_DURATION_S:g}-{MAX_DURATION_S:g}"
                problems.append((column.name, "missing", f"{column.name} is empty: give every shot a {name} ({what})"))
                continue
            checked, message, rule = checkers[name](value, column)
            if message:
                problems.append((column.name, rule, message))
            shot[name] = checked.strip() if isinstance(checked, str) and name == "prompt" else checked
        shot["reference_image"] = shot.get("reference_image") or None
        shots.append(shot)
    return ([] if problems else shots), problems


def shots_fit(
    values: dict[str, Any], given_duration: Any, model_problems: dict[str, str | None]
) -> list[tuple[str, str, str]]:
    """A multi-shot row's cross-checks: its length (set in ``values``), transitions, and the
    image-to-video its shots need; (column, rule, message) for each problem."""
    shots, transition, over = values["shots"], values.get("transition"), values.get("transition_s")
    problems = []
    for name in ("reference_image", "source_video"):
        if values.get(name):
            fix = ("give the shot that starts from the image shots[i].reference_image" if name == "reference_image"
                   else "a clip to edit cannot be cut into shots")  # fmt: skip
            problems.append((name, "conflict", f"a row with shots takes no {name}: {fix}"))
    durations = [shot["duration_s"] for shot in shots]
    blended = transition in ("crossfade", "fade") and len(shots) > 1
    if blended and over is not None and over > min(durations) / 2:
        problems.append(("transition_s", "range", f"transition_s {over:g} is more than half the shortest shot "
                         f"({min(durations):g} s): shorten the {transition} or lengthen the shot"))  # fmt: skip
    overlap = over * (len(shots) - 1) if transition == "crossfade" and over is not None else 0.0
    length = round(sum(durations) - overlap, 6)
    parts = " + ".join(f"{d:g}" for d in durations) + (f" - {overlap:g} of crossfades" if overlap else "")
    if not MIN_DURATION_S <= length <= MAX_DURATION_S:
        problems.append(("shots", "range", f"the shots last {length:g} s ({parts}): an ad lasts "
                         f"{MIN_DURATION_S:g} to {MAX_DURATION_S:g} s"))  # fmt: skip
    elif given_duration is not None and "duration_s" in values and abs(values["duration_s"] - length) > 1e-3:
        problems.append(("duration_s", "mismatch", f"duration_s {values['duration_s']:g} is not what the shots "
                         f"last ({parts} = {length:g} s): give duration_s {length:g} or leave it empty"))  # fmt: skip
    values["duration_s"] = length
    model = values.get("model")
    needs = [f"shots[{k}].reference_image" for k, shot in enumerate(shots) if shot["reference_image"]]
    if values.get("continuity") == "last_frame" and len(shots) > 1:
        needs.append("continuity")
    if needs and model and not model_problems.get(model):
        try:
            resolve_for_task(resolve_model(model), "i2v")
        except UnknownModelError as exc:
            problems += [(column, "unsupported_task", str(exc)) for column in needs]
    return problems


def shot_specs(shots: list[dict[str, Any]], row_seed: int) -> tuple[ShotSpec, ...]:
    """A valid row's shots; a shot without a seed takes the row's next one, so editing one shot leaves
    the others' seeds (and masters) as they were."""
    return tuple(
        ShotSpec(**{**shot, "seed": (row_seed + k) % 2**32 if shot["seed"] is None else shot["seed"]})
        for k, shot in enumerate(shots)
    )
