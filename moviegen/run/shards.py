"""Shards for the distributed executor: balanced by cost, passed as Parquet, gathered from JSON.

Problem: a campaign on several GPU machines must be cut into pieces that finish together. Rows
differ wildly in cost (a 10 s clip on a 14B model against a 1 s clip on a small one), so equal
row counts leave most GPUs idle while one works on.

Solution: each clip is priced by the cost model (``moviegen.costs``); clips that share a batch key
stay together in batches, as they would generate; batches are placed longest first, each on the
shard where it would finish earliest, counting a model load when that shard does not hold the
model yet (greedy LPT). A shard travels as a Parquet catalog of its own rows under the output
root (``runs/<run_id>/shards/<shard>.parquet``) and comes back as a JSON result beside it, so the
orchestrator passes URIs only, never pixels.
"""

from __future__ import annotations

import heapq
import io
import math
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from moviegen.catalog.check import CatalogValidation
from moviegen.catalog.schema import read_catalog
from moviegen.config import Settings
from moviegen.costs import CostModel, RenderSizing, render_workers_for
from moviegen.models.registry import resolve_for_task, resolve_model
from moviegen.presets import ChannelPreset, Style, styles
from moviegen.records import CampaignPlan, Master, Rendition
from moviegen.run.context import RunContext
from moviegen.run.masters import clip_problem
from moviegen.run.planning import continuation_for, generation_request
from moviegen.run.summary import jsonable_row
from moviegen.spec import ClipPlan, ClipSpec, Problem
from moviegen.store import OutputRoot, utc_now

# The column a shard catalog adds: each row's number in the campaign's catalog, so problems found
# on a worker name the row the user wrote.
CATALOG_ROW = "catalog_row"


@dataclass(frozen=True)
class WorkItem:
    """One clip to make, what it costs, and what it can be batched with."""

    row: int  # in the campaign's catalog
    campaign_id: str
    clip_id: str
    model: str  # registry name: the cost model's key
    batch_key: tuple[Any, ...]
    generate_s: float  # GPU seconds for this clip (its share of a batch)
    render_s: float  # seconds for its renditions (encode to publish), render_workers at a time
    renditions: int = 0  # channels to render
    render_cpu_s: float = 0.0  # CPU seconds of all its renditions (what sizes render_workers)
    continuation: str | None = None  # the model that continues a clip longer than one call (extend: continue)
    segments: int = 1  # calls the clip takes: its own, then (segments - 1) continuations
    shots: int = 0  # a multi-shot row's shots (each generated in order, on this row's worker)

    @property
    def seconds(self) -> float:
        return self.generate_s + self.render_s


