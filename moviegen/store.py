"""The output root (a local folder or fsspec URL) and its datasets: atomic writes, staging, schemas."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from moviegen.reliability import retry

log = logging.getLogger(__name__)

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
        # Refresh history. Parts are never rewritten: a new row records each change instead.
        # status: "published", or "retired" (moved out of published/ by --prune; path is where it went).
        # supersedes: the rendition_key this row replaced at the same channel/campaign/clip, if any.
        ("status", pa.string()),
        ("supersedes", pa.string()),
        # What the delivery gate found in the final file (added with the watermark and provenance;
        # parts written before them read these as nulls).
        ("watermark_bit_accuracy", pa.float64()),
        ("watermark_passes", pa.int32()),
        ("c2pa_state", pa.string()),
        ("c2pa_signer", pa.string()),
        ("label", pa.string()),
        # LoRA adapters (JSON list of {name, sha256, scale}); null without any, and in older parts.
        ("loras", pa.string()),
        # Review (moviegen.publish.review): who approved or rejected the rendition, when, and why;
        # null for renditions published without review, and in older parts.
        ("reviewed_by", pa.string()),
        ("reviewed_at", pa.timestamp("us", tz="UTC")),
        ("review_note", pa.string()),
        # Calls that made the clip: 1, or more for a continued clip (extend: continue); null in older parts (1).
        ("segments", pa.int32()),
        # Shots of the ad: 1, or more for a multi-shot row (the ``shots`` column); null in older parts (1).
        ("shots", pa.int32()),
    ]
)

# Manifest statuses. The publication track: published, then maybe retired. The review track: a
# rendition waits as pending_review (its files under review/), then is approved (a published row
# with reviewed_by) or rejected (review_rejected; its files move to retired/), or is withdrawn.
# withdrawn: a waiting rendition whose row left the catalog (``--prune``); its files move to retired/.
PUBLISHED, RETIRED = "published", "retired"
PENDING_REVIEW, REVIEW_REJECTED, WITHDRAWN = "pending_review", "review_rejected", "withdrawn"
REVIEW_STATUSES = (PENDING_REVIEW, REVIEW_REJECTED, WITHDRAWN)  # the review track's own rows

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


# Temporary files live in one staging folder beside the layout, never next to a published file: a
# run killed mid-copy leaves its half-written file there, where no reader of published/ looks.
STAGING = ".staging"

# Intents of publishes under way (one JSON per rendition key): see adopt_interrupted.
JOURNAL = "journal"

# Errors a retry cannot fix: the destination said no, not "not now".
PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_id() -> str:
    """Sortable, unique run id: UTC time plus a random suffix."""
    return utc_now().strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def sha256_file(path: Path, fs: Any = None) -> str:
    """SHA-256 of a local file, or of a file on ``fs`` (an fsspec filesystem), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with fs.open(path, "rb") if fs is not None else open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class OutputRoot:
    """The output root of a run: a local folder or any fsspec URL."""

    url: str
    write_attempts: int = 3  # tries per write to the destination (a flaky network share or bucket)
    retry_delay_s: float = 0.5  # wait before the second try; doubled for each further one

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

    @property
    def absolute_url(self) -> str:
        """The root as a full URL (``file:///abs/path`` for a local folder): what another machine is given."""
        return self.fs.unstrip_protocol(self.root)

    def url_of(self, relative: str) -> str:
        """The full URL of a location under the root, given relative to it."""
        return self.fs.unstrip_protocol(self.path(*relative.split("/")))

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def put_file(self, local: Path, *parts: str) -> str:
        """Copy a local file into place atomically (staged, then moved); return its path relative to the root."""
        return self._staged(parts, lambda tmp: self.fs.put_file(str(local), tmp))

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write bytes into place atomically; return the relative path."""

        def write(tmp: str) -> None:
            with self.fs.open(tmp, "wb") as f:
                f.write(data)

        return self._staged(parts, write)

    def _staged(self, parts: tuple[str, ...], write: Callable[[str], None]) -> str:
        """Write to a staging name, then move into place; retry transient destination errors."""
        final = self.path(*parts)

        def attempt() -> str:
            tmp = self.staging_name(parts[-1])
            try:
                self.fs.makedirs(tmp.rsplit("/", 1)[0], exist_ok=True)
                write(tmp)
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                self.fs.mv(tmp, final)
            except OSError:
                _remove_quietly(self.fs, tmp)
                raise
            return "/".join(parts)

        return retry(
            attempt,
            self.write_attempts,
            (OSError,),
            f"writing {'/'.join(parts)}",
            self.retry_delay_s,
            permanent=PERMANENT_OS_ERRORS,
        )

    def staging_name(self, name: str) -> str:
        """A fresh temporary path in the staging folder, naming the host and process that writes it."""
        return f"{self.root}/{STAGING}/{_owner()}-{uuid.uuid4().hex[:8]}-{name}.tmp"

    def clean_staging(self, stale_after_s: float) -> int:
        """Remove temporary files left by writers that died: this host's dead processes, or anyone's old ones.

        Returns how many were removed. A live writer's file (this host, process alive, or younger
        than ``stale_after_s`` on another host) is left alone: runs may share an output root.
        """
        folder = f"{self.root}/{STAGING}"
        if not self.fs.exists(folder):
            return 0
        removed = 0
        host = socket.gethostname()
        for info in self.fs.ls(folder, detail=True):
            name = info["name"].rsplit("/", 1)[-1]
            owner_host, _, rest = name.rpartition("~")
            pid = rest.split("-", 1)[0]
            if owner_host == host and pid.isdigit():
                stale = not process_alive(int(pid))
            else:
                stale = _age_s(info) > stale_after_s
            if stale:
                _remove_quietly(self.fs, info["name"])
                removed += 1
        return removed

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
        return self._unique([self._read_part(name, schema) for name in self._parts(dataset)], schema)

    def compact_run(self, dataset: str, schema: pa.Schema, run_id: str) -> None:
        """Merge a run's small part files (one per published rendition) into its one part file.

        Rows already in that part file (an earlier compaction, maybe interrupted before it deleted
        the small parts) are kept, and identical rows are written once.
        """
        names = self._parts(dataset)
        small = [name for name in names if name.rsplit("/", 1)[-1].startswith(f"part-{run_id}-")]
        whole = [name for name in names if name.rsplit("/", 1)[-1] == f"part-{run_id}.parquet"]
        if len(small) + len(whole) < 2:
            return
        table = self._unique([self._read_part(name, schema) for name in [*whole, *small]], schema)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.write_bytes(buf.getvalue(), dataset, f"part-{run_id}.parquet")
        for name in small:
            self.fs.rm(name)

    @staticmethod
    def _unique(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
        if not tables:
            return schema.empty_table()
        rows = pa.concat_tables(tables).to_pylist()
        unique = list({json.dumps(r, sort_keys=True, default=str): r for r in rows}.values())
        return pa.Table.from_pylist(unique, schema=schema)

    def _parts(self, dataset: str) -> list[str]:
        folder = self.path(dataset)
        if not self.fs.exists(folder):
            return []
        names = self.fs.ls(folder, detail=False)
        return sorted(n for n in names if n.endswith(".parquet") and ".tmp-" not in n)

    def _read_part(self, name: str, schema: pa.Schema) -> pa.Table:
        """One part file in ``schema``: columns it predates are read as nulls, unknown ones dropped."""
        with self.fs.open(name, "rb") as f:
            table = pq.read_table(f)
        for i, column in enumerate(schema):
            if column.name not in table.column_names:
                table = table.add_column(i, column.name, pa.nulls(table.num_rows, column.type))
        return table.select(schema.names).cast(schema)

    def move(self, source: tuple[str, ...], target: tuple[str, ...]) -> bool:
        """Move a file within the root (a rename on local disks); False when the source is not there."""
        src, dst = self.path(*source), self.path(*target)
        if not self.fs.exists(src):
            return False
        self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        self.fs.mv(src, dst)
        return True

    def read_json(self, *parts: str) -> Any | None:
        """A JSON file under the root, or None when it is not there."""
        try:
            with self.fs.open(self.path(*parts), "rb") as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def remove(self, *parts: str) -> None:
        """Delete a file under the root when it is there."""
        _remove_quietly(self.fs, self.path(*parts))


def _owner() -> str:
    """``<host>~<pid>``: who wrote a staged file, so a later run can tell a dead writer's leftovers."""
    return f"{socket.gethostname()}~{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _age_s(info: dict[str, Any]) -> float:
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(mtime, datetime):
        return (utc_now() - mtime.astimezone(UTC)).total_seconds()
    if isinstance(mtime, int | float):
        return time.time() - mtime
    return float("inf")  # unknown age: a leftover nobody can claim


