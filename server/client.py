"""Python client of the LiveSPT gRPC service.

Example
-------
>>> from server.client import LiveSptClient, StreamOptions
>>> with LiveSptClient("127.0.0.1:50051") as client:          # doctest: +SKIP
...     result = client.stream(frames, StreamOptions(pixel_size_um=0.1,
...                                                  frame_interval_s=0.05))
...     print(result.estimates[:3], result.changes)

``frames`` is any iterable of 2D numpy arrays (uint8, uint16 or float32).
Updates arrive while frames are still being sent; pass ``on_update`` to see them
live. Other languages use ``proto/livespt/v1/livespt.proto`` directly.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.pipeline.records import ChangeEvent, TrackPoint, WindowEstimate
from livespt.server.service.settings import PIXEL_TYPE_BY_DTYPE, Limits


@dataclass(frozen=True)
class StreamOptions:
    """Acquisition and analysis settings of a stream (physical units; 0 = server default).

    Attributes
    ----------
    pixel_size_um, frame_interval_s : float
        Calibration, required.
    exposure_s : float
        Exposure in s; 0 means equal to the frame interval.
    radius_um, threshold, median_filter, dark_spots : detector settings
        Expected spot radius in um, LoG quality threshold, median pre-filter,
        dark particles on a light background.
    camera_offset_adu, camera_gain_adu_per_e : float or None
        Camera offset and gain; None: server default (100 ADU, 1 ADU/e-).
    max_distance_um : float
        Linking search radius in um.
    max_gap_frames : int or None
        Gap closing (None: server default; 0 disables).
    window, stride : int
        Sliding-window length and stride in frames.
    detect_changes : bool
        Run the change-of-D detector.
    false_alarm_per_1000 : float
        Change-detector false alarms per 1000 track-frames.
    name : str
        Free text recorded in the session summary.
    """

    pixel_size_um: float
    frame_interval_s: float
    exposure_s: float = 0.0
    radius_um: float = 0.0
    threshold: float = 0.0
    median_filter: bool = False
    dark_spots: bool = False
    camera_offset_adu: float | None = None
    camera_gain_adu_per_e: float | None = None
    max_distance_um: float = 0.0
    max_gap_frames: int | None = None
    window: int = 0
    stride: int = 0
    detect_changes: bool = True
    false_alarm_per_1000: float = 0.0
    tracker: str = "builtin"
    name: str = ""

    def to_proto(self, dtype: np.dtype[Any], height: int, width: int) -> pb.StreamConfig:
        """The wire config for frames of this dtype and shape."""
        if np.dtype(dtype).name not in PIXEL_TYPE_BY_DTYPE:
            raise ValueError(f"frames: dtype {np.dtype(dtype).name} is not supported "
                             f"(use one of {', '.join(PIXEL_TYPE_BY_DTYPE)})")
        trackers = {"builtin": pb.TRACKER_BUILTIN, "trackmate": pb.TRACKER_TRACKMATE}
        if self.tracker not in trackers:
            raise ValueError(f"tracker must be builtin or trackmate, got {self.tracker!r}")
        det = pb.DetectorParams(radius_um=self.radius_um, threshold=self.threshold,
                                median_filter=self.median_filter, dark_spots=self.dark_spots)
        if self.camera_offset_adu is not None:
            det.camera_offset_adu = self.camera_offset_adu
        if self.camera_gain_adu_per_e is not None:
            det.camera_gain_adu_per_e = self.camera_gain_adu_per_e
        linker = pb.LinkerParams(max_distance_um=self.max_distance_um)
        if self.max_gap_frames is not None:
            linker.max_gap_frames = self.max_gap_frames
        return pb.StreamConfig(
            pixel_size_um=self.pixel_size_um,
            frame_interval_s=self.frame_interval_s,
            exposure_s=self.exposure_s,
            pixel_type=PIXEL_TYPE_BY_DTYPE[np.dtype(dtype).name],  # type: ignore[arg-type]
            height=height,
            width=width,
            detector=det,
            linker=linker,
            window=pb.WindowParams(length=self.window, stride=self.stride),
            change=pb.ChangeParams(disabled=not self.detect_changes,
                                   false_alarm_per_1000=self.false_alarm_per_1000),
            tracker=trackers[self.tracker],
            name=self.name,
        )


@dataclass
class StreamResult:
    """Everything a stream returned, plus client-side latencies."""

    session_id: str = ""
    server_output_dir: str = ""
    effective_config_json: str = ""
    points: list[TrackPoint] = field(default_factory=list)
    estimates: list[WindowEstimate] = field(default_factory=list)
    changes: list[ChangeEvent] = field(default_factory=list)
    frames_acked: int = 0
    server_latency_ms: list[float] = field(default_factory=list)
    client_latency_ms: list[float] = field(default_factory=list)
    summary: pb.StreamSummary | None = None
    warnings: list[str] = field(default_factory=list)


def records_of(update: pb.FrameResult) -> tuple[list[TrackPoint], list[WindowEstimate],
                                                list[ChangeEvent]]:
    """Decode a FrameResult into the records the CSV files hold."""
    points = [TrackPoint(p.track_id, p.frame, p.x_um, p.y_um, p.precision_um)
              for p in update.points]
    estimates = [WindowEstimate(e.track_id, e.frame_start, e.frame_end, e.d_um2_s,
                                e.d_low_um2_s, e.d_high_um2_s, e.method)
                 for e in update.estimates]
    changes = [ChangeEvent(c.track_id, c.frame, c.detected_at_frame, c.d_before_um2_s,
                           c.d_after_um2_s, c.score) for c in update.changes]
    return points, estimates, changes


class LiveSptClient:
    """A connection to a LiveSPT server.

    Parameters
    ----------
    target : str
        ``host:port`` of the server.
    limits : Limits, optional
        Client-side message size limits (default: the server defaults).
    """

    def __init__(self, target: str, limits: Limits | None = None) -> None:
        lim = limits or Limits()
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", lim.max_message_bytes),
            ("grpc.max_receive_message_length", lim.max_message_bytes),
        ])
        self.stub = pb_grpc.LiveSptStub(self.channel)

    def __enter__(self) -> LiveSptClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until the server accepts connections (raises on timeout)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def info(self, timeout_s: float = 10.0) -> pb.ServerInfo:
        """GetServerInfo."""
        return self.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=timeout_s)

    def stream(
        self,
        frames: Iterable[NDArray[Any]],
        options: StreamOptions,
        on_update: Callable[[pb.AnalysisUpdate], None] | None = None,
        max_in_flight: int = 8,
    ) -> StreamResult:
        """Stream frames to the server and collect every update.

        Parameters
        ----------
        frames : iterable of ndarray, shape (H, W)
            The acquisition, in order; dtype uint8, uint16 or float32, all one shape.
        options : StreamOptions
            Calibration and analysis settings.
        on_update : callable, optional
            Called with each AnalysisUpdate as it arrives (from this thread).
        max_in_flight : int
            Frames sent but not yet acknowledged before sending pauses, which bounds
            client memory and makes latencies mean "frame to result", not queueing.

        Returns
        -------
        StreamResult
            Records, acknowledgements, latencies and the server's summary. A gRPC
            error (e.g. INVALID_ARGUMENT for a bad frame) raises ``grpc.RpcError``.
        """
        sent_at: dict[int, float] = {}
        credits: queue.Queue[None] = queue.Queue()
        for _ in range(max_in_flight):
            credits.put(None)
        done = threading.Event()

        def requests() -> Iterator[pb.StreamRequest]:
            it = iter(frames)
            first = next(it, None)
            if first is None:
                raise ValueError("frames is empty")
            arr = np.asarray(first)
            if arr.ndim != 2:
                raise ValueError(f"frames must be 2D (H, W), got shape {arr.shape}")
            yield pb.StreamRequest(config=options.to_proto(arr.dtype, *arr.shape))
            index = 0
            for frame in _chain(arr, it):
                while not done.is_set():
                    try:
                        credits.get(timeout=0.1)
                        break
                    except queue.Empty:
                        continue
                if done.is_set():
                    return
                f = np.ascontiguousarray(frame)
                sent_at[index] = time.perf_counter()
                yield pb.StreamRequest(frame=pb.Frame(
                    index=index, timestamp_s=index * options.frame_interval_s,
                    data=f.astype(f.dtype.newbyteorder("<"), copy=False).tobytes()))
                index += 1

        result = StreamResult()
        try:
            for upd in self.stub.StreamFrames(requests()):
                kind = upd.WhichOneof("update")
                if kind == "started":
                    result.session_id = upd.started.session_id
                    result.server_output_dir = upd.started.output_dir
                    result.effective_config_json = upd.started.effective_config_json
                elif kind == "frame":
                    fr = upd.frame
                    t = sent_at.pop(fr.index, None)
                    if t is not None:
                        result.client_latency_ms.append((time.perf_counter() - t) * 1e3)
                    credits.put(None)
                    result.frames_acked += 1
                    result.server_latency_ms.append(fr.latency_ms)
                    p, e, c = records_of(fr)
                    result.points.extend(p)
                    result.estimates.extend(e)
                    result.changes.extend(c)
                elif kind == "warning":
                    result.warnings.append(f"{upd.warning.code}: {upd.warning.message}")
                elif kind == "summary":
                    result.summary = upd.summary
                if on_update is not None:
                    on_update(upd)
        finally:
            done.set()
        return result


def _chain(first: NDArray[Any], rest: Iterator[NDArray[Any]]) -> Iterator[NDArray[Any]]:
    yield first
    yield from rest
