"""The gRPC servicer: thin translation between wire messages and sessions.

CPU work (decoding is cheap; detection, linking and estimation are not) runs in
a thread pool so the asyncio event loop keeps serving other streams, health
checks and GetServerInfo. Every error a client can cause ends only its own call,
with INVALID_ARGUMENT / FAILED_PRECONDITION and a message naming the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from livespt.models.estimators import cve
from livespt.server import __version__
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.inference.resident import ModelRegistry, ResidentModel
from livespt.server.pipeline.changepoint import ChangeConfig, ChangeDetectorBank
from livespt.server.pipeline.records import ChangeEvent, TrackPoint, WindowEstimate
from livespt.server.pipeline.windows import (
    DueWindows,
    WindowConfig,
    estimate_windows,
    track_window_arrays,
    window_records,
)
from livespt.server.service.detection_pool import DetectionPool
from livespt.server.service.session import MIN_MODEL_WINDOW, FrameOutput, Session
from livespt.server.service.settings import Limits, settings_from_proto

log = logging.getLogger("livespt.server")

NOMINAL_PIXEL_UM = 0.1
NOMINAL_PSF_SIGMA_PX = 1.15
"""Units for a features model when AnalyzeTracks has no pixel size (tracks carry no images)."""

MAX_ERROR_CHARS = 500  # errors are shortened before they cross the wire


def _short(msg: str) -> str:
    return msg if len(msg) <= MAX_ERROR_CHARS else msg[: MAX_ERROR_CHARS - 3] + "..."


def _point(p: TrackPoint) -> pb.TrackPoint:
    return pb.TrackPoint(track_id=p.track_id, frame=p.frame, x_um=p.x_um, y_um=p.y_um,
                         precision_um=p.precision_um)


def _estimate(e: WindowEstimate) -> pb.WindowEstimate:
    return pb.WindowEstimate(track_id=e.track_id, frame_start=e.frame_start,
                             frame_end=e.frame_end, d_um2_s=e.d_um2_s,
                             d_low_um2_s=e.d_low_um2_s, d_high_um2_s=e.d_high_um2_s,
                             method=e.method)


def _change(c: ChangeEvent) -> pb.ChangeEvent:
    return pb.ChangeEvent(track_id=c.track_id, frame=c.frame,
                          detected_at_frame=c.detected_at_frame,
                          d_before_um2_s=c.d_before_um2_s, d_after_um2_s=c.d_after_um2_s,
                          score=c.score)


def frame_result(out: FrameOutput, latency_ms: float) -> pb.AnalysisUpdate:
    """Encode one frame's output as an update."""
    return pb.AnalysisUpdate(frame=pb.FrameResult(
        index=out.index,
        latency_ms=latency_ms,
        n_spots=out.n_spots,
        points=[_point(p) for p in out.points],
        estimates=[_estimate(e) for e in out.estimates],
        changes=[_change(c) for c in out.changes],
    ))