def work_item(
    spec: ClipSpec,
    channels: Iterable[str],
    settings: Settings,
    presets: Mapping[str, ChannelPreset],
    cost: CostModel,
    clip: ClipPlan | None = None,
    looks: Mapping[str, Style] | None = None,
) -> WorkItem:
    """Price one clip: its generation on its model, and the encodes of the given channels.

    With ``clip`` (a planned clip) its exact request is used; without, the request a run would
    make is derived from the row and the model's defaults, with no model files needed (``looks``:
    the styles by name, built once by a caller pricing many rows; default from ``settings``).
    """
    if spec.shots:  # priced shot by shot (each on its own model and length), rendered as one ad
        looks = looks or styles(settings.styles)
        shots = (
            [work_item(s.spec, (), settings, presets, cost, s, looks) for s in clip.shots]
            if clip
            else [work_item(s, (), settings, presets, cost, looks=looks) for s in spec.shot_specs()]
        )
        whole = work_item(replace(spec, shots=()), channels, settings, presets, cost, looks=looks)
        return replace(
            whole,
            batch_key=("shots", spec.campaign_id, spec.clip_id),
            generate_s=sum(s.generate_s for s in shots),
            continuation=next((s.continuation for s in shots if s.continuation), None),
            segments=1 + sum(s.segments - 1 for s in shots),  # the continuations of its long shots
            shots=len(shots),
        )
    ref = resolve_for_task(resolve_model(spec.model), spec.task) if clip is None else clip.model
    info, location = ref.info, ref.location
    request = generation_request(spec, info, settings) if clip is None else clip.request
    if clip is not None:
        segments, companion = clip.segments, clip.continuation
    else:  # the row's and its style's extend, as planning reads them
        segments, companion = continuation_for(spec, ref, (looks or styles(settings.styles))[spec.style])
    continuation = companion.info.name if companion is not None else None
    call = (request.width, request.height, request.num_frames, request.steps)  # a segment is one more such call
    channels = list(channels)
    sizes = [(presets[c].width, presets[c].height, round(spec.duration_s * presets[c].fps)) for c in channels]
    render = sum(cost.render_seconds(*size) for size in sizes)
    return WorkItem(
        row=spec.row,
        campaign_id=spec.campaign_id,
        clip_id=spec.clip_id,
        model=info.name,
        batch_key=(location, *request.batch_key()),
        generate_s=spec.best_of * cost.generate_seconds(info.name, *call)
        + (segments - 1) * cost.generate_seconds(continuation or info.name, *call),  # on its companion
        continuation=continuation,
        segments=segments,
        render_s=render / settings.render_workers,
        renditions=len(sizes),
        render_cpu_s=sum(cost.rendition_cpu_seconds(*size) for size in sizes),
    )


def render_sizing(items: Sequence[WorkItem], cores: int) -> RenderSizing | None:
    """Whether a worker with ``cores`` keeps its GPU busy on these clips (``costs.render_workers_for``
    over their mean GPU seconds per clip and CPU seconds per rendition); None without GPU work."""
    gpu_s = sum(i.generate_s for i in items)
    renditions = sum(i.renditions for i in items)
    if not items or gpu_s <= 0:
        return None
    cpu_per_rendition = sum(i.render_cpu_s for i in items) / renditions if renditions else 0.0
    return render_workers_for(cores, gpu_s / len(items), renditions / len(items), cpu_per_rendition)


@dataclass
class Shard:
    """Clips that one render-shard flow run makes, with its estimated time."""

    shard_id: str
    items: list[WorkItem] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    work_s: float = 0.0  # generation + encodes
    load_s: float = 0.0  # one load per model it holds
    overhead_s: float = 0.0  # queueing, process start, imports

    @property
    def seconds(self) -> float:
        return self.work_s + self.load_s + self.overhead_s

    @property
    def gpu_s(self) -> float:
        return sum(i.generate_s for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "shard": self.shard_id,
            "clips": len(self.items),
            "models": self.models,
            "gpu_s": round(self.gpu_s, 3),
            "estimated_s": round(self.seconds, 3),
            "rows": [i.row for i in self.items],
        }


@dataclass
class ShardLayout:
    """A campaign cut into shards, and what the cut is expected to cost."""

    workers: int
    shards: list[Shard]

    @property
    def work_s(self) -> float:
        """Generation and encode seconds of every clip: what no layout can avoid."""
        return sum(s.work_s for s in self.shards)

    @property
    def gpu_s(self) -> float:
        return sum(s.gpu_s for s in self.shards)

    @property
    def ideal_s(self) -> float:
        """Total work spread perfectly over the workers, with no fixed costs."""
        return self.work_s / max(1, self.workers)

    @property
    def makespan_s(self) -> float:
        """When the last worker finishes: shards run one at a time per worker, longest first."""
        finish = [0.0] * max(1, self.workers)
        for shard in sorted(self.shards, key=lambda s: s.seconds, reverse=True):
            heapq.heapreplace(finish, finish[0] + shard.seconds)
        return max(finish)

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "shards": [s.to_json() for s in self.shards],
            "clips": sum(len(s.items) for s in self.shards),
            "gpu_s": round(self.gpu_s, 3),
            "work_s": round(self.work_s, 3),
            "ideal_s": round(self.ideal_s, 3),
            "makespan_s": round(self.makespan_s, 3),
            "efficiency": round(self.ideal_s / self.makespan_s, 4) if self.makespan_s else 1.0,
        }


