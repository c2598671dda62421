"""Tell people through Prefect: reviewers when clips wait for them, the team when a campaign run fails.

Problem: a reviewer does not watch the Prefect UI for clips to approve, and a scheduled campaign
that fails at 3 a.m. must reach someone. Webhooks (moviegen.publish.webhooks) feed tools; people
are told through Prefect's own automations and notification blocks, which the team already runs.
Solution: one idempotent script, run once per server (and again after changing a value):

    python deployments/notifications.py --webhook-url https://hooks.slack.com/services/...
    python deployments/notifications.py --block slack-webhook/brand-team   # a block made in the UI

1. A notification block: ``--block TYPE/NAME`` uses one that exists (Slack, Microsoft Teams,
   email, PagerDuty, ... from Prefect's UI or its collections); ``--webhook-url`` creates or
   updates a custom webhook block ``moviegen-people`` that POSTs ``{"subject", "text"}`` JSON (what
   a Slack or Teams incoming webhook takes as ``text``).
2. Automation "moviegen: clips waiting for review": on each ``moviegen.review.waiting`` event (the
   campaign flow emits one per campaign with renditions waiting) it sends the count, the clips,
   the report and the approve command.
3. Automation "moviegen: campaign run failed": a ``campaign`` flow run that ends Failed or Crashed
   sends its name, state and a link to it in the UI.

The same with Prefect's CLI: create the block in the UI (Blocks), then `prefect automation create
--from-file <the automation as YAML>`.
"""

from __future__ import annotations

import argparse
from uuid import UUID

from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from flows.artifacts import REVIEW_WAITING_EVENT  # the moviegen package installs flows/

PEOPLE_BLOCK = "moviegen-people"
REVIEW_AUTOMATION = "moviegen: clips waiting for review"
FAILED_AUTOMATION = "moviegen: campaign run failed"


def webhook_block(url: str, allow_private_urls: bool = False) -> UUID:
    """Create or update the ``moviegen-people`` custom webhook block; its id."""
    block = CustomWebhookNotificationBlock(
        name="moviegen",
        url=url,
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        allow_private_urls=allow_private_urls,
    )
    return block.save(PEOPLE_BLOCK, overwrite=True)


def existing_block(slug: str) -> UUID:
    """The id of a notification block that exists, named ``TYPE/NAME`` (e.g. ``slack-webhook/brand-team``)."""
    block = Block.load(slug)
    return block._block_document_id


def people_automations(block_id: UUID) -> list[AutomationCore]:
    """The two automations, each sending through the block ``block_id``."""
    waiting = AutomationCore(
        name=REVIEW_AUTOMATION,
        description="Tells the reviewers when a campaign run leaves renditions waiting under review/.",
        enabled=True,
        trigger=EventTrigger(
            expect={REVIEW_WAITING_EVENT},
            match={"prefect.resource.id": "moviegen.campaign.*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="moviegen: {{ event.payload.count }} clip(s) of {{ event.payload.campaign_id }} wait for "
                "review",
                body=(
                    "{{ event.payload.count }} rendition(s) of campaign {{ event.payload.campaign_id }} wait for "
                    "review (clips {{ event.payload.clips | join(', ') }}). Report: {{ event.payload.report }}. "
                    "Approve with: {{ event.payload.approve }}, or from the Prefect UI: run the review deployment."
                ),
            )
        ],
    )
    failed = AutomationCore(
        name=FAILED_AUTOMATION,
        description="Tells the team when a campaign flow run ends Failed or Crashed.",
        enabled=True,
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": "campaign"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            SendNotification(
                block_document_id=block_id,
                subject="moviegen: campaign run {{ flow_run.name }} {{ flow_run.state.name }}",
                body=(
                    "Campaign run {{ flow_run.name }} ended {{ flow_run.state.name }}: {{ flow_run.state.message }}. "
                    "{{ flow_run|ui_url }}"
                ),
            )
        ],
    )
    return [waiting, failed]


def install(block_id: UUID) -> list[str]:
    """Replace the two automations on the current Prefect API; what was done, one line each."""
    lines = []
    with get_client(sync_client=True) as client:
        for automation in people_automations(block_id):
            for old in client.read_automations_by_name(automation.name):
                client.delete_automation(old.id)
            client.create_automation(automation)
            lines.append(f"automation {automation.name!r} sends through block {block_id}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--webhook-url", help="Incoming webhook URL (Slack, Teams, a chat bridge) for a new block.")
    where.add_argument("--block", help="An existing notification block, TYPE/NAME (e.g. slack-webhook/brand-team).")
    parser.add_argument(
        "--allow-private-urls", action="store_true", help="Let the webhook block post to a private address."
    )
    args = parser.parse_args(argv)
    block_id = existing_block(args.block) if args.block else webhook_block(args.webhook_url, args.allow_private_urls)
    for line in install(block_id):
        print(line)


if __name__ == "__main__":
    main()
