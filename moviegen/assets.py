"""Files a catalog row pulls in by URI: logo images, music beds, .cube LUTs, and the generation inputs
(a reference image for image-to-video, a source clip for video-to-video).

Problem: catalog rows name these files by path or URL, and ffmpeg opens whatever it is handed:
network protocols, ``concat:`` and ``subfile,`` tricks, playlists that pull in other files.
Solution: moviegen fetches each file itself through fsspec (a short list of schemes) into a
content-addressed local cache, checks what it really holds (an image, an audio container from an
allowed list, a 3D LUT), and hands ffmpeg only that local copy, as a ``file:`` path with an
explicit input format. The file's sha256 goes into the rendition key, so a logo replaced behind
the same URL renders again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import fsspec

from moviegen.config import DEFAULT_INPUT_SCHEMES
from moviegen.media import MediaError, ffprobe_binary, ffprobe_json
from moviegen.netguard import NO_EXTRA_HOSTS, FetchFailed, HostPolicy, HostRefused, check_url, fetch_http
from moviegen.redact import redact_text, redact_uri

AssetKind = Literal["logo", "music", "lut", "image", "video", "lora"]

# Schemes fsspec may fetch from by default (settings ``inputs.allowed_schemes``). Local paths need
# none (or file://); memory:// serves tests.
ALLOWED_SCHEMES = DEFAULT_INPUT_SCHEMES
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "logo": (".png", ".jpg", ".jpeg", ".webp"),
    "music": (".mp3", ".wav", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac"),
    "lut": (".cube",),
    "image": (".png", ".jpg", ".jpeg", ".webp"),
    "video": (".mp4", ".mov", ".m4v", ".mkv", ".webm"),
    "lora": (".safetensors",),  # never pickle: a .bin or .pt adapter can run code when loaded
}
MAX_BYTES = {
    "logo": 20 * 2**20,
    "music": 200 * 2**20,
    "lut": 20 * 2**20,
    "image": 50 * 2**20,
    "video": 500 * 2**20,
    "lora": 2 * 2**30,  # LightX2V's rank-64 14B adapter is 631 MB
}
# ffprobe format names accepted for a source clip (no playlists, image sequences or raw streams).
VIDEO_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}
MAX_VIDEO_SIDE = 4096
# ffprobe format names accepted for a music bed, and the demuxer to force when reading it.
AUDIO_FORMATS = {
    "mp3": "mp3",
    "wav": "wav",
    "ogg": "ogg",
    "flac": "flac",
    "aac": "aac",
    "mov,mp4,m4a,3gp,3g2,mj2": "mov",
    "matroska,webm": "matroska",
}
MAX_LUT_SIZE = 65


class AssetError(ValueError):
    """A logo, music or LUT file cannot be used; the message says which URI and what to do."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(redact_text(message))  # messages echo URIs: never their credentials
        self.column = column  # the catalog column that named the file, when known


@dataclass(frozen=True)
class UriPolicy:
    """Where a catalog row's files may come from: URI schemes, local folders (None: any), and the
    non-public http(s) hosts allowed besides the public ones (see moviegen.netguard)."""

    schemes: tuple[str, ...] = ALLOWED_SCHEMES
    folders: tuple[Path, ...] | None = None
    hosts: HostPolicy = NO_EXTRA_HOSTS

    @classmethod
    def from_settings(cls, inputs: Any) -> UriPolicy:
        """The policy of ``Settings.inputs`` (an InputSettings); folders are resolved now."""
        folders = None
        if inputs.allowed_folders is not None:
            folders = tuple(Path(f).expanduser().resolve() for f in inputs.allowed_folders)
        return cls(tuple(inputs.allowed_schemes), folders, HostPolicy.parse(inputs.allowed_hosts))


@dataclass(frozen=True)
class Asset:
    """A fetched and checked file: its local copy (never the user's path) and content hash."""

    uri: str
    kind: str
    path: Path
    sha256: str
    input_format: str | None = None  # the ffmpeg demuxer to force (music only)

    @property
    def ffmpeg_url(self) -> str:
        """The local copy as an ffmpeg input URL: ``file:`` so no other protocol can apply."""
        return f"file:{self.path}"


