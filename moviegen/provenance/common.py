"""What every provenance module shares: the error type, the IPTC term, and moviegen's generator name."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moviegen import __version__

# IPTC NewsCodes digital source type for media made by a model trained on sampled content.
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"

GENERATOR_NAME = "moviegen"
GENERATOR_VERSION = __version__


def generator() -> str:
    """``moviegen <version>``: how moviegen names itself in metadata and manifests."""
    return f"{GENERATOR_NAME} {GENERATOR_VERSION}"


class ProvenanceError(RuntimeError):
    """Labelling or signing cannot be done; the message says which file or setting and what to do.

    Messages name files and settings, never a key's content.
    """


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; when the block succeeds it replaces ``path`` atomically.

    On any error the temporary file is removed and ``path`` is left exactly as it was.
    """
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