class LiveSptService(pb_grpc.LiveSptServicer):
    """Implements ``livespt.v1.LiveSpt``.

    Parameters
    ----------
    out_root : Path
        Each session writes to ``out_root/<session_id>/``.
    limits : Limits
        Server-side limits.
    executor : ThreadPoolExecutor
        Where the tracking stage and AnalyzeTracks run (off the event loop).
    device : str
        Compute device, reported by GetServerInfo and recorded in summaries.
    registry : ModelRegistry, optional
        Resident models (none: every estimate is a CVE).
    detection : DetectionPool, optional
        Where the detection stage runs, shared by all sessions (default: in
        ``executor``, no worker processes).
    """

    def __init__(
        self, out_root: Path, limits: Limits, executor: ThreadPoolExecutor, device: str = "cpu",
        registry: ModelRegistry | None = None, detection: DetectionPool | None = None,
    ) -> None:
        self.out_root = Path(out_root)
        self.limits = limits
        self.executor = executor
        self.detection = detection if detection is not None else DetectionPool(0, executor)
        self.device = device
        self.registry = registry
        self.sessions: dict[str, Session] = {}
        self.shutting_down = False

    PIPELINE_DEPTH = 4
    """Frames of one stream in flight at once: one being tracked, the others being detected.

    Two would keep one detection beside the tracking; with detection in worker
    processes, more frames of the same stream are detected at once (one 50-particle
    512x512 stream on 2 cores, detection in 2 processes: 100-105 frames/s at depth 4
    against 85-86 at depth 2, measured side by side).
    """

    # -------------------------------------------------------------- info
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerInfo:
        """Version, device, models, estimators, trackers and limits."""
        reg = self.registry
        models = reg.info() if reg is not None else []
        return pb.ServerInfo(
            version=__version__,
            device=self.device,
            models=[pb.ModelInfo(
                name=m["name"], kind="estimator", sha256=m["sha256"] or "", device=m["device"],
                variant=m["variant"], used_for=m["used_for"], parameters=m["parameters"] or 0,
                card_json=json.dumps({k: v for k, v in m.items() if k != "used_for"}))
                for m in models],
            estimators=["cve", *(f"vit:{m['name']}" for m in models)],
            trackers=["builtin"],
            limits=pb.Limits(
                max_message_bytes=self.limits.max_message_bytes,
                max_frame_pixels=self.limits.max_frame_pixels,
                max_sessions=self.limits.max_sessions,
                max_batch_windows=reg.batching.batch_limit(reg.device) if reg else 0,
                max_batch_delay_ms=reg.batching.max_delay_ms if reg else 0.0,
            ),
        )

    # ------------------------------------------------------------ stream
    async def StreamFrames(
        self,
        request_iterator: AsyncIterator[pb.StreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.AnalysisUpdate]:
        """Analyse one live acquisition (see the ``.proto`` for the protocol)."""
        if len(self.sessions) >= self.limits.max_sessions:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"server is at its limit of {self.limits.max_sessions} concurrent sessions",
            )
        session: Session | None = None
        status = "client disconnected"
        reason = ""

        async def abort(code: grpc.StatusCode, message: str) -> None:
            nonlocal reason
            reason = _short(message)
            await context.abort(code, reason)

        try:
            first = await _next_or_none(request_iterator)
            if first is None:
                await abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    "stream ended before its config message")
            assert first is not None
            if first.WhichOneof("payload") != "config":
                await abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "the first message must carry config (got "
                    f"{first.WhichOneof('payload') or 'an empty message'})",
                )
            try:
                settings = settings_from_proto(first.config, self.limits)
            except ValueError as exc:
                await abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            session_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
            session = Session(settings, self.out_root / session_id, session_id, self.device,
                              model=self.registry.window_model if self.registry else None)
            self.sessions[session_id] = session
            log.info("session %s started: %s", session_id, settings.to_json())
            yield pb.AnalysisUpdate(started=pb.SessionStarted(
                session_id=session_id,
                output_dir=str(session.out_dir.resolve()),
                effective_config_json=settings.to_json(),
            ))
            for w in session.warnings:
                yield pb.AnalysisUpdate(warning=pb.Warning(code="MODEL_NOT_USED", message=w))
            async for update in self._pipeline(session, request_iterator, abort):
                yield update
            # The request stream ended: a half-close, or a client that vanished (both
            # look the same here). The session counts as completed only once its
            # summary has been sent; a vanished client cancels this handler first.
            summary = session.summary("completed")
            yield pb.AnalysisUpdate(summary=pb.StreamSummary(
                frames=summary["frames"],
                tracks=summary["tracks"],
                track_points=summary["track_points"],
                estimates=summary["estimates"],
                changes=summary["changes"],
                latency_p50_ms=_finite(summary["latency_p50_ms"]),
                latency_p99_ms=_finite(summary["latency_p99_ms"]),
                output_dir=str(session.out_dir.resolve()),
            ))
            status = "completed"
        except grpc.aio.AbortError:
            status = f"aborted: {reason}"
            raise
        finally:
            if status == "client disconnected" and self.shutting_down:
                status = "server shutdown"  # cut by the server's grace period, not the client
            if session is not None:
                # Runs on cancellation too: the session's files are flushed and closed
                # and its memory freed, whatever happened to the client.
                # Closed before it leaves the registry: once a session is no longer
                # listed, its summary.json is final.
                session.close(status)
                self.sessions.pop(session.session_id, None)
                log.info("session %s ended: %s", session.session_id, status)

    async def _pipeline(
        self,
        session: Session,
        requests: AsyncIterator[pb.StreamRequest],
        abort: Any,
    ) -> AsyncIterator[pb.AnalysisUpdate]:
        """Frames in, frame results out, with detection overlapped with tracking.

        Two stages: detection (:func:`server.detection.detect_frame`, independent per
        frame) starts in the detection pool (worker processes) as soon as a frame is
        received and decoded;
        tracking (:meth:`Session.track`: linking, windows, change detection,
        persistence) runs strictly in frame order, one frame at a time. At most
        :attr:`PIPELINE_DEPTH` frames are in flight, so a fast client meets
        back-pressure instead of filling memory. A bad frame ends the stream only
        after the results of every frame received before it have been sent.
        """
        loop = asyncio.get_running_loop()
        it = requests.__aiter__()
        read: asyncio.Future[Any] | None = asyncio.ensure_future(it.__anext__())
        pending: deque[tuple[int, float, asyncio.Future[Any]]] = deque()
        tracking: asyncio.Future[FrameOutput] | None = None
        error: tuple[grpc.StatusCode, str] | None = None
        try:
            while True:
                if tracking is None and pending and pending[0][2].done():
                    index, _, detected = pending[0]
                    exc = detected.exception()
                    if exc is not None:
                        # Frames are validated before detection, so this is a server
                        # fault (or a detector limit), not the client's.
                        log.error("session %s frame %d: detection failed: %s",
                                  session.session_id, index, exc)
                        error = (grpc.StatusCode.INVALID_ARGUMENT if isinstance(exc, ValueError)
                                 else grpc.StatusCode.INTERNAL,
                                 f"frame {index}: detection failed: {exc}")
                        break
                    tracking = loop.run_in_executor(
                        self.executor, session.track, index, detected.result())
                waits: set[asyncio.Future[Any]] = set()
                if read is not None and len(pending) < self.PIPELINE_DEPTH:
                    waits.add(read)
                if tracking is not None:
                    waits.add(tracking)
                elif pending:
                    waits.add(pending[0][2])  # the next frame's detection
                if not waits:
                    break
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if tracking is not None and tracking in done:
                    out = tracking.result()
                    tracking = None
                    _, t_arrival, _ = pending.popleft()
                    latency_ms = (time.perf_counter() - t_arrival) * 1e3
                    session.latency.add(latency_ms)
                    yield frame_result(out, latency_ms)
                if read is not None and read in done:
                    try:
                        req = read.result()
                    except StopAsyncIteration:
                        read = None
                        continue
                    t_arrival = time.perf_counter()
                    read = None
                    kind = req.WhichOneof("payload")
                    if kind != "frame":
                        error = (grpc.StatusCode.FAILED_PRECONDITION,
                                 "config may be sent only once, as the first message"
                                 if kind == "config" else "empty message: expected a frame")
                        continue
                    try:
                        frame = session.decode(req.frame.index, req.frame.data)
                    except ValueError as exc:
                        error = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                        continue
                    detected = asyncio.wrap_future(
                        self.detection.submit(frame, session.detection_task))
                    pending.append((req.frame.index, t_arrival, detected))
                    read = asyncio.ensure_future(it.__anext__())
            if error is not None:
                await abort(*error)
        finally:
            if read is not None:
                read.cancel()
            if tracking is not None and not tracking.done():
                # A frame being tracked when the client vanished: let it finish (its
                # records reach the files) before the session is closed.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(tracking)

    # ------------------------------------------------------------ tracks
    async def AnalyzeTracks(
        self, request: pb.AnalyzeTracksRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnalyzeTracksResponse:
        """Per-track and per-window D and change points of tracks sent whole."""
        loop = asyncio.get_running_loop()
        try:
            model = self.registry.track_model if self.registry else None
            return await loop.run_in_executor(self.executor, analyze_tracks, request, model)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _short(str(exc)))
            raise  # unreachable: abort raises


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


