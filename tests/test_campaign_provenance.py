"""End to end: every published rendition of a campaign is watermarked, labelled and signed, and says so.

A real run of the tiny model through every stage; each published file is then read back the way a
platform or ``moviegen verify`` reads it. The development signer's private key must appear nowhere
the run writes or logs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import fast_settings, row
from test_provenance import _mdat_payload
from typer.testing import CliRunner

from flows.cli import app
from moviegen.provenance import TRAINED_ALGORITHMIC_MEDIA, read_credentials, read_label_metadata
from moviegen.run.plain import run_campaign_plain
from moviegen.store import MANIFEST_SCHEMA, OutputRoot
from moviegen.watermark.payload import MIN_BIT_ACCURACY, payload_for, payload_hex
from moviegen.watermark.readback import verify_video

pytestmark = pytest.mark.slow

ROWS = [
    # 9:16 and 16:9 from one clip: each rendition carries its own mark.
    row("launch", channels=["tiktok", "youtube"], caption="New drop, Friday."),
    # Only a pure scale-up of the whole master: the mark goes into the master once.
    row("teaser", channels=["youtube"], seed=8),
    # The tiny model's smooth picture in grey: one embed pass leaves a bit wrong in every frame
    # (measured), so the delivery gate sends it back for a second, stronger pass.
    row("plain", channels=["youtube"], style="mono", anchor="top", caption="Только сегодня"),
]


@pytest.fixture(scope="module")
def campaign_run(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("provenance-campaign")
    from moviegen.catalog.schema import write_catalog

    catalog = base / "catalog.parquet"
    write_catalog(ROWS, str(catalog))
    settings = fast_settings(base / "out", watermark_gate="required")
    logger = logging.getLogger()
    records = _Collect()
    logger.addHandler(records)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        summary = run_campaign_plain(str(catalog), settings)
    finally:
        logger.removeHandler(records)
        logger.setLevel(previous)
    return settings, summary, records.text


class _Collect(logging.Handler):
    """Every log record of the run, formatted with its arguments and any traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_every_rendition_is_published_marked_labelled_and_signed(campaign_run):
    settings, summary, logs = campaign_run
    assert summary.exit_code == 0, [(p.stage, p.rule, p.message) for p in summary.problems]
    assert sorted((r["clip_id"], r["channel"]) for r in summary.published) == [
        ("launch", "tiktok"),
        ("launch", "youtube"),
        ("plain", "youtube"),
        ("teaser", "youtube"),
    ]
    anchored = settings.provenance.model_copy(
        update={"trust_anchors": [settings.provenance.dev_signer_dir / "cert.pem"]}
    )
    out = OutputRoot(settings.out)
    manifest = out.read_rows("manifest", MANIFEST_SCHEMA).to_pylist()
    assert len(manifest) == 4
    for entry in manifest:
        video = Path(out.root) / entry["path"]
        credentials = read_credentials(video, settings.provenance)
        assert credentials["state"] == "Valid", credentials["failures"]
        assert credentials["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
        assert read_credentials(video, anchored)["state"] == "Trusted"
        label = read_label_metadata(video)
        assert label["ai_generated"] and label["creator_tool"].startswith("moviegen")
        reading = verify_video(video, int(entry["watermark_payload"], 16))
        assert reading.verified, reading.describe()
        assert (entry["c2pa_state"], entry["label"]) == ("Valid", "AI-generated")
        assert entry["watermark_bit_accuracy"] >= MIN_BIT_ACCURACY
    payloads = {(m["clip_id"], m["channel"]): m["watermark_payload"] for m in manifest}
    assert payloads[("launch", "tiktok")] != payloads[("launch", "youtube")]  # one mark per rendition
    teaser = next(m for m in manifest if m["clip_id"] == "teaser")
    assert teaser["watermark_payload"] == payload_hex(payload_for(teaser["clip_key"], "master"))
    passes = {(m["clip_id"], m["channel"]): m["watermark_passes"] for m in manifest}
    assert set(passes.values()) <= {1, 2} and passes[("launch", "tiktok")] == 1
    # The tiny model's smooth clips lose bits on some 16:9 renditions (which ones depends on the pixels):
    # the retry embeds into the rendition's own frames with 2 passes, the same payload, and is logged.
    retried = [key for key, n in passes.items() if n == 2]
    assert retried, "no rendition needed the second pass: the fallback is not exercised here"
    for clip_id, channel in retried:
        assert f"{clip_id} on {channel}: watermark NOT verified" in logs and "embedding it again with 2 passes" in logs
    stages = summary.stage_seconds
    assert all(stages.get(s, 0) > 0 for s in ("render", "watermark", "provenance", "delivery", "publish"))


def test_verify_json_contract_on_a_published_file(campaign_run, tmp_path):
    settings, summary, _ = campaign_run
    published = next(r for r in summary.published if r["channel"] == "tiktok")
    config = tmp_path / "anchored.yaml"
    config.write_text(f"provenance:\n  trust_anchors: [{settings.provenance.dev_signer_dir / 'cert.pem'}]\n")
    video = Path(settings.out) / published["path"]
    result = CliRunner().invoke(app, ["verify", str(video), "--out", settings.out, "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) == {"watermark", "c2pa", "label"}
    mark = report["watermark"]
    assert set(mark) == {"payload", "bit_accuracy", "verified", "manifest_row"}
    assert (mark["payload"], mark["verified"]) == (published["watermark_payload"], True)
    assert mark["manifest_row"]["path"] == published["path"]
    assert report["c2pa"]["state"] == "Trusted"
    assert report["c2pa"]["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    assert report["label"]["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA

    # A published file tampered with after signing: Invalid, with the reason c2pa found.
    tampered = tmp_path / "tampered.mp4"
    data = bytearray(video.read_bytes())
    start, size = _mdat_payload(bytes(data))
    for i in range(start + size // 2, start + size // 2 + 16):
        data[i] ^= 0xFF
    tampered.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["verify", str(tampered), "--out", settings.out, "--json"])
    report = json.loads(result.stdout)
    assert report["c2pa"]["state"] == "Invalid"
    assert "assertion.bmffHash.mismatch" in report["c2pa"]["failures"]

    # The unsigned, unlabelled master: nulls where it carries nothing.
    master = next((Path(settings.out) / ".work" / "masters").glob("*.mkv"))
    result = CliRunner().invoke(app, ["verify", str(master), "--out", settings.out, "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 1
    assert (report["c2pa"]["state"], report["c2pa"]["digital_source_type"], report["label"]) == (None, None, None)


def test_the_private_key_appears_nowhere_the_run_writes_or_logs(campaign_run):
    settings, summary, logs = campaign_run
    key_lines = [
        line
        for line in (settings.provenance.dev_signer_dir / "key.pem").read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    assert key_lines
    out = Path(settings.out)
    written = [
        out / "runs" / summary.run_id / "run.json",
        out / "runs" / summary.run_id / "report.html",
        *(out / "manifest").glob("*.parquet"),
        *(out / "published").rglob("*.json"),
        *(out / "published").rglob("*.mp4"),
    ]
    assert len(written) >= 8
    for path in written:
        data = path.read_bytes()
        assert not any(line.encode() in data for line in key_lines), path
    assert "moviegen.provenance.credentials DEBUG signed" in logs  # the signer's own log lines were captured
    assert not any(line in logs for line in key_lines)
    assert not any(line in json.dumps(summary.to_json()) for line in key_lines)
