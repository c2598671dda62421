"""The delivery gate: a rendition is published only when the file really is what its channel preset says.

Problem: a rendition can come out wrong without ffmpeg failing: a user preset asks for something
the encoder quietly adjusts, a filter drops a frame, the audio is missing or at the wrong rate, the
index (moov) ends up after the media data so playback waits for the whole download.
Solution: every finished file is probed (ffprobe, plus a walk over the MP4's top-level boxes) and
compared with its preset: container, codec, profile, level, pixel format, colour tags, size,
square pixels, frame rate, frame count and duration, keyframe interval, bitrate ceiling, audio
(AAC, rate, channels, length) and moov before mdat. Any difference is a named violation.

``gate_rendition`` is the whole gate on the final, signed file: this preset check, the invisible
watermark read back from the file (``moviegen.watermark.delivery_gate``) and its provenance
(``moviegen.provenance.check_provenance``: valid C2PA credentials, IPTC label metadata). Every
check runs, so a refused rendition says everything that is wrong with it.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moviegen.config import ProvenanceSettings
from moviegen.media import StreamInfo, ffprobe_binary, ffprobe_json, probe, stream_info
from moviegen.presets import ChannelPreset
from moviegen.provenance import ProvenanceCheck, check_provenance
from moviegen.watermark.readback import GateResult, delivery_gate

PROFILES = {"baseline": ("Baseline", "Constrained Baseline"), "main": ("Main",), "high": ("High",)}

BITRATE_TOLERANCE = 1.02  # container overhead and rounding in the probed average

AUDIO_SLACK_S = 0.05  # AAC codes 1024-sample frames: the track may end up to one frame past the video


@dataclass(frozen=True)
class RenditionFacts:
    """What a rendition file holds, beyond StreamInfo: the details the delivery check needs."""

    info: StreamInfo
    level: int | None = None  # H.264 level_idc (40 for 4.0)
    video_bitrate: int | None = None  # bits per second
    color: dict[str, str | None] = field(default_factory=dict)  # space, primaries, transfer, range
    sample_aspect: str | None = None
    audio_duration_s: float | None = None
    max_keyframe_gap: int | None = None  # most frames between two keyframes
    boxes: tuple[str, ...] = ()  # top-level MP4 boxes in file order


@dataclass(frozen=True)
class DeliveryReport:
    """A probed rendition and what it gets wrong against its preset (nothing when it may be published)."""

    facts: RenditionFacts
    violations: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def info(self) -> StreamInfo:
        return self.facts.info


def mp4_boxes(path: Path) -> tuple[str, ...]:
    """The top-level boxes of an MP4/MOV file in order (ftyp, moov, mdat, ...)."""
    boxes = []
    size_total = path.stat().st_size
    with path.open("rb") as f:
        offset = 0
        while offset + 8 <= size_total:
            f.seek(offset)
            size, kind = struct.unpack(">I4s", f.read(8))
            header = 8
            if size == 1:
                size, header = struct.unpack(">Q", f.read(8))[0], 16
            elif size == 0:
                size = size_total - offset  # the box runs to the end of the file
            boxes.append(kind.decode("latin-1"))
            if size < header:
                break  # corrupt: stop rather than loop
            offset += size
    return tuple(boxes)


def inspect_rendition(path: Path) -> RenditionFacts:
    """Probe a rendition for the delivery check (streams, packets' keyframe flags, MP4 boxes), in one ffprobe pass."""
    if ffprobe_binary() is None:
        return RenditionFacts(info=probe(path), boxes=mp4_boxes(path))
    data = ffprobe_json(path, count_frames=True, packets=True)
    info = stream_info(data, path)
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), {})
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    flags = [p.get("flags", "") for p in data.get("packets", []) if p.get("stream_index") == video.get("index")]
    return RenditionFacts(
        info=info,
        level=int(video["level"]) if str(video.get("level", "")).lstrip("-").isdigit() else None,
        video_bitrate=int(video["bit_rate"]) if str(video.get("bit_rate", "")).isdigit() else None,
        color={
            "space": video.get("color_space"),
            "primaries": video.get("color_primaries"),
            "transfer": video.get("color_transfer"),
            "range": video.get("color_range"),
        },
        sample_aspect=video.get("sample_aspect_ratio"),
        audio_duration_s=_float(audio.get("duration")) if audio else None,
        max_keyframe_gap=_max_gap(flags),
        boxes=mp4_boxes(path),
    )


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _max_gap(flags: list[str]) -> int | None:
    keys = [i for i, f in enumerate(flags) if "K" in f]
    if not keys:
        return None
    edges = [*keys, len(flags)]
    return max(b - a for a, b in itertools.pairwise(edges))