def plan_shards(
    items: Sequence[WorkItem],
    shards: int,
    batch_size: int,
    cost: CostModel,
    workers: int | None = None,
) -> ShardLayout:
    """Cut priced clips into ``shards`` shards that finish together, for ``workers`` workers (default one per shard).

    1. Clips that share a batch key form batches of up to ``batch_size`` (they generate together);
       smaller ones when that leaves shards idle (six alike clips on two shards: three and three).
    2. Batches go longest first, each to the shard where it would finish earliest, a model load
       counted when the shard does not hold that model yet: long clips and slow models spread
       evenly, and a model is loaded on one more shard only when that pays for itself.
    Empty shards are dropped; shard ids are stable for a given input.
    """
    # 1. Batches, in catalog order within each batch key, as make_batches forms them.
    groups: dict[tuple[Any, ...], list[WorkItem]] = defaultdict(list)
    for item in sorted(items, key=lambda i: i.row):
        groups[item.batch_key].append(item)
    batches = []
    for group in groups.values():
        size = max(1, min(batch_size, math.ceil(len(group) / max(1, shards))))
        batches += [group[i : i + size] for i in range(0, len(group), size)]
    batches.sort(key=lambda b: (-sum(i.seconds for i in b), b[0].row))

    # 2. Longest processing time first, with a set-up cost per model per shard.
    count = max(1, min(shards, len(batches)))
    layout = [Shard(f"shard-{n:03d}", overhead_s=cost.shard_s) for n in range(count)]
    for batch in batches:
        model, seconds = batch[0].model, sum(i.seconds for i in batch)

        def finish(shard: Shard, model: str = model, seconds: float = seconds) -> float:
            load = 0.0 if model in shard.models else cost.model_load_s(model)
            return shard.seconds + seconds + load

        best = min(layout, key=finish)
        if model not in best.models:
            best.models.append(model)
            best.load_s += cost.model_load_s(model)
        best.items.extend(batch)
        best.work_s += seconds
    for shard in layout:
        shard.items.sort(key=lambda i: i.row)
    return ShardLayout(workers=workers or count, shards=[s for s in layout if s.items])


def shard_parts(run_id: str, shard_id: str, suffix: str) -> tuple[str, ...]:
    return ("runs", run_id, "shards", f"{shard_id}.{suffix}")


# Catalog columns that name input files. Shard flow runs start in the worker's checkout, not in the
# folder the campaign ran from, so relative local paths in them are made absolute for the shards.
PATH_COLUMNS = ("reference_image", "source_video", "logo_uri", "music_uri", "lut")


def write_shard_catalogs(catalog_uri: str, layout: ShardLayout, out: OutputRoot, run_id: str) -> dict[str, str]:
    """Write each shard's rows of the catalog (all columns, plus ``catalog_row``); return URLs by shard id.

    Relative paths to local input files (reference images, logos, music, LUTs) become absolute:
    the workers must see the same files (a shared file system), or the catalog should use URLs.
    """
    table = absolute_input_paths(read_catalog(catalog_uri))
    urls = {}
    for shard in layout.shards:
        rows = [i.row for i in shard.items]
        part = table.take(pa.array(rows, pa.int64())).append_column(CATALOG_ROW, pa.array(rows, pa.int64()))
        buf = io.BytesIO()
        pq.write_table(part, buf)
        relative = out.write_bytes(buf.getvalue(), *shard_parts(run_id, shard.shard_id, "parquet"))
        urls[shard.shard_id] = out.url_of(relative)
    return urls


def absolute_input_paths(table: pa.Table) -> pa.Table:
    """The catalog with relative local paths of existing files in ``PATH_COLUMNS`` made absolute.

    URLs, absolute paths, built-in names (a LUT) and paths to no file are left as they are.
    """
    for name in PATH_COLUMNS:
        if name not in table.column_names or not pa.types.is_string(table.schema.field(name).type):
            continue
        values = [
            str(Path(v).resolve()) if v and "://" not in v and not Path(v).is_absolute() and Path(v).is_file() else v
            for v in table.column(name).to_pylist()
        ]
        table = table.set_column(table.column_names.index(name), name, pa.array(values, pa.string()))
    return table


