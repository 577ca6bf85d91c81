"""Stream settings: one object that validates itself, with the names of the wire.

A stream's settings are a :class:`StreamSettings`, nested exactly as the wire's
``StreamConfig`` is (``detector``, ``linker``, ``window``, ``change``), with the
same field names and physical units. The server builds it from the wire in one
place (:func:`livespt.server.service.wire.settings_from_proto`), the Python
client builds the wire message from it, and the session reads it. Every check
raises ``ValueError`` whose message starts with the field's path
(``window.length must be >= 3``); the wire layer prefixes ``config.``.

Nothing here imports gRPC or protobuf.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from livespt.models import _validate
from livespt.server.pipeline.camera import CameraModel
from livespt.server.pipeline.changepoint import CALIBRATION_RATES_PER_1000
from livespt.server.pipeline.estimate import Acquisition
from livespt.server.pipeline.windows import WindowConfig

PIXEL_TYPES = ("uint8", "uint16", "float32")
"""Pixel types a stream may declare (little-endian on the wire)."""

RADIUS_PX_RANGE = (0.5, 200.0)
"""Spot radius the detector accepts, pixels (``DetectorConfig.radius_px``)."""

PIXEL_SIZE_UM_RANGE = (1e-4, 100.0)
"""Pixel sizes (in the sample) accepted, um: 0.1 nm to 100 um."""

FRAME_INTERVAL_S_RANGE = (1e-7, 86400.0)
"""Frame intervals accepted, s: 100 ns to a day."""


def check_calibration(pixel_size_um: float | None, frame_interval_s: float) -> None:
    """Refuse a pixel size or frame interval outside any microscope's range.

    Parameters
    ----------
    pixel_size_um : float or None
        Pixel size in the sample, um (None: not given).
    frame_interval_s : float
        Time between frames, s.

    Raises
    ------
    ValueError
        Naming the field, the range and the unit (a value in nm or ms given as um or s
        is the usual cause).
    """
    lo, hi = PIXEL_SIZE_UM_RANGE
    if pixel_size_um is not None and not lo <= pixel_size_um <= hi:
        raise ValueError(f"pixel_size_um must be in [{lo:g}, {hi:g}] um (the pixel in the "
                         f"sample, in micrometres), got {pixel_size_um!r}")
    lo, hi = FRAME_INTERVAL_S_RANGE
    if not lo <= frame_interval_s <= hi:
        raise ValueError(f"frame_interval_s must be in [{lo:g}, {hi:g}] s (seconds), got "
                         f"{frame_interval_s!r}")


MAX_LINK_DISTANCE_PX = 256.0
"""Largest frame-to-frame search radius, pixels (``linker.max_distance_um``)."""

TRACKERS = ("builtin", "trackmate", "trackmate-lap")
"""Tracker names of the wire contract; a server offers "builtin" and, when started with
TrackMate (``livespt serve --tracker trackmate``), "trackmate" (TrackMate's LoG detector
and LAP tracker) and "trackmate-lap" (LiveSPT's detector, TrackMate's LAP tracker)."""


def exposure_assumed_message(frame_interval_s: float, field_name: str = "exposure_s") -> str:
    """The EXPOSURE warning for a stream or request that did not give its exposure.

    Parameters
    ----------
    frame_interval_s : float
        The frame interval assumed as the exposure, s.
    field_name : str
        The wire field to name.
    """
    return (f"{field_name} not given: the frame interval ({frame_interval_s:g} s) is assumed as "
            "the exposure, i.e. full motion blur; D from a movie taken with a shorter exposure "
            "comes out too high (measured: 5 ms of 50 ms gave window D +35 % at 0.1 um^2/s, "
            "+8 % at 0.5 um^2/s); give the camera's exposure (livespt stream/tracks --exposure)")


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
    max_window_frames : int
        Largest ``window.length`` and ``window.stride``, frames (a session's memory grows
        with the window).
    max_gap_frames : int
        Largest ``linker.max_gap_frames`` (tracks missing that long are kept in memory).
    max_name_chars : int
        Longest ``name`` (free text recorded in summaries), characters.
    max_track_points : int
        Most track points in one AnalyzeTracks call.
    stream_idle_s : float
        A stream that sends nothing for this long (before its config, or between
        frames) is ended with DEADLINE_EXCEEDED, s.
    """

    max_frame_pixels: int = 4096 * 4096
    max_sessions: int = 16
    max_window_frames: int = 1000
    max_gap_frames: int = 100
    max_name_chars: int = 1024
    max_track_points: int = 2_000_000
    stream_idle_s: float = 300.0

    def __post_init__(self) -> None:
        for name in ("max_frame_pixels", "max_sessions", "max_window_frames",
                     "max_name_chars", "max_track_points"):
            _validate.positive_int(name, getattr(self, name), 1)
        _validate.positive_int("max_gap_frames", self.max_gap_frames, 0)
        _validate.positive("stream_idle_s", self.stream_idle_s)

    @property
    def max_window_points(self) -> int:
        """Most window points (windows x length) in one AnalyzeTracks call.

        20 x ``max_track_points``, so that windows of up to 20 frames at stride 1 always
        fit (memory: 16 bytes per window point).
        """
        return 20 * self.max_track_points

    @property
    def max_message_bytes(self) -> int:
        """Largest message: a float32 frame of the maximum size plus headroom."""
        return self.max_frame_pixels * 4 + (1 << 20)


