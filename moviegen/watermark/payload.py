"""The 32-bit payload: clip identity bits and check bits, and how near two payloads are."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

PAYLOAD_BITS = 32

# Changes whenever the embed changes what a marked frame looks like: part of a rendition's key.
WATERMARK_VERSION = "rivagan-2d-enc-r32-ws144-axis-g1.25-adapt2-trial-r64-v2"

# 24 bits of identifier: a new rendition shares its payload with one of M issued ones with
# probability M / 2**24 (0.06% for M = 10,000; ``identify`` then returns the latest such row).
# 8 check bits: a random word passes 1 time in 256. Verification needs the voted word within
# MAX_BIT_ERRORS of an expected payload (or of a manifest row's), so a chance match on unmarked
# video is 33 / 2**32 (about 8e-9) per expected payload and 33 M / 2**32 for a lookup in a manifest
# of M payloads, before the per-frame agreement below (unmarked clips fail that too).
ID_BITS = 24

CHECK_BITS = PAYLOAD_BITS - ID_BITS


class WatermarkError(RuntimeError):
    """The watermark models cannot be found or run; the message says what to install."""


def payload_check(identifier: int) -> int:
    """The 8-bit check value of a 24-bit identifier (a hash, so random words pass 1 time in 256)."""
    digest = hashlib.sha256(b"moviegen-watermark-check:" + identifier.to_bytes(3, "big")).digest()
    return digest[0] >> (8 - CHECK_BITS)


def payload_for(clip_key: str, channel: str) -> int:
    """The 32-bit payload of one rendition: 24 bits of hash(clip_key, channel), then its check value.

    Deterministic, so a rerun marks the same rendition with the same payload; the manifest records
    it (``watermark_payload``, hex) so a payload found in a file leads back to its row.
    """
    digest = hashlib.sha256(f"moviegen-watermark-id:{clip_key}/{channel}".encode()).digest()
    identifier = int.from_bytes(digest[:3], "big")
    return (identifier << CHECK_BITS) | payload_check(identifier)


def payload_is_valid(payload: int) -> bool:
    """Whether a 32-bit word carries a correct check value."""
    return 0 <= payload < 1 << PAYLOAD_BITS and payload_check(payload >> CHECK_BITS) == payload & 0xFF


def bit_errors(word: int, payload: int) -> int:
    """How many of the 32 bits differ."""
    return (word ^ payload).bit_count()


def near_payloads(word: int) -> list[int]:
    """The valid payloads within MAX_BIT_ERRORS bits of a voted word, closest first."""
    candidates = [word] + [word ^ (1 << i) for i in range(PAYLOAD_BITS)] if MAX_BIT_ERRORS else [word]
    return [c for c in candidates if payload_is_valid(c)]


def payload_hex(payload: int) -> str:
    """The payload as the manifest stores it: 8 lowercase hex digits."""
    return f"{payload:08x}"


def payload_bits(payload: int) -> np.ndarray:
    """The payload as 32 bits, most significant first (the order of the model's data input)."""
    return np.array([(payload >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], np.uint8)


def bits_payload(bits: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in bits), 2)


# Reading: frames decoded per file, spread evenly over it.
SAMPLE_FRAMES = 16

# Verification against an expected payload: the soft-voted word may differ from it in at most
# MAX_BIT_ERRORS bits (smooth content, like the tiny model's colour fields, can pull one bit the wrong
# way in every frame of a rendition), and at least MIN_BIT_ACCURACY of the per-frame bits must agree
# with it (unmarked clips read 0.50-0.75 against real payloads).
MAX_BIT_ERRORS = 1

MIN_BIT_ACCURACY = 0.8

# Reading an unknown payload (found in the wild): the check value must hold and the per-frame bits
# must agree with the voted word this often; ``identify`` then requires a manifest row too.
MIN_AGREEMENT = 0.85


@dataclass(frozen=True)
class WatermarkReading:
    """What the frames of a file say: the voted word, how well it is supported, and the verdict.

    ``bit_accuracy`` is the share of per-frame bits that agree with the expected payload when one
    was given, else with the voted word. ``margin`` is the weakest bit's mean logit in the vote.
    """

    word: int
    bit_accuracy: float
    margin: float
    check_ok: bool
    verified: bool
    frames: int
    expected: int | None = None
    logits: np.ndarray = field(default_factory=lambda: np.zeros((0, PAYLOAD_BITS)), repr=False, compare=False)

    @property
    def payload(self) -> int | None:
        """The payload found, or None when the file does not verifiably carry one."""
        if not self.verified:
            return None
        return self.expected if self.expected is not None else self.word

    def against(self, expected: int) -> WatermarkReading:
        """The same frames judged against an expected payload (no second decode)."""
        return reading_from_logits(self.logits, expected)

    def describe(self) -> str:
        if self.expected is not None:
            verdict = "verified" if self.verified else "NOT verified"
            return (
                f"watermark {verdict}: expected {payload_hex(self.expected)}, read {payload_hex(self.word)}, "
                f"bit accuracy {self.bit_accuracy:.3f} over {self.frames} frames"
            )
        if self.verified:
            return f"watermark {payload_hex(self.word)} (bit accuracy {self.bit_accuracy:.3f}, {self.frames} frames)"
        return f"no watermark found ({self.frames} frames read)"


def reading_from_logits(logits: np.ndarray, expected: int | None = None) -> WatermarkReading:
    """Vote the bits over frames (mean logit per bit) and decide whether the mark verifies.

    With an expected payload: the voted word may differ from it in at most MAX_BIT_ERRORS bits and
    the per-frame bit accuracy must reach MIN_BIT_ACCURACY; a chance match on unmarked video needs
    31 of 32 voted bits right (33 / 2**32, about 8e-9, per check). Without one: the check value must
    hold (a random word passes 1 time in 256) and the per-frame bits must agree with the vote
    (MIN_AGREEMENT); ``identify`` looks the word up in the manifest with the same tolerance.
    """
    if len(logits) == 0:
        return WatermarkReading(0, 0.0, 0.0, False, False, 0, expected, logits)
    mean = logits.mean(axis=0)
    voted = mean > 0
    word = bits_payload(voted)
    per_frame = logits > 0
    check_ok = payload_is_valid(word)
    margin = float(np.abs(mean).min())
    if expected is not None:
        accuracy = float((per_frame == payload_bits(expected).astype(bool)).mean())
        verified = bit_errors(word, expected) <= MAX_BIT_ERRORS and accuracy >= MIN_BIT_ACCURACY
    else:
        accuracy = float((per_frame == voted).mean())
        verified = check_ok and accuracy >= MIN_AGREEMENT
    return WatermarkReading(word, accuracy, margin, check_ok, verified, len(logits), expected, logits)
