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
memory. A bad frame, or a protocol error raised by the frame source, ends the
stream only after the results of every frame received before it have been
yielded: the runner raises :class:`StreamError` then. It knows sessions, pools
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

log = logging.getLogger("livespt.server")

PIPELINE_DEPTH = 4
"""Frames of one stream in flight at once: one being tracked, the others being detected.

Two would keep one detection beside the tracking; with detection in worker
processes, more frames of the same stream are detected at once (one 50-particle
512x512 stream on 2 cores, detection in 2 processes: 100-105 frames/s at depth 4
against 85-86 at depth 2, measured side by side).
"""

ErrorKind = Literal["invalid_argument", "failed_precondition", "internal"]


class StreamError(Exception):
    """Why a stream ends early: ``kind`` says whose fault, the message names the field.

    Parameters
    ----------
    kind : {"invalid_argument", "failed_precondition", "internal"}
        A bad value from the client, a message out of protocol, or a server fault.
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
    tracking: asyncio.Future[FrameOutput] | None = None
    error: StreamError | None = None
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
                    error = StreamError(
                        "invalid_argument" if isinstance(exc, ValueError) else "internal",
                        f"frame {index}: detection failed: {exc}")
                    break
                tracking = loop.run_in_executor(executor, session.track, index,
                                                detected.result())
            waits: set[asyncio.Future[Any]] = set()
            if read is not None and len(pending) < depth:
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
                detected = asyncio.wrap_future(detection.submit(pixels, session.detection_task))
                pending.append((frame.index, t_arrival, detected))
                read = asyncio.ensure_future(it.__anext__())
        if error is not None:
            raise error
    finally:
        if read is not None:
            read.cancel()
        if tracking is not None and not tracking.done():
            # A frame being tracked when the client vanished: let it finish (its
            # records reach the files) before the session is closed.
            with contextlib.suppress(BaseException):
                await asyncio.shield(tracking)
