"""Create what the deployments need on a Prefect server: work pools, limits and crash detection.

Problem: `prefect deploy` needs its work pools to exist, GPUs must not be oversubscribed, and a
GPU machine that dies takes its flow-run process with it, so nobody ever reports that run as
finished: the campaign would wait for it forever.

Solution: one idempotent script, run once per server (and again after changing a value):

    python deployments/setup.py [--gpu-slots 8] [--crash-after 90] [--pending-timeout 900]
                                [--gpu-pool-type process]

1. Work pool ``gpu`` (render-shard runs; ``--gpu-pool-type kubernetes`` for a Kubernetes pool)
   with a concurrency limit of ``--gpu-slots`` flow runs (the GPUs you have), and work pool
   ``campaign`` (the campaign flow runs; they only orchestrate, so any CPU host).
2. Two automations for render-shard runs (flow runs tagged ``moviegen-shard``; other flows are
   left alone). "moviegen: crash silent shards": a run that has sent heartbeats and then goes
   ``--crash-after`` seconds without one (its machine or worker died) is marked Crashed, and the
   campaign starts that shard again. The render-shard deployment makes its runs send a heartbeat
   every 30 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY in deployments/prefect.yaml), so keep
   ``--crash-after`` well above 30. "moviegen: crash stuck shards": a run still Pending
   ``--pending-timeout`` seconds after a worker took it (the worker died while starting it) is
   marked Crashed too; otherwise it would hold a slot of the pool's concurrency limit forever.

The same with Prefect's CLI: `prefect work-pool create gpu --type process`, `prefect work-pool
set-concurrency-limit gpu 8`, `prefect work-pool create campaign --type process`, `prefect
automation create --from-file <the automation as YAML>` (see docs/scale-out.md).
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.states import StateType

SHARD_TAG = "moviegen-shard"  # flows/fan_out.py tags every render-shard run with it
SILENT_AUTOMATION = "moviegen: crash silent shards"
STUCK_AUTOMATION = "moviegen: crash stuck shards"


def ensure_work_pool(client, name: str, pool_type: str, limit: int | None, description: str) -> str:
    """Create the pool when missing; set its concurrency limit either way."""
    try:
        pool = client.read_work_pool(name)
        if pool.type != pool_type:
            raise SystemExit(
                f"work pool {name!r} exists with type {pool.type!r}, not {pool_type!r}: delete it "
                f"(prefect work-pool delete {name}) or pass --gpu-pool-type {pool.type}"
            )
        client.update_work_pool(name, WorkPoolUpdate(concurrency_limit=limit, description=description))
        return f"work pool {name!r} ({pool_type}) updated: concurrency limit {limit}"
    except ObjectNotFound:
        client.create_work_pool(
            WorkPoolCreate(name=name, type=pool_type, concurrency_limit=limit, description=description)
        )
        return f"work pool {name!r} ({pool_type}) created: concurrency limit {limit}"


def crash_automation(name: str, after: str, seconds: int, message: str) -> AutomationCore:
    """Mark a render-shard run Crashed when nothing follows event ``after`` for ``seconds`` (a proactive trigger)."""
    return AutomationCore(
        name=name,
        description=f"{message} Marked Crashed so the moviegen campaign starts the shard again.",
        enabled=True,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{SHARD_TAG}"},
            after={after},
            expect={"prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=message)],
    )


def shard_automations(crash_after_s: int, pending_timeout_s: int) -> list[AutomationCore]:
    return [
        crash_automation(
            SILENT_AUTOMATION,
            "prefect.flow-run.heartbeat",
            crash_after_s,
            f"No heartbeat for {crash_after_s} s: its worker or machine is gone.",
        ),
        crash_automation(
            STUCK_AUTOMATION,
            "prefect.flow-run.Pending",
            pending_timeout_s,
            f"Still pending {pending_timeout_s} s after a worker took it: the worker died while starting it.",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpu-slots", type=int, default=None, help="Most render-shard runs at once (your GPUs).")
    parser.add_argument("--crash-after", type=int, default=90, help="Seconds without a heartbeat before Crashed.")
    parser.add_argument("--pending-timeout", type=int, default=900, help="Seconds in Pending before Crashed.")
    parser.add_argument("--gpu-pool-type", default="process", help="process (GPU hosts) or kubernetes.")
    args = parser.parse_args(argv)
    if args.crash_after < 40:
        parser.error("--crash-after must be at least 40 s: heartbeats come every 30 s")
    with get_client(sync_client=True) as client:
        print(
            ensure_work_pool(
                client, "gpu", args.gpu_pool_type, args.gpu_slots, "moviegen render-shard runs: one worker per GPU"
            )
        )
        print(ensure_work_pool(client, "campaign", "process", None, "moviegen campaign runs (orchestration only)"))
        for automation in shard_automations(args.crash_after, args.pending_timeout):
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
            client.create_automation(automation)
            print(f"automation {automation.name!r}: {automation.actions[0].message}")


if __name__ == "__main__":
    main()
