"""The detection stage of a stream, in worker processes.

Detection (:func:`livespt.server.pipeline.detect.detect`, plus the image patches a
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
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, Future, InvalidStateError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from livespt.server.pipeline.detect import DetectorConfig, Spots, detect

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


def detect_and_crop(frame: NDArray[Any], task: DetectionTask) -> Detected:
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
    return Detected(spots, patches_for(frame, spots, task))


def patches_for(frame: NDArray[Any], spots: Spots, task: DetectionTask
                ) -> NDArray[np.float32] | None:
    """One float32 patch around each spot when ``task.patch_px`` is set (else None).

    Dark spots are inverted, so a model always sees bright ones.
    """
    if task.patch_px is None:
        return None
    img = np.asarray(frame, dtype=np.float32)
    if task.config.invert:
        img = -img
    return crop_patches(img, spots.x_px, spots.y_px, task.patch_px)


def _ready() -> int:
    """A no-op run by each new worker at start-up (returns its pid)."""
    return os.getpid()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill said it exists


def _watch_server(server_pid: int, period_s: float = 1.0) -> None:
    """Worker initializer: exit when the server is gone.

    Workers are children of multiprocessing's forkserver, not of the server, so they
    would outlive a server killed with SIGKILL (holding the resource tracker open, which
    would then never unlink the server's shared-memory blocks).
    """
    def watch() -> None:
        while True:
            time.sleep(period_s)
            if not process_alive(server_pid):
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="livespt-server-watch").start()


# ------------------------------------------------------------ shared-memory frames
# A 512 x 512 uint16 frame pickled through the pool's pipe costs ~2 ms per round trip
# (64 KiB pipe chunks, each a wake-up of the reader); copied into shared memory it
# costs ~0.3 ms. The server reuses a few blocks per frame size; workers keep theirs
# attached.

_ATTACHED: OrderedDict[str, SharedMemory] = OrderedDict()
_ATTACHED_MAX = 64


def _attach(name: str) -> SharedMemory:
    """Worker side: the block ``name``, attached once and kept (least recent dropped)."""
    shm = _ATTACHED.get(name)
    if shm is not None:
        _ATTACHED.move_to_end(name)
        return shm
    try:
        shm = SharedMemory(name=name, track=False)  # type: ignore[call-arg]  # Python >= 3.13
    except TypeError:
        # Before 3.13 attaching registers the block with the resource tracker the
        # worker shares with the server (a duplicate entry; the server unlinks it).
        shm = SharedMemory(name=name)
    _ATTACHED[name] = shm
    # A new block: the server may have unlinked others (a session of another frame size
    # ended); close those so that their memory is freed (Linux: /dev/shm lists blocks).
    if os.path.isdir("/dev/shm"):
        for old_name in [n for n in _ATTACHED if n != name
                         and not os.path.exists(f"/dev/shm/{n.lstrip('/')}")]:
            with contextlib.suppress(BufferError):
                _ATTACHED.pop(old_name).close()
    while len(_ATTACHED) > _ATTACHED_MAX:
        _, old = _ATTACHED.popitem(last=False)
        with contextlib.suppress(BufferError):
            old.close()
    return shm


def _detect_shared(name: str, shape: tuple[int, int], dtype: str,
                   task: DetectionTask) -> Detected:
    """Worker side: :func:`detect_and_crop` on a frame the server put in shared memory."""
    shm = _attach(name)
    frame = np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf)
    try:
        return detect_and_crop(frame, task)
    finally:
        del frame  # no view may outlive the call (the block may be closed later)


class _FrameSlots:
    """Reusable shared-memory blocks that carry frames from the server to the workers."""

    def __init__(self, keep_per_size: int) -> None:
        self._keep = keep_per_size
        self._free: dict[int, list[SharedMemory]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._unavailable = False

    def acquire(self, nbytes: int) -> SharedMemory | None:
        """A block of ``nbytes`` (None when shared memory cannot be had: use the pipe)."""
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                return free.pop()
            if self._unavailable or self._closed:
                return None
        try:
            shm = SharedMemory(create=True, size=nbytes)
        except OSError as exc:
            self._give_up(exc)
            return None
        fd = getattr(shm, "_fd", -1)
        if fd >= 0 and hasattr(os, "posix_fallocate"):
            # Reserve the pages now: a full /dev/shm (64 MiB in a default Docker
            # container) must be an error here, not a SIGBUS when the frame is copied.
            try:
                os.posix_fallocate(fd, 0, nbytes)
            except OSError as exc:
                shm.close()
                shm.unlink()
                self._give_up(exc)
                return None
        return shm

    def _give_up(self, exc: OSError) -> None:
        with self._lock:
            if not self._unavailable:
                self._unavailable = True
                log.warning("no shared memory for frames (%s): frames go to the detection "
                            "workers through a pipe instead", exc)

    def release(self, shm: SharedMemory) -> None:
        """Return a block once the worker is done with it."""
        with self._lock:
            free = self._free.setdefault(shm.size, [])
            if not self._closed and len(free) < self._keep:
                free.append(shm)
                return
        shm.close()
        shm.unlink()

    def close(self) -> None:
        """Unlink every free block (blocks still out are unlinked on release)."""
        with self._lock:
            self._closed = True
            blocks = [b for free in self._free.values() for b in free]
            self._free.clear()
        for b in blocks:
            b.close()
            b.unlink()


class DetectionPool:
    """Worker processes that run :func:`detect_and_crop` for every session of a server.

    Frames reach the workers through reused shared-memory blocks (through the
    pool's pipe where shared memory is unavailable); spots and patches come back
    pickled.

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
        self._slots = _FrameSlots(keep_per_size=max(8, 4 * workers))
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
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=self._context(),
                                   initializer=_watch_server, initargs=(os.getpid(),))
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
        if self.workers:
            arr = np.asarray(frame)
            slot = self._slots.acquire(arr.nbytes) if arr.nbytes else None
            if slot is not None:
                np.copyto(np.ndarray(arr.shape, dtype=arr.dtype, buffer=slot.buf), arr,
                          casting="no")
                # The block is reused once the last attempt is over, even if the
                # caller stopped waiting (a worker may still be reading it).
                return self._call(_detect_shared, (slot.name, arr.shape, arr.dtype.str, task),
                                  lambda: self._slots.release(slot))
        return self.call(detect_and_crop, frame, task)

    def call(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a worker (``fn`` and ``args`` picklable), as :meth:`submit`."""
        return self._call(fn, args, None)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...],
              on_finish: Callable[[], None] | None) -> Future[T]:
        result: Future[T] = Future()
        self._run(fn, args, result, 1, on_finish)
        return result

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...], result: Future[T],
             retries: int, on_finish: Callable[[], None] | None) -> None:
        with self._lock:
            executor: Executor | None = self._pool if self.workers else self._fallback
            generation = self._generation
            closed = self._closed
            if not closed:
                assert executor is not None
                try:
                    inner: Future[T] = executor.submit(fn, *args)
                except BrokenProcessPool as exc:
                    inner = Future()
                    inner.set_exception(exc)
        if closed:
            if on_finish is not None:
                on_finish()
            result.set_exception(RuntimeError("the detection pool is closed"))
            return

        def done(f: Future[T]) -> None:
            exc: BaseException | None = (
                RuntimeError("detection was cancelled: the pool was shut down")
                if f.cancelled() else f.exception())
            if isinstance(exc, BrokenProcessPool):
                self._replace(generation)
                if retries > 0 and not result.cancelled():
                    self._run(fn, args, result, retries - 1, on_finish)
                    return
                exc = RuntimeError(f"a detection worker process died twice on this call: {exc}")
            if on_finish is not None:
                on_finish()
            with contextlib.suppress(InvalidStateError):  # the caller cancelled it
                if exc is None:
                    result.set_result(f.result())
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
            old.shutdown(wait=False)  # a broken pool has failed all its work already

    def close(self) -> None:
        """Finish queued frames, stop the workers and free the shared memory."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._slots.close()