class LimitExceeded(ValueError):
    """A request larger than a server limit allows (RESOURCE_EXHAUSTED on the wire)."""


def window_points(n_points: int, length: int, stride: int) -> int:
    """Window points (windows x length) of a track of ``n_points`` points."""
    return max(0, (n_points - length) // stride + 1) * length


def check_track_request_size(lengths: Sequence[int], window_length: int, window_stride: int,
                             limits: Limits) -> None:
    """Check an AnalyzeTracks call's size against the server's limits before decoding it.

    Parameters
    ----------
    lengths : sequence of int
        Points of each track.
    window_length, window_stride : int
        The effective window (frames); window points (windows x length, what the
        window stage holds at once) are bounded by ``limits.max_window_points``.
    limits : Limits
        The server's limits.

    Raises
    ------
    LimitExceeded
        Naming the field and the limit.
    ValueError
        A window beyond ``limits.max_window_frames``.
    """
    for name, value in (("window.length", window_length), ("window.stride", window_stride)):
        if value > limits.max_window_frames:
            raise ValueError(f"{name} = {value} frames exceeds the server limit of "
                             f"{limits.max_window_frames} frames")
    total = sum(lengths)
    if total > limits.max_track_points:
        raise LimitExceeded(
            f"tracks: {total} points in one call exceed the server limit of "
            f"{limits.max_track_points} (send the tracks in several calls)")
    windows = sum(window_points(n, window_length, window_stride) for n in lengths)
    if windows > limits.max_window_points:
        raise LimitExceeded(
            f"window.length = {window_length} and window.stride = {window_stride} make "
            f"{windows} window points over these tracks, beyond the server limit of "
            f"{limits.max_window_points} (a shorter window, a larger stride, or fewer "
            "tracks per call)")


CAMERA_ESTIMATE_FRAMES = 30
"""Frames the server estimates unset camera fields from when the client does not say."""

MIN_CAMERA_ESTIMATE_FRAMES = 4
"""Fewest frames a camera estimate is made from (photon transfer needs pairs and neighbours)."""

MAX_CAMERA_ESTIMATE_FRAMES = 200
"""Most frames a client may ask the camera to be estimated from."""

MAX_HELD_BYTES = 256 << 20
"""Most bytes of frames one stream holds for the camera estimate (at least 4 frames are held)."""

_CAMERA_FIELD = {"camera_offset_adu": "offset_adu", "camera_gain_adu_per_e": "gain_adu_per_e",
                 "read_noise_e": "read_noise_e"}
"""Camera settings by their names here and on the wire -> in :class:`CameraModel`."""


@dataclass(frozen=True)
class DetectorSettings:
    """Spot detection (LoG + maximum-likelihood fit).

    Attributes
    ----------
    radius_um : float
        Expected spot radius, um (LoG sigma = radius / sqrt 2).
    threshold : float
        LoG quality threshold (TrackMate units); 0: the detector's automatic one.
    median_filter : bool
        3 x 3 median pre-filter.
    dark_spots : bool
        Dark particles on a light background.
    camera_offset_adu : float or None
        Camera offset (bias), ADU; None: not given (the default, 100 ADU, is used
        and checked against the frames).
    camera_gain_adu_per_e : float or None
        Camera gain, ADU per photo-electron (> 0); None: not given (1).
    read_noise_e : float or None
        Camera read noise, electrons RMS (>= 0); None: not given (0).
    camera_estimated : tuple of str
        Which of ``camera_offset_adu``, ``camera_gain_adu_per_e`` and
        ``read_noise_e`` the client estimated from the frames rather than the
        user giving them (``livespt stream``): their source is recorded as
        ``estimated``. Each must be set.
    camera_estimate_frames : int or None
        When a camera field is not set, the server holds this many frames from
        the start of the stream, estimates the unset fields from them (photon
        transfer, :func:`~livespt.server.pipeline.camera.estimate_camera`) and
        only then detects; 0: no estimate (the defaults are used and checked);
        otherwise 4 to :data:`MAX_CAMERA_ESTIMATE_FRAMES`. None:
        :data:`CAMERA_ESTIMATE_FRAMES`.
    """

    radius_um: float = 0.15
    threshold: float = 0.0
    median_filter: bool = False
    dark_spots: bool = False
    camera_offset_adu: float | None = None
    camera_gain_adu_per_e: float | None = None
    read_noise_e: float | None = None
    camera_estimated: tuple[str, ...] = ()
    camera_estimate_frames: int | None = None

    def __post_init__(self) -> None:
        _validate.positive("detector.radius_um", self.radius_um)
        _validate.non_negative("detector.threshold", self.threshold)
        if self.camera_offset_adu is not None and not math.isfinite(self.camera_offset_adu):
            raise ValueError(
                f"detector.camera_offset_adu must be finite, got {self.camera_offset_adu!r}")
        if self.camera_gain_adu_per_e is not None:
            _validate.positive("detector.camera_gain_adu_per_e", self.camera_gain_adu_per_e)
        if self.read_noise_e is not None:
            _validate.non_negative("detector.read_noise_e", self.read_noise_e)
        object.__setattr__(self, "camera_estimated", tuple(self.camera_estimated))
        for name in self.camera_estimated:
            if name not in _CAMERA_FIELD:
                raise ValueError(
                    f"detector.camera_estimated: unknown field {name!r} "
                    f"(one of {', '.join(_CAMERA_FIELD)})")
            if getattr(self, name) is None:
                raise ValueError(
                    f"detector.camera_estimated names {name}, which is not set")
        n = self.camera_estimate_frames
        if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and (
                n == 0 or MIN_CAMERA_ESTIMATE_FRAMES <= n <= MAX_CAMERA_ESTIMATE_FRAMES)):
            raise ValueError(
                f"detector.camera_estimate_frames must be 0 (no estimate) or "
                f"{MIN_CAMERA_ESTIMATE_FRAMES} to "
                f"{MAX_CAMERA_ESTIMATE_FRAMES} frames, got {n!r}")

    @property
    def frames_to_estimate(self) -> int:
        """Frames the unset camera fields are to be estimated from; 0: none (all set, or off)."""
        if all(getattr(self, n) is not None for n in _CAMERA_FIELD):
            return 0
        n = self.camera_estimate_frames
        return CAMERA_ESTIMATE_FRAMES if n is None else n

    @property
    def camera_estimated_fields(self) -> tuple[str, ...]:
        """:attr:`camera_estimated` by the camera model's names (``offset_adu``, ...)."""
        return tuple(_CAMERA_FIELD[n] for n in self.camera_estimated)

    def camera(self) -> CameraModel:
        """The camera model: the given values, defaults for the others, and which is which."""
        return CameraModel.resolve(self.camera_offset_adu, self.camera_gain_adu_per_e,
                                   self.read_noise_e, self.camera_estimated_fields)