def restore_catalog_rows(validation: CatalogValidation, catalog_uri: str) -> CatalogValidation:
    """A shard catalog's validation with row numbers of the campaign's catalog, and without ``catalog_row``."""
    rows = read_catalog(catalog_uri).column(CATALOG_ROW).to_pylist()
    specs = [
        replace(s, row=rows[s.row], extra={k: v for k, v in s.extra.items() if k != CATALOG_ROW})
        for s in validation.specs
    ]
    problems = [replace(p, row=rows[p.row]) if p.row is not None else p for p in validation.problems]
    return CatalogValidation(rows=validation.rows, specs=specs, problems=problems)


@dataclass
class ShardResult:
    """What one render-shard flow run did; the campaign turns these back into one run's records."""

    shard_id: str
    run_id: str
    worker: str | None
    host: str
    pid: int
    device: str
    seconds: float  # the flow's body, start to result
    setup_seconds: float  # of which before generation: settings, validation, planning
    masters: list[dict[str, Any]]
    renditions: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    already_published: list[dict[str, Any]]
    model_loads: dict[str, int]
    load_seconds: dict[str, float]
    finished_at: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ShardResult:
        return cls(**{f: data[f] for f in cls.__dataclass_fields__})


def problem_json(problem: Problem) -> dict[str, Any]:
    return asdict(problem)


def problem_from_json(data: dict[str, Any]) -> Problem:
    return Problem(**data)


def shard_result(
    shard_id: str,
    ctx: RunContext,
    validation: CatalogValidation,
    plan: CampaignPlan,
    masters: list[Master],
    renditions: list[Rendition],
    model_loads: dict[str, int],
    load_seconds: dict[str, float],
    started: float,
    setup_seconds: float,
) -> ShardResult:
    """Summarise a finished shard (``started`` is its ``time.perf_counter()`` at the start)."""

    def master(m: Master) -> dict[str, Any]:
        spec = m.clip.spec
        return {
            "campaign_id": spec.campaign_id,
            "clip_id": spec.clip_id,
            "clip_key": m.clip.clip_key,
            "seconds": m.seconds,
            "continued_s": m.continued_s,
            "gate_seconds": m.gate_seconds,
            "reused": m.reused,
            "path": str(m.path) if m.path else None,
            "problem": problem_json(m.problem) if m.problem else None,
        }

    def rendition(r: Rendition) -> dict[str, Any]:
        spec = r.clip.spec
        return {
            "campaign_id": spec.campaign_id,
            "clip_id": spec.clip_id,
            "channel": r.channel,
            "row": jsonable_row(r.row) if r.row else None,
            "problems": [problem_json(p) for p in r.problems],
            "seconds": r.seconds,
        }

    return ShardResult(
        shard_id=shard_id,
        run_id=ctx.run_id,
        worker=os.environ.get("PREFECT__WORKER_NAME"),
        host=socket.gethostname(),
        pid=os.getpid(),
        device=ctx.device.name,
        seconds=time.perf_counter() - started,
        setup_seconds=setup_seconds,
        masters=[master(m) for m in masters],
        renditions=[rendition(r) for r in renditions],
        problems=[problem_json(p) for p in [*validation.problems, *plan.problems]],
        already_published=[jsonable_row(r) for r in plan.already_published],
        model_loads=model_loads,
        load_seconds=load_seconds,
        finished_at=utc_now().isoformat(),
    )


def write_shard_result(result: ShardResult, out: OutputRoot) -> str:
    return out.write_json(asdict(result), *shard_parts(result.run_id, result.shard_id, "json"))


def read_shard_result(out: OutputRoot, run_id: str, shard_id: str) -> ShardResult | None:
    data = out.read_json(*shard_parts(run_id, shard_id, "json"))
    return ShardResult.from_json(data) if data else None