async def _next_or_none(it: AsyncIterator[Any]) -> Any:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


def analyze_tracks(
    request: pb.AnalyzeTracksRequest, model: ResidentModel | None = None
) -> pb.AnalyzeTracksResponse:
    """Estimate D per track and per sliding window, and find changes of D.

    Whole tracks are estimated with the CVE (near the Cramer-Rao bound for long
    tracks). Windows use ``model`` (a resident ``features`` transformer: tracks
    carry positions, not images) when given and the window length is one it
    takes, else the CVE; each estimate names its method.

    Raises ValueError naming the field for malformed input; tracks too short to
    estimate (fewer than 3 positions) get a warning instead of an estimate.
    """
    dt = request.frame_interval_s
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"frame_interval_s must be > 0, got {dt!r}")
    te = request.exposure_s or dt
    if not (math.isfinite(te) and 0 < te <= dt):
        raise ValueError(f"exposure_s must be in (0, frame_interval_s = {dt}], got {te!r}")
    px = request.pixel_size_um or NOMINAL_PIXEL_UM
    if not (math.isfinite(px) and px > 0):
        raise ValueError(f"pixel_size_um must be > 0 (or 0: unknown), got {px!r}")
    if len(request.tracks) == 0:
        raise ValueError("tracks is empty: send at least one track")
    length = request.window.length or 10
    if length < 3:
        raise ValueError(f"window.length must be >= 3, got {request.window.length}")
    wconfig = WindowConfig(length=length, stride=request.window.stride or 1,
                           frame_interval_s=dt, exposure_s=te)
    bank = None
    if not request.change.disabled:
        bank = ChangeDetectorBank(ChangeConfig(
            frame_interval_s=dt, exposure_s=te,
            false_alarm_per_1000=request.change.false_alarm_per_1000 or 0.5,
        ))
    if model is not None and not (MIN_MODEL_WINDOW <= length <= model.max_frames):
        model = None
    resp = pb.AnalyzeTracksResponse()
    window_parts: list[DueWindows] = []
    seen: set[int] = set()
    for i, tr in enumerate(request.tracks):
        where = f"tracks[{i}] (track_id {tr.track_id})"
        if tr.track_id in seen:
            raise ValueError(f"{where}: track_id is not unique")
        seen.add(tr.track_id)
        n = len(tr.frames)
        if len(tr.x_um) != n or len(tr.y_um) != n:
            raise ValueError(f"{where}: frames, x_um and y_um must have the same length, "
                             f"got {n}, {len(tr.x_um)}, {len(tr.y_um)}")
        if len(tr.precision_um) not in (0, n):
            raise ValueError(f"{where}: precision_um must be empty or have {n} values, "
                             f"got {len(tr.precision_um)}")
        frames = np.asarray(tr.frames, dtype=np.int64)
        xy = np.column_stack([np.asarray(tr.x_um, float), np.asarray(tr.y_um, float)])
        if n and not np.all(np.isfinite(xy)):
            raise ValueError(f"{where}: x_um/y_um contain NaN or infinite values")
        if n > 1 and np.any(np.diff(frames) <= 0):
            raise ValueError(f"{where}: frames must strictly increase")
        prec = (np.asarray(tr.precision_um, float) if len(tr.precision_um)
                else np.full(n, np.nan))
        if n < 3:
            resp.warnings.append(pb.Warning(
                code="TRACK_TOO_SHORT",
                message=f"{where}: needs at least 3 positions to estimate D, got {n}"))
            continue
        est = cve(xy, dt, frames, exposure_s=te, track_id=tr.track_id)
        sigma_track = float(np.sqrt(max(est.sigma2_um2, 0.0)))
        resp.tracks.append(pb.TrackEstimate(
            track_id=tr.track_id, n_spots=n, d_um2_s=est.d_um2_s,
            d_low_um2_s=est.d_low_um2_s, d_high_um2_s=est.d_high_um2_s, method=est.method))
        window_parts.append(track_window_arrays(wconfig, tr.track_id, frames, xy, prec))
        if bank is not None:
            # Without a per-point precision, the track's own CVE estimate of the
            # localization noise stands in (0 would make noisy tracks alarm).
            sigma = np.where(np.isfinite(prec), prec, sigma_track)
            for k in range(n):
                ev = bank.update(tr.track_id, int(frames[k]), xy[k], float(sigma[k]))
                if ev is not None:
                    resp.changes.append(_change(ChangeEvent.from_detector(tr.track_id, ev)))
            bank.drop(tr.track_id)
    due = DueWindows.concat(window_parts, length, None)
    if model is None or len(due) == 0:
        estimates = estimate_windows(wconfig, due.track_ids, due.frames, due.values)
    else:
        # Unknown precision (NaN) is filled by prepare() with the window's median, or a
        # default when the whole window lacks it.
        pred = model.estimate_windows(due.frames, due.values, px, dt, te,
                                      NOMINAL_PSF_SIGMA_PX * px)
        estimates = window_records(due.track_ids, due.frames, pred.d_um2_s, pred.d_low_um2_s,
                                   pred.d_high_um2_s, model.method)
    resp.windows.extend(_estimate(e) for e in estimates)
    return resp