@dataclass(frozen=True)
class LinkerSettings:
    """Online linking.

    Attributes
    ----------
    max_distance_um : float
        Frame-to-frame search radius, um (> 0).
    max_gap_frames : int
        Frames a track may miss and still be continued (gap closing; 0 disables).
    """

    max_distance_um: float = 1.0
    max_gap_frames: int = 2

    def __post_init__(self) -> None:
        _validate.positive("linker.max_distance_um", self.max_distance_um)
        if not (isinstance(self.max_gap_frames, int) and self.max_gap_frames >= 0):
            raise ValueError(
                f"linker.max_gap_frames must be an integer >= 0, got {self.max_gap_frames!r}")


@dataclass(frozen=True)
class ChangeSettings:
    """Change-of-D detection.

    Attributes
    ----------
    disabled : bool
        Do not run the change detector.
    false_alarm_per_1000 : float
        Target false alarms per 1000 track-frames on tracks without change (> 0).
    """

    disabled: bool = False
    false_alarm_per_1000: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = float(CALIBRATION_RATES_PER_1000[0]), float(CALIBRATION_RATES_PER_1000[-1])
        rate = self.false_alarm_per_1000
        if not (isinstance(rate, (int, float)) and lo <= rate <= hi):
            raise ValueError(f"change.false_alarm_per_1000 must be in [{lo:g}, {hi:g}] false "
                             f"alarms per 1000 track-frames (the calibrated range), got {rate!r}")