def _remove_quietly(fs: Any, path: str) -> None:
    try:
        if fs.exists(path):
            fs.rm(path)
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)


def retired_paths(channel: str, campaign_id: str, clip_id: str, rendition_key: str) -> dict[str, tuple[str, ...]]:
    """Where ``--prune`` moves a rendition's video, sidecar and poster (one folder per clip, named by key)."""
    base = ("retired", channel, campaign_id, clip_id)
    return {
        "video": (*base, f"{rendition_key}.mp4"),
        "sidecar": (*base, f"{rendition_key}.json"),
        "poster": (*base, f"{rendition_key}.jpg"),
    }


def move_rendition(out: OutputRoot, source: dict[str, tuple[str, ...]], target: dict[str, tuple[str, ...]]) -> None:
    """Move a rendition's video (first: it stops being where it was at once), sidecar and poster."""
    for part in ("video", "sidecar", "poster"):
        out.move(source[part], target[part])


def review_paths(channel: str, campaign_id: str, clip_id: str) -> dict[str, tuple[str, ...]]:
    """Where a rendition waits for review: ``review/<channel>/<campaign_id>/<clip_id>.mp4``, sidecar, poster."""
    return published_paths(channel, campaign_id, clip_id, folder="review")


def published_paths(
    channel: str, campaign_id: str, clip_id: str, folder: str = "published"
) -> dict[str, tuple[str, ...]]:
    """Relative locations of a rendition's video, sidecar and poster (under ``review/`` while it waits)."""
    base = (folder, channel, campaign_id)
    return {
        "video": (*base, f"{clip_id}.mp4"),
        "sidecar": (*base, f"{clip_id}.json"),
        "poster": (*base, f"{clip_id}.jpg"),
    }
