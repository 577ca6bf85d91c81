"""The gRPC servicer: translation between wire messages and the service's objects, nothing else.

``StreamFrames`` checks the protocol (config first, then frames), builds the
settings from the wire (:mod:`~livespt.server.service.wire`), opens a
:class:`~livespt.server.service.session.Session`, and hands the frames to the
stream runner (:func:`~livespt.server.service.runner.run_stream`), encoding
each result. ``AnalyzeTracks`` decodes the request and hands it to the AnalyzeTracks
workers. ``Localize`` decodes frames and settings and calls
:func:`~livespt.server.pipeline.localize.localize_frames` with the resident localizer.
Every error a client can cause ends only its own call, with INVALID_ARGUMENT /
FAILED_PRECONDITION and a message naming the field, shortened before it crosses
the wire.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import grpc

from livespt.server import __version__
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc
from livespt.server.inference.localizer import CallerGone, ResidentLocalizer
from livespt.server.inference.resident import ModelRegistry
from livespt.server.pipeline.localize import localize_frames
from livespt.server.service import wire
from livespt.server.service.detection_pool import DetectionPool
from livespt.server.service.runner import Frame, StreamError, run_stream
from livespt.server.service.session import BlockTrackerFactory, Session
from livespt.server.service.settings import (
    Limits,
)
from livespt.server.service.tracks_pool import TracksPool

log = logging.getLogger("livespt.server")

MAX_ERROR_CHARS = 500  # errors are shortened before they cross the wire

STATUS = {"invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
          "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
          "internal": grpc.StatusCode.INTERNAL,
          "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED}
"""gRPC status of each kind of :class:`StreamError`."""


def _short(msg: str) -> str:
    return msg if len(msg) <= MAX_ERROR_CHARS else msg[: MAX_ERROR_CHARS - 3] + "..."


class Malformed:
    """What a request that is not valid protobuf decodes to (the handler refuses it)."""

    def __init__(self, type_name: str) -> None:
        self.message = (f"the message is not a valid {type_name} (protobuf decoding failed): "
                        "send messages built from proto/livespt/v1/livespt.proto")


def _decoder(message_type: Any) -> Any:
    """A request deserializer that returns :class:`Malformed` instead of raising.

    gRPC answers a deserializer's exception with UNKNOWN; the handler answers
    :class:`Malformed` with INVALID_ARGUMENT instead.
    """
    name = message_type.DESCRIPTOR.full_name

    def decode(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except Exception:  # DecodeError and its relatives: any undecodable bytes
            return Malformed(name)
    return decode


def add_to_server(service: LiveSptService, server: grpc.aio.Server) -> None:
    """Register the service on a server, with request decoders that never raise.

    As the generated ``add_LiveSptServicer_to_server``, but undecodable requests reach
    the handlers as :class:`Malformed`, which refuse them with INVALID_ARGUMENT.
    """
    handlers = {
        "StreamFrames": grpc.stream_stream_rpc_method_handler(
            service.StreamFrames, request_deserializer=_decoder(pb.StreamRequest),
            response_serializer=pb.AnalysisUpdate.SerializeToString),
        "AnalyzeTracks": grpc.unary_unary_rpc_method_handler(
            service.AnalyzeTracks, request_deserializer=_decoder(pb.AnalyzeTracksRequest),
            response_serializer=pb.AnalyzeTracksResponse.SerializeToString),
        "GetServerInfo": grpc.unary_unary_rpc_method_handler(
            service.GetServerInfo, request_deserializer=_decoder(pb.GetServerInfoRequest),
            response_serializer=pb.ServerInfo.SerializeToString),
        "Localize": grpc.unary_unary_rpc_method_handler(
            service.Localize, request_deserializer=_decoder(pb.LocalizeRequest),
            response_serializer=pb.LocalizeResponse.SerializeToString),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("livespt.v1.LiveSpt", handlers),))


async def _paced(requests: AsyncIterator[Any], idle_s: float) -> AsyncIterator[Any]:
    """The requests, each awaited at most ``idle_s`` seconds (then a StreamError).

    The read stays in the handler's own task (``asyncio.timeout``, Python >= 3.11):
    grpc.aio's request iterator is not read from a second task.
    """
    it = requests.__aiter__()
    while True:
        req: Any = None
        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(idle_s):
                    req = await it.__anext__()
            else:  # pragma: no cover (Python 3.10)
                req = await asyncio.wait_for(it.__anext__(), idle_s)
        except StopAsyncIteration:
            return
        except (TimeoutError, asyncio.TimeoutError):  # the same class from Python 3.11
            pass  # raised below, outside this block: no chained exception keeps the task
        if req is None:
            message = (f"no message for {idle_s:g} s (the server's --stream-idle-timeout): "
                       "the stream is ended; send frames, or close the stream when the "
                       "acquisition is over")
            raise StreamError("deadline_exceeded", message)
        if isinstance(req, Malformed):
            raise StreamError("invalid_argument", req.message)
        yield req


async def _frames(requests: AsyncIterator[pb.StreamRequest]) -> AsyncIterator[Frame]:
    """The frames of a stream after its config; a message out of protocol is a StreamError."""
    async for req in requests:
        kind = req.WhichOneof("payload")
        if kind != "frame":
            raise StreamError("failed_precondition",
                              "config may be sent only once, as the first message"
                              if kind == "config" else "empty message: expected a frame")
        yield Frame(req.frame.index, req.frame.data)


OUT_OF_RESOURCES = {errno.EMFILE: "open files", errno.ENFILE: "open files",
                    errno.ENOSPC: "disk space", errno.EDQUOT: "disk quota"}
"""OSErrors that mean the server ran out of something: RESOURCE_EXHAUSTED on the wire."""

class _Ended(Exception):
    """Ends a call with a status (``code``, ``message``), raised inside a handler.

    The status is sent with ``set_code``/``set_details`` and a normal return, never
    ``context.abort``: gRPC keeps the AbortError on the call for as long as the client's
    connection lives, and with it the traceback's frames (the session, the frames held
    for the camera estimate, a whole AnalyzeTracks request).
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


