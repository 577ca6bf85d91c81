"""Frames of an acquisition that is still being written, as they appear.

Acquisition software writes either one image file per frame into a folder
(Micro-Manager's "separate image files", many camera programs) or appends pages to
one TIFF stack. :class:`FollowedFrames` yields the frames of either, in order, as
soon as each is complete, and stops when the acquisition stops:

* **complete**: a frame file is read once a later file exists, or once its size has
  not changed for :data:`SETTLE_S` and it decodes; a stack's page once the stack
  holds a later page, or once the file's size has settled and the page decodes.
  A file still being written is never read half-way (a read that fails is retried
  on the next poll).
* **order**: files by natural sort of their names (``frame_2`` before ``frame_10``);
  pages in file order. Each frame is yielded exactly once.
* **end**: no new frame for ``idle_timeout_s``, a stop file that appears
  (``stop_file``), or :meth:`FollowedFrames.stop` (e.g. from a Ctrl-C handler). A stop
  ends the frames only after every frame already on disk is yielded: a last file (or
  page) not yet settled is waited for, up to :data:`PENDING_MAX_S` (a frame written just
  before the stop file was lost when the stop was seen before its size had settled).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["FRAME_SUFFIXES", "SETTLE_S", "FollowedFrames", "natural_key"]

FRAME_SUFFIXES = (".tif", ".tiff")
"""Frame files a followed folder is read for (other files are ignored)."""

SETTLE_S = 0.2
"""Seconds a file's size must stay unchanged before its last frame is read."""

PENDING_MAX_S = 10.0
"""After a stop, seconds a frame already on disk but not yet complete is waited for."""


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``img_2.tif`` < ``img_10.tif``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class FollowedFrames:
    """Iterate over the frames of a folder or TIFF stack being written.

    Parameters
    ----------
    path : str or Path
        A folder that receives one image file per frame, or a TIFF/OME-TIFF stack that
        grows.
    idle_timeout_s : float
        Stop after this many seconds without a new frame (> 0).
    poll_s : float
        Seconds between looks at the folder or file (> 0).
    stop_file : str or Path, optional
        Stop when this file exists (after the frames complete by then).

    Raises
    ------
    ValueError
        When ``path`` does not exist, naming it.
    """

    def __init__(self, path: str | Path, idle_timeout_s: float = 10.0, poll_s: float = 0.05,
                 stop_file: str | Path | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"--follow: {self.path} does not exist")
        if not idle_timeout_s > 0 or not poll_s > 0:
            raise ValueError(f"--idle-timeout must be > 0 s, got {idle_timeout_s}")
        self.idle_timeout_s = float(idle_timeout_s)
        self.poll_s = float(poll_s)
        self.stop_file = Path(stop_file) if stop_file is not None else None
        self.n_yielded = 0
        self.ended_by = ""
        self._stop = threading.Event()
        self._pending_since: float | None = None
        self._sizes: dict[Path, tuple[int, float]] = {}  # size and since when

    def stop(self) -> None:
        """End the iteration after the frame being read (thread-safe, e.g. on Ctrl-C)."""
        self._stop.set()

    # ------------------------------------------------------------------ helpers
    def _settled(self, p: Path, now: float) -> bool:
        """Whether ``p``'s size has not changed for :data:`SETTLE_S`."""
        try:
            size = p.stat().st_size
        except OSError:
            return False
        last = self._sizes.get(p)
        if last is None or last[0] != size:
            self._sizes[p] = (size, now)
            return False
        return size > 0 and now - last[1] >= SETTLE_S

    def _should_end(self, last_new: float, pending: bool = False) -> bool:
        """Whether to end; ``pending``: a frame on disk is not yet complete."""
        now = time.monotonic()
        if not pending:
            self._pending_since = None
        elif self._pending_since is None:
            self._pending_since = now
        # A stop waits for a frame already on disk, for at most PENDING_MAX_S.
        wait = pending and now - (self._pending_since or now) < PENDING_MAX_S
        if self._stop.is_set() and not wait:
            self.ended_by = "stopped"
            return True
        if self.stop_file is not None and self.stop_file.exists() and not wait:
            self.ended_by = f"stop file {self.stop_file}"
            return True
        if time.monotonic() - last_new > self.idle_timeout_s:
            self.ended_by = f"no new frame for {self.idle_timeout_s:g} s"
            return True
        return False

    def __iter__(self) -> Iterator[NDArray[Any]]:
        source = self._folder() if self.path.is_dir() else self._stack()
        for frame in source:
            self.n_yielded += 1
            yield frame

    # ------------------------------------------------------------------ a folder
    def _folder(self) -> Iterator[NDArray[Any]]:
        import tifffile

        done = 0  # files yielded, in natural order
        last_new = time.monotonic()
        while True:
            files = sorted((p for p in self.path.iterdir()
                            if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
                           key=lambda p: natural_key(p.name))
            progressed = False
            while done < len(files):
                p = files[done]
                later = done + 1 < len(files)
                if not later and not self._settled(p, time.monotonic()):
                    break
                try:
                    frame = tifffile.imread(p)
                except Exception:  # still being written: try again at the next poll
                    if later and self._settled(p, time.monotonic()):
                        raise ValueError(f"--follow: cannot read frame file {p}") from None
                    break
                done += 1
                progressed = True
                last_new = time.monotonic()
                yield np.asarray(frame)
            # A stop request ends the stream only once the frames on disk by then are sent.
            if not progressed and self._should_end(last_new, pending=done < len(files)):
                return
            if not progressed:
                time.sleep(self.poll_s)

    # ------------------------------------------------------------ a growing stack
    def _stack(self) -> Iterator[NDArray[Any]]:
        import tifffile

        done = 0  # pages yielded
        last_new = time.monotonic()
        while True:
            progressed = False
            n = done
            try:
                with tifffile.TiffFile(self.path) as tf:
                    n = len(tf.pages)
                    settled = self._settled(self.path, time.monotonic())
                    while done < n and (done + 1 < n or settled):
                        frame = tf.pages[done].asarray()
                        done += 1
                        progressed = True
                        last_new = time.monotonic()
                        yield np.asarray(frame)
            except (OSError, ValueError, IndexError, tifffile.TiffFileError):
                pass  # a page being appended: read it at the next poll
            if not progressed and self._should_end(last_new, pending=done < n):
                return
            if not progressed:
                time.sleep(self.poll_s)

    def first_calibration(self) -> tuple[float | None, float | None]:
        """Pixel size (um) and frame interval (s) of the first frame file or the stack.

        From their ImageJ metadata, when present (None otherwise).
        """
        from livespt.server.io.tiff import read_calibration

        if self.path.is_dir():
            files = sorted((p for p in self.path.iterdir()
                            if p.suffix.lower() in FRAME_SUFFIXES), key=lambda p: natural_key(
                                p.name))
            if not files:
                return None, None
            target = files[0]
        else:
            target = self.path
        try:
            cal = read_calibration(target)
        except Exception:
            return None, None
        return cal.pixel_size_um, cal.frame_interval_s
