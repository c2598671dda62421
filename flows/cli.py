"""The ``moviegen`` command: run, validate and inspect campaigns from a terminal, CI or a script.

Exit status of ``run``: 0 every valid row published; 1 finished but something was rejected or
failed (the report says what); 2 nothing could run (unreadable catalog, bad configuration).
Exit status of ``verify``: 0 the file's watermark verifies against a manifest row; 1 it does not;
2 the file cannot be read. Exit status of ``status``: the run's own (0 or 1); 2 when there is no such run.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moviegen import progress as progress_events
from moviegen.catalog.schema import CatalogReadError, read_catalog
from moviegen.config import ConfigError, Settings, load_settings
from moviegen.safety.policy import PolicySet, load_policies

if TYPE_CHECKING:
    from moviegen.costs import RenderSizing
    from moviegen.store import OutputRoot

app = typer.Typer(
    name="moviegen",
    help="Turn a Parquet campaign catalog into safe, labelled AI videos, one rendition per channel.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
# Piped output (scripts, CI logs) gets wide lines instead of tables wrapped at 80 columns.
stdout = Console() if sys.stdout.isatty() else Console(width=240)


class Executor(StrEnum):
    local = "local"
    deployments = "deployments"


def fail(message: str) -> NoReturn:
    """Print one error line (markup in ``message`` is shown as text) and exit 2: the CLI's usage-error exit."""
    console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def _settings(config: Path | None, **overrides) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        fail(str(exc))


def _policies(settings: Settings) -> PolicySet:
    """The run's safety policies; a policy that cannot be used is a configuration error (exit 2)."""
    try:
        return load_policies(settings.safety.policy, settings.safety.campaign_policies)
    except ConfigError as exc:
        fail(str(exc))


def _moderator_line(summary: dict | None) -> str:
    """What ``validate`` says about the model-based moderator."""
    if summary is None:
        return "moderator: none configured (safety.moderator.model)"
    if summary["ran"]:
        return f"moderator: {summary['model']} ran on {summary['rows']} row(s) (threshold {summary['threshold']:g})"
    if summary["error"]:
        held = (
            "rows passed on the rules alone (on_error: allow)" if summary["on_error"] == "allow" else "rows held back"
        )
        return f"moderator: {summary['model']} could not run ({escape(summary['error'])}); {held}"
    return f"moderator: {summary['model']} had no row to judge"


def _signer(settings: Settings) -> None:
    """Check the signing certificate and trust anchors now: a bad provenance configuration is exit 2."""
    from moviegen.provenance import ProvenanceError, check_trust_anchors, load_signing_identity

    try:
        load_signing_identity(settings.provenance)
        check_trust_anchors(settings.provenance)
    except ProvenanceError as exc:
        fail(str(exc))


def _quiet_prefect(verbose: bool) -> None:
    """Prefect settings for a terminal run; they must be set before prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral API's default 20 s start-up limit is too short for a first start (database
    # migrations) on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_EXTRA_LEVEL", "WARNING")


class _RichProgress:
    """A progress bar per stage with clip counts: validate, prompt gate, generate, frame gate, render, publish."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, int] = {}

    def start(self, stage: str, total: int) -> None:
        if stage in self.tasks:
            self.bar.update(self.tasks[stage], total=total)
        else:
            self.tasks[stage] = self.bar.add_task(progress_events.stage_label(stage), total=total)

    def advance(self, stage: str, amount: int = 1) -> None:
        if stage not in self.tasks:
            self.start(stage, 0)
        self.bar.advance(self.tasks[stage], amount)

    def drop(self, stage: str, amount: int = 1) -> None:
        if stage in self.tasks:
            task = self.tasks[stage]
            total = next(t.total for t in self.bar.tasks if t.id == task) or 0
            self.bar.update(task, total=max(0, total - amount))


