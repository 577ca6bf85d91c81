"""The detection stage of a stream, in worker processes.

Detection (:func:`server.pipeline.detect.detect`, plus the image patches a
resident model reads) is the most expensive step of a frame and is independent
from frame to frame. Most of it is many small NumPy operations that hold the
GIL, so detection threads and the tracking stage would take turns on one core
however many the machine has. :class:`DetectionPool` runs it in worker
processes instead: every session's frames share the pool, so on an N-core
machine N frames are detected at once while the server process links, estimates
and talks gRPC (see ``docs/architecture.md`` and ``docs/pipeline.md``).

Workers are forked from a ``forkserver`` that has imported only this module
(NumPy and SciPy, not torch nor gRPC), so a worker starts in milliseconds and
never inherits gRPC's threads. A worker that dies (killed, out of memory) is
replaced and the frames it held are detected again in the new pool: sessions
keep going. ``workers=0`` detects in the server's thread pool instead (no extra
processes).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from server.pipeline.detect import DetectorConfig, Spots, detect

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Detected:
    """One frame's detections and, when a model reads images, a patch around each."""

    spots: Spots
    patches: NDArray[np.float32] | None = None  # (K, P, P), centred on each spot's pixel


@dataclass(frozen=True)
class DetectionTask:
    """What a session asks of the detection stage (picklable: sent to the workers).

    Attributes
    ----------
    config : DetectorConfig
        Detector settings of the session.
    patch_px : int or None
        Side of the patch cropped around each spot for an image model, pixels;
        None: no patches.
    """

    config: DetectorConfig
    patch_px: int | None = None


def crop_patches(frame: NDArray[Any], x_px: NDArray[np.float64], y_px: NDArray[np.float64],
                 size: int) -> NDArray[np.float32]:
    """Patches of ``size`` x ``size`` pixels centred on the pixel containing each position.

    Parameters
    ----------
    frame : ndarray, shape (H, W)
        The frame (bright spots; invert dark ones first).
    x_px, y_px : ndarray, shape (K,)
        Positions in pixels (pixel ``(i, j)`` has its centre at ``x = j, y = i``).
    size : int
        Patch side in pixels (odd).

    Returns
    -------
    ndarray, shape (K, size, size), float32
        Beyond the frame's edge the edge pixels are repeated.
    """
    h = size // 2
    img = np.asarray(frame, dtype=np.float32)
    cx = np.clip(np.floor(x_px + 0.5).astype(np.int64), 0, img.shape[1] - 1)
    cy = np.clip(np.floor(y_px + 0.5).astype(np.int64), 0, img.shape[0] - 1)
    padded = np.pad(img, h, mode="edge")
    off = np.arange(size)
    return padded[(cy[:, None] + off)[:, :, None], (cx[:, None] + off)[:, None, :]]


def detect_frame(frame: NDArray[Any], task: DetectionTask) -> Detected:
    """Detect and localize the spots of one frame, and crop their patches if asked.

    Parameters
    ----------
    frame : ndarray, shape (H, W)
        Camera frame, ADU.
    task : DetectionTask
        Detector settings and patch size.

    Returns
    -------
    Detected
        The frame's spots (pixels) and, with ``task.patch_px``, one float32 patch
        per spot (dark spots inverted, so a model always sees bright ones).
    """
    spots = detect(frame, task.config)
    patches = None
    if task.patch_px is not None:
        img = np.asarray(frame, dtype=np.float32)
        if task.config.invert:
            img = -img
        patches = crop_patches(img, spots.x_px, spots.y_px, task.patch_px)
    return Detected(spots, patches)


def _ready() -> int:
    """A no-op run by each new worker at start-up (returns its pid)."""
    import os

    return os.getpid()


class DetectionPool:
    """Worker processes that run :func:`detect_frame` for every session of a server.

    Parameters
    ----------
    workers : int
        Number of processes (>= 1), or 0 to run detection in ``fallback``.
    fallback : Executor, optional
        Executor used when ``workers == 0`` (the server's thread pool).
    """

    def __init__(self, workers: int, fallback: Executor | None = None) -> None:
        if workers < 0:
            raise ValueError(f"detection workers must be >= 0, got {workers}")
        if workers == 0 and fallback is None:
            raise ValueError("workers=0 needs a fallback executor")
        self.workers = workers
        self._fallback = fallback
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._generation = 0
        self._closed = False
        if workers:
            self._pool = self._new_pool()

    @staticmethod
    def _context() -> Any:
        methods = multiprocessing.get_all_start_methods()
        if "forkserver" in methods:
            ctx = multiprocessing.get_context("forkserver")
            # The fork server imports only this module (not the server's __main__,
            # torch or gRPC); each worker is a cheap fork of it.
            ctx.set_forkserver_preload([__name__])
            return ctx
        return multiprocessing.get_context("spawn")

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self._context())
        # Start every worker now rather than on the first frames of a stream.
        for _ in range(self.workers):
            pool.submit(_ready)
        return pool

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (empty with ``workers=0``)."""
        with self._lock:
            procs = getattr(self._pool, "_processes", None) or {}
            return sorted(int(pid) for pid in procs)

    def submit(self, frame: NDArray[Any], task: DetectionTask) -> Future[Detected]:
        """Detect one frame; the returned future holds its :class:`Detected`.

        A frame whose worker died is detected once more in a fresh pool; only if
        that fails too does the future raise (``RuntimeError``). Detection errors
        (``ValueError`` naming the field) are raised as they are.
        """
        return self.call(detect_frame, frame, task)

    def call(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a worker (``fn`` and ``args`` picklable), as :meth:`submit`."""
        result: Future[T] = Future()
        self._run(fn, args, result, retries=1)
        return result

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], result: Future[T],
             retries: int) -> None:
        with self._lock:
            if self._closed:
                result.set_exception(RuntimeError("the detection pool is closed"))
                return
            executor: Executor | None = self._pool if self.workers else self._fallback
            generation = self._generation
            assert executor is not None
            try:
                inner = executor.submit(fn, *args)
            except BrokenProcessPool as exc:
                inner = Future()
                inner.set_exception(exc)

        def done(f: Future[T]) -> None:
            if result.cancelled():  # the stream that asked is gone
                return
            exc = (RuntimeError("detection was cancelled: the pool was shut down")
                   if f.cancelled() else f.exception())
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                if exc is None:
                    result.set_result(f.result())
                elif isinstance(exc, BrokenProcessPool):
                    self._replace(generation)
                    if retries > 0:
                        self._run(fn, args, result, retries - 1)
                    else:
                        result.set_exception(RuntimeError(
                            f"a detection worker process died twice on this call: {exc}"))
                else:
                    result.set_exception(exc)

        inner.add_done_callback(done)

    def _replace(self, generation: int) -> None:
        """Swap a broken pool for a fresh one (once per breakage, whoever notices first)."""
        with self._lock:
            if self._closed or generation != self._generation:
                return
            old = self._pool
            self._generation += 1
            self._pool = self._new_pool()
            log.warning("a detection worker died; started a new pool of %d", self.workers)
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Finish queued frames and stop the workers."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
