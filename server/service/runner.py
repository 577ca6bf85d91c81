"""The stream runner: frames in, frame results out, detection overlapped with tracking.

One stream is scheduled in two stages:

* **detection** (:func:`~livespt.server.service.detection_pool.detect_and_crop`,
  independent per frame) starts in the shared detection pool (worker
  processes) as soon as a frame is received and decoded;
* **tracking** (:meth:`Session.track`: linking, windows, estimates, change
  detection, persistence) runs strictly in frame order, one frame at a time, in
  the server's thread pool.

At most :data:`PIPELINE_DEPTH` frames of a stream are in flight, so a fast
client meets back-pressure (the runner stops reading) instead of filling
memory. A session whose camera is to be estimated from the frames
(:attr:`Session.held_frames`) first holds that many frames (or those that
arrived within :data:`CAMERA_HOLD_S` of the first, at least 4), has
:meth:`Session.settle_camera` estimate it in the thread pool, and only then
sends them to detection; their results follow. A bad frame, or a protocol
error raised by the frame source, ends the stream only after the results of
every frame received before it have been yielded: the runner raises
:class:`StreamError` then. It knows sessions, pools
and executors, not gRPC; the servicer maps :class:`StreamError` to a status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

from livespt.server.service.detection_pool import DetectionPool
from livespt.server.service.session import FrameOutput, Session
from livespt.server.service.settings import MIN_CAMERA_ESTIMATE_FRAMES

log = logging.getLogger("livespt.server")

PIPELINE_DEPTH = 4
"""Frames of one stream in flight at once: one being tracked, the others being detected.

Two would keep one detection beside the tracking; with detection in worker
processes, more frames of the same stream are detected at once (one 50-particle
512x512 stream on 2 cores, detection in 2 processes: 100-105 frames/s at depth 4
against 85-86 at depth 2, measured side by side).
"""

CAMERA_HOLD_S = 2.0
"""Longest time, s from the first frame, the frames held for the camera estimate wait for more.

A slow or paused acquisition is estimated from the frames it sent by then (at least
:data:`~livespt.server.service.settings.MIN_CAMERA_ESTIMATE_FRAMES`), instead of
waiting for all of :attr:`Session.held_frames` before the first result.
"""

ErrorKind = Literal["invalid_argument", "failed_precondition", "internal",
                    "deadline_exceeded"]


class StreamError(Exception):
    """Why a stream ends early: ``kind`` says whose fault, the message names the field.

    Parameters
    ----------
    kind : {"invalid_argument", "failed_precondition", "internal", "deadline_exceeded"}
        A bad value from the client, a message out of protocol, a server fault, or a
        client that sent nothing for too long.
    message : str
        Readable, naming the field (``frame.data``) or the frame.
    """

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message


@dataclass(frozen=True)
class Frame:
    """One frame as received: its index and raw little-endian bytes."""

    index: int
    data: bytes


@dataclass(frozen=True)
class FrameDone:
    """One frame's results and its latency from arrival to result, ms."""

    output: FrameOutput
    latency_ms: float


