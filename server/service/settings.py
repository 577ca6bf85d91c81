"""Stream configuration: validated, with defaults, built from the wire message.

Error messages name the field as it appears on the wire (``config.pixel_size_um``,
``config.detector.radius_um``), so a client in any language knows what to fix.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb

PIXEL_TYPES: dict[int, np.dtype[Any]] = {
    pb.PIXEL_TYPE_UINT8: np.dtype("<u1"),
    pb.PIXEL_TYPE_UINT16: np.dtype("<u2"),
    pb.PIXEL_TYPE_FLOAT32: np.dtype("<f4"),
}
PIXEL_TYPE_BY_DTYPE = {np.dtype(v).name: k for k, v in PIXEL_TYPES.items()}
TRACKERS = {pb.TRACKER_UNSPECIFIED: "builtin", pb.TRACKER_BUILTIN: "builtin",
            pb.TRACKER_TRACKMATE: "trackmate"}


@dataclass(frozen=True)
class Limits:
    """Server-side limits, reported by GetServerInfo.

    Attributes
    ----------
    max_frame_pixels : int
        Largest height x width a stream may declare.
    max_sessions : int
        Concurrent StreamFrames sessions.
    max_message_bytes : int
        gRPC message size limit (set above the largest allowed frame).
    """

    max_frame_pixels: int = 4096 * 4096
    max_sessions: int = 16

    @property
    def max_message_bytes(self) -> int:
        """Largest message: a float32 frame of the maximum size plus headroom."""
        return self.max_frame_pixels * 4 + (1 << 20)


@dataclass(frozen=True)
class StreamSettings:
    """Everything that defines a stream's analysis, in physical units with defaults.

    Zero values on the wire mean "default"; the defaults suit a typical
    single-particle tracking acquisition (PSF sigma ~ 0.1 um, D up to ~1 um^2/s).
    """

    pixel_size_um: float
    frame_interval_s: float
    exposure_s: float
    dtype: str
    height: int
    width: int
    radius_um: float = 0.15
    threshold: float = 0.0  # 0: the detector's default
    median_filter: bool = False
    dark_spots: bool = False
    camera_offset_adu: float = 100.0
    camera_gain_adu_per_e: float = 1.0
    max_distance_um: float = 1.0
    max_gap_frames: int = 2
    window_length: int = 10
    window_stride: int = 1
    change_enabled: bool = True
    false_alarm_per_1000: float = 0.5
    tracker: str = "builtin"
    name: str = ""

    @property
    def frame_bytes(self) -> int:
        """Bytes one frame must have."""
        return self.height * self.width * np.dtype(self.dtype).itemsize

    def to_json(self) -> str:
        """The effective configuration as JSON (recorded in summaries)."""
        return json.dumps(asdict(self), sort_keys=True)


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _or_default(value: float, default: float) -> float:
    return value if value != 0 else default


def settings_from_proto(cfg: pb.StreamConfig, limits: Limits) -> StreamSettings:
    """Validate a wire ``StreamConfig`` and fill in defaults.

    Parameters
    ----------
    cfg : livespt.v1.StreamConfig
        The first message of a StreamFrames call.
    limits : Limits
        Server-side limits the declared frame size is checked against.

    Returns
    -------
    StreamSettings
        The effective settings; raises ValueError naming the wire field otherwise.
    """
    px = _positive("config.pixel_size_um", cfg.pixel_size_um)
    dt = _positive("config.frame_interval_s", cfg.frame_interval_s)
    te = cfg.exposure_s if cfg.exposure_s != 0 else dt
    if not (math.isfinite(te) and 0 < te <= dt):
        raise ValueError(
            f"config.exposure_s must be in (0, frame_interval_s = {dt}], got {cfg.exposure_s!r}"
        )
    if cfg.pixel_type not in PIXEL_TYPES:
        names = ", ".join(pb.PixelType.Name(k) for k in PIXEL_TYPES)
        got = (pb.PixelType.Name(cfg.pixel_type) if cfg.pixel_type in pb.PixelType.values()
               else str(cfg.pixel_type))
        raise ValueError(f"config.pixel_type must be one of {names}, got {got}")
    if cfg.height < 8 or cfg.width < 8:
        raise ValueError(
            f"config.height and config.width must be >= 8 pixels, got {cfg.height} x {cfg.width}"
        )
    if cfg.height * cfg.width > limits.max_frame_pixels:
        raise ValueError(
            f"config.height x config.width = {cfg.height * cfg.width} pixels exceeds the "
            f"server limit of {limits.max_frame_pixels}"
        )
    if cfg.tracker not in TRACKERS:
        raise ValueError(f"config.tracker: unknown value {cfg.tracker}")
    tracker = TRACKERS[cfg.tracker]
    if tracker != "builtin":
        raise ValueError(
            f"config.tracker: {tracker!r} is not available on this server (only 'builtin')"
        )
    det, lk, win, ch = cfg.detector, cfg.linker, cfg.window, cfg.change
    defaults = StreamSettings(px, dt, te, "uint16", 1, 1)
    radius = _or_default(det.radius_um, defaults.radius_um)
    _positive("config.detector.radius_um", radius)
    if not math.isfinite(det.threshold) or det.threshold < 0:
        raise ValueError(f"config.detector.threshold must be >= 0, got {det.threshold!r}")
    gain = _or_default(det.camera_gain_adu_per_e, defaults.camera_gain_adu_per_e)
    _positive("config.detector.camera_gain_adu_per_e", gain)
    offset = det.camera_offset_adu if det.HasField("camera_offset_adu") else \
        defaults.camera_offset_adu
    if not math.isfinite(offset):
        raise ValueError("config.detector.camera_offset_adu must be finite")
    max_dist = _or_default(lk.max_distance_um, defaults.max_distance_um)
    _positive("config.linker.max_distance_um", max_dist)
    length = win.length or defaults.window_length
    if length < 3:
        raise ValueError(f"config.window.length must be >= 3, got {win.length}")
    far = _or_default(ch.false_alarm_per_1000, defaults.false_alarm_per_1000)
    _positive("config.change.false_alarm_per_1000", far)
    return StreamSettings(
        pixel_size_um=px,
        frame_interval_s=dt,
        exposure_s=te,
        dtype=PIXEL_TYPES[cfg.pixel_type].name,
        height=cfg.height,
        width=cfg.width,
        radius_um=radius,
        threshold=det.threshold,
        median_filter=det.median_filter,
        dark_spots=det.dark_spots,
        camera_offset_adu=offset,
        camera_gain_adu_per_e=gain,
        max_distance_um=max_dist,
        max_gap_frames=lk.max_gap_frames if lk.HasField("max_gap_frames") else
        defaults.max_gap_frames,
        window_length=length,
        window_stride=win.stride or defaults.window_stride,
        change_enabled=not ch.disabled,
        false_alarm_per_1000=far,
        tracker=tracker,
        name=cfg.name,
    )
