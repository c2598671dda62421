"""The ``moviegen`` command: run, validate and inspect campaigns from a terminal, CI or a script.

Exit status of ``run``: 0 every valid row published; 1 finished but something was rejected or
failed (the report says what); 2 nothing could run (unreadable catalog, bad configuration).
Exit status of ``verify``: 0 the file's watermark verifies against a manifest row; 1 it does not;
2 the file cannot be read.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moviegen import progress as progress_events
from moviegen.catalog import CatalogReadError, read_catalog, validate_catalog
from moviegen.config import ConfigError, Settings, load_settings
from moviegen.safety.policy import PolicySet, load_policies

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


def _settings(config: Path | None, **overrides) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _policies(settings: Settings) -> PolicySet:
    """The run's safety policies; a policy that cannot be used is a configuration error (exit 2)."""
    try:
        return load_policies(settings.safety.policy, settings.safety.campaign_policies)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _signer(settings: Settings) -> None:
    """Check the signing certificate and trust anchors now: a bad provenance configuration is exit 2."""
    from moviegen.provenance import ProvenanceError, check_trust_anchors, load_signing_identity

    try:
        load_signing_identity(settings.provenance)
        check_trust_anchors(settings.provenance)
    except ProvenanceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _quiet_prefect(verbose: bool) -> None:
    """Prefect settings for a terminal run; they must be set before prefect is imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_EXTRA_LEVEL", "WARNING")


class _RichProgress:
    """A progress bar per stage with clip counts."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, int] = {}

    def start(self, stage: str, total: int) -> None:
        if stage in self.tasks:
            self.bar.update(self.tasks[stage], total=total)
        else:
            self.tasks[stage] = self.bar.add_task(stage, total=total)

    def advance(self, stage: str, amount: int = 1) -> None:
        if stage not in self.tasks:
            self.start(stage, 0)
        self.bar.advance(self.tasks[stage], amount)


@app.command()
def run(
    catalog: Annotated[str, typer.Argument(help="Parquet catalog: a path or fsspec URL.")],
    out: Annotated[str | None, typer.Option("--out", help="Output root (path or fsspec URL).")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    executor: Annotated[Executor, typer.Option("--executor", help="Where clips are generated.")] = Executor.local,
    preview: Annotated[bool, typer.Option("--preview", help="Quick drafts under <out>/preview.")] = False,
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
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    if executor is Executor.deployments:
        console.print(
            "[red]error:[/red] the deployments executor needs a Prefect server and the render-shard "
            "deployment (see deployments/README.md); use --executor local"
        )
        raise typer.Exit(2)
    _quiet_prefect(verbose)
    from flows.campaign import campaign  # imports Prefect: only now that a run really starts

    bar = Progress(
        TextColumn("{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=json_output or (not console.is_terminal and not verbose),
    )
    progress_events.set_listener(_RichProgress(bar))
    try:
        with bar:
            result = campaign(
                catalog=catalog, out=settings.out, config=str(config) if config else None, preview=preview
            )
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        progress_events.set_listener(None)
    if json_output:
        stdout.print_json(json.dumps(result))
    else:
        _print_summary(result)
    raise typer.Exit(result["exit_code"])


def _print_summary(result: dict) -> None:
    published, problems = result["published"], result["problems"]
    out = result["out"]
    console.print(
        f"[bold]run {result['run_id']}[/bold]: {len(published)} renditions published, "
        f"{result['already_published']} already published, {len(problems)} rejected or failed "
        f"({result['seconds']:.0f} s)"
    )
    if published:
        console.print(f"  published under {out}/published/  manifest: {out}/manifest/")
    for p in problems[:20]:
        where = f"row {p['row']}" if p["row"] is not None else "catalog"
        clip = f" {p['clip_id']}" if p["clip_id"] else ""
        column = f" [{p['column']}]" if p["column"] else ""
        console.print(f"  [yellow]{p['stage']}[/yellow] {where}{clip}{column}: {p['message']}")
    if len(problems) > 20:
        console.print(f"  ... and {len(problems) - 20} more in {out}/rejected/")
    held = [p["details"]["quarantine"] for p in problems if p.get("details", {}).get("quarantine")]
    if held:
        console.print(f"  {len(held)} clip(s) held back under {out}/quarantine/: {', '.join(held)}")
    console.print(f"  safety scores of every row and clip: {out}/scores/")
    console.print(f"  report: {out}/runs/{result['run_id']}/report.html")


@app.command()
def validate(
    catalog: Annotated[str, typer.Argument(help="Parquet catalog: a path or fsspec URL.")],
    config: Annotated[Path | None, typer.Option("--config", help="YAML or TOML settings file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check a catalog without loading any model: schema and the prompt gate; exit 0 when every row would run."""
    from moviegen.presets import channel_presets, styles
    from moviegen.safety.prompt import screen_catalog

    settings = _settings(config)
    policies = _policies(settings)
    try:
        table = read_catalog(catalog)
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
        else:
            console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    result = validate_catalog(
        table,
        channels=channel_presets(settings.channels),
        styles=styles(settings.styles),
        default_model=settings.generation.model,
    )
    result = screen_catalog(result, policies).validation
    if json_output:
        payload = {"rows": result.rows, "valid": len(result.specs), "problems": [p.to_json() for p in result.problems]}
        stdout.print_json(json.dumps(payload))
    else:
        for p in result.problems:
            console.print(f"[yellow]{p.stage}[/yellow] {p.describe()}")
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
    from moviegen.publish import OutputRoot
    from moviegen.watermark import identify

    settings = _settings(config, out=out)
    if not file.is_file():
        console.print(f"[red]error:[/red] {file} does not exist: pass the path of a video file")
        raise typer.Exit(2)
    try:
        found = identify(file, OutputRoot(settings.out))
        result = {"watermark": found.to_json(), **_provenance_sections(file, settings)}
    except MediaError as exc:
        console.print(f"[red]error:[/red] cannot read {file} as a video: {exc}")
        raise typer.Exit(2) from None
    except ProvenanceError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
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
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
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
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
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


def main() -> None:  # pragma: no cover - console entry for `python -m flows.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
