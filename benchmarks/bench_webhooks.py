"""What a webhook pass costs beyond its HTTP calls: the queued rows, one record per event, the compaction.

Problem: a campaign of thousands of renditions sends thousands of events at its end, and each is
recorded in ``webhooks/`` (queued before the send, then each attempt) so that delivery survives a
crash. Goal: the records cost at most as much again as the POSTs themselves (a pass under 2x the
bare POSTs) to a receiver on this machine.
Solution: measure, side by side in one run, N bare signed POSTs (urllib, as the pass makes them)
and one ``deliver_manifest_rows`` pass over N manifest rows to the same real receiver on 127.0.0.1.

    .venv/bin/python benchmarks/bench_webhooks.py [--events 500] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GOAL_RATIO = 2.0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def manifest_rows(n: int, tag: str) -> list[dict]:
    now = datetime.now(UTC)
    return [
        {"run_id": "bench", "campaign_id": "bench", "clip_id": f"clip-{i:05d}", "channel": "tiktok",
         "path": f"published/tiktok/bench/clip-{i:05d}.mp4", "clip_key": f"c{i}", "rendition_key": f"{tag}-{i:05d}",
         "sha256": "0" * 64, "bytes": 1000 + i, "status": "published", "published_at": now, "c2pa_state": "valid"}
        for i in range(n)
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from moviegen.config import WebhookSettings
    from moviegen.publish.webhooks import deliver_manifest_rows, event_payload, sign
    from moviegen.store import OutputRoot

    os.environ["BENCH_WEBHOOK_SECRET"] = "bench-secret-0123456789"
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    hook = WebhookSettings(name="bench", url=url, secret_env="BENCH_WEBHOOK_SECRET")
    bare_s, pass_s = [], []
    with tempfile.TemporaryDirectory() as folder:
        out = OutputRoot(folder)
        for repeat in range(args.repeats):
            rows = manifest_rows(args.events, f"r{repeat}")
            started = time.perf_counter()
            for row in rows:
                body = json.dumps(
                    {**event_payload(out, row, "published"), "sent_at": datetime.now(UTC).isoformat()}
                ).encode()
                signature = sign("bench-secret-0123456789", body, int(time.time()))
                headers = {"Content-Type": "application/json", "X-Moviegen-Signature": signature}
                with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"), timeout=10) as r:
                    r.read()
            bare_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = deliver_manifest_rows(out, [hook], rows, f"bench-{repeat}")
            pass_s.append(time.perf_counter() - started)
            assert report.to_json()["delivered"] == args.events, report.to_json()
        parts = len(os.listdir(os.path.join(folder, "webhooks")))
    server.shutdown()
    bare, whole = statistics.median(bare_s), statistics.median(pass_s)
    figures = {
        "events": args.events,
        "bare_posts_s": round(bare, 3),
        "pass_s": round(whole, 3),
        "ms_per_event": round(1000 * whole / args.events, 2),
        "ratio": round(whole / bare, 2),
        "parts_after_passes": parts,
        "load_average": round(os.getloadavg()[0], 1),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.events} events to a receiver on 127.0.0.1, medians of {args.repeats}:")
    print(f"  bare signed POSTs   {bare:.3f} s")
    print(f"  deliver pass        {whole:.3f} s  ({figures['ms_per_event']} ms per event, records included)")
    verdict = "met" if figures["ratio"] <= GOAL_RATIO else "NOT met"
    print(f"  ratio               {figures['ratio']}x  (goal <= {GOAL_RATIO}x: {verdict})")
    print(f"  webhooks/ parts     {parts} after {args.repeats} passes (one per pass)")
    print(f"  load average        {figures['load_average']}")


if __name__ == "__main__":
    main()