@app.command()
def run(
    catalog: Annotated[str, typer.Argument(help="Parquet catalog: a path or fsspec URL.")],
    out: Annotated[str | None, typer.Option("--out", help="Output root (path or fsspec URL).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    executor: Annotated[Executor, typer.Option("--executor", help="Where clips are generated.")] = Executor.local,
    preview: Annotated[bool, typer.Option("--preview", help="Quick drafts under <out>/preview.")] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Retire the renditions of rows that left the catalog.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print run.json to stdout.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Run a campaign: validate, generate, render one file per channel, publish with a manifest."""
    settings = _settings(config, out=out, preview=preview or None)
    _policies(settings)  # fail fast on a bad policy file or signing set-up, before the Prefect API starts
    _signer(settings)
    try:
        read_catalog(catalog)  # fail fast, before the Prefect API starts
    except CatalogReadError as exc:
        fail(str(exc))
    _quiet_prefect(verbose)
    if executor is Executor.deployments:
        _check_deployment(settings)
    from flows.campaign import campaign, settings_handed_over  # imports Prefect: only now that a run starts

    bar = Progress(
        TextColumn("{task.description:>11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=json_output or (not console.is_terminal and not verbose),
    )
    try:
        config_uri = str(config) if config else None
        with bar, progress_events.listening(_RichProgress(bar)), settings_handed_over(settings, config_uri, preview):
            result = campaign(
                catalog=catalog,
                out=settings.out,
                config=config_uri,
                preview=preview,
                executor=executor.value,
                prune=prune,
            )
    except ConfigError as exc:
        fail(str(exc))
    except RuntimeError as exc:
        if "ephemeral Prefect API" not in str(exc):
            raise
        fail(
            "the built-in Prefect API did not start in time "
            f"({os.environ.get('PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS')} s); nothing ran. On a busy "
            "machine raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or start `prefect server start` "
            "and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        _print_summary(result)
    raise typer.Exit(result["exit_code"])


def _check_deployment(settings: Settings) -> None:
    """The deployments executor needs a Prefect server and the render-shard deployment on it (else exit 2)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    api = get_current_settings().api.url
    name = settings.scaleout.deployment
    if not api:
        fail(
            "--executor deployments needs a Prefect server: set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api) and deploy deployments/prefect.yaml (see docs); or use --executor local"
        )
    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(name)
    except ObjectNotFound:
        fail(
            f"the Prefect server at {api} has no deployment {name!r}: run "
            "`prefect deploy --prefect-file deployments/prefect.yaml --all` from the project folder"
        )
    except Exception as exc:
        fail(f"cannot reach the Prefect server at {api}: {exc}")


def _print_summary(result: dict) -> None:
    published, problems = result["published"], result["problems"]
    out = escape(result["out"])
    console.print(
        f"[bold]run {result['run_id']}[/bold]: {len(published)} renditions published, "
        f"{result['already_published']} already published, {len(problems)} rejected or failed "
        f"({result['seconds']:.0f} s)"
    )
    counts = result.get("counts")
    if counts:  # run.json from before per-clip records has no counts
        console.print(
            f"  {result['rows']} rows, {result['valid_rows']} valid; clips: {counts['published']} published, "
            f"{counts['already_published']} already published, {counts['quarantined']} quarantined, "
            f"{counts['rejected']} rejected, {counts['failed']} failed"
        )
    stages = [(k, v) for k, v in result.get("stage_seconds", {}).items() if v]
    if stages:
        label = progress_events.stage_label
        console.print("  seconds per stage: " + ", ".join(f"{label(k)} {v:.1f}" for k, v in stages))
    if published:
        console.print(f"  published under {out}/published/  manifest: {out}/manifest/")
    for p in sorted(problems, key=lambda p: (p["row"] is not None, p["row"] or 0))[:20]:  # catalog order
        where = f"row {p['row']}" if p["row"] is not None else "catalog"
        clip = f" {p['clip_id']}" if p["clip_id"] else ""
        column = f" [{p['column']}]" if p["column"] else ""
        console.print(f"  [yellow]{p['stage']}[/yellow] {escape(f'{where}{clip}{column}: ' + p['message'])}")
    if len(problems) > 20:
        console.print(f"  ... and {len(problems) - 20} more in {out}/rejected/")
    if result.get("retired"):
        console.print(f"  {len(result['retired'])} rendition(s) retired (moved to {out}/retired/)")
    waiting = result.get("pending_review") or []
    if waiting:
        campaigns = sorted({r["campaign_id"] for r in waiting})
        console.print(
            f"  {len(waiting)} rendition(s) waiting for review under {out}/review/; approve with: "
            + "; ".join(f"moviegen review approve {c} --by NAME --out {out}" for c in campaigns)
        )
    if result.get("webhooks"):
        from moviegen.publish.webhooks import delivery_line

        console.print("  " + delivery_line(result["webhooks"]))
    for shard in result.get("shards", []):
        where = f" on {shard['worker']}" if shard.get("worker") else ""
        attempts = len(shard["attempts"])
        console.print(
            f"  {shard['shard']}: {shard['clips']} clips, {shard['state'].lower()}{where}"
            + (f" after {attempts} attempts" if attempts > 1 else "")
        )
    held = [p["details"]["quarantine"] for p in problems if p.get("details", {}).get("quarantine")]
    if held:
        console.print(f"  {len(held)} clip(s) held back under {out}/quarantine/: {escape(', '.join(held))}")
    console.print(f"  safety scores of every row and clip: {out}/scores/")
    report = result.get("report") or {}
    if report.get("error"):
        console.print(f"  [yellow]no report:[/yellow] {report['error']} (run.json has every fact)")
    else:
        console.print(f"  report: {out}/runs/{result['run_id']}/report.html")
    console.print(f"  run.json: {out}/runs/{result['run_id']}/run.json")


@app.command()
def status(
    run_id: Annotated[str | None, typer.Argument(help="A run id; the latest run when left out.")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Output root (path or fsspec URL).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the run's run.json.")] = False,
) -> None:
    """Show what a run did (the latest under the output root, or RUN_ID): counts, time per stage, problems.

    Exit status: the run's own (0 everything valid published, 1 something rejected or failed);
    2 when the output root holds no such run.
    """
    from moviegen.report.records import read_run, run_ids
    from moviegen.store import OutputRoot, UnsafePathError

    settings = _settings(config, out=out)
    root = OutputRoot(settings.out)
    runs = run_ids(root)
    if not runs:
        fail(
            f"no runs under {settings.out}/runs/: run `moviegen run CATALOG --out "
            f"{settings.out}` "
            "first, or pass the --out of an earlier run (preview runs are under <out>/preview)"
        )
    chosen = run_id or runs[-1]
    try:
        result = read_run(root, chosen) if chosen in runs else None
    except (UnsafePathError, ValueError) as exc:
        fail(f"cannot read run {chosen}: {exc}")
    if result is None:
        latest = ", ".join(reversed(runs[-5:]))
        fail(
            f"no run {chosen!r} under {settings.out}/runs/; "
            f"the latest are: {latest} "
            "(`moviegen status` alone shows the latest)"
        )
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        if result.get("started_at"):
            console.print(f"started {result['started_at']}; executor {result.get('executor')}")
        _print_summary(result)
    raise typer.Exit(result.get("exit_code", 1))


@app.command()
def plan(
    catalog: Annotated[str, typer.Argument(help="Parquet catalog: a path or fsspec URL.")],
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, max=4096, help="GPU workers to plan for.")] = 1,
    shards: Annotated[
        int | None, typer.Option("--shards", min=1, max=4096, help="Shards (default: one per worker).")
    ] = None,
    out: Annotated[str | None, typer.Option("--out", help="Output root whose timings/ calibrate the estimate.")] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Workers' device kind: cuda, cpu, mps (default: as recorded).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    cores: Annotated[
        int | None,
        typer.Option("--cores", min=1, max=4096, help="CPU cores per worker (default: this machine's)."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Estimate GPU time, wall time and the shard layout of a campaign before spending it (no video model is loaded).

    Rows a run would refuse are listed as ``validate`` lists them; the estimate covers the others (exit 0:
    ``validate`` is the gate).

    Also says, per shard, whether a worker's cores keep its GPU busy with renditions or the GPU
    would wait for them (CPU-bound), and the render_workers that fits (docs/scale-out.md).
    """
    from moviegen.costs import load_cost_model
    from moviegen.generation.generate import grouping_batch_size
    from moviegen.models.registry import resolve_for_task, resolve_model
    from moviegen.presets import channel_presets, styles
    from moviegen.run.screening import check_catalog
    from moviegen.run.shards import plan_shards, render_sizing, work_item
    from moviegen.store import OutputRoot

    settings = _settings(config, out=out)
    policies = _policies(settings)
    try:
        validation = check_catalog(catalog, settings, policies).validation  # the verdict run and validate give
    except CatalogReadError as exc:
        fail(str(exc))
    presets = channel_presets(settings.channels)
    cost = load_cost_model(OutputRoot(settings.out), device)
    looks = styles(settings.styles)  # once, not per row
    items = [work_item(spec, spec.channels, settings, presets, cost, looks=looks) for spec in validation.specs]
    layout = plan_shards(items, shards or workers, grouping_batch_size(settings.generation), cost, workers=workers)
    by_model: dict[str, dict] = {}
    for item in items:
        entry = by_model.setdefault(item.model, {"clips": 0, "gpu_s": 0.0, "rate": vars(cost.rate(item.model))})
        entry["clips"] += 1
        entry["gpu_s"] += item.generate_s
    continued: dict[str, dict[str, int]] = {}  # the models continuing long clips: extra calls, maybe extra loads
    for item in items:
        if item.continuation is not None:
            entry = continued.setdefault(item.continuation, {"clips": 0, "calls": 0})
            entry["clips"] += 1
            entry["calls"] += item.segments - 1
    multi_shot = [item.shots for item in items if item.shots]
    chained = sorted({resolve_for_task(resolve_model(s.model), "i2v").info.name  # continuity: last_frame
                      for s in validation.specs if len(s.shots) > 1 and s.continuity == "last_frame"})  # fmt: skip
    cores = cores or len(os.sched_getaffinity(0))
    sizing = {s.shard_id: render_sizing(s.items, cores) for s in layout.shards}
    report = {
        "rows": validation.rows,
        "valid": len(validation.specs),
        "problems": [p.to_json() for p in validation.problems],  # validate's: the rows a run would refuse
        **layout.to_json(),
        "wall_s": round(layout.makespan_s, 3),
        "by_model": {m: {**e, "gpu_s": round(e["gpu_s"], 3)} for m, e in sorted(by_model.items())},
        "continuations": continued,
        "multi_shot": {"rows": len(multi_shot), "shots": sum(multi_shot), "image_to_video": chained},
        "cost_model": cost.describe(),
        "render_sizing": {
            "cores": cores,
            "render_workers": settings.render_workers,
            "shards": {sid: s.to_json() if s else None for sid, s in sizing.items()},
        },
    }
    if json_output:
        stdout.print_json(json.dumps(report))
        return
    for p in validation.problems:
        console.print(f"[yellow]{p.stage}[/yellow] {escape(p.describe())}")
    unit = "GPU" if cost.device != "cpu" else "CPU"
    table_out = Table("model", "clips", f"{unit} hours", "s per unit", "s per clip", "from")
    for name, e in report["by_model"].items():
        r = e["rate"]
        table_out.add_row(
            name, str(e["clips"]), f"{e['gpu_s'] / 3600:.2f}", f"{r['per_unit_s']:.3g}", f"{r['per_item_s']:.3g}",
            r["source"],
        )  # fmt: skip
    stdout.print(table_out)
    shard_table = Table("shard", "clips", "models", f"{unit} s", "estimated s", "render cores", "render_workers")
    for s in layout.shards[:64]:
        fit = sizing[s.shard_id]
        need = "-" if fit is None else f"{fit.needed:.1f} of {fit.available}" + (" CPU-bound" if fit.cpu_bound else "")
        shard_table.add_row(
            s.shard_id, str(len(s.items)), ", ".join(s.models), f"{s.gpu_s:.0f}", f"{s.seconds:.0f}", need,
            "-" if fit is None else str(fit.render_workers),
        )  # fmt: skip
    stdout.print(shard_table)
    if len(layout.shards) > 64:
        stdout.print(f"... and {len(layout.shards) - 64} more shards (--json lists them all)")
    stdout.print(
        f"{report['valid']} of {report['rows']} rows would run on {cost.device}: "
        f"{layout.gpu_s / 3600:.2f} {unit} hours; "
        f"about {_duration(layout.makespan_s)} on {workers} worker(s) in {len(layout.shards)} shard(s) "
        f"(perfect balance: {_duration(layout.ideal_s)}; efficiency {report['efficiency']:.0%})"
    )
    stdout.print(render_sizing_line([f for f in sizing.values() if f is not None], cores, settings.render_workers))
    for name, c in sorted(continued.items()):
        extra = "" if name in by_model else f"; {name} is loaded besides the rows' models"
        stdout.print(
            f"{c['clips']} clip(s) longer than one call are continued from their last frame: "
            f"{c['calls']} more call(s) on {name} (in the {unit} hours above){extra}"
        )
    if multi_shot:
        shots = sum(multi_shot)
        stdout.print(f"{len(multi_shot)} multi-shot row(s): {shots} shots, each generated and cached on its own")
    for name in chained:  # priced as the row's model (the cost model has no rate for the companion yet)
        extra = "" if name in by_model else f"; {name} is loaded besides the rows' models"
        stdout.print(f"shots with continuity: last_frame start from the shot before on {name}{extra}")


def render_sizing_line(fits: list[RenderSizing], cores: int, configured: int) -> str:
    """One sentence on whether the workers' cores keep their GPUs busy with renditions."""
    if not fits:
        return "renditions: no GPU work to size render_workers for"
    bound = [f for f in fits if f.cpu_bound]
    want = max(f.render_workers for f in fits)
    if bound:
        worst = max(f.needed for f in bound)
        return (
            f"CPU-bound: {len(bound)} of {len(fits)} shard(s) need up to {worst:.1f} cores for renditions but a "
            f"{cores}-core worker has {bound[0].available} (one feeds the GPU): the GPU would wait; use more cores "
            f"per GPU or fewer channels (render_workers {want}, configured {configured})"
        )
    return (
        f"renditions keep up on {cores} cores per worker: render_workers {want} is enough "
        f"(configured {configured}; docs/scale-out.md)"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@app.command()
def validate(
    catalog: Annotated[str, typer.Argument(help="Parquet catalog: a path or fsspec URL.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check a catalog: schema, the prompt gate and its moderator when one is set; exit 0 when every row would run."""
    from moviegen.run.screening import check_catalog

    settings = _settings(config)
    policies = _policies(settings)
    try:
        screening = check_catalog(catalog, settings, policies)
    except CatalogReadError as exc:
        if json_output:
            stdout.print_json(
                json.dumps(
                    {
                        "rows": 0,
                        "valid": 0,
                        "problems": [
                            {
                                "row": None,
                                "clip_id": None,
                                "column": None,
                                "stage": "schema",
                                "rule": "unreadable",
                                "message": str(exc),
                            }
                        ],
                    }
                )
            )
            raise typer.Exit(2) from None
        fail(str(exc))
    result = screening.validation
    if json_output:
        payload = {"rows": result.rows, "valid": len(result.specs), "problems": [p.to_json() for p in result.problems]}
        if screening.moderator is not None:  # the contract's three keys, plus the moderator when one is set
            payload["moderator"] = screening.moderator
        stdout.print_json(json.dumps(payload))
    else:
        for p in result.problems:
            console.print(f"[yellow]{p.stage}[/yellow] {escape(p.describe())}")
        console.print(_moderator_line(screening.moderator))
        console.print(f"{len(result.specs)} of {result.rows} rows would run.")
    raise typer.Exit(0 if not result.problems else 1)


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="A video file (MP4 or any format ffmpeg reads).")],
    out: Annotated[str | None, typer.Option("--out", help="Output root whose manifest to look in.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Say what a video carries: watermark and its manifest row, Content Credentials, AI label metadata.

    Exit 0 when the watermark verifies against a manifest row, 1 when it does not, 2 when the file
    cannot be read. Credentials and label are reported either way: they do not change the status.
    """
    from moviegen.media import MediaError
    from moviegen.provenance import ProvenanceError
    from moviegen.store import OutputRoot
    from moviegen.watermark.readback import identify

    settings = _settings(config, out=out)
    if not file.is_file():
        fail(f"{file} does not exist: pass the path of a video file")
    try:
        found = identify(file, OutputRoot(settings.out))
        result = {"watermark": found.to_json(), **_provenance_sections(file, settings)}
    except MediaError as exc:
        fail(f"cannot read {file} as a video: {exc}")
    except ProvenanceError as exc:
        fail(str(exc))
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        _print_verify(file, found.verified, result, settings.out)
    raise typer.Exit(0 if found.verified else 1)


def _print_verify(file: Path, verified: bool, result: dict, out: str) -> None:
    mark, row = result["watermark"], result["watermark"]["manifest_row"]
    if verified:
        stdout.print(
            f"watermark [green]verified[/green]: payload {mark['payload']}, bit accuracy {mark['bit_accuracy']:.3f}"
        )
        where = f"{row['campaign_id']}/{row['clip_id']} on {row['channel']}"
        stdout.print(f"  {where}: {row['path']} (run {row['run_id']})")
    elif mark["payload"]:
        stdout.print(
            f"watermark payload {mark['payload']} read (bit accuracy {mark['bit_accuracy']:.3f}), "
            f"but no manifest row under {out} issued it: [yellow]not verified[/yellow]"
        )
    else:
        stdout.print(f"no watermark verified in {file} (bit accuracy {mark['bit_accuracy']:.3f})")
    c2pa = result["c2pa"]
    if c2pa["state"] is None:
        stdout.print("Content Credentials: [yellow]none[/yellow] (the file carries no C2PA manifest)")
    else:
        colour = "red" if c2pa["state"] == "Invalid" else "green"
        failures = f" ({', '.join(c2pa['failures'])})" if c2pa["failures"] else ""
        stdout.print(f"Content Credentials: [{colour}]{c2pa['state']}[/{colour}]{failures}")
        stdout.print(f"  digital source type: {c2pa['digital_source_type']}; signed by {c2pa['signer']}")
    label = result["label"]
    if label is None:
        stdout.print("AI label metadata: [yellow]none[/yellow] (no IPTC digital source type or description in XMP)")
    else:
        stdout.print(f"AI label metadata: {label['digital_source_type']}")
        if label["description"]:
            stdout.print(f"  {label['description']}")


def _provenance_sections(file: Path, settings: Settings) -> dict:
    """The ``c2pa`` and ``label`` parts of ``verify --json``, with nulls where the file carries nothing.

    A file without a C2PA manifest gives ``"state": null`` (and every other c2pa field null or
    empty); a manifest that fails validation gives ``"state": "Invalid"`` with the validator's
    failure codes. ``label`` is null when the XMP holds none of the label fields.
    """
    from moviegen.provenance import NO_CREDENTIALS, read_credentials, read_label_metadata

    credentials = read_credentials(file, settings.provenance)
    present = credentials["state"] != NO_CREDENTIALS
    signer = credentials["signer"] or {}
    c2pa = {
        "state": credentials["state"] if present else None,
        "digital_source_type": credentials["digital_source_type"],
        "signer": signer.get("common_name"),
        "generator": credentials["generator"],
        "failures": credentials["failures"],
    }
    label = read_label_metadata(file)
    fields = ("digital_source_type", "description", "creator_tool")
    return {"c2pa": c2pa, "label": label if any(label[k] for k in fields) else None}


@app.command()
def channels(
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    list_styles: Annotated[bool, typer.Option("--styles", help="List the named styles instead.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print every field as JSON.")] = False,
) -> None:
    """List the channel presets (built in and from configuration), or the named styles."""
    from moviegen.presets import channel_presets, styles

    settings = _settings(config)
    try:
        presets, looks = channel_presets(settings.channels), styles(settings.styles)
    except ConfigError as exc:
        fail(str(exc))
    items = looks if list_styles else presets
    if json_output:
        stdout.print_json(json.dumps({name: item.model_dump() for name, item in items.items()}))
        return
    if list_styles:
        table = Table("style", "description", "what it changes")
        for s in looks.values():
            changes = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.changes().items())
            table.add_row(s.name, s.description, changes or "nothing")
        stdout.print(table)
        return
    table = Table("channel", "size", "fps", "fit", "video", "audio", "max s", "safe t/b/l/r %")
    for p in presets.values():
        z = p.safe_zone
        table.add_row(
            p.name,
            f"{p.width}x{p.height}",
            f"{p.fps:g}",
            p.fit if p.fit == "pad" else f"crop {p.anchor}",
            f"{p.codec} {p.profile}@{p.level} {p.maxrate_kbps / 1000:g}M",
            f"{p.audio_codec} {p.audio_rate / 1000:g}k {p.loudness_lufs:g}",
            f"{p.max_duration_s:g}",
            "/".join(f"{round(v * 100)}" for v in (z.top, z.bottom, z.left, z.right)),
        )
    stdout.print(table)


@app.command()
def models() -> None:
    """List the registered models with their defaults."""
    from moviegen.models.registry import MODELS

    table = Table("model", "source", "16:9 size", "fps", "steps", "max frames", "notes")
    for m in MODELS.values():
        w, h = m.sizes["16:9"]
        table.add_row(m.name, m.source, f"{w}x{h}", str(m.fps), str(m.steps), str(m.max_frames), m.notes)
    stdout.print(table)


@app.command("build-tiny")
def build_tiny(config: Annotated[Path | None, typer.Option("--config")] = None) -> None:
    """Build the tiny random-weight model offline and save it in the cache (first use does this too)."""
    from moviegen.models.tiny import ensure_tiny_model

    settings = _settings(config)
    stdout.print(str(ensure_tiny_model(settings.cache_dir)))


@app.command()
def signer(
    config: Annotated[Path | None, typer.Option("--config")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show which certificate signs Content Credentials (creating the development one on first use)."""
    from moviegen.provenance import ProvenanceError, load_signing_identity

    settings = _settings(config)
    try:
        identity = load_signing_identity(settings.provenance)
    except ProvenanceError as exc:
        fail(str(exc))
    info = {
        "development": identity.development,
        "subject": identity.subject,
        "algorithm": identity.algorithm,
        "not_after": identity.not_after.isoformat(),
        "certificate": str(settings.provenance.dev_signer_dir / "cert.pem")
        if identity.development
        else identity.source,
        "trust_anchors": [str(p) for p in settings.provenance.trust_anchors],
    }
    if as_json:
        stdout.print_json(json.dumps(info))
        return
    for key, value in info.items():
        typer.echo(f"{key}: {value}")
    if identity.development:
        console.print(
            "[yellow]development certificate:[/yellow] add its path to provenance.trust_anchors to see your own "
            "files as Trusted; configure a real certificate for production (see the README)."
        )


review_app = typer.Typer(
    help="Brand review: list the renditions waiting under <out>/review, approve (publish) or reject them.",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")


def _review_root(out: str | None, config: Path | None) -> OutputRoot:
    from moviegen.store import OutputRoot

    return OutputRoot(_settings(config, out=out).out)


@review_app.command("list")
def review_list(
    out: Annotated[str | None, typer.Option("--out", help="Output root (path or fsspec URL).")] = None,
    campaign: Annotated[str | None, typer.Option("--campaign", help="Only this campaign_id.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the renditions waiting for review (campaign, clip, channel, file, rendition key)."""
    from moviegen.publish.review import pending_reviews, review_listing

    waiting = [review_listing(r) for r in pending_reviews(_review_root(out, config), campaign)]
    if json_output:
        stdout.print_json(json.dumps(waiting))
        return
    if not waiting:
        console.print("nothing is waiting for review")
        return
    table = Table("campaign", "clip", "channel", "file", "rendition key")
    for w in waiting:
        table.add_row(w["campaign_id"], w["clip_id"], w["channel"], w["path"], w["rendition_key"][:16])
    stdout.print(table)


@review_app.command("approve")
def review_approve(
    campaign_id: Annotated[str, typer.Argument(help="The campaign whose renditions are approved.")],
    clip_ids: Annotated[list[str] | None, typer.Argument(help="Clips to approve; all waiting ones when none.")] = None,
    by: Annotated[str, typer.Option("--by", help="Who approves (recorded in the manifest).")] = "",
    note: Annotated[str | None, typer.Option("--note", help="A note for the record.")] = None,
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel.")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Output root (path or fsspec URL).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
) -> None:
    """Publish waiting renditions, each checked against the sha256 that was reviewed.

    Exit status: 0 all named renditions published; 1 some were refused (changed since review);
    2 nothing of that campaign or those clips is waiting, or no --by.
    """
    from moviegen.publish.review import approve

    _decide(lambda root, hooks: approve(root, campaign_id, clip_ids or [], by, note, channel, hooks), out, config)


@review_app.command("reject")
def review_reject(
    campaign_id: Annotated[str, typer.Argument(help="The campaign of the clips.")],
    clip_ids: Annotated[list[str], typer.Argument(help="Clips to reject.")],
    by: Annotated[str, typer.Option("--by", help="Who rejects (recorded in the manifest and rejected/).")] = "",
    note: Annotated[str, typer.Option("--note", help="Why: recorded for whoever edits the row.")] = "",
    channel: Annotated[str | None, typer.Option("--channel", help="Only this channel.")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Output root (path or fsspec URL).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
) -> None:
    """Reject waiting renditions: never published, recorded in rejected/ (stage review), files moved to retired/."""
    from moviegen.publish.review import reject

    _decide(lambda root, hooks: reject(root, campaign_id, clip_ids, by, note, channel, hooks), out, config)


def _decide(decision, out: str | None, config: Path | None) -> None:
    from moviegen.publish.review import ReviewError
    from moviegen.store import OutputRoot

    settings = _settings(config, out=out)
    try:
        outcome = decision(OutputRoot(settings.out), settings.webhooks)
    except ReviewError as exc:
        fail(str(exc))
    verb = "published" if outcome.decision == "approve" else "rejected"
    for row in outcome.rows:
        console.print(f"{verb} {row['campaign_id']}/{row['clip_id']} on {row['channel']}: {row['path']}")
    for message in outcome.refused:
        console.print(f"[yellow]refused:[/yellow] {escape(message)}")
    if settings.webhooks:
        from moviegen.publish.webhooks import delivery_line

        console.print(delivery_line(outcome.webhooks.to_json()))
    raise typer.Exit(1 if outcome.refused else 0)


webhooks_app = typer.Typer(help="Webhooks: send again what receivers have not acknowledged.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("retry")
def webhooks_retry(
    out: Annotated[str | None, typer.Option("--out", help="Output root (path or fsspec URL).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file (its webhooks).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Send every event not yet acknowledged (queued, failed or refused) again, with its Idempotency-Key.

    Exit status: 0 when every one is now delivered; 1 when some still failed or were refused.
    """
    from moviegen.publish.webhooks import delivery_line, retry_failed
    from moviegen.store import OutputRoot

    settings = _settings(config, out=out)
    if not settings.webhooks:
        fail("no webhooks are configured: add a webhooks: list to the configuration (see README, Webhooks)")
    report = retry_failed(OutputRoot(settings.out), settings.webhooks)
    counts = report.to_json()
    if json_output:
        stdout.print_json(json.dumps(counts))
    else:
        console.print(delivery_line(counts))
    raise typer.Exit(1 if counts["failed"] or counts["refused"] else 0)


def main() -> None:  # pragma: no cover - console entry for `python -m flows.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