def check_uri(uri: str, kind: AssetKind, policy: UriPolicy | None = None) -> str | None:
    """Why ``uri`` cannot name a ``kind`` file, or None when it can.

    Checks the scheme and (for local files) the folder against ``policy``, refuses credentials
    written into the URI, then the extension, that a local file exists, and that an http(s) host
    is public or allowed (a name that does not resolve here passes: the fetch checks again).
    """
    policy = policy or UriPolicy()
    scheme = _scheme(uri)
    if (scheme or "file") not in policy.schemes:
        allowed = ", ".join(s for s in policy.schemes if s != "file") or "none"
        local = "a local path or " if "file" in policy.schemes else ""
        return f"scheme {scheme or 'file (a local path)'!r} is not allowed: use {local}one of: {allowed}"
    try:
        parts = urlsplit(uri) if scheme else None
    except ValueError as exc:
        return f"is not a valid URI ({exc})"
    if parts is not None and "@" in parts.netloc:
        return (
            "credentials must not be written into a catalog URI: remove the user name and password and give the "
            "storage driver its credentials through its own configuration or environment"
        )
    suffix = Path(parts.path if parts is not None else uri).suffix.lower()
    if suffix not in EXTENSIONS[kind]:
        return f"{kind} file must end in {', '.join(EXTENSIONS[kind])}, got {suffix[:12] or 'no extension'}"
    if scheme in ("", "file"):
        try:
            path = _local_path(uri)
            if policy.folders is not None and not any(path.is_relative_to(f) for f in policy.folders):
                folders = ", ".join(str(f) for f in policy.folders) or "none are allowed"
                return (
                    f"{kind} file is outside the allowed folders ({folders}): move it there or add its folder "
                    "to inputs.allowed_folders"
                )
            if not path.is_file():
                return f"{kind} file {path} does not exist: check the path (relative paths start at the working folder)"
        except (OSError, RuntimeError, ValueError) as exc:  # a name too long, a symlink loop
            return f"{kind} file cannot be looked up ({type(exc).__name__}): check the path"
    if scheme in ("http", "https"):
        try:
            check_url(uri, policy.hosts)
        except HostRefused as exc:
            return str(exc)
    return None


_fetched: dict[tuple[str, str, float, int], Asset] = {}
_fetch_lock = threading.Lock()


def fetch_asset(uri: str, kind: AssetKind, cache_dir: Path, policy: UriPolicy | None = None) -> Asset:
    """Fetch ``uri`` into ``cache_dir`` (named by content hash), check its content, and describe it.

    Local files are keyed by path, size and modification time, so a changed file is read again;
    remote files are fetched once per process. Raises AssetError (with the URI redacted).
    """
    problem = check_uri(uri, kind, policy)
    if problem:
        raise AssetError(f"{kind} {redact_uri(uri)!r}: {problem}")
    scheme = _scheme(uri)
    stamp = (0.0, 0)
    if scheme in ("", "file"):
        stat = _local_path(uri).stat()
        stamp = (stat.st_mtime, stat.st_size)
    key = (uri, kind, *stamp)
    with _fetch_lock:
        if key in _fetched and _fetched[key].path.is_file():
            return _fetched[key]
    data = _read(uri, kind, policy or UriPolicy())
    digest = hashlib.sha256(data).hexdigest()
    suffix = Path(urlsplit(uri).path if scheme else uri).suffix.lower()
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{kind}-{digest[:32]}{suffix}"
    if not path.is_file():
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    asset = Asset(uri=uri, kind=kind, path=path, sha256=digest, input_format=_check_content(path, kind, uri))
    with _fetch_lock:
        _fetched[key] = asset
    return asset


@functools.cache
def local_asset(path: Path, kind: AssetKind) -> Asset:
    """An asset for a file moviegen ships (a built-in LUT): used in place, hashed like any other (once)."""
    data = path.read_bytes()
    return Asset(
        uri=f"builtin:{path.name}",
        kind=kind,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        input_format=_check_content(path, kind, path.name),
    )


def _scheme(uri: str) -> str:
    head, sep, _ = uri.partition("://")
    return head.lower() if sep and head.isascii() and head.replace("+", "").isalnum() else ""


def _local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.lower().startswith("file://") else uri).expanduser().resolve()


def _read(uri: str, kind: str, policy: UriPolicy) -> bytes:
    limit = MAX_BYTES[kind]
    try:
        if _scheme(uri) in ("http", "https"):  # not fsspec's: the connection must go to the checked address
            data = fetch_http(uri, limit=limit, hosts=policy.hosts, schemes=policy.schemes)
        else:
            with fsspec.open(uri, "rb") as f:
                data = f.read(limit + 1)
    except HostRefused as exc:
        raise AssetError(f"{kind} {uri!r}: {exc}") from None
    except FetchFailed as exc:
        raise AssetError(f"{kind} {uri!r} {exc}") from None
    except FileNotFoundError:
        raise AssetError(f"{kind} {uri!r} does not exist: check the path or URL") from None
    except ImportError as exc:
        raise AssetError(f"{kind} {uri!r}: this URL needs a driver that is not installed ({exc})") from None
    except OSError as exc:
        raise AssetError(f"{kind} {uri!r} cannot be read: {exc}") from None
    except Exception as exc:  # a driver's own errors (an HTTP 403 from aiohttp is no OSError): still this row's problem
        raise AssetError(f"{kind} {uri!r} cannot be read: {type(exc).__name__}: {exc}") from None
    if len(data) > limit:
        raise AssetError(f"{kind} {uri!r} is larger than {limit // 2**20} MiB: use a smaller file")
    if not data:
        raise AssetError(f"{kind} {uri!r} is empty")
    return data