INTERNAL_MESSAGE = "internal error in the server ({where}); its log has the details{out}"
"""INTERNAL's message: no exception text or server path beyond the session's folder."""


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
    block_trackers : mapping, optional
        Trackers besides the built-in one, by name.
    tracks : TracksPool, optional
        Where AnalyzeTracks runs (default: one thread of its own, ``TracksPool(0)``).
    localizer : ResidentLocalizer, optional
        The localizer ``Localize`` uses (none: ``Localize`` answers FAILED_PRECONDITION).
    """

    def __init__(
        self, out_root: Path, limits: Limits, executor: ThreadPoolExecutor, device: str = "cpu",
        registry: ModelRegistry | None = None, detection: DetectionPool | None = None,
        block_trackers: Mapping[str, BlockTrackerFactory] | None = None,
        tracks: TracksPool | None = None, localizer: ResidentLocalizer | None = None,
    ) -> None:
        self.out_root = Path(out_root)
        self.localizer = localizer
        # Localize calls wait here for their batch (the work runs in the batcher's thread).
        self.localize_executor = ThreadPoolExecutor(max_workers=8,
                                                    thread_name_prefix="localize")
        self.limits = limits
        self.executor = executor
        self.tracks = tracks if tracks is not None else TracksPool(
            0, limits, thread_model=registry.track_model if registry else None)
        self.detection = detection if detection is not None else DetectionPool(0, executor)
        self.device = device
        self.registry = registry
        self.sessions: dict[str, Session] = {}
        self.open_streams = 0  # StreamFrames calls, counted from their first message
        # Called (on the event loop) after a session is closed: e.g. the retention of
        # ended sessions' folders, which the server assembly sets.
        self.on_session_end: Callable[[], object] | None = None
        self.shutting_down = False
        # Trackers besides the built-in one (name -> what makes a session's block linker).
        self.block_trackers = dict(block_trackers or {})
        self.trackers = ("builtin", *self.block_trackers)

    # -------------------------------------------------------------- info
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerInfo:
        """Version, device, models, estimators, trackers, limits and active sessions."""
        reg = self.registry
        return wire.server_info_to_proto(
            version=__version__, device=self.device,
            models=reg.info() if reg is not None else [],
            trackers=list(self.trackers), limits=self.limits,
            max_batch_windows=reg.batching.batch_limit(reg.device) if reg else 0,
            max_batch_delay_ms=reg.batching.max_delay_ms if reg else 0.0,
            active_sessions=self.open_streams,
            localizer=self.localizer.info() if self.localizer is not None else None)

    # ------------------------------------------------------------ stream
    async def StreamFrames(
        self,
        request_iterator: AsyncIterator[pb.StreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.AnalysisUpdate]:
        """Analyse one live acquisition (see the ``.proto`` for the protocol)."""
        # A slot is taken at once, before any await: counted and checked atomically on the
        # event loop, whether or not the stream ever sends its config.
        if self.open_streams >= self.limits.max_sessions:
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            context.set_details(
                f"server is at its limit of {self.limits.max_sessions} concurrent sessions "
                "(livespt serve --max-sessions); try again when a stream ends")
            return
        self.open_streams += 1
        inner = self._stream(request_iterator, context)
        try:
            async for update in inner:
                yield update
        except _Ended as ended:
            context.set_code(ended.code)
            context.set_details(ended.message)
        finally:
            # Closed here, not left to the garbage collector: when gRPC closes this
            # generator at a yield, the session must be closed now, while the call
            # exists (a late finalizer touching a finished call can crash grpcio).
            await inner.aclose()
            self.open_streams -= 1

    async def _stream(
        self,
        request_iterator: AsyncIterator[pb.StreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncGenerator[pb.AnalysisUpdate, None]:
        session: Session | None = None
        status = "client disconnected"
        reason = ""
        requests = _paced(request_iterator, self.limits.stream_idle_s)
        # Read from the call once, at the start: nothing touches the call in `finally`.
        peer = context.peer()
        deadline_s = context.time_remaining()
        t_start = time.monotonic()

        def abort(code: grpc.StatusCode, message: str) -> NoReturn:
            nonlocal reason
            reason = _short(message)
            raise _Ended(code, reason)

        try:
            try:
                first = await _next_or_none(requests)
            except StreamError as exc:
                abort(STATUS[exc.kind], exc.message)
            if first is None:
                abort(grpc.StatusCode.FAILED_PRECONDITION,
                            "stream ended before its config message")
            assert first is not None
            if first.WhichOneof("payload") != "config":
                abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "the first message must carry config (got "
                    f"{first.WhichOneof('payload') or 'an empty message'})",
                )
            try:
                settings = wire.settings_from_proto(first.config, self.limits, self.trackers)
            except ValueError as exc:
                abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            session_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]
            tracker = None
            if settings.tracker in self.block_trackers:
                try:  # the first TrackMate session starts the JVM (seconds), off the loop
                    tracker = await asyncio.get_running_loop().run_in_executor(
                        self.executor, self.block_trackers[settings.tracker], settings)
                except Exception as exc:
                    log.error("tracker %s failed to start: %s", settings.tracker, exc)
                    abort(grpc.StatusCode.UNAVAILABLE,
                                f"config.tracker: {settings.tracker} failed to start: {exc}")
            try:
                session = Session(settings, self.out_root / session_id, session_id, self.device,
                                  model=self.registry.window_model if self.registry else None,
                                  tracker=tracker)
            except ValueError as exc:  # a combination of settings the pipeline refuses
                abort(grpc.StatusCode.INVALID_ARGUMENT, f"config: {exc}")
            assert session is not None
            self.sessions[session_id] = session
            log.info("session %s started: peer %s, %d x %d %s, tracker %s, name %r",
                     session_id, peer, settings.height, settings.width,
                     settings.pixel_type, settings.tracker, settings.name[:80])
            yield pb.AnalysisUpdate(started=pb.SessionStarted(
                session_id=session_id,
                output_dir=str(session.out_dir.resolve()),
                effective_config_json=settings.to_json(),
                held_frames=settings.held_frames,
            ))
            for code, w in session.start_warnings:
                yield pb.AnalysisUpdate(warning=pb.Warning(code=code, message=w))
            try:
                async for done in run_stream(session, _frames(requests),
                                             self.detection, self.executor):
                    out = done.output
                    for code, w in out.warnings:
                        yield pb.AnalysisUpdate(warning=pb.Warning(code=code, message=w))
                    yield wire.frame_result_to_proto(out.index, out.n_spots, out.points,
                                                     out.estimates, out.changes, done.latency_ms)
            except StreamError as exc:
                abort(STATUS[exc.kind], exc.message)
            # The request stream ended: a half-close, or a client that vanished (both
            # look the same here). The session counts as completed only once its
            # summary has been sent; a vanished client cancels this handler first.
            yield wire.summary_to_proto(session.summary("completed"),
                                        str(session.out_dir.resolve()))
            status = "completed"
        except _Ended:
            status = f"aborted: {reason}"
            raise
        except OSError as exc:
            if exc.errno not in OUT_OF_RESOURCES:
                raise
            # Out of open files or disk: the server's state, not a bug; no path on the wire.
            where = f"session {session.session_id}" if session is not None else "stream start"
            log.error("%s: %s", where, exc)
            status = f"server error: {exc.strerror}"
            abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"the server is out of {OUT_OF_RESOURCES[exc.errno]} ({where}); "
                        "try again later or ask its operator")
        except Exception as exc:  # a fault of the server: logged whole, named on the wire
            where = f"session {session.session_id}" if session is not None else "stream start"
            log.exception("%s: unexpected error", where)
            status = f"server error: {type(exc).__name__}: {exc}"
            kept = (f"; the results sent so far are kept in {session.out_dir.resolve()}"
                    if session is not None else "")
            abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE.format(where=where, out=kept))
        finally:
            if status == "client disconnected" and self.shutting_down:
                status = "server shutdown"  # cut by the server's grace period, not the client
            if (status == "client disconnected" and deadline_s is not None
                    and time.monotonic() - t_start >= deadline_s):
                status = "deadline exceeded"  # the client's own deadline ran out
            if session is not None:
                # Runs on cancellation too: the session's files are flushed and closed
                # and its memory freed, whatever happened to the client.
                # Closed before it leaves the registry: once a session is no longer
                # listed, its summary.json is final.
                try:
                    session.close(status)
                except OSError as exc:  # e.g. out of open files: the summary is not final
                    log.error("session %s: closing its records failed: %s",
                              session.session_id, exc)
                self.sessions.pop(session.session_id, None)
                log.info("session %s ended: %s; %d frames, %d tracks, peer %s",
                         session.session_id, status, session.n_frames,
                         session.n_tracks, peer)
                if self.on_session_end is not None:
                    self.on_session_end()

    # ------------------------------------------------------------ tracks
    async def AnalyzeTracks(
        self, request: pb.AnalyzeTracksRequest, context: grpc.aio.ServicerContext
    ) -> pb.AnalyzeTracksResponse:
        """Per-track and per-window D and change points of tracks sent whole.

        Runs in the AnalyzeTracks workers (:class:`TracksPool`): processes at a lower
        CPU priority than the live streams, killed when their client gives up.
        """
        if isinstance(request, Malformed):
            return _end(context, grpc.StatusCode.INVALID_ARGUMENT, request.message)
        kind, value = await self.tracks.run(request.SerializeToString())
        if kind == "ok":
            return pb.AnalyzeTracksResponse.FromString(value)
        if kind == "stopped":
            raise asyncio.CancelledError  # the client is gone: nothing to answer
        if kind == "internal":
            log.error("AnalyzeTracks: unexpected error: %s", value)
            return _end(context, grpc.StatusCode.INTERNAL,
                        INTERNAL_MESSAGE.format(where="AnalyzeTracks", out=""))
        code = (grpc.StatusCode.RESOURCE_EXHAUSTED if kind == "resource"
                else grpc.StatusCode.INVALID_ARGUMENT)
        return _end(context, code, _short(value))


    # ---------------------------------------------------------- localize
    async def Localize(
        self, request: pb.LocalizeRequest, context: grpc.aio.ServicerContext
    ) -> pb.LocalizeResponse:
        """Maps and emitters with uncertainty of the frames sent (the resident localizer)."""
        def end(code: grpc.StatusCode, message: str) -> pb.LocalizeResponse:
            return _end(context, code, _short(message), pb.LocalizeResponse)

        if isinstance(request, Malformed):
            return end(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        loc = self.localizer
        if loc is None:
            return end(grpc.StatusCode.FAILED_PRECONDITION,
                       "this server holds no localizer (start it with livespt serve "
                       "--localizer WEIGHTS, or install the shipped one)")
        try:
            frames, settings, first = wire.localize_request_from_proto(
                request, self.limits, loc.upsample)
        except OverflowError as exc:
            return end(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ValueError as exc:
            return end(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        gone = threading.Event()  # the client left: its frames not yet drawn are dropped

        def draw(x: Any, s: Any, f: int) -> Any:
            return loc.draw(x, s, f, gone)

        try:
            result = await asyncio.get_running_loop().run_in_executor(
                self.localize_executor, lambda: localize_frames(
                    draw, frames, settings, loc.upsample, loc.localizer.sigma_y_px,
                    first, loc.trained_on))
        except asyncio.CancelledError:
            gone.set()
            raise
        except CallerGone:
            raise asyncio.CancelledError from None
        except ValueError as exc:
            return end(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception:
            log.exception("Localize: unexpected error")
            return end(grpc.StatusCode.INTERNAL,
                       INTERNAL_MESSAGE.format(where="Localize", out=""))
        return wire.localization_to_proto(result, loc.name)


def _end(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str,
         response: Callable[[], Any] = pb.AnalyzeTracksResponse) -> Any:
    """Set a unary call's status (see :class:`_Ended`); its empty response is not sent."""
    context.set_code(code)
    context.set_details(message)
    return response()


async def _next_or_none(it: AsyncIterator[Any]) -> Any:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None
