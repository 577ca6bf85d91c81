"""One live analysis session: frames in, records out, persisted as they are produced.

A :class:`Session` wires the pipeline stages (detect -> link -> window buffers ->
window estimator, and change detection) for one stream. It knows nothing of
gRPC: the stream runner (:mod:`livespt.server.service.runner`) decodes frames
with :meth:`Session.decode`, has them detected in the detection pool, and calls
:meth:`Session.track` in a worker thread (CPU work stays off the event loop).
Every record is also appended to the session's output directory before
``track`` returns, so a client that vanishes loses nothing already computed.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livespt.models.units import blur_coefficient, px_to_um, um_to_px
from livespt.server import __version__
from livespt.server.inference.resident import ResidentModel
from livespt.server.io.csv_records import RecordWriter
from livespt.server.pipeline.block_link import BlockLinker, LinkBlock, Released
from livespt.server.pipeline.camera import (
    CameraEstimate,
    RepeatedPixels,
    camera_record,
    check_frame,
    check_gain,
    estimate_camera,
)
from livespt.server.pipeline.changepoint import ChangeConfig
from livespt.server.pipeline.changepoint_bank import ChangeDetectorBank
from livespt.server.pipeline.detect import DetectorConfig, Spots
from livespt.server.pipeline.estimate import WindowEstimator
from livespt.server.pipeline.frame_timing import FrameTiming
from livespt.server.pipeline.link import (
    BLUR_MERGE_STEPS,
    LinkerConfig,
    OnlineLinker,
    merge_same_track,
)
from livespt.server.pipeline.records import ChangeEvent, TrackPoint, WindowEstimate
from livespt.server.pipeline.sample_check import SampleCheck
from livespt.server.pipeline.track_noise import TrackNoise
from livespt.server.pipeline.windows import WindowBuffers
from livespt.server.service.detection_pool import Detected, DetectionTask, detect_and_crop
from livespt.server.service.settings import (
    MIN_CAMERA_ESTIMATE_FRAMES,
    StreamSettings,
    exposure_assumed_message,
)

MAX_TIMING_WARNINGS = 5
"""FRAME_TIMING warnings sent per stream; every flagged frame is in summary.json."""

BLOCK_FRAMES = 20
"""New frames per block of a whole-movie tracker (``--tracker trackmate``): its results
come this many frames late at most."""

BLOCK_CONTEXT_FRAMES = 3
"""Released frames linked again with each block beyond the gap-closing reach."""

MAX_FRAME_INDEX = 1 << 63
"""Frame indices are below this (int64 in records and files; the wire's field is uint64)."""


@dataclass(frozen=True)
class ExternalTracker:
    """A tracker other than the built-in one, for one session (e.g. TrackMate's).

    Attributes
    ----------
    link_block : LinkBlock
        Its whole-block linker (:mod:`livespt.server.pipeline.block_link`).
    info : dict
        What ``summary.json`` records of it (name, version, settings).
    detect : callable, optional
        Its detector, ``detect(frame, detection_task) -> Detected``, run by the stream
        runner in the server's threads instead of the detection pool; None: LiveSPT's
        detector.
    """

    link_block: LinkBlock
    info: dict[str, Any]
    detect: Callable[[NDArray[Any], DetectionTask], Detected] | None = None


BlockTrackerFactory = Callable[[StreamSettings], ExternalTracker]
"""Makes a session's :class:`ExternalTracker` from the stream's settings (the server
assembly, ``app.py``, registers one per such tracker)."""

class LatencyHistogram:
    """Frame latencies in log-spaced bins: percentiles over any stream in fixed memory."""

    EDGES_MS = np.logspace(-2, 5, 701)  # 0.01 ms .. 100 s, 1 % wide bins

    def __init__(self) -> None:
        self.counts = np.zeros(self.EDGES_MS.size + 1, dtype=np.int64)
        self.n = 0

    def add(self, ms: float) -> None:
        """Count one latency in milliseconds."""
        self.counts[int(np.searchsorted(self.EDGES_MS, ms))] += 1
        self.n += 1

    def percentile(self, q: float) -> float:
        """Upper edge (ms) of the bin holding the q-th percentile; NaN when empty."""
        if self.n == 0:
            return float("nan")
        k = int(np.searchsorted(np.cumsum(self.counts), q / 100 * self.n))
        return float(self.EDGES_MS[min(k, self.EDGES_MS.size - 1)])


@dataclass
class FrameOutput:
    """What one frame produced."""

    index: int
    n_spots: int
    points: list[TrackPoint] = field(default_factory=list)
    estimates: list[WindowEstimate] = field(default_factory=list)
    changes: list[ChangeEvent] = field(default_factory=list)
    # (code, message) found while receiving or analysing this frame
    warnings: list[tuple[str, str]] = field(default_factory=list)


class Session:
    """The state of one stream: pipeline stages, output files and counters.

    Parameters
    ----------
    settings : StreamSettings
        Validated stream settings.
    out_dir : Path
        Directory for ``tracks.csv``, ``estimates.csv``, ``changes.csv``, ``summary.json``.
    session_id : str
        Identifier reported to the client and recorded in the summary.
    device : str
        Compute device of the server, recorded in the summary.
    model : ResidentModel, optional
        A resident image model for the window estimates (CVE without one; the
        window estimator decides whether it can be used).
    tracker : ExternalTracker, optional
        A tracker used instead of the built-in online linker (and detector, if it has
        one), e.g. TrackMate's: frames are then linked in blocks of
        :data:`BLOCK_FRAMES` by its whole-block linker and their results come up to
        :data:`BLOCK_FRAMES` frames later (:attr:`defers_results`).
    """

    def __init__(
        self, settings: StreamSettings, out_dir: Path, session_id: str, device: str = "cpu",
        model: ResidentModel | None = None, tracker: ExternalTracker | None = None,
    ) -> None:
        self.settings = s = settings
        self.session_id = session_id
        self.device = device
        self.out_dir = Path(out_dir)
        self.started_at = time.time()
        self._dtype = s.dtype
        d = s.detector
        self.camera = d.camera()
        self.camera_estimate: CameraEstimate | None = None
        # Frames held at the start to estimate the unset camera fields from (the
        # runner holds them and calls settle_camera; nothing is detected before).
        self.held_frames = s.held_frames
        self.camera_pending = self.held_frames > 0
        self.camera_note = ""
        self.repeats = RepeatedPixels(self.camera)
        self.detector_config = self._detector_config()
        # Detections come from images: merge the maxima of one motion-blurred streak
        # (tracks whose RMS step exceeds the spot radius; link.py, "Motion-blurred spots").
        self.linker = OnlineLinker(LinkerConfig(
            max_distance_um=s.linker.max_distance_um, max_gap_frames=s.linker.max_gap_frames,
            blur_merge_steps=BLUR_MERGE_STEPS, blur_merge_min_step_um=d.radius_um))
        # A whole-movie tracker (TrackMate) links overlapping blocks instead (block_link.py).
        self.block: BlockLinker | None = None
        self.tracker_info: dict[str, Any] = {"name": s.tracker}
        # The tracker's own detector, run by the stream runner instead of the pool.
        self.external_detect = tracker.detect if tracker is not None else None
        if tracker is not None:
            self.block = BlockLinker(tracker.link_block, BLOCK_FRAMES,
                                     s.linker.max_gap_frames + 1 + BLOCK_CONTEXT_FRAMES,
                                     s.linker.max_gap_frames)
            self.tracker_info = tracker.info
        # Windows use each track's own noise estimate (track_noise.py) once it has one,
        # the sigma-unknown CVE before: the fitted precisions ignore motion blur and
        # follow the camera model, which may be wrong.
        self.estimator = WindowEstimator(s.window, s.acquisition(), model, use_fitted_sigma=False)
        self.noise = TrackNoise(blur_coefficient(s.exposure_s, s.frame_interval_s))
        # Windows per `method` (which estimator answered, and why), for the summary.
        self.window_methods: Counter[str] = Counter()
        self.warnings: list[str] = list(self.estimator.warnings)
        # Camera warnings found in the first frame, sent with that frame's results.
        self._new_warnings: list[tuple[str, str]] = []
        # Warnings known before the first frame, sent right after SessionStarted.
        self.start_warnings: list[tuple[str, str]] = [
            ("MODEL_NOT_USED", w) for w in self.estimator.warnings]
        if s.exposure_assumed:  # a default that may not hold: said, not applied silently
            msg = exposure_assumed_message(s.frame_interval_s, "config.exposure_s")
            self.start_warnings.append(("EXPOSURE", msg))
            self.warnings.append(f"EXPOSURE: {msg}")
        # Are the frames evenly spaced? (frame_timing.py; warns, corrects nothing)
        self.timing = FrameTiming()
        # Do the spot radius and the search radius suit the sample? (sample_check.py; warns)
        self.sample = SampleCheck(d.radius_um, s.linker.max_distance_um)
        self.detection_task = DetectionTask(self.detector_config, self.estimator.patch_px)
        self.windows = WindowBuffers(s.window, patch_px=self.estimator.patch_px)
        self.changes: ChangeDetectorBank | None = None
        if not s.change.disabled:
            self.changes = ChangeDetectorBank(ChangeConfig(
                frame_interval_s=s.frame_interval_s, exposure_s=s.exposure_s,
                false_alarm_per_1000=s.change.false_alarm_per_1000))
        self.writer = RecordWriter(self.out_dir)
        self.last_index: int | None = None
        self.n_frames = 0
        self.n_tracks = 0
        self.latency = LatencyHistogram()
        self.closed = False
        # track() and close() never interleave (close may come from the event loop
        # while a frame is being tracked in a worker thread).
        self._lock = threading.Lock()
        self.writer.write_summary(self.summary("running"))

    def _warn(self, code: str, message: str,
              sent: list[tuple[str, str]] | None = None) -> None:
        """Record a warning for summary.json and send it (with this frame's results by default)."""
        (self._new_warnings if sent is None else sent).append((code, message))
        self.warnings.append(f"{code}: {message}")

    def _detector_config(self) -> DetectorConfig:
        s = self.settings
        d = s.detector
        return DetectorConfig(
            radius_px=um_to_px(d.radius_um, s.pixel_size_um), median_filter=d.median_filter,
            invert=d.dark_spots, offset_adu=self.camera.offset_adu,
            gain_adu_per_e=self.camera.gain_adu_per_e, read_noise_e=self.camera.read_noise_e,
            threshold=d.threshold if d.threshold > 0 else None)  # 0: automatic

    # ------------------------------------------------------------------ input
    def decode(self, index: int, data: bytes) -> NDArray[Any]:
        """Check a frame's index and byte count and view its bytes as (H, W).

        Frames are decoded in arrival order, possibly ahead of :meth:`track`.

        Raises ValueError naming ``frame.index`` or ``frame.data``.
        """
        s = self.settings
        if not 0 <= index < MAX_FRAME_INDEX:  # frame numbers are int64 in every record
            raise ValueError(f"frame.index must be in [0, 2^63 - 1], got {index}")
        if self.last_index is not None and index <= self.last_index:
            raise ValueError(
                f"frame.index {index} is not after the previous frame {self.last_index}: "
                "indices must strictly increase"
            )
        if len(data) != s.frame_bytes:
            raise ValueError(
                f"frame.data has {len(data)} bytes, but config declares {s.height} x {s.width} "
                f"{s.dtype} = {s.frame_bytes} bytes"
            )
        frame = np.frombuffer(data, dtype=self._dtype).reshape(s.height, s.width)
        if self._dtype.kind == "f" and not np.all(np.isfinite(frame)):
            raise ValueError(f"frame.data of frame {index} contains NaN or infinite values")
        if not self.camera_pending:  # else settle_camera checks the held frames
            self._check_frame(frame, first=self.last_index is None)
        self.last_index = index  # accepted: the next frame must come after it
        return frame

    def _check_frame(self, frame: NDArray[Any], first: bool) -> None:
        """The camera checks of one decoded frame (the first: the model; all: repeats)."""
        if first:  # can the camera model describe the first frame?
            for w in check_frame(self.camera, frame, "config.detector."):
                self._warn("CAMERA_MODEL", w)
        if not self.repeats.done:  # independent noise from frame to frame?
            msg = self.repeats.add(frame)
            if msg is not None:
                self._warn("FRAME_NOISE", msg)

    def settle_camera(self, frames: Sequence[NDArray[Any]]) -> None:
        """Estimate the unset camera fields from the held frames; detection may start after.

        Called once, with the frames held from the start of the stream (up to
        :attr:`held_frames`; fewer when the stream ended, failed or paused earlier), before
        any of them is detected. The unset fields that the frames identify
        (:func:`~livespt.server.pipeline.camera.estimate_camera`) are used, the
        others keep their defaults; a CAMERA_ESTIMATE message says which and why,
        a given gain the frames contradict gives CAMERA_MODEL, and the frames are
        then checked as :meth:`decode` checks frames.

        Parameters
        ----------
        frames : sequence of ndarray, shape (H, W)
            The decoded frames held, in order (raw counts, ADU).
        """
        if not self.camera_pending:
            raise RuntimeError("settle_camera: the camera is not waiting for an estimate")
        d = self.settings.detector
        est: CameraEstimate | None = None
        if len(frames) >= MIN_CAMERA_ESTIMATE_FRAMES:
            try:
                est = estimate_camera(frames, offset_adu=d.camera_offset_adu,
                                      gain_adu_per_e=d.camera_gain_adu_per_e,
                                      read_noise_e=d.read_noise_e, max_frames=len(frames))
            except ValueError as exc:  # e.g. frames too small for the tiles
                self.camera_note = f"camera not estimated: {exc}"
        else:
            self.camera_note = (f"camera not estimated: the stream has {len(frames)} "
                                f"frames, fewer than the {MIN_CAMERA_ESTIMATE_FRAMES} "
                                "photon transfer needs")
        if est is not None:
            cam = est.camera()
            # Values the client estimated itself keep that source.
            src = {n: ("estimated" if n in d.camera_estimated_fields else v)
                   for n, v in cam.source.items()}
            self.camera = replace(cam, source=src)
            self.camera_estimate = est
            self.camera_note = est.describe()
            for w in check_gain(self.camera, est, "config.detector."):
                self._warn("CAMERA_MODEL", w)
        self._new_warnings.insert(0, ("CAMERA_ESTIMATE", self.camera_note))
        self.detector_config = self._detector_config()
        self.detection_task = DetectionTask(self.detector_config, self.estimator.patch_px)
        self.repeats = RepeatedPixels(self.camera)
        self.camera_pending = False
        for i, frame in enumerate(frames):
            self._check_frame(frame, first=i == 0)

    # ------------------------------------------------------------- processing
    @property
    def defers_results(self) -> bool:
        """Whether a frame's records may come with a later frame (block linking).

        The runner then tells :meth:`track` which frame is the stream's last, so that
        the frames still pending are linked and released with it.
        """
        return self.block is not None

    def track(self, index: int, detected: Detected | Spots, last: bool = False) -> FrameOutput:
        """Link one frame's spots, update windows and change detectors, persist the records.

        Frames must be passed in index order (the service guarantees it).

        Parameters
        ----------
        index : int
            Frame index (strictly increasing; checked by :meth:`decode`).
        detected : Detected or Spots
            The frame's detections (:func:`~livespt.server.service.detection_pool.detect_and_crop`
            with :attr:`detection_task`, run by the detection pool).
        last : bool
            The stream's last frame: with block linking (:attr:`defers_results`), every
            frame still pending is linked and released with this one.

        Returns
        -------
        FrameOutput
            Track points, window estimates and change events produced by this frame;
            with block linking, those of the frames released by it (each point
            carries its own frame).
        """
        with self._lock:
            if self.closed:
                raise RuntimeError(f"session {self.session_id} is closed")
            if self.camera_pending:
                raise RuntimeError(f"session {self.session_id}: the camera waits for "
                                   "settle_camera (frames detected before it would use "
                                   "the default camera)")
            if isinstance(detected, Spots):
                detected = Detected(detected)
            return self._track(index, detected, last)

    def _track(self, index: int, detected: Detected, last: bool) -> FrameOutput:
        s = self.settings
        spots = detected.spots
        self.n_frames += 1
        xy_um = px_to_um(np.column_stack([spots.x_px, spots.y_px]), s.pixel_size_um)
        out = FrameOutput(index=index, n_spots=len(xy_um), warnings=self._new_warnings)
        self._new_warnings = []
        if self.block is None:
            photons = np.asarray(spots.photons, dtype=float)
            ids = self.linker.link(index, xy_um,
                                   weights=np.where(np.isfinite(photons), photons, 1.0))
            self._analyse(Released(index, ids, xy_um, detected), out)
        else:
            released = self.block.add(index, xy_um, detected)
            if last:
                released += self.block.finish()
            for frame in released:
                self._analyse(frame, out)
        self.writer.write([*out.points, *out.estimates, *out.changes])
        return out

    def _analyse(self, frame: Released, out: FrameOutput) -> None:
        """Windows, noise, checks, changes and estimates of one linked frame, into ``out``."""
        s = self.settings
        index, ids, xy_um, detected = frame.index, frame.ids, frame.xy_um, frame.payload
        spots = detected.spots
        n_spots = len(ids)
        prec_um = px_to_um(np.asarray(spots.precision_px, dtype=float), s.pixel_size_um)
        photons = np.asarray(spots.photons, dtype=float)
        # A motion-blurred spot detected twice is one point of one track.
        rep, ids, xy_um, prec_um = merge_same_track(ids, xy_um, prec_um, photons)
        patches = (detected.patches if detected.patches is None or rep.size == n_spots
                   else detected.patches[rep])
        if len(ids):
            self.n_tracks = max(self.n_tracks, int(ids.max()) + 1)
        out.points += [
            TrackPoint(t, index, x, y, p)
            for t, x, y, p in zip(ids.tolist(), xy_um[:, 0].tolist(), xy_um[:, 1].tolist(),
                                  prec_um.tolist(), strict=True)
        ]
        self.windows.add_many(ids, index, xy_um[:, 0], xy_um[:, 1], prec_um, patches=patches)
        steps = self.noise.steps_into(ids, index, xy_um)
        for code, msg in self.sample.add(ids, xy_um, steps, px_to_um(
                np.asarray(spots.sigma_px, dtype=float)[rep], s.pixel_size_um)):
            self._warn(code, msg, out.warnings)
        flagged = self.timing.test(index, ids, steps)
        if flagged is not None and len(self.timing.flagged) <= MAX_TIMING_WARNINGS:
            msg = (flagged.describe() + "; the analysis assumes evenly spaced frames (a "
                   "client that knows the acquisition times can give the frame after a "
                   "dropped one the next frame.index: a gap, which the analysis handles)")
            if len(self.timing.flagged) == MAX_TIMING_WARNINGS:
                msg += "; further such frames are listed in summary.json only"
            self._warn("FRAME_TIMING", msg, out.warnings)
        self.noise.update_many(ids, index, xy_um, interval_known=flagged is None)
        if self.changes is not None and len(ids):
            # One vectorized update for the tracks of the frame that have their own noise
            # estimate (track_noise.py): the detector's noise floor never comes from the
            # fitted precisions, which follow the camera model and ignore motion blur (a
            # floor that changes when the track's own sigma arrives looks like a change of
            # D). A track's history in the detector starts there.
            track_sig = self.noise.sigma(ids)[0]
            known = np.isfinite(track_sig)
            # A frame the timing check flagged came after an interval the frame numbers
            # do not tell: the detector takes no step across it (its false-alarm rate is
            # calibrated for steps of known duration).
            out.changes += [ChangeEvent.from_detector(ev.track_id, ev)
                            for ev in self.changes.update_many(ids[known], index, xy_um[known],
                                                               track_sig[known],
                                                               interval_known=flagged is None)]
        out.estimates += self._estimate_due()
        linker = self.block if self.block is not None else self.linker
        for tid in linker.ended(index):
            self.windows.drop(tid)
            self.noise.drop(tid)
            self.estimator.drop(tid)
            self.timing.drop(tid)
            self.sample.drop(tid)
            if self.changes is not None:
                self.changes.drop(tid)

    def _estimate_due(self) -> list[WindowEstimate]:
        """Estimate the queued windows, each with its track's current noise estimate."""
        due = self.windows.take_due()
        if len(due) == 0:
            return []
        ids = due.track_ids
        out = self.estimator.estimate(due.with_track_noise(
            *self.noise.sigma(ids), self.noise.dispersion(ids),
            self.noise.diffusion(ids, self.settings.frame_interval_s)))
        self.window_methods.update(e.method for e in out)
        return out

    def process(self, index: int, frame: NDArray[Any]) -> FrameOutput:
        """Detect, link and estimate one decoded frame in this thread (no detection pool).

        For tests and in-process use; a served stream detects in the pool instead.
        """
        return self.track(index, detect_and_crop(frame, self.detection_task))

    # ---------------------------------------------------------------- closing
    def summary(self, status: str) -> dict[str, Any]:
        """The session's effective configuration, provenance and totals."""
        ratio = self.estimator.check.session_ratio()
        zs = self.estimator.sigma_check.z()
        return {
            "session_id": self.session_id,
            "status": status,
            "server_pid": os.getpid(),
            "livespt_version": __version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "device": self.device,
            "tracker": self.settings.tracker,
            "tracker_info": self.tracker_info,
            "estimators": {"window": self.estimator.method, "change": "glr"},
            "merged_blurred_detections": self.linker.n_merged,
            "windows_by_method": dict(sorted(self.window_methods.items())),
            "windows_out_of_distribution": self.estimator.n_ood,
            "windows_model_bias": self.estimator.n_model_bias,
            "tracks_model_bias": self.estimator.check.n_flagged_tracks,
            "model_check": {
                "session_flagged": self.estimator.check.session_flagged,
                "model_over_cve": round(ratio, 4) if np.isfinite(ratio) else None,
                "windows_compared": self.estimator.check.session_windows()},
            "track_sigma_check": {
                "session_flagged": self.estimator.sigma_check.flagged,
                "windows_sent_to_sigma_unknown_cve": self.estimator.n_sigma_check,
                "z": round(zs, 2) if np.isfinite(zs) else None,
                "pairs": self.estimator.sigma_check.pairs()},
            "noise_spread": self.estimator.noise_spread.summary(),
            "frame_timing": self.timing.summary(),
            "repeated_pixels": self.repeats.summary(),
            "sample_check": self.sample.summary(),
            "camera": {**camera_record(self.camera, self.camera_estimate),
                       "held_frames": self.held_frames, "description": self.camera_note},
            "models": [self.estimator.model.info()] if self.estimator.model else [],
            "warnings": self.warnings,
            "config": self.settings.to_dict(),
            "frames": self.n_frames,
            "tracks": self.n_tracks,
            "track_points": self.writer.counts[TrackPoint.FILE],
            "estimates": self.writer.counts[WindowEstimate.FILE],
            "changes": self.writer.counts[ChangeEvent.FILE],
            "latency_p50_ms": self.latency.percentile(50),
            "latency_p99_ms": self.latency.percentile(99),
            "started_at": self.started_at,
            "elapsed_s": round(time.time() - self.started_at, 3),
        }

    def close(self, status: str) -> dict[str, Any]:
        """Flush and close the output files and write ``summary.json`` (idempotent)."""
        with self._lock:
            return self._close(status)

    def _close(self, status: str) -> dict[str, Any]:
        if self.closed:
            return self.summary(status)
        self.closed = True
        if self.block is not None and self.block.pending:
            # Frames detected but not yet linked (a stream that ended early): linked and
            # recorded now, so nothing computed is lost.
            out = FrameOutput(index=-1, n_spots=0)
            for frame in self.block.finish():
                self._analyse(frame, out)
            self.writer.write([*out.points, *out.estimates, *out.changes])
        ended = self.linker.close()
        if self.block is not None:
            ended += self.block.ended(np.iinfo(np.int64).max // 2)
        for tid in ended:
            self.windows.drop(tid)
        records = self._estimate_due()
        self.writer.write(records)
        summary = self.summary(status)
        self.writer.write_summary(summary)
        self.writer.close()
        # The per-track state is freed now, not when the last reference to the session
        # goes (every track has ended; the summary above reads none of it).
        self.changes = None
        self.windows = WindowBuffers(self.settings.window, patch_px=self.estimator.patch_px)
        return summary


def recover_stale_sessions(out_root: Path) -> list[str]:
    """Close the records of sessions whose server died while they ran.

    A session's ``summary.json`` says ``running`` until the session ends; a server killed
    with SIGKILL (or a machine that lost power) leaves it so. Each such summary whose
    ``server_pid`` no longer runs gets the status ``server died: ...`` (its CSV files
    hold every record written before). Summaries without ``server_pid`` (older
    versions) are left alone.

    Parameters
    ----------
    out_root : Path
        The server's sessions folder.

    Returns
    -------
    list of str
        The session ids recovered.
    """
    from livespt.server.io import strict_json
    from livespt.server.service.detection_pool import process_alive

    recovered = []
    for path in sorted(Path(out_root).glob("*/summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid = summary.get("server_pid")
        if summary.get("status") != "running" or not isinstance(pid, int) or process_alive(pid):
            continue
        summary["status"] = ("server died: the session was found running when a server "
                             f"started at {time.strftime('%Y-%m-%d %H:%M:%S')}; its files "
                             "hold the records written before")
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(strict_json.dumps(summary, indent=2))
        tmp.replace(path)
        recovered.append(str(summary.get("session_id", path.parent.name)))
    return recovered


def prune_sessions(out_root: Path, keep: int = 0, keep_days: float = 0.0,
                   active: frozenset[str] = frozenset()) -> list[str]:
    """Delete ended sessions beyond a count or an age (``--keep-sessions``, ``--keep-days``).

    Only folders with a ``summary.json`` whose status is not ``running`` are candidates
    (a running session, and anything else in ``out_root``, is never touched), and never
    those in ``active``. Newest first by the summary's ``started_at``.

    Parameters
    ----------
    out_root : Path
        The server's sessions folder.
    keep : int
        Keep at most this many ended sessions; 0: no limit.
    keep_days : float
        Delete ended sessions that started more than this many days ago; 0: no limit.
    active : frozenset of str
        Session ids in use.

    Returns
    -------
    list of str
        The session ids deleted.
    """
    import shutil

    if keep <= 0 and keep_days <= 0:
        return []
    ended = []
    for path in Path(out_root).glob("*/summary.json"):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if summary.get("status") == "running" or path.parent.name in active:
            continue
        ended.append((float(summary.get("started_at") or 0.0), path.parent))
    ended.sort(reverse=True)
    cutoff = time.time() - keep_days * 86400.0
    doomed = [d for i, (t, d) in enumerate(ended)
              if (keep > 0 and i >= keep) or (keep_days > 0 and t < cutoff)]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)
    return [d.name for d in doomed]
