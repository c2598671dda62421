"""A real tiny campaign (the ``moviegen run`` command, Prefect flow and all) over a catalog that mixes
hostile rows with two good ones, configured with secrets.

The good rows publish (one with ffmpeg filter syntax in its text, drawn literally); every hostile
row lands in ``rejected/`` naming its row and column; nothing is written outside the output root;
no secret appears in any output file, in the terminal or in the logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import row

from moviegen.catalog.schema import write_catalog

MOVIEGEN = str(Path(sys.executable).with_name("moviegen"))
SECRETS = ("ALICE-PASSWORD-42", "SIG-9f8e7d6c5b", "TOK-1a2b3c4d", "PW-s3cr3t-horse-battery", "ENV-t0ken-5ecret")
FILTER_TEXT = "[in]drawtext=text='%{localtime}':x=0,movie=/etc/passwd[out]; \\ : ' , 100%"

# (clip_id, the hostile fields, the column its problem must name)
HOSTILE = [
    ("../../escape", {}, "clip_id"),
    ("camp", {"campaign_id": "../../../outside"}, "campaign_id"),
    ("ctl", {"caption": "\x1b]0;pwned\x07 title"}, "caption"),
    ("huge", {"prompt": "a very long prompt " * 10_000}, "prompt"),
    ("chan", {"channels": ["youtube", "../../../../tmp/x"]}, "channels"),
    ("style", {"style": "cinematic;rm -rf /"}, "style"),
    ("outside", {"logo_uri": "SECRET_LOGO"}, "logo_uri"),  # a real PNG outside the allowed folder
    ("creds", {"reference_image": "https://alice:ALICE-PASSWORD-42@cdn.example.invalid/shot.png"}, "reference_image"),
    ("scheme", {"source_video": "ftp://cdn.example.invalid/clip.mp4"}, "source_video"),
    ("lut", {"lut": "../../../../../etc/shadow.cube"}, "lut"),
    ("tok", {"music_uri": "https://cdn.example.invalid/bed.mp3?X-Amz-Signature=SIG-9f8e7d6c5b&token=TOK-1a2b3c4d"},
     "music_uri"),
    ("dup", {}, "clip_id"),
    ("dup", {}, "clip_id"),
]  # fmt: skip


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.slow
def test_hostile_rows_beside_good_ones_in_a_real_campaign(tmp_path, tiny_model):
    from PIL import Image

    parent = tmp_path / "parent"
    brand, private, out = parent / "brand", parent / "private", parent / "out"
    brand.mkdir(parents=True)
    private.mkdir()
    Image.new("RGB", (96, 48), (250, 200, 0)).save(brand / "logo.png")
    Image.new("RGB", (96, 48), (0, 0, 0)).save(private / "logo.png")

    good = [
        row("good-a", title="50% off; scale=iw*2", caption=FILTER_TEXT, logo_uri=str(brand / "logo.png")),
        row("good-b", hashtags=["spring", "sale"]),
    ]
    hostile = []
    for clip_id, fields, _ in HOSTILE:
        fields = {k: (str(private / "logo.png") if v == "SECRET_LOGO" else v) for k, v in fields.items()}
        hostile.append({**row(clip_id), **fields})
    catalog = parent / "catalog.parquet"
    write_catalog([good[0], *hostile, good[1]], str(catalog))
    config = parent / "moviegen.yaml"
    config.write_text(
        "generation:\n  steps: 2\n  batch_size: 4\n"
        f"inputs:\n  allowed_folders: [{json.dumps(str(brand))}]\n"
        "provenance:\n  private_key_password: PW-s3cr3t-horse-battery\n"
    )
    before = _files(parent)

    result = subprocess.run(
        [MOVIEGEN, "run", str(catalog), "--out", str(out), "--config", str(config), "--json", "--verbose"],
        capture_output=True,
        text=True,
        env={
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a loaded machine starts the API slowly
            **os.environ,
            "MOVIEGEN_PROVENANCE__PRIVATE_KEY_PASSWORD": "ENV-t0ken-5ecret",  # beats the config file's
        },
        cwd=parent,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stdout.strip(), result.stderr[-4000:]
    report = json.loads(result.stdout)

    # 1. The good rows published, the filter syntax carried literally.
    published = sorted(r["clip_id"] for r in report["published"])
    assert published == ["good-a", "good-b"], result.stderr[-3000:]
    sidecar = json.loads((out / "published/youtube/test-camp/good-a.json").read_text())
    assert sidecar["caption"] == FILTER_TEXT

    # 2. Every hostile row is in rejected/ with its row number and column.
    rejected = pq.read_table(out / "rejected").to_pylist()
    found = {(r["row"], r["column"]) for r in rejected}
    for i, (clip_id, _, column) in enumerate(HOSTILE, start=1):
        assert (i, column) in found, (clip_id, column, sorted(found, key=str))
    assert all(r["reason"] for r in rejected)

    # 3. Nothing outside the output root: the parent folder holds what it held, plus out/.
    after = _files(parent)
    assert {f for f in after - before if not f.startswith("out")} == set()
    assert not list(tmp_path.rglob("escape*")) and not list(tmp_path.rglob("outside*"))
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))

    # 4. No secret anywhere: output files (Parquet read as text too), the terminal and the logs.
    texts = [result.stdout, result.stderr]
    for path in out.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
            if path.suffix == ".parquet":
                texts.append(str(pq.read_table(path).to_pylist()))
    for secret in (*SECRETS, "alice:"):
        assert not [t[max(0, t.find(secret) - 80) : t.find(secret) + 40] for t in texts if secret in t], secret

    # 5. validate and plan give the run's verdict before generation (schema, input policy, prompt
    # gate) on every row: one function (moviegen.run.screening.check_catalog) for all three.
    checks = {}
    for command, extra in (("validate", []), ("plan", ["--out", str(out)])):
        done = subprocess.run(
            [MOVIEGEN, command, str(catalog), "--config", str(config), "--json", *extra],
            capture_output=True, text=True, cwd=parent, check=False,
        )  # fmt: skip
        checks[command] = json.loads(done.stdout)
    refused_by_run = {r["row"] for r in rejected if r["stage"] in ("schema", "prompt")}
    assert {p["row"] for p in checks["validate"]["problems"]} == refused_by_run
    assert checks["validate"]["valid"] == checks["plan"]["valid"] == report["valid_rows"]
    assert checks["plan"]["problems"] == checks["validate"]["problems"]
