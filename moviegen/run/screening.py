"""The verdict before generation: schema, input policy and prompt gate, one function for run, validate and plan."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pyarrow as pa

from moviegen import progress
from moviegen.assets import UriPolicy
from moviegen.catalog.check import CatalogValidation, validate_catalog
from moviegen.catalog.schema import read_catalog
from moviegen.config import Settings
from moviegen.presets import ChannelPreset, Style, channel_presets, styles
from moviegen.run.context import RunContext
from moviegen.safety import (
    PolicySet,
    PromptScreening,
    record_scores,
    score_row,
    screen_catalog,
)
from moviegen.safety.moderator import moderation_for

log = logging.getLogger(__name__)


def check_rows(
    table: pa.Table,
    settings: Settings,
    presets: dict[str, ChannelPreset] | None = None,
    row_styles: dict[str, Style] | None = None,
) -> CatalogValidation:
    """Schema and input policy of every row: the one row check that run, validate and plan share."""
    return validate_catalog(
        table,
        channels=presets if presets is not None else channel_presets(settings.channels),
        styles=row_styles if row_styles is not None else styles(settings.styles),
        default_model=settings.generation.model,
        uri_policy=UriPolicy.from_settings(settings.inputs),
    )


def check_catalog(catalog_uri: str, settings: Settings, policies: PolicySet) -> PromptScreening:
    """The verdict before generation, as ``moviegen run`` reaches it: schema, input policy, prompt gate.

    ``moviegen validate`` and ``moviegen plan`` call this, so a row one of them accepts is a row the
    run accepts. The configured moderator (safety.moderator) runs as in the run. Raises
    CatalogReadError when the catalog cannot be read at all.
    """
    validation = check_rows(read_catalog(catalog_uri), settings)
    return screen_catalog(validation, policies, moderation_for(settings.safety.moderator, settings.cache_dir))


def load_and_validate(catalog_uri: str, ctx: RunContext) -> CatalogValidation:
    """Read the catalog and check every row; raises CatalogReadError when it cannot be read at all."""
    started = time.perf_counter()
    validation = check_rows(read_catalog(catalog_uri), ctx.settings, ctx.presets, ctx.styles)
    validation.seconds["validate"] = time.perf_counter() - started
    progress.start("validate", validation.rows)
    progress.advance("validate", validation.rows)
    return validation


def screen_prompts(validation: CatalogValidation, ctx: RunContext) -> CatalogValidation:
    """Prompt gate: rows the campaign's policy blocks leave the run here and never reach the model.

    Returns the validation with blocked rows moved to problems (stage ``prompt``); every checked
    row's scores go to ``scores/``, so a reviewer also sees why a row passed.
    """
    started = time.perf_counter()
    progress.start("prompt_gate", len(validation.specs))
    moderation = moderation_for(ctx.settings.safety.moderator, ctx.settings.cache_dir)
    screening = screen_catalog(validation, ctx.policies, moderation)
    if screening.moderator is not None:
        log.info("prompt moderator: %s", screening.moderator)
    rows = []
    for v in screening.verdicts:
        spec, rule = v.spec, (v.findings[0].rule if v.findings else None)
        scores = {**v.scores, "findings": [{"field": f.field, "rule": f.rule, **f.details} for f in v.findings]}
        rows.append(
            score_row(ctx.run_id, spec.campaign_id, spec.clip_id, spec.row, "prompt", v.passed, rule, v.policy, scores)
        )
    record_scores(ctx.out, rows, ctx.run_id)
    progress.advance("prompt_gate", len(validation.specs))
    return replace(screening.validation, seconds={**validation.seconds, "prompt_gate": time.perf_counter() - started})
