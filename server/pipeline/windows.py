"""Per-track ring buffers that turn a stream of points into sliding windows.

Each track keeps only its last ``length`` points (bounded memory however long
the stream), in ring buffers held as arrays so a whole frame of points is added
in a few numpy operations. When a window is due (every ``stride`` points once
``length`` are there), it is copied out and queued; :meth:`WindowBuffers.take_due`
hands the frame's windows to the window estimator
(:mod:`livespt.server.pipeline.estimate`) in one batch. :func:`sliding_windows`
gives the same windows for a whole track at once (track files, ``AnalyzeTracks``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from livespt.models import _validate
from livespt.server.pipeline.track_slots import TrackSlots


@dataclass(frozen=True)
class WindowConfig:
    """Sliding-window settings.

    Attributes
    ----------
    length : int
        Frames per window (>= 3), default 10: the last ``length`` frames in which
        the track was localized (a frame where it was missed is not counted; the
        gap is part of the window's input).
    stride : int
        Localized frames between two windows of a track (>= 1), default 1.
    """

    length: int = 10
    stride: int = 1

    def __post_init__(self) -> None:
        _validate.positive_int("window.length", self.length, 3)
        _validate.positive_int("window.stride", self.stride, 1)


@dataclass(frozen=True)
class DueWindows:
    """M windows ready to be estimated.

    Attributes
    ----------
    track_ids : ndarray of int, shape (M,)
    frames : ndarray of int, shape (M, L)
        Frame of each point, increasing.
    values : ndarray, shape (M, L, 3)
        x (um), y (um), localization precision (um) per point.
    patches : ndarray, shape (M, L, P, P), float32, optional
        Image patch per point, when kept.
    sigma_track_um : ndarray, shape (M,), optional
        The track's localization noise per axis from its step history
        (:mod:`livespt.server.pipeline.track_noise`), um; NaN where not known yet.
    sigma2_track_var_um4 : ndarray, shape (M,), optional
        Variance of ``sigma_track_um**2``, um^4.
    dispersion_track : ndarray, shape (M,), optional
        Over-dispersion of the track's squared steps
        (:meth:`~livespt.server.pipeline.track_noise.TrackNoise.dispersion`); NaN where
        not known yet.
    d_track_um2_s : ndarray, shape (M,), optional
        The track's D over its whole step history
        (:meth:`~livespt.server.pipeline.track_noise.TrackNoise.diffusion`), um^2/s; NaN
        where not known yet.
    """

    track_ids: NDArray[np.int64]
    frames: NDArray[np.int64]
    values: NDArray[np.float64]
    patches: NDArray[np.float32] | None = None
    sigma_track_um: NDArray[np.float64] | None = None
    sigma2_track_var_um4: NDArray[np.float64] | None = None
    dispersion_track: NDArray[np.float64] | None = None
    d_track_um2_s: NDArray[np.float64] | None = None

    def with_track_noise(self, sigma_um: NDArray[np.float64],
                         sigma2_var_um4: NDArray[np.float64],
                         dispersion: NDArray[np.float64] | None = None,
                         d_um2_s: NDArray[np.float64] | None = None) -> DueWindows:
        """The same windows with each track's noise estimate attached (arrays of shape (M,))."""
        return dataclasses.replace(
            self, sigma_track_um=np.asarray(sigma_um, np.float64),
            sigma2_track_var_um4=np.asarray(sigma2_var_um4, np.float64),
            dispersion_track=None if dispersion is None else np.asarray(dispersion, np.float64),
            d_track_um2_s=None if d_um2_s is None else np.asarray(d_um2_s, np.float64))

    def subset(self, idx: NDArray[np.intp]) -> DueWindows:
        """The windows at ``idx`` (without their patches: the CVE reads positions only)."""
        return DueWindows(
            self.track_ids[idx], self.frames[idx], self.values[idx], None,
            None if self.sigma_track_um is None else self.sigma_track_um[idx],
            None if self.sigma2_track_var_um4 is None else self.sigma2_track_var_um4[idx],
            None if self.dispersion_track is None else self.dispersion_track[idx],
            None if self.d_track_um2_s is None else self.d_track_um2_s[idx])

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])

    @staticmethod
    def concat(parts: list[DueWindows], length: int, patch_px: int | None) -> DueWindows:
        """Join queued parts (an empty list gives M = 0)."""
        if not parts:
            return DueWindows(
                np.zeros(0, np.int64), np.zeros((0, length), np.int64),
                np.zeros((0, length, 3)),
                None if patch_px is None else np.zeros((0, length, patch_px, patch_px),
                                                       np.float32))
        if len(parts) == 1:
            return parts[0]
        patches = [p.patches for p in parts]
        return DueWindows(
            np.concatenate([p.track_ids for p in parts]),
            np.concatenate([p.frames for p in parts]),
            np.concatenate([p.values for p in parts]),
            None if any(x is None for x in patches)
            else np.concatenate([x for x in patches if x is not None]))


