"""The gRPC servicer: translation between wire messages and the service's objects, nothing else.

``StreamFrames`` checks the protocol (config first, then frames), builds the
settings from the wire (:mod:`~livespt.server.service.wire`), opens a
:class:`~livespt.server.service.session.Session`, and hands the frames to the
stream runner (:func:`~livespt.server.service.runner.run_stream`), encoding
each result. ``AnalyzeTracks`` decodes the request and calls
:func:`~livespt.server.pipeline.tracks.analyze_tracks` in the thread pool.
Every error a client can cause ends only its own call, with INVALID_ARGUMENT /
FAILED_PRECONDITION and a message naming the field, shortened before it crosses
the wire.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from livespt.server import __version__
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.inference.resident import ModelRegistry
from livespt.server.pipeline.tracks import analyze_tracks
from livespt.server.service import wire
from livespt.server.service.detection_pool import DetectionPool
from livespt.server.service.runner import Frame, StreamError, run_stream
from livespt.server.service.session import BlockTrackerFactory, Session
from livespt.server.service.settings import (
    Limits,
    exposure_assumed_message,
)

log = logging.getLogger("livespt.server")

MAX_ERROR_CHARS = 500  # errors are shortened before they cross the wire

STATUS = {"invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
          "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
          "internal": grpc.StatusCode.INTERNAL}
"""gRPC status of each kind of :class:`StreamError`."""


def _short(msg: str) -> str:
    return msg if len(msg) <= MAX_ERROR_CHARS else msg[: MAX_ERROR_CHARS - 3] + "..."


async def _frames(requests: AsyncIterator[pb.StreamRequest]) -> AsyncIterator[Frame]:
    """The frames of a stream after its config; a message out of protocol is a StreamError."""
    async for req in requests:
        kind = req.WhichOneof("payload")
        if kind != "frame":
            raise StreamError("failed_precondition",
                              "config may be sent only once, as the first message"
                              if kind == "config" else "empty message: expected a frame")
        yield Frame(req.frame.index, req.frame.data)


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
        block_trackers: Mapping[str, BlockTrackerFactory] | None = None,
    ) -> None:
        self.out_root = Path(out_root)
        self.limits = limits
        self.executor = executor
        self.detection = detection if detection is not None else DetectionPool(0, executor)
        self.device = device
        self.registry = registry
        self.sessions: dict[str, Session] = {}
        self.shutting_down = False
        # Trackers besides the built-in one (name -> what makes a session's block linker).
        self.block_trackers = dict(block_trackers or {})
        self.trackers = ("builtin", *self.block_trackers)

    # -------------------------------------------------------------- info
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerInfo:
        """Version, device, models, estimators, trackers and limits."""
        reg = self.registry
        return wire.server_info_to_proto(
            version=__version__, device=self.device,
            models=reg.info() if reg is not None else [],
            trackers=list(self.trackers), limits=self.limits,
            max_batch_windows=reg.batching.batch_limit(reg.device) if reg else 0,
            max_batch_delay_ms=reg.batching.max_delay_ms if reg else 0.0)

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
                settings = wire.settings_from_proto(first.config, self.limits, self.trackers)
            except ValueError as exc:
                await abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            session_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
            tracker = None
            if settings.tracker in self.block_trackers:
                try:  # the first TrackMate session starts the JVM (seconds), off the loop
                    tracker = await asyncio.get_running_loop().run_in_executor(
                        self.executor, self.block_trackers[settings.tracker], settings)
                except Exception as exc:
                    log.error("tracker %s failed to start: %s", settings.tracker, exc)
                    await abort(grpc.StatusCode.UNAVAILABLE,
                                f"config.tracker: {settings.tracker} failed to start: {exc}")
            try:
                session = Session(settings, self.out_root / session_id, session_id, self.device,
                                  model=self.registry.window_model if self.registry else None,
                                  tracker=tracker)
            except ValueError as exc:  # a combination of settings the pipeline refuses
                await abort(grpc.StatusCode.INVALID_ARGUMENT, f"config: {exc}")
            assert session is not None
            self.sessions[session_id] = session
            log.info("session %s started: %s", session_id, settings.to_json())
            yield pb.AnalysisUpdate(started=pb.SessionStarted(
                session_id=session_id,
                output_dir=str(session.out_dir.resolve()),
                effective_config_json=settings.to_json(),
                held_frames=settings.held_frames,
            ))
            for code, w in session.start_warnings:
                yield pb.AnalysisUpdate(warning=pb.Warning(code=code, message=w))
            try:
                async for done in run_stream(session, _frames(request_iterator),
                                             self.detection, self.executor):
                    out = done.output
                    for code, w in out.warnings:
                        yield pb.AnalysisUpdate(warning=pb.Warning(code=code, message=w))
                    yield wire.frame_result_to_proto(out.index, out.n_spots, out.points,
                                                     out.estimates, out.changes, done.latency_ms)
            except StreamError as exc:
                await abort(STATUS[exc.kind], exc.message)
            # The request stream ended: a half-close, or a client that vanished (both
            # look the same here). The session counts as completed only once its
            # summary has been sent; a vanished client cancels this handler first.
            yield wire.summary_to_proto(session.summary("completed"),
                                        str(session.out_dir.resolve()))
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

    # ------------------------------------------------------------ tracks
    async def AnalyzeTracks(
        self, request: pb.AnalyzeTracksRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnalyzeTracksResponse:
        """Per-track and per-window D and change points of tracks sent whole."""
        loop = asyncio.get_running_loop()
        model = self.registry.track_model if self.registry else None

        def run() -> pb.AnalyzeTracksResponse:
            tracks, acquisition, window, change = wire.track_request_from_proto(request)
            response = wire.analysis_to_proto(
                analyze_tracks(tracks, acquisition, window, change, model))
            if request.exposure_s == 0:  # the frame interval was assumed: say so
                response.warnings.append(pb.Warning(code="EXPOSURE", message=(
                    exposure_assumed_message(request.frame_interval_s))))
            return response

        try:
            return await loop.run_in_executor(self.executor, run)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _short(str(exc)))
            raise  # unreachable: abort raises


async def _next_or_none(it: AsyncIterator[Any]) -> Any:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None
