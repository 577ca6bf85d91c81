"""Python client of the LiveSPT gRPC service.

Example
-------
>>> from livespt.server.client import LiveSptClient, StreamSettings, WindowConfig
>>> with LiveSptClient("127.0.0.1:50051") as client:          # doctest: +SKIP
...     result = client.stream(frames, StreamSettings(pixel_size_um=0.1,
...                                                   frame_interval_s=0.05,
...                                                   window=WindowConfig(length=10)))
...     print(result.estimates[:3], result.changes)

``frames`` is any iterable of 2D numpy arrays (uint8, uint16 or float32).
Updates arrive while frames are still being sent; pass ``on_update`` to see them
live. Other languages use ``proto/livespt/v1/livespt.proto`` directly.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.pipeline.localize import (
    Localization,
    LocalizeSettings,
    join_localizations,
    output_bytes,
)
from livespt.server.pipeline.records import ChangeEvent, TrackPoint, WindowEstimate
from livespt.server.pipeline.tracks import Track, TrackAnalysis
from livespt.server.pipeline.windows import WindowConfig
from livespt.server.service import wire
from livespt.server.service.security import client_channel
from livespt.server.service.settings import (
    PIXEL_TYPES,
    ChangeSettings,
    DetectorSettings,
    Limits,
    LinkerSettings,
    StreamSettings,
    window_points,
)

__all__ = ["ChangeSettings", "DetectorSettings", "LinkerSettings", "LiveSptClient",
           "LocalizeSettings", "StreamResult", "StreamSettings", "WindowConfig"]


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


class LiveSptClient:
    """A connection to a LiveSPT server.

    Parameters
    ----------
    target : str
        ``host:port`` of the server.
    limits : Limits, optional
        Client-side message size limits (default: the server defaults).
    tls_ca : Path, optional
        PEM CA bundle that signed the server's certificate: connect with TLS.
    token : str, optional
        Bearer token sent with every call (a server started with ``--token-file``).
    tls_cert, tls_key : Path, optional
        This client's certificate and key, for a server asking for one (mutual TLS).
    """

    def __init__(self, target: str, limits: Limits | None = None, tls_ca: Path | None = None,
                 token: str | None = None, tls_cert: Path | None = None,
                 tls_key: Path | None = None) -> None:
        lim = limits or Limits()
        self.limits = lim
        self.target = target
        self.channel = client_channel(target, [
            ("grpc.max_send_message_length", lim.max_message_bytes),
            ("grpc.max_receive_message_length", lim.max_message_bytes),
            # A server (or network) that vanished is found in about 80 s, not at the
            # next write; the server accepts pings as often as every 10 s.
            ("grpc.keepalive_time_ms", 60_000), ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.ping_timeout_ms", 20_000),  # what grpc core 1.85 waits, in fact
        ], tls_ca=tls_ca, token=token, tls_cert=tls_cert, tls_key=tls_key)
        self.stub = pb_grpc.LiveSptStub(self.channel)

    def __enter__(self) -> LiveSptClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self.channel.close()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Block until the server accepts connections.

        Raises
        ------
        ConnectionError
            When no server answers at the target within ``timeout_s`` seconds.
        """
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise ConnectionError(
                f"no LiveSPT server answered at {self.target} within {timeout_s:g} s (start one "
                "with `livespt serve` or use --embedded; check the address; a TLS server needs "
                "--tls-ca; wait longer with --connect-timeout S)") from None

    def info(self, timeout_s: float = 10.0) -> pb.ServerInfo:
        """GetServerInfo."""
        return self.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=timeout_s)

    def analyze_tracks(
        self, tracks: list[Track], frame_interval_s: float, *,
        exposure_s: float | None = None, pixel_size_um: float | None = None,
        window: WindowConfig | None = None, change: ChangeSettings | None = None,
        timeout_s: float = 600.0,
    ) -> TrackAnalysis:
        """AnalyzeTracks: D per track and window, and changes of D, of whole tracks.

        Tracks are analysed independently, so a set too large for one message is
        sent in several requests (each under the message limit and the server's
        points per call) and the results are joined.

        Parameters
        ----------
        tracks : list of Track
            Tracks with unique ids, positions in um.
        frame_interval_s : float
            Time between frames, s.
        exposure_s : float, optional
            Exposure, s; None: not given (the server assumes the frame interval and
            says so in an ``EXPOSURE`` warning).
        pixel_size_um : float, optional
            Pixel size, um (sets the units a transformer works in); None: unknown.
        window : WindowConfig, optional
            Sliding windows; default ``WindowConfig()``.
        change : ChangeSettings, optional
            Change detection; default ``ChangeSettings()``.
        timeout_s : float
            Deadline of each request, s.

        Returns
        -------
        TrackAnalysis
            A gRPC error (e.g. INVALID_ARGUMENT naming a track) raises ``grpc.RpcError``.
        """
        window = window or WindowConfig()
        change = change or ChangeSettings()
        budget = self.limits.max_message_bytes
        # The server's limit of points per call, when it reports one (else ours).
        info_points = self.stub.GetServerInfo(pb.GetServerInfoRequest(),
                                              timeout=timeout_s).limits.max_track_points
        points_budget = info_points or self.limits.max_track_points
        windows_budget = 20 * points_budget  # Limits.max_window_points
        out = TrackAnalysis()
        batch: list[Track] = []
        size = 0
        points = 0
        windows = 0

        def send() -> None:
            req = wire.track_request_to_proto(batch, frame_interval_s, exposure_s,
                                              pixel_size_um, window, change)
            part = wire.analysis_from_proto(self.stub.AnalyzeTracks(req, timeout=timeout_s))
            out.tracks += part.tracks
            out.windows += part.windows
            out.changes += part.changes
            out.warnings += [w for w in part.warnings if w not in out.warnings]

        for t in tracks:
            # Bytes of the larger message, the response (~one window estimate per
            # position, ~70 bytes with its method), generously.
            n = 100 * len(t) + 64
            w = window_points(len(t), window.length, window.stride)
            if batch and (size + n > budget or points + len(t) > points_budget
                          or windows + w > windows_budget):
                send()
                batch, size, points, windows = [], 0, 0, 0
            batch.append(t)
            size += n
            points += len(t)
            windows += w
        if batch or not tracks:
            send()
        return out

    def localize(self, frames: Any, settings: LocalizeSettings, *, first_frame: int = 0,
                 frames_per_call: int = 16, timeout_s: float = 600.0,
                 on_part: Callable[[int, int], None] | None = None) -> Localization:
        """Localize: maps and emitters with uncertainty, from the server's localizer.

        Frames go in calls of at most ``frames_per_call`` frames, fewer where the maps of
        the answer (``2 * 4 * upsample^2`` bytes per pixel) would pass the message limit;
        frame ``k`` is numbered ``first_frame + k`` in every call, so the samples do not
        depend on how the movie was cut.

        Parameters
        ----------
        frames : array_like, shape (T, H, W) or (H, W)
            uint8, uint16 or float32 frames (others are sent as float32), ADU.
        settings : LocalizeSettings
            Samples, sampler, threshold, pixel size and camera.
        first_frame : int
            Number of the first frame in its movie.
        frames_per_call : int
            Most frames per call.
        timeout_s : float
            Deadline of each call, s.
        on_part : callable, optional
            ``on_part(done, total)`` after each call (a progress bar).

        Returns
        -------
        Localization
            A gRPC error (e.g. INVALID_ARGUMENT naming a field) raises ``grpc.RpcError``.
        """
        arr = np.asarray(frames)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"frames must be (frames, height, width), got shape {arr.shape}")
        info = self.info(timeout_s)
        upsample = next((json.loads(m.card_json).get("upsample", 4) for m in info.models
                         if m.kind == "localizer"), 4)
        budget = min(self.limits.max_message_bytes, info.limits.max_message_bytes or
                     self.limits.max_message_bytes) - (1 << 20)  # room for the emitters
        per_frame = output_bytes(1, arr.shape[1], arr.shape[2], upsample)
        step = max(1, min(int(frames_per_call), budget // per_frame))
        parts: list[Localization] = []
        for start in range(0, len(arr), step):
            req = wire.localize_request_to_proto(arr[start:start + step], settings,
                                                 first_frame + start)
            parts.append(wire.localization_from_proto(self.stub.Localize(req, timeout=timeout_s)))
            if on_part is not None:
                on_part(min(start + step, len(arr)), len(arr))
        return join_localizations(parts)

    def stream(
        self,
        frames: Iterable[NDArray[Any]],
        settings: StreamSettings,
        on_update: Callable[[pb.AnalysisUpdate], None] | None = None,
        max_in_flight: int = 8,
        first_index: int = 0,
    ) -> StreamResult:
        """Stream frames to the server and collect every update.

        Parameters
        ----------
        frames : iterable of ndarray, shape (H, W)
            The acquisition, in order; dtype uint8, uint16 or float32, all one shape.
        settings : StreamSettings
            Calibration and analysis settings; ``pixel_type``, ``height`` and
            ``width`` are taken from the first frame.
        on_update : callable, optional
            Called with each AnalysisUpdate as it arrives (from this thread).
        max_in_flight : int
            Frames sent but not yet acknowledged before sending pauses, which bounds
            client memory and makes latencies mean "frame to result", not queueing;
            the frames the server holds at the start to estimate the camera
            (``SessionStarted.held_frames``) are allowed on top.
        first_index : int
            ``Frame.index`` of the first frame (then +1 per frame): a stream that
            continues an acquisition after a reconnect keeps its frame numbers.

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
            yield pb.StreamRequest(config=wire.settings_to_proto(
                _for_frames(settings, arr)))
            index = first_index
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
                    index=index, timestamp_s=index * settings.frame_interval_s,
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
                    # The server holds this many frames before their results (camera
                    # estimation): let them be sent without waiting for results.
                    for _ in range(upd.started.held_frames):
                        credits.put(None)
                elif kind == "frame":
                    fr = upd.frame
                    t = sent_at.pop(fr.index, None)
                    if t is not None:
                        result.client_latency_ms.append((time.perf_counter() - t) * 1e3)
                    credits.put(None)
                    result.frames_acked += 1
                    result.server_latency_ms.append(fr.latency_ms)
                    p, e, c = wire.records_from_proto(fr)
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


def _for_frames(settings: StreamSettings, first: NDArray[Any]) -> StreamSettings:
    """The settings with the pixel type and frame size of the first frame."""
    name = np.dtype(first.dtype).name
    if name not in PIXEL_TYPES:
        raise ValueError(f"frames: dtype {name} is not supported "
                         f"(use one of {', '.join(PIXEL_TYPES)})")
    return replace(settings, pixel_type=name, height=int(first.shape[0]),
                   width=int(first.shape[1]))