@dataclass(frozen=True)
class StreamSettings:
    """Everything that defines a stream's analysis, in physical units, as on the wire.

    Defaults suit a typical single-particle tracking acquisition (PSF sigma
    ~ 0.1 um, D up to ~1 um^2/s).

    Attributes
    ----------
    pixel_size_um : float
        Pixel size, um (> 0).
    frame_interval_s : float
        Time between frame starts, s (> 0).
    exposure_s : float
        Exposure, s, in ``(0, frame_interval_s]``; 0 stands for the frame interval.
    pixel_type : str
        ``uint8``, ``uint16`` or ``float32``.
    height, width : int
        Frame size in pixels (>= 8 each); 0 x 0: not known yet (a client fills
        them from the first frame).
    detector, linker, window, change
        The stages' settings.
    tracker : str
        One of :data:`TRACKERS`; the server must offer it (``check_server``).
    name : str
        Free text recorded in the session summary.
    exposure_assumed : bool or None
        Whether the exposure was not given (``exposure_s`` 0) and the frame interval is
        assumed: the session says so (``EXPOSURE`` warning). None: from ``exposure_s``.
    """

    pixel_size_um: float
    frame_interval_s: float
    exposure_s: float = 0.0
    pixel_type: str = "uint16"
    height: int = 0
    width: int = 0
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    linker: LinkerSettings = field(default_factory=LinkerSettings)
    window: WindowConfig = field(default_factory=WindowConfig)
    change: ChangeSettings = field(default_factory=ChangeSettings)
    tracker: str = "builtin"
    name: str = ""
    exposure_assumed: bool | None = None
    """True when ``exposure_s`` was 0 (not given) and the frame interval is assumed; None
    (default): decided from ``exposure_s`` (kept through ``dataclasses.replace``)."""

    def __post_init__(self) -> None:
        _validate.positive("pixel_size_um", self.pixel_size_um)
        dt = _validate.positive("frame_interval_s", self.frame_interval_s)
        check_calibration(self.pixel_size_um, dt)
        assumed = (self.exposure_s == 0 if self.exposure_assumed is None
                   else bool(self.exposure_assumed) and self.exposure_s in (0, dt))
        object.__setattr__(self, "exposure_assumed", assumed)
        te = self.exposure_s if self.exposure_s != 0 else dt
        if not (math.isfinite(te) and 0 < te <= dt):
            raise ValueError(
                f"exposure_s must be in (0, frame_interval_s = {dt}], got {self.exposure_s!r}")
        object.__setattr__(self, "exposure_s", float(te))
        if self.pixel_type not in PIXEL_TYPES:
            raise ValueError(
                f"pixel_type must be one of {', '.join(PIXEL_TYPES)}, got {self.pixel_type!r}")
        if (self.height, self.width) != (0, 0) and (self.height < 8 or self.width < 8):
            raise ValueError(
                f"height and width must be >= 8 pixels, got {self.height} x {self.width}")
        if self.tracker not in TRACKERS:
            raise ValueError(
                f"tracker must be one of {', '.join(TRACKERS)}, got {self.tracker!r}")
        lo, hi = RADIUS_PX_RANGE
        radius_px = self.detector.radius_um / self.pixel_size_um
        if not lo <= radius_px <= hi:
            raise ValueError(
                f"detector.radius_um = {self.detector.radius_um:g} um is {radius_px:.3g} px at "
                f"pixel_size_um = {self.pixel_size_um:g} um; the detector needs {lo:g} to "
                f"{hi:g} px, i.e. {lo * self.pixel_size_um:.3g} to "
                f"{hi * self.pixel_size_um:.3g} um here (about sqrt(2) x the PSF's SD)")
        link_px = self.linker.max_distance_um / self.pixel_size_um
        if not link_px <= MAX_LINK_DISTANCE_PX:
            raise ValueError(
                f"linker.max_distance_um = {self.linker.max_distance_um:g} um is "
                f"{link_px:.3g} px at pixel_size_um = {self.pixel_size_um:g} um; at most "
                f"{MAX_LINK_DISTANCE_PX:g} px, i.e. {MAX_LINK_DISTANCE_PX * self.pixel_size_um:.3g}"
                " um here")

    @property
    def dtype(self) -> np.dtype[Any]:
        """NumPy dtype of the frames (little-endian)."""
        return np.dtype(self.pixel_type).newbyteorder("<")

    @property
    def frame_bytes(self) -> int:
        """Bytes one frame must have."""
        return self.height * self.width * self.dtype.itemsize

    def check_server(self, limits: Limits, trackers: Sequence[str] = ("builtin",)) -> None:
        """Check what only the server knows: frame size against its limits, its trackers.

        Parameters
        ----------
        limits : Limits
            The server's limits.
        trackers : sequence of str
            The trackers the server offers.

        Raises
        ------
        ValueError
            Naming the field.
        """
        if self.height < 8 or self.width < 8:
            raise ValueError(
                f"height and width must be >= 8 pixels, got {self.height} x {self.width}")
        if self.height * self.width > limits.max_frame_pixels:
            raise ValueError(
                f"height x width = {self.height * self.width} pixels exceeds the "
                f"server limit of {limits.max_frame_pixels}")
        for name, value, limit, unit in (
                ("window.length", self.window.length, limits.max_window_frames, "frames"),
                ("window.stride", self.window.stride, limits.max_window_frames, "frames"),
                ("linker.max_gap_frames", self.linker.max_gap_frames, limits.max_gap_frames,
                 "frames"),
                ("name", len(self.name), limits.max_name_chars, "characters")):
            if value > limit:
                raise ValueError(f"{name} = {value} {unit} exceeds the server limit of {limit} "
                                 f"{unit}")
        if self.tracker not in trackers:
            hint = (" (start the server with --tracker trackmate and a Fiji: make fiji)"
                    if self.tracker.startswith("trackmate") else "")
            raise ValueError(
                f"tracker: {self.tracker!r} is not available on this server "
                f"(it offers {', '.join(map(repr, trackers))}){hint}")

    @property
    def held_frames(self) -> int:
        """Frames the server holds at the start for the camera estimate (0: none).

        :attr:`DetectorSettings.frames_to_estimate`, capped so that the held
        frames take at most :data:`MAX_HELD_BYTES` (but at least 4 frames).
        """
        n = self.detector.frames_to_estimate
        if n == 0 or self.frame_bytes == 0:
            return n
        return min(n, max(MIN_CAMERA_ESTIMATE_FRAMES, MAX_HELD_BYTES // self.frame_bytes))

    def acquisition(self) -> Acquisition:
        """Timing, pixel size and PSF width as the window estimator needs them."""
        return Acquisition(
            frame_interval_s=self.frame_interval_s, exposure_s=self.exposure_s,
            pixel_size_um=self.pixel_size_um,
            # TrackMate's convention: the LoG radius is sqrt(2) PSF sigmas.
            psf_sigma_um=self.detector.radius_um / math.sqrt(2.0))

    def to_dict(self) -> dict[str, Any]:
        """The effective settings as plain nested dicts (recorded in summaries).

        ``camera`` adds the camera model the stream starts with: each value, and
        whether it was ``given``, ``estimated`` (by the client, from the frames),
        is the ``default``, or is ``to be estimated`` by the server from the first
        ``held_frames`` frames (the session summary's ``camera`` has the outcome).
        """
        model = self.detector.camera()
        camera = model.to_dict()
        if self.held_frames:
            camera["source"] = {n: ("to be estimated" if src == "default" else src)
                                for n, src in model.source.items()}
        return {**asdict(self), "camera": camera, "held_frames": self.held_frames}

    def to_json(self) -> str:
        """The effective settings as JSON."""
        return json.dumps(self.to_dict(), sort_keys=True)