class WindowBuffers:
    """Per-track ring buffers that emit sliding windows, fed one frame at a time.

    Per-track ring buffers live in preallocated arrays (one row per live track,
    assigned by a :class:`~livespt.server.pipeline.track_slots.TrackSlots` table and
    reused after :meth:`drop`), so feeding a frame of K points and finding
    the windows it completes are a handful of numpy operations, not K Python
    calls. Memory is bounded by the number of live tracks times ``length``.

    Parameters
    ----------
    config : WindowConfig
        Window length, stride and timing.
    patch_px : int, optional
        Also keep a (patch_px, patch_px) image patch per point, for models that
        read the images; windows then carry their patches.
    """

    def __init__(self, config: WindowConfig, patch_px: int | None = None) -> None:
        self.config = config
        self.patch_px = patch_px
        self._slots = TrackSlots(64)  # track id -> row of the arrays below
        cap = self._slots.capacity
        L = config.length
        self._track = np.zeros(cap, dtype=np.int64)  # track id of each row
        self._frames = np.zeros((cap, L), dtype=np.int64)
        self._vals = np.zeros((cap, L, 3), dtype=np.float64)  # x um, y um, sigma um
        self._count = np.zeros(cap, dtype=np.int64)  # points received per row
        self._since = np.zeros(cap, dtype=np.int64)  # points since the row's last window
        self._patches = (np.zeros((cap, L, patch_px, patch_px), dtype=np.float32)
                         if patch_px else None)
        # Windows queued until flush, copied out when due (dropping the track before
        # the flush loses nothing).
        self._due: list[DueWindows] = []

    @property
    def n_tracks(self) -> int:
        """Tracks currently buffered."""
        return len(self._slots)

    def _grow(self) -> None:
        """Extend the arrays to the table's capacity (existing rows keep their numbers)."""
        cap = self._slots.capacity

        def grown(a: NDArray[Any]) -> NDArray[Any]:
            out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
            out[: a.shape[0]] = a
            return out

        self._track = grown(self._track)
        self._frames = grown(self._frames)
        self._vals = grown(self._vals)
        self._count = grown(self._count)
        self._since = grown(self._since)
        if self._patches is not None:
            self._patches = grown(self._patches)

    def _rows(self, track_ids: NDArray[np.int64]) -> NDArray[np.intp]:
        """Rows of the given tracks, allocating rows for tracks not seen before."""
        rows, new = self._slots.rows(track_ids)
        if self._slots.capacity > self._count.size:
            self._grow()
        if new.size:
            r = rows[new]
            self._track[r] = track_ids[new]
            self._count[r] = 0
            self._since[r] = self.config.stride - 1  # the first full window is due
        return rows

    def add_many(
        self,
        track_ids: ArrayLike,
        frame: int,
        x_um: ArrayLike,
        y_um: ArrayLike,
        sigma_um: ArrayLike,
        patches: NDArray[np.float32] | None = None,
    ) -> None:
        """Append one point to each of several distinct tracks, all in ``frame``.

        Parameters
        ----------
        track_ids : array_like of int, shape (K,)
            Distinct track ids.
        frame : int
            Frame index of the points (increasing along each track).
        x_um, y_um : array_like, shape (K,)
            Positions in um.
        sigma_um : array_like, shape (K,)
            Localization precision per dimension in um; NaN when unknown.
        patches : ndarray, shape (K, P, P), optional
            Each point's image patch; required when the estimator keeps patches.
        """
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return
        L, stride = self.config.length, self.config.stride
        rows = self._rows(ids)
        pos = self._count[rows] % L
        self._frames[rows, pos] = frame
        self._vals[rows, pos, 0] = x_um
        self._vals[rows, pos, 1] = y_um
        self._vals[rows, pos, 2] = sigma_um
        if self._patches is not None:
            if patches is None or patches.shape[0] != ids.size:
                raise ValueError("patches: one patch per point is required when patch_px is set")
            self._patches[rows, pos] = patches
        self._count[rows] += 1
        full = rows[self._count[rows] >= L]
        if full.size == 0:
            return
        self._since[full] += 1
        due = full[self._since[full] >= stride]
        if due.size == 0:
            return
        self._since[due] = 0
        order = (self._count[due, None] + np.arange(L)) % L  # oldest point first
        rows2 = due[:, None]
        self._due.append(DueWindows(
            self._track[due], self._frames[rows2, order], self._vals[rows2, order],
            None if self._patches is None else self._patches[rows2, order]))

    def add(self, track_id: int, frame: int, x_um: float, y_um: float, sigma_um: float) -> None:
        """Append one point to one track (see :meth:`add_many`)."""
        self.add_many([track_id], frame, [x_um], [y_um], [sigma_um])

    def drop(self, track_id: int) -> None:
        """Forget a track that ended (its queued windows are still estimated)."""
        self._slots.release(track_id)

    def take_due(self) -> DueWindows:
        """The windows queued since the last call, in queue order (the queue is emptied)."""
        due, self._due = self._due, []
        return DueWindows.concat(due, self.config.length, self.patch_px)



def sliding_windows(
    config: WindowConfig,
    track_id: int,
    frames: NDArray[np.int64],
    xy_um: NDArray[np.float64],
    sigma_um: NDArray[np.float64],
    patches: NDArray[np.float32] | None = None,
) -> DueWindows:
    """Every sliding window of one whole track, as :class:`WindowBuffers` would emit them.

    Parameters
    ----------
    config : WindowConfig
        Window length and stride.
    track_id : int
        The track's id, copied into every window.
    frames : ndarray of int, shape (N,)
        Frame indices, strictly increasing.
    xy_um : ndarray, shape (N, 2)
        Positions in um.
    sigma_um : ndarray, shape (N,)
        Localization precision per point in um; NaN when unknown.
    patches : ndarray, shape (N, P, P), optional
        An image patch per point (for an image model).

    Returns
    -------
    DueWindows
        Windows ending at points ``L-1, L-1+stride, ...``, in order (none when N < L).
    """
    L, n = config.length, len(frames)
    starts = np.arange(0, max(n - L + 1, 0), config.stride)
    idx = starts[:, None] + np.arange(L)
    vals = np.concatenate([np.asarray(xy_um, float).reshape(n, 2),
                           np.asarray(sigma_um, float).reshape(n, 1)], axis=1)
    return DueWindows(np.full(len(starts), track_id, dtype=np.int64),
                      np.asarray(frames, np.int64)[idx], vals[idx],
                      None if patches is None else np.asarray(patches, np.float32)[idx])