def delivery_violations(facts: RenditionFacts, preset: ChannelPreset, duration_s: float) -> list[str]:
    """What a rendition gets wrong against its preset (empty when it may be published)."""
    info, problems = facts.info, []
    # Container and index.
    if "mp4" not in info.format_name:
        problems.append(f"container {info.format_name}, preset wants MP4")
    if "moov" not in facts.boxes:
        problems.append("no moov box: the file is not a complete MP4")
    elif preset.faststart and "mdat" in facts.boxes and facts.boxes.index("moov") > facts.boxes.index("mdat"):
        problems.append("moov comes after mdat: playback cannot start before the download ends (+faststart)")
    # Video stream.
    if info.video_codec != preset.codec:
        problems.append(f"video codec {info.video_codec}, preset wants {preset.codec}")
    if info.profile not in PROFILES[preset.profile]:
        problems.append(f"profile {info.profile}, preset wants {preset.profile}")
    wanted_level = round(float(preset.level) * 10)
    if facts.level is not None and facts.level > wanted_level:
        problems.append(f"level {facts.level / 10:g}, preset allows up to {preset.level}")
    if info.pix_fmt != preset.pix_fmt:
        problems.append(f"pixel format {info.pix_fmt}, preset wants {preset.pix_fmt}")
    if facts.color and (facts.color.get("space"), facts.color.get("range")) != ("bt709", "tv"):
        problems.append(f"colour {facts.color.get('space')}/{facts.color.get('range')}, preset wants bt709/tv")
    if (info.width, info.height) != (preset.width, preset.height):
        problems.append(f"size {info.width}x{info.height}, preset wants {preset.width}x{preset.height}")
    if facts.sample_aspect not in (None, "1:1", "0:1"):
        problems.append(f"sample aspect ratio {facts.sample_aspect}, preset wants square pixels (1:1)")
    if abs(info.fps - preset.fps) > 0.01:
        problems.append(f"{info.fps:g} fps, preset wants {preset.fps:g}")
    expected_frames = preset.frames_for(duration_s)
    if info.frames != expected_frames:
        problems.append(f"{info.frames} frames, {duration_s:g} s at {preset.fps:g} fps needs {expected_frames}")
    seconds = info.frames / info.fps if info.fps else info.duration_s
    if seconds > preset.max_duration_s:
        problems.append(f"{seconds:g} s long, {preset.name} takes at most {preset.max_duration_s:g} s")
    if facts.max_keyframe_gap is not None and facts.max_keyframe_gap > preset.gop_frames:
        problems.append(f"keyframes up to {facts.max_keyframe_gap} frames apart, preset wants {preset.gop_frames}")
    if facts.video_bitrate is not None and seconds > 0:
        # The VBV model lets a clip start on a full buffer: over `seconds` at most maxrate*seconds + bufsize.
        allowed = (preset.maxrate_kbps * seconds + preset.bufsize_kbps) * 1000 / seconds
        if facts.video_bitrate > allowed * BITRATE_TOLERANCE:
            problems.append(
                f"video bitrate {facts.video_bitrate // 1000} kbit/s over the ceiling "
                f"({preset.maxrate_kbps} kbit/s with a {preset.bufsize_kbps} kbit buffer allows {allowed / 1000:.0f})"
            )
    # Audio stream.
    if info.audio_codec != preset.audio_codec or info.audio_rate != preset.audio_rate:
        wanted = f"{preset.audio_codec} at {preset.audio_rate} Hz"
        problems.append(f"audio {info.audio_codec} at {info.audio_rate} Hz, preset wants {wanted}")
    elif info.audio_channels != preset.audio_channels:
        problems.append(f"{info.audio_channels} audio channels, preset wants {preset.audio_channels}")
    if facts.audio_duration_s is not None and abs(facts.audio_duration_s - seconds) > AUDIO_SLACK_S:
        problems.append(f"audio lasts {facts.audio_duration_s:.2f} s, the video {seconds:.2f} s")
    return problems


def check_delivery(path: Path, preset: ChannelPreset, duration_s: float) -> DeliveryReport:
    """Probe a finished rendition and hold it to its preset; publish only when ``report.ok``."""
    facts = inspect_rendition(path)
    return DeliveryReport(facts, delivery_violations(facts, preset, duration_s))


@dataclass(frozen=True)
class GateFailure:
    """One reason a rendition is refused: the rule (``preset``, ``watermark`` or ``provenance``) and what is wrong."""

    rule: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryVerdict:
    """The delivery gate on one final rendition: the preset check, the watermark and the provenance."""

    report: DeliveryReport
    watermark: GateResult
    provenance: ProvenanceCheck
    watermark_required: bool = True  # False: a mark that does not read back is recorded, not refused

    @property
    def failures(self) -> list[GateFailure]:
        failures = []
        if self.report.violations:
            failures.append(GateFailure("preset", "; ".join(self.report.violations)))
        if not self.watermark.passed and self.watermark_required:
            details = {"bit_accuracy": round(self.watermark.bit_accuracy, 4)}
            failures.append(GateFailure("watermark", self.watermark.message, details))
        if self.provenance.violations:
            details = {"c2pa_state": self.provenance.credentials["state"]}
            failures.append(GateFailure("provenance", "; ".join(self.provenance.violations), details))
        return failures

    @property
    def ok(self) -> bool:
        return not self.failures


def gate_rendition(
    path: Path,
    preset: ChannelPreset,
    duration_s: float,
    payload: int,
    provenance: ProvenanceSettings | None = None,
    watermark_required: bool = True,
) -> DeliveryVerdict:
    """Hold a final (signed) rendition to its preset, its watermark ``payload`` and its provenance.

    Publish only when ``verdict.ok``; ``verdict.failures`` lists one GateFailure per failing check.
    With ``watermark_required`` False the mark is still read back (``verdict.watermark``) but never refuses.
    """
    return DeliveryVerdict(
        report=check_delivery(path, preset, duration_s),
        watermark=delivery_gate(path, payload),
        provenance=check_provenance(path, provenance),
        watermark_required=watermark_required,
    )