def _check_content(path: Path, kind: str, uri: str) -> str | None:
    """Check the file is what its kind says; for music return the demuxer ffmpeg must use."""
    if kind in ("logo", "image"):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image.verify()
                if image.format not in ("PNG", "JPEG", "WEBP"):
                    raise AssetError(f"{kind} {uri!r} is {image.format}, not PNG, JPEG or WebP")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise AssetError(f"{kind} {uri!r} is not a readable image: {exc}") from None
        return None
    if kind == "video":
        return _probe_video_format(path, uri)
    if kind == "lut":
        read_cube_size(path, uri)
        return None
    if kind == "lora":
        _check_safetensors(path, uri)
        return None
    return _probe_audio_format(path, uri)


def _check_safetensors(path: Path, uri: str) -> None:
    """A LoRA file must be a readable safetensors file holding tensors (its header is checked, not its values)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            names = list(f.keys())
    except (SafetensorError, OSError, ValueError) as exc:
        raise AssetError(f"lora {uri!r} is not a safetensors file ({exc}): save the adapter with safetensors") from None
    if not names:
        raise AssetError(f"lora {uri!r} holds no tensors")


def read_cube_size(path: Path, uri: str = "") -> int:
    """Check a .cube file is a 3D LUT ffmpeg can read; return its size (points per axis)."""
    size = None
    rows = 0
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                head = line.split()[0]
                if head == "LUT_3D_SIZE":
                    size = int(line.split()[1])
                elif head == "LUT_1D_SIZE":
                    raise AssetError(f"lut {uri or path!r} is a 1D LUT: use a 3D LUT (LUT_3D_SIZE)")
                elif head[0].isdigit() or head[0] in "-.":
                    values = [float(v) for v in line.split()]
                    if len(values) != 3:
                        raise ValueError(f"a LUT row needs 3 numbers: {line[:40]!r}")
                    rows += 1
    except (UnicodeDecodeError, ValueError, IndexError) as exc:
        raise AssetError(f"lut {uri or path!r} is not a valid .cube file: {exc}") from None
    if size is None or not 2 <= size <= MAX_LUT_SIZE:
        raise AssetError(f"lut {uri or path!r} needs LUT_3D_SIZE between 2 and {MAX_LUT_SIZE}")
    if rows != size**3:
        raise AssetError(f"lut {uri or path!r} has {rows} rows; LUT_3D_SIZE {size} needs {size**3}")
    return size


def _ffprobe_format(path: Path, needed_by: str, unreadable: str) -> dict:
    """ffprobe's format and streams of a fetched file as JSON, or an AssetError saying what is wrong."""
    try:
        return ffprobe_json(path)
    except MediaError as exc:
        if ffprobe_binary() is None:  # the machine, not the file: say what to install
            raise AssetError(f"{needed_by} need ffprobe (install the ffmpeg package)") from None
        raise AssetError(f"{unreadable}: {str(exc)[-200:]}") from None


def _probe_video_format(path: Path, uri: str) -> str:
    """Check a source clip is an MP4/MOV or Matroska/WebM file with a decodable video stream."""
    data = _ffprobe_format(path, "source clips", f"video {uri!r} is not a readable video file")
    name = data.get("format", {}).get("format_name", "")
    if name not in VIDEO_FORMATS:
        raise AssetError(f"video {uri!r} is {name or 'of an unknown format'}: use MP4, MOV, MKV or WebM")
    streams = [s for s in data.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        raise AssetError(f"video {uri!r} has no video stream")
    width, height = int(streams[0].get("width") or 0), int(streams[0].get("height") or 0)
    if not (0 < width <= MAX_VIDEO_SIDE and 0 < height <= MAX_VIDEO_SIDE):
        raise AssetError(f"video {uri!r} is {width}x{height}: use a clip of at most {MAX_VIDEO_SIDE} pixels a side")
    return "mov" if name.startswith("mov") else "matroska"


def _probe_audio_format(path: Path, uri: str) -> str:
    data = _ffprobe_format(path, "music beds", f"music {uri!r} is not a readable audio file")
    name = data.get("format", {}).get("format_name", "")
    if name not in AUDIO_FORMATS:
        raise AssetError(f"music {uri!r} is {name or 'of an unknown format'}: use MP3, WAV, AAC/M4A, OGG or FLAC")
    if not any(s.get("codec_type") == "audio" for s in data.get("streams", [])):
        raise AssetError(f"music {uri!r} has no audio stream")
    return AUDIO_FORMATS[name]
