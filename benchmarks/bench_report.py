"""What a run report's contact sheets cost: one strip of frames per published rendition.

Problem: the report shows a strip of 4 frames for every published rendition, so its cost grows
with the campaign; decoding a whole long video for 4 frames would make the report the slowest
stage. Solution: ``moviegen.media.frame_strip`` decodes a short video once and picks the frames,
and reads a long one with one fast seek per frame. This script measures both ways side by side on
1080x1920 H.264 renditions (2 s GOP, as the channel presets encode) of 1, 5 and 10 s, and the
whole report (``write_report``) for a run of 20 such renditions.

    .venv/bin/python benchmarks/bench_report.py
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import moviegen.media as media
from moviegen.report.page import write_report
from moviegen.store import OutputRoot

REPEATS = 3


def make_video(path: Path, seconds: int) -> None:
    subprocess.run(
        [media.ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i",
         f"testsrc2=size=1080x1920:rate=30:duration={seconds}", "-c:v", "libx264", "-preset", "veryfast",
         "-g", "60", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip


def timed(path: Path, one_pass: bool) -> float:
    """Median seconds of ``frame_strip`` forced to one pass (decode everything) or to seeks."""
    media.STRIP_ONE_PASS_S = 1e9 if one_pass else 0.0
    runs = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        media.frame_strip(path, 4, 160)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    default = media.STRIP_ONE_PASS_S
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("frame_strip on a 1080x1920 H.264 rendition, 4 frames of 160 px (median of 3):")
        print("| video | one pass (s) | 4 seeks (s) | chosen by default |")
        print("| ---: | ---: | ---: | --- |")
        videos = {}
        for seconds in (1, 5, 10):
            videos[seconds] = folder / f"v{seconds}.mp4"
            make_video(videos[seconds], seconds)
            one, seek = timed(videos[seconds], True), timed(videos[seconds], False)
            chosen = "one pass" if seconds <= default else "seeks"
            print(f"| {seconds} s | {one:.2f} | {seek:.2f} | {chosen} |")
        media.STRIP_ONE_PASS_S = default

        # A whole report: 20 published 5 s renditions (the same file, as far as the strips care).
        out = OutputRoot(str(folder / "out"))
        published = []
        for i in range(20):
            relative = f"published/tiktok/bench/clip{i}.mp4"
            out.put_file(videos[5], *relative.split("/"))
            published.append({"campaign_id": "bench", "clip_id": f"clip{i}", "channel": "tiktok",
                              "path": relative, "width": 1080, "height": 1920, "duration_s": 5.0})  # fmt: skip
        run = {"run_id": "bench", "out": str(folder / "out"), "rows": 20, "valid_rows": 20, "published": published,
               "problems": [], "clips": [], "stage_seconds": {"render": 1.0}, "seconds": 1.0, "exit_code": 0,
               "already_published": 0}  # fmt: skip
        report = write_report(out, run)
        print(
            f"\nwrite_report for 20 published 5 s renditions: {report['seconds']:.1f} s in all, "
            f"{report['contact_sheet_seconds']:.1f} s of it contact sheets; page {report['bytes'] / 1024:.0f} KiB"
        )


if __name__ == "__main__":
    main()
