"""IPTC label metadata in the MP4's XMP, written and read with exiftool.

Problem: platforms and archives look for the IPTC digital source type to tell AI-generated media
apart, and Content Credentials bind every byte of the file, so the metadata has to be in place
before the manifest is signed.

Solution: ``write_label_metadata`` writes the digital source type ``trainedAlgorithmicMedia``, a
description and the creator tool into the MP4's XMP with exiftool, on a temporary copy that
replaces the file only when exiftool succeeded. ``read_label_metadata`` reads them back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from moviegen.config import ProvenanceSettings
from moviegen.provenance.common import TRAINED_ALGORITHMIC_MEDIA, ProvenanceError, generator, replacing
from moviegen.provenance.credentials import ProvenanceFacts

# Our field name -> exiftool tag (group 1 names, as -G1 prints them).
XMP_TAGS = {
    "digital_source_type": "XMP-iptcExt:DigitalSourceType",
    "description": "XMP-dc:Description",
    "creator_tool": "XMP-xmp:CreatorTool",
}
EXIFTOOL_TIMEOUT_S = 300


@cache
def exiftool_binary() -> str:
    """The exiftool executable: ``$MOVIEGEN_EXIFTOOL`` or the one on PATH."""
    found = os.environ.get("MOVIEGEN_EXIFTOOL") or shutil.which("exiftool")
    if not found:
        raise ProvenanceError(
            "exiftool is not installed: run scripts/setup.sh, or apt-get install libimage-exiftool-perl "
            "(brew install exiftool on macOS)"
        )
    return found


def label_description(facts: ProvenanceFacts, settings: ProvenanceSettings) -> str:
    """The XMP description from ``provenance.description`` with the clip's facts filled in."""
    values = {
        "generator": generator(),
        "model": facts.model,
        "campaign_id": facts.campaign_id,
        "clip_id": facts.clip_id,
        "channel": facts.channel,
    }
    try:
        return settings.description.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ProvenanceError(
            f"provenance.description cannot be filled in ({exc!r}): use only the placeholders "
            + ", ".join("{" + k + "}" for k in values)
        ) from None


def write_label_metadata(path: Path, facts: ProvenanceFacts, settings: ProvenanceSettings | None = None) -> Path:
    """Write the IPTC digital source type, description and creator tool into ``path``'s XMP; atomic.

    Must run before ``sign_credentials``: any later change to the file invalidates the signature.
    """
    settings = settings or ProvenanceSettings()
    path = Path(path)
    values = {
        "digital_source_type": TRAINED_ALGORITHMIC_MEDIA,
        "description": label_description(facts, settings),
        "creator_tool": generator(),
    }
    assignments = [f"-{XMP_TAGS[name]}={value}" for name, value in values.items()]
    with replacing(path) as tmp:
        # -o writes a new file and leaves the original untouched until the rename.
        _exiftool([*assignments, "-o", str(tmp), str(path)], what=f"writing XMP into {path.name}")
    return path


def read_label_metadata(path: Path) -> dict[str, Any]:
    """The AI label metadata in ``path``'s XMP: digital source type, description, creator tool.

    Missing fields are None; ``ai_generated`` is True when the digital source type is
    ``trainedAlgorithmicMedia``.
    """
    out = _exiftool(["-j", "-G1", "-XMP:all", str(path)], what=f"reading XMP from {path.name}")
    tags = json.loads(out)[0] if out.strip() else {}
    label: dict[str, Any] = {name: _text(tags.get(tag)) for name, tag in XMP_TAGS.items()}
    label["ai_generated"] = label["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA
    return label


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _exiftool(args: list[str], *, what: str) -> str:
    cmd = [exiftool_binary(), "-q", "-api", "LargeFileSupport=1", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, check=False, timeout=EXIFTOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ProvenanceError(f"{what}: exiftool took longer than {EXIFTOOL_TIMEOUT_S} s and was stopped") from None
    stderr = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0 or stderr.startswith("Error"):
        raise ProvenanceError(f"{what} failed (exiftool exit {proc.returncode}): {stderr or 'no message'}")
    return proc.stdout.decode(errors="replace")