async def run_stream(
    session: Session,
    frames: AsyncIterator[Frame],
    detection: DetectionPool,
    executor: Executor,
    depth: int = PIPELINE_DEPTH,
) -> AsyncIterator[FrameDone]:
    """Run a stream's frames through ``session``; yield each frame's results in order.

    Parameters
    ----------
    session : Session
        The stream's session (decoding, tracking, records).
    frames : async iterator of Frame
        The frame source; it may raise :class:`StreamError` for a message out of
        protocol, which ends the stream after the frames before it.
    detection : DetectionPool
        Where frames are detected (shared by all sessions).
    executor : Executor
        Where :meth:`Session.track` runs.
    depth : int
        Most frames in flight.

    Yields
    ------
    FrameDone
        One per frame, in frame order; latencies are also added to the session.

    Raises
    ------
    StreamError
        After the results of every earlier frame, for a bad frame, a protocol
        error or a failed detection.
    """
    loop = asyncio.get_running_loop()
    it = frames.__aiter__()
    read: asyncio.Future[Any] | None = asyncio.ensure_future(it.__anext__())
    pending: deque[tuple[int, float, asyncio.Future[Any]]] = deque()
    # Frames decoded but not yet sent to detection: (index, arrival, pixels). While the
    # session's camera waits for its estimate, the first frames are held here.
    held: deque[tuple[int, float, Any]] = deque()
    settling: asyncio.Future[None] | None = None
    hold_timer: asyncio.Future[None] | None = None  # fires CAMERA_HOLD_S after the first
    tracking: asyncio.Future[FrameOutput] | None = None
    error: StreamError | None = None
    try:
        while True:
            if session.camera_pending and settling is None and held and (
                    len(held) >= session.held_frames or read is None or (
                        hold_timer is not None and hold_timer.done()
                        and len(held) >= MIN_CAMERA_ESTIMATE_FRAMES)):
                # Enough frames held (or no more coming, or no more in time): estimate
                # the camera, off the loop.
                settling = loop.run_in_executor(executor, session.settle_camera,
                                                [p for _, _, p in held])
            while not session.camera_pending and held and len(pending) < depth:
                index, t_arrival, pixels = held.popleft()
                submitted = (detection.submit(pixels, session.detection_task)
                             if session.external_detect is None else  # e.g. TrackMate's
                             executor.submit(session.external_detect, pixels,
                                             session.detection_task))
                pending.append((index, t_arrival, asyncio.wrap_future(submitted)))
            # A session that links in blocks (Session.defers_results) must learn which
            # frame is the last: its newest frame waits until another arrives or the
            # stream ends.
            wait_for_next = (session.defers_results and len(pending) == 1 and not held
                             and read is not None)
            if tracking is None and pending and pending[0][2].done() and not wait_for_next:
                index, _, detected = pending[0]
                exc = detected.exception()
                if exc is not None:
                    # Frames are validated before detection, so this is a server
                    # fault (or a detector limit), not the client's.
                    log.error("session %s frame %d: detection failed: %s",
                              session.session_id, index, exc)
                    error = StreamError(
                        "invalid_argument" if isinstance(exc, ValueError) else "internal",
                        f"frame {index}: detection failed: {exc}")
                    break
                last = read is None and not held and len(pending) == 1
                tracking = loop.run_in_executor(executor, session.track, index,
                                                detected.result(), last)
            waits: set[asyncio.Future[Any]] = set()
            holding = session.camera_pending and settling is None
            if read is not None and (len(held) < session.held_frames if holding
                                     else not held and len(pending) < depth):
                waits.add(read)
            if settling is not None:
                waits.add(settling)
            if holding and hold_timer is not None and not hold_timer.done():
                waits.add(hold_timer)
            if tracking is not None:
                waits.add(tracking)
            elif pending and not (wait_for_next and pending[0][2].done()):
                waits.add(pending[0][2])  # the next frame's detection
            if not waits:
                break
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            if settling is not None and settling in done:
                exc = settling.exception()
                settling = None
                if exc is not None:
                    log.error("session %s: camera estimate failed: %s", session.session_id, exc)
                    error = StreamError("internal", f"camera estimate failed: {exc}")
                    break
            if tracking is not None and tracking in done:
                out = tracking.result()
                tracking = None
                _, t_arrival, _ = pending.popleft()
                latency_ms = (time.perf_counter() - t_arrival) * 1e3
                session.latency.add(latency_ms)
                yield FrameDone(out, latency_ms)
            if read is not None and read in done:
                try:
                    frame = read.result()
                except StopAsyncIteration:
                    read = None
                    continue
                except StreamError as exc:
                    read, error = None, exc
                    continue
                t_arrival = time.perf_counter()
                read = None
                try:
                    pixels = session.decode(frame.index, frame.data)
                except ValueError as exc:
                    error = StreamError("invalid_argument", str(exc))
                    continue
                held.append((frame.index, t_arrival, pixels))
                if session.camera_pending and hold_timer is None:
                    hold_timer = asyncio.ensure_future(asyncio.sleep(CAMERA_HOLD_S))
                read = asyncio.ensure_future(it.__anext__())
        if error is not None:
            try:
                raise error
            finally:
                error = None  # no cycle from this frame to the exception's traceback
    finally:
        held.clear()  # frames held for the camera estimate are not kept by a traceback
        if read is not None:
            read.cancel()
        if hold_timer is not None:
            hold_timer.cancel()
        if settling is not None and not settling.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(settling)
        if tracking is not None and not tracking.done():
            # A frame being tracked when the client vanished: let it finish (its
            # records reach the files) before the session is closed.
            with contextlib.suppress(BaseException):
                await asyncio.shield(tracking)
