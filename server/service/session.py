"""One live analysis session: frames in, records out, persisted as they are produced.

A :class:`Session` wires the pipeline stages (detect -> link -> sliding windows
and change detection) for one stream. It knows nothing of gRPC: the service
decodes wire messages into arrays and settings, calls :meth:`Session.process`
in a worker thread (CPU work stays off the event loop), and encodes the
records it returns. Every record is also appended to the session's output
directory before ``process`` returns, so a client that vanishes loses nothing
already computed.
"""

from __future__ import annotations

import math
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livespt.server import __version__
from livespt.server.inference.resident import ResidentModel
from livespt.server.pipeline.changepoint import ChangeConfig, ChangeDetectorBank
from livespt.server.pipeline.detect import DetectorConfig, Spots
from livespt.server.pipeline.link import LinkerConfig, OnlineLinker
from livespt.server.pipeline.records import ChangeEvent, RecordWriter, TrackPoint, WindowEstimate
from livespt.server.pipeline.windows import (
    DueWindows,
    WindowConfig,
    WindowEstimator,
    estimate_windows,
    window_records,
)
from livespt.server.service.detection_pool import Detected, DetectionTask, detect_frame
from livespt.server.service.settings import StreamSettings

MIN_MODEL_WINDOW = 5
"""Shortest window (points) given to a model; shorter ones use the CVE."""


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
        A resident image model for the window estimates (CVE without one).
    """

    def __init__(
        self, settings: StreamSettings, out_dir: Path, session_id: str, device: str = "cpu",
        model: ResidentModel | None = None,
    ) -> None:
        self.settings = s = settings
        self.session_id = session_id
        self.device = device
        self.out_dir = Path(out_dir)
        self.started_at = time.time()
        self._dtype = np.dtype(s.dtype)
        det_kwargs: dict[str, Any] = {
            "radius_px": s.radius_um / s.pixel_size_um,
            "median_filter": s.median_filter,
            "invert": s.dark_spots,
            "offset_adu": s.camera_offset_adu,
            "gain_adu_per_e": s.camera_gain_adu_per_e,
        }
        if s.threshold > 0:
            det_kwargs["threshold"] = s.threshold
        self.detector_config = DetectorConfig(**det_kwargs)
        self.linker = OnlineLinker(
            LinkerConfig(max_distance_um=s.max_distance_um, max_gap_frames=s.max_gap_frames)
        )
        self.warnings: list[str] = []
        if model is not None and not (MIN_MODEL_WINDOW <= s.window_length <= model.max_frames):
            self.warnings.append(
                f"config.window.length {s.window_length} is outside the {MIN_MODEL_WINDOW}.."
                f"{model.max_frames} points model {model.estimator.name} takes: "
                "windows are estimated with the CVE")
            model = None
        self.model = model
        self.detection_task = DetectionTask(
            self.detector_config, None if model is None else model.patch_px)
        self.psf_sigma_um = s.radius_um / math.sqrt(2.0)  # TrackMate: sigma = radius / sqrt(2)
        self.windows = WindowEstimator(
            WindowConfig(
                length=s.window_length,
                stride=s.window_stride,
                frame_interval_s=s.frame_interval_s,
                exposure_s=s.exposure_s,
            ),
            patch_px=model.patch_px if model is not None else None,
        )
        self.changes: ChangeDetectorBank | None = None
        if s.change_enabled:
            self.changes = ChangeDetectorBank(
                ChangeConfig(
                    frame_interval_s=s.frame_interval_s,
                    exposure_s=s.exposure_s,
                    false_alarm_per_1000=s.false_alarm_per_1000,
                )
            )
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

    # ------------------------------------------------------------------ input
    def decode(self, index: int, data: bytes) -> NDArray[Any]:
        """Check a frame's index and byte count and view its bytes as (H, W).

        Frames are decoded in arrival order, possibly ahead of :meth:`track`.

        Raises ValueError naming ``frame.index`` or ``frame.data``.
        """
        s = self.settings
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
        self.last_index = index  # accepted: the next frame must come after it
        return frame

    # ------------------------------------------------------------- processing
    def detect_frame(self, frame: NDArray[Any]) -> Detected:
        """Detect and localize the spots of one decoded frame (no session state touched).

        Safe to run for frame N+1 elsewhere while :meth:`track` handles frame N:
        the service runs :func:`server.detection.detect_frame` with
        :attr:`detection_task` in a worker process. With an image model, also
        crops a patch around each spot.
        """
        return detect_frame(frame, self.detection_task)

    def track(self, index: int, detected: Detected | Spots) -> FrameOutput:
        """Link one frame's spots, update windows and change detectors, persist the records.

        Frames must be passed in index order (the service guarantees it).

        Parameters
        ----------
        index : int
            Frame index (strictly increasing; checked by :meth:`decode`).
        detected : Detected
            The frame's detections, from :meth:`detect_frame`.

        Returns
        -------
        FrameOutput
            Track points, window estimates and change events produced by this frame.
        """
        with self._lock:
            if self.closed:
                raise RuntimeError(f"session {self.session_id} is closed")
            if isinstance(detected, Spots):
                detected = Detected(detected)
            return self._track(index, detected)

    def _track(self, index: int, detected: Detected) -> FrameOutput:
        s = self.settings
        spots = detected.spots
        self.n_frames += 1
        xy_um = np.column_stack([spots.x_px, spots.y_px]) * s.pixel_size_um
        prec_um = np.asarray(spots.precision_px, dtype=float) * s.pixel_size_um
        ids = self.linker.link(index, xy_um)
        out = FrameOutput(index=index, n_spots=len(ids))
        if len(ids):
            self.n_tracks = max(self.n_tracks, int(ids.max()) + 1)
        out.points = [
            TrackPoint(t, index, x, y, p)
            for t, x, y, p in zip(ids.tolist(), xy_um[:, 0].tolist(), xy_um[:, 1].tolist(),
                                  prec_um.tolist(), strict=True)
        ]
        self.windows.add_many(ids, index, xy_um[:, 0], xy_um[:, 1], prec_um,
                              patches=detected.patches)
        if self.changes is not None and len(ids):
            # One vectorized update for every track of the frame.
            out.changes = [ChangeEvent.from_detector(ev.track_id, ev)
                           for ev in self.changes.update_many(ids, index, xy_um, prec_um)]
        out.estimates = self._estimate(self.windows.take_due())
        for tid in self.linker.ended(index):
            self.windows.drop(tid)
            if self.changes is not None:
                self.changes.drop(tid)
        self.writer.write([*out.points, *out.estimates, *out.changes])
        return out

    def process(self, index: int, frame: NDArray[Any]) -> FrameOutput:
        """Run one decoded frame through the whole pipeline (:meth:`detect_frame` + :meth:`track`).

        Parameters
        ----------
        index : int
            Frame index (strictly increasing; checked by :meth:`decode`).
        frame : ndarray, shape (H, W)
            The frame's pixels.

        Returns
        -------
        FrameOutput
            Track points, window estimates and change events produced by this frame.
        """
        return self.track(index, self.detect_frame(frame))

    def _estimate(self, due: DueWindows) -> list[WindowEstimate]:
        """Window estimates: the resident model when there is one, else the CVE."""
        if self.model is None or due.patches is None or len(due) == 0:
            return estimate_windows(self.windows.config, due.track_ids, due.frames, due.values)
        s = self.settings
        pred = self.model.estimate_windows(
            due.frames, due.values, s.pixel_size_um, s.frame_interval_s, s.exposure_s,
            self.psf_sigma_um, patches=due.patches)
        return window_records(due.track_ids, due.frames, pred.d_um2_s, pred.d_low_um2_s,
                              pred.d_high_um2_s, self.model.method)

    # ---------------------------------------------------------------- closing
    def summary(self, status: str) -> dict[str, Any]:
        """The session's effective configuration, provenance and totals."""
        return {
            "session_id": self.session_id,
            "status": status,
            "livespt_version": __version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
            "device": self.device,
            "tracker": self.settings.tracker,
            "estimators": {"window": self.model.method if self.model else "cve",
                           "change": "glr"},
            "models": [self.model.info()] if self.model else [],
            "warnings": self.warnings,
            "config": {k: v for k, v in self.settings.__dict__.items()},
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
        for tid in self.linker.close():
            self.windows.drop(tid)
        records = self._estimate(self.windows.take_due())
        self.writer.write(records)
        summary = self.summary(status)
        self.writer.write_summary(summary)
        self.writer.close()
        return summary
