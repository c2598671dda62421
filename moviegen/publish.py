"""The output root: atomic publishing, sidecars, and the manifest and rejected Parquet datasets.

Any fsspec URL works (a local folder by default). Every file is written under a temporary name
and renamed into place, so a published file either is whole or is not there. Paths are built
from validated slugs only, never from raw user text.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

MANIFEST_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("campaign_id", pa.string()),
        ("clip_id", pa.string()),
        ("channel", pa.string()),
        ("path", pa.string()),
        ("clip_key", pa.string()),
        ("rendition_key", pa.string()),
        ("watermark_payload", pa.string()),
        ("sha256", pa.string()),
        ("bytes", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("duration_s", pa.float64()),
        ("frames", pa.int32()),
        ("model", pa.string()),
        ("seed", pa.int64()),
        ("style", pa.string()),
        ("published_at", pa.timestamp("us", tz="UTC")),
        # What the delivery gate found in the final file (added with the watermark and provenance;
        # parts written before them read these as nulls).
        ("watermark_bit_accuracy", pa.float64()),
        ("watermark_passes", pa.int32()),
        ("c2pa_state", pa.string()),
        ("c2pa_signer", pa.string()),
        ("label", pa.string()),
    ]
)

REJECTED_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("campaign_id", pa.string()),
        ("clip_id", pa.string()),
        ("row", pa.int64()),
        ("column", pa.string()),
        ("stage", pa.string()),
        ("rule", pa.string()),
        ("reason", pa.string()),
        ("details", pa.string()),
        ("rejected_at", pa.timestamp("us", tz="UTC")),
    ]
)


class UnsafePathError(ValueError):
    """A path component is not a safe slug (it would escape or confuse the output layout)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_id() -> str:
    """Sortable, unique run id: UTC time plus a random suffix."""
    return utc_now().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class OutputRoot:
    """The output root of a run: a local folder or any fsspec URL."""

    url: str

    def __post_init__(self) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        self.is_local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def path(self, *parts: str) -> str:
        """Absolute path (in the filesystem's own terms) of a relative location under the root."""
        for part in parts:
            for piece in part.split("/"):
                if not SAFE_PART.match(piece) or ".." in piece:
                    raise UnsafePathError(f"unsafe path component {piece!r} under the output root")
        return "/".join([self.root, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def put_file(self, local: Path, *parts: str) -> str:
        """Copy a local file into place atomically; return its path relative to the root."""
        final = self.path(*parts)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        self.fs.put_file(str(local), tmp)
        self.fs.mv(tmp, final)
        return "/".join(parts)

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write bytes into place atomically; return the relative path."""
        final = self.path(*parts)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, final)
        return "/".join(parts)

    def write_json(self, value: Any, *parts: str) -> str:
        return self.write_bytes(json.dumps(value, indent=2, ensure_ascii=False, default=str).encode(), *parts)

    def append_rows(self, dataset: str, schema: pa.Schema, rows: Iterable[dict[str, Any]], run_id: str) -> str | None:
        """Add rows to a Parquet dataset folder as one new part file (atomic); None when no rows."""
        rows = list(rows)
        if not rows:
            return None
        table = pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return self.write_bytes(buf.getvalue(), dataset, f"part-{run_id}-{uuid.uuid4().hex[:8]}.parquet")

    def read_rows(self, dataset: str, schema: pa.Schema) -> pa.Table:
        """Read every part of a dataset folder (temporary files ignored); empty table when none.

        Identical rows are read once: a compaction interrupted between writing the compacted part
        and deleting the small ones leaves both behind.
        """
        tables = [self._read_part(name, schema) for name in self._parts(dataset)]
        if not tables:
            return schema.empty_table()
        rows = pa.concat_tables(tables).to_pylist()
        unique = list({json.dumps(r, sort_keys=True, default=str): r for r in rows}.values())
        return pa.Table.from_pylist(unique, schema=schema)

    def compact_run(self, dataset: str, schema: pa.Schema, run_id: str) -> None:
        """Merge a run's small part files (one per published rendition) into one part file."""
        prefix = f"part-{run_id}-"
        parts = [name for name in self._parts(dataset) if name.rsplit("/", 1)[-1].startswith(prefix)]
        if len(parts) < 2:
            return
        table = pa.concat_tables([self._read_part(name, schema) for name in parts])
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(buf.getvalue(), dataset, f"part-{run_id}.parquet")
        for name in parts:
            self.fs.rm(name)

    def _parts(self, dataset: str) -> list[str]:
        folder = self.path(dataset)
        if not self.fs.exists(folder):
            return []
        names = self.fs.ls(folder, detail=False)
        return sorted(n for n in names if n.endswith(".parquet") and ".tmp-" not in n)

    def _read_part(self, name: str, schema: pa.Schema) -> pa.Table:
        """One part file in ``schema``: columns it lacks (written by an older moviegen) read as nulls."""
        with self.fs.open(name, "rb") as f:
            table = pq.read_table(f)
        for field in schema:
            if field.name not in table.column_names:
                table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
        return table.select(schema.names).cast(schema)


def published_renditions(out: OutputRoot) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The latest manifest row per (campaign_id, clip_id, channel) whose file is still there."""
    table = out.read_rows("manifest", MANIFEST_SCHEMA)
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in sorted(table.to_pylist(), key=lambda r: r["published_at"]):
        latest[(row["campaign_id"], row["clip_id"], row["channel"])] = row
    return {k: r for k, r in latest.items() if out.fs.exists(f"{out.root}/{r['path']}")}


def published_paths(channel: str, campaign_id: str, clip_id: str) -> dict[str, tuple[str, ...]]:
    """Relative locations of a rendition's video, sidecar and poster."""
    base = ("published", channel, campaign_id)
    return {
        "video": (*base, f"{clip_id}.mp4"),
        "sidecar": (*base, f"{clip_id}.json"),
        "poster": (*base, f"{clip_id}.jpg"),
    }