@dataclass
class ShardOutcome:
    """How a shard ended, as the orchestrator saw it."""

    shard: Shard
    result: ShardResult | None  # None: it never finished
    attempts: list[dict[str, Any]]  # flow run id, name, state, message per attempt

    @property
    def state(self) -> str:
        return self.attempts[-1]["state"] if self.attempts else "NOT_STARTED"


def gather_shards(
    plan: CampaignPlan,
    outcomes: Sequence[ShardOutcome],
    run_id: str,
    published: Mapping[tuple[str, str, str], dict[str, Any]] | None = None,
) -> tuple[list[Master], list[Rendition], list[Problem]]:
    """Turn shard outcomes into one run's masters, renditions and extra problems.

    A shard that never finished costs only its own clips: each clip it did not publish is
    reported as a ``shard`` problem (rerun the campaign to make it). What an attempt of this run
    published before it failed counts as this run's: rows of ``published`` (the manifest's
    current rows) with this ``run_id``, and the rows a retried shard found already published.
    """
    clips = {(clip.spec.campaign_id, clip.spec.clip_id): clip for clip, _ in plan.todo}
    channels = {(clip.spec.campaign_id, clip.spec.clip_id): c for clip, c in plan.todo}
    published = published or {}
    masters: list[Master] = []
    renditions: list[Rendition] = []
    problems: list[Problem] = []
    for outcome in outcomes:
        result = outcome.result
        if result is None:
            last = outcome.attempts[-1] if outcome.attempts else {"state": "NOT_STARTED", "message": ""}
            message = (
                f"shard {outcome.shard.shard_id} did not finish after {len(outcome.attempts)} attempt(s) "
                f"(last state {last['state']}: {last.get('message') or 'no message'}); rerun the campaign "
                "to make the rest"
            )
            for item in outcome.shard.items:
                key = (item.campaign_id, item.clip_id)
                clip, done = clips[key], []
                for channel in channels[key]:
                    row = published.get((*key, channel))
                    if row is not None and row["run_id"] == run_id:
                        done.append(Rendition(clip, channel, row=row))
                renditions += done
                if len(done) < len(channels[key]):
                    masters.append(Master(clip, None, problem=clip_problem(clip, "shard", "failed", message)))
            continue
        for m in result.masters:
            clip = clips[(m["campaign_id"], m["clip_id"])]
            problem = problem_from_json(m["problem"]) if m["problem"] else None
            path = Path(m["path"]) if m["path"] else None
            masters.append(Master(clip, path, m["seconds"], continued_s=m.get("continued_s", 0.0), reused=m["reused"],
                                  problem=problem, gate_seconds=m["gate_seconds"]))  # fmt: skip
        for r in result.renditions:
            clip = clips[(r["campaign_id"], r["clip_id"])]
            problems = [problem_from_json(p) for p in r["problems"]]
            renditions.append(Rendition(clip, r["channel"], row=r["row"], problems=problems, seconds=r["seconds"]))
        for row in result.already_published:
            if row["run_id"] == run_id:
                clip = clips[(row["campaign_id"], row["clip_id"])]
                renditions.append(Rendition(clip, row["channel"], row=row))
        problems += [problem_from_json(p) for p in result.problems]
    return masters, renditions, problems


def shard_report(outcome: ShardOutcome) -> dict[str, Any]:
    """One shard's entry in run.json: its clips, where and how it ran."""
    result = outcome.result
    return {
        **outcome.shard.to_json(),
        "clip_ids": [i.clip_id for i in outcome.shard.items],
        "state": outcome.state,
        "attempts": outcome.attempts,
        "worker": result.worker if result else None,
        "host": result.host if result else None,
        "device": result.device if result else None,
        "seconds": round(result.seconds, 3) if result else None,
        "setup_seconds": round(result.setup_seconds, 3) if result else None,
        "load_seconds": result.load_seconds if result else None,
    }
