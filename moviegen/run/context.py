"""A run's context (settings, identity, output root, device, presets, policies) and its start-up."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import socket
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from moviegen.assets import UriPolicy
from moviegen.config import ConfigError, Settings
from moviegen.generation.device import Device, pick_device, use_deterministic_algorithms
from moviegen.generation.loading import process_pipeline_cache
from moviegen.presets import ChannelPreset, Style, channel_presets, styles
from moviegen.provenance import (
    ProvenanceError,
    SigningIdentity,
    check_trust_anchors,
    load_signing_identity,
)
from moviegen.render.encode import set_rendition_slots
from moviegen.safety import (
    PolicySet,
    load_policies,
    prepare_detector,
)
from moviegen.store import OutputRoot, new_run_id, process_alive, utc_now
from moviegen.watermark.model import default_watermarker
from moviegen.watermark.payload import WatermarkError

# Temporary files in the scratch folder carry their writer's process id: ".<stem>.tmp<pid>...".
_TMP_PID = re.compile(r"^\..*\.tmp(\d+)")


def sweep_work_dir(work_dir: Path) -> int:
    """Remove scratch left by dead processes: half-written masters, soundtracks and assets, render folders.

    Only this machine's processes write here, so a writer's process id tells whether it is alive.
    Returns how many files and folders were removed.
    """
    removed = 0
    if not work_dir.is_dir():
        return 0
    for path in work_dir.rglob(".*.tmp*"):
        match = _TMP_PID.match(path.name)
        if match and path.is_file() and not process_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    renders = work_dir / "renders"
    for folder in renders.iterdir() if renders.is_dir() else ():
        pid = folder.name.split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def run_started(out: OutputRoot, run_id: str, started_at: Any) -> dict[str, Any]:
    """Write ``runs/<run_id>/run.json`` as ``running``; the end of the run replaces it with the summary.

    A run killed on the way keeps this ``running`` record, which the next run marks ``interrupted``.
    """
    record = {
        "run_id": run_id,
        "status": "running",
        "started_at": started_at,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    out.write_json(record, "runs", run_id, "run.json")
    return record


def mark_interrupted_runs(out: OutputRoot, current_run_id: str) -> list[str]:
    """Find runs recorded as ``running`` whose process on this machine is gone; mark them ``interrupted``.

    Runs of other machines are left as they are (they may still be running). Returns their ids.
    """
    folder = out.path("runs")
    if not out.fs.exists(folder):
        return []
    interrupted = []
    host = socket.gethostname()
    for name in sorted(out.fs.ls(folder, detail=False)):
        run_id = name.rstrip("/").rsplit("/", 1)[-1]
        if run_id == current_run_id:
            continue
        try:
            with out.fs.open(f"{name}/run.json", "rb") as f:
                record = json.loads(f.read())
        except (OSError, ValueError):
            continue
        if record.get("status") != "running" or record.get("host") != host:
            continue
        pid = record.get("pid")
        if not isinstance(pid, int) or pid <= 0 or process_alive(pid):
            continue
        record.update(status="interrupted", resumed_by=current_run_id)
        out.write_json(record, "runs", run_id, "run.json")
        interrupted.append(run_id)
    return interrupted


@dataclass
class RunContext:
    """What every stage of one run needs: settings, identity, where things go, device, presets."""

    settings: Settings
    run_id: str
    out: OutputRoot
    work_dir: Path
    device: Device
    presets: dict[str, ChannelPreset]
    styles: dict[str, Style]
    started_at: datetime
    policies: PolicySet
    # Loaded once per run; repr=False keeps the private key out of any repr of the context.
    signer: SigningIdentity = field(repr=False)
    interrupted_runs: list[str] = field(default_factory=list)  # killed runs this one resumes
    loads_at_start: dict[str, int] = field(default_factory=dict)  # the process's model loads before this run

    def model_loads(self) -> dict[str, int]:
        """Checkpoints loaded during this run: the process's cache counts the loads of every run it served."""
        return dict(process_pipeline_cache().loads - Counter(self.loads_at_start))  # keeps positive counts only

    @functools.cached_property
    def uri_policy(self) -> UriPolicy:
        """Where this run may fetch a row's files from (``settings.inputs``)."""
        return UriPolicy.from_settings(self.settings.inputs)


def start_run(settings: Settings, run_id: str | None = None) -> RunContext:
    """Open the output root and scratch folder and choose the device for a new run.

    Loads what every rendition needs up front (the signing identity, the trust anchors, the
    watermark models), so a bad configuration stops the run now (ConfigError) rather than
    failing every rendition later; then clears what a killed run left behind.
    """
    retries = settings.retries
    out = OutputRoot(
        settings.out.rstrip("/") + "/preview" if settings.preview else settings.out,
        write_attempts=retries.write_attempts,
        retry_delay_s=retries.delay_s,
    )
    if settings.work_dir:
        work_dir = Path(settings.work_dir)
    elif out.is_local:
        work_dir = Path(out.root) / ".work"
    else:
        work_dir = settings.cache_dir / "work"
    work_dir.mkdir(parents=True, exist_ok=True)
    set_rendition_slots(settings.render_workers)
    policies = load_policies(settings.safety.policy, settings.safety.campaign_policies)
    for policy in policies.all():
        prepare_detector(policy)  # a bad detector name or label fails the run now, not clip by clip
    try:
        signer = load_signing_identity(settings.provenance)
        check_trust_anchors(settings.provenance)
        default_watermarker()
    except (ProvenanceError, WatermarkError) as exc:
        raise ConfigError(str(exc)) from None
    device = pick_device(settings.generation.device, settings.generation.dtype)
    if settings.generation.deterministic:
        use_deterministic_algorithms(device)  # process-wide: before any generation
    ctx = RunContext(
        settings=settings,
        run_id=run_id or new_run_id(),
        out=out,
        work_dir=work_dir,
        device=device,
        presets=channel_presets(settings.channels),
        styles=styles(settings.styles),
        started_at=utc_now(),
        policies=policies,
        signer=signer,
        loads_at_start=dict(process_pipeline_cache().loads),
    )
    # A killed run's leftovers: temporary files of dead writers, and its "running" run.json. (What it
    # published without recording is adopted when its clips are planned: plan_campaign.)
    out.clean_staging(retries.stale_temp_s)
    sweep_work_dir(work_dir)
    ctx.interrupted_runs = mark_interrupted_runs(out, ctx.run_id)
    if not out.exists("runs", ctx.run_id, "run.json"):  # a shard joins its campaign's run: that one is on record
        run_started(out, ctx.run_id, ctx.started_at)
    return ctx
