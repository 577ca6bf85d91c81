"""The change detector for all the tracks of a session: histories stored together in arrays.

:class:`ChangeDetectorBank` runs the online GLR detector of
:mod:`livespt.server.pipeline.changepoint` (statistic, thresholds, per-track
reference :class:`~livespt.server.pipeline.changepoint.TrackChangeDetector`) for
every track of a session, keyed by track id, with identical results: the same
change points, with the same fields, and the same scores, bit for bit.

Method
------
Each track's state (last position, sigma^2 and frame; steps stored; first step of
the current regime; last score) and step history (start frame and four prefix sums
per step, as the per-track detector keeps them) is one row ("slot") of arrays
shared by all the tracks. A :class:`~livespt.server.pipeline.track_slots.TrackSlots`
table maps track ids to slots, in least-recently-updated order, and evicts the least
recently updated track beyond ``max_tracks``. :meth:`ChangeDetectorBank.update`
feeds one position, with the per-track detector's step kernels on the track's row.
:meth:`ChangeDetectorBank.update_many` feeds one position for each track of a frame:
the new steps of all the tracks are appended in a few numpy operations, and the
candidate splits of all the windows that hold at least ``2 min_segment_steps`` steps
are laid end to end in flat arrays and scanned in chunks of whole windows (up to
16384 candidates, ``_SCAN_CHUNK``, so that the work arrays stay in the CPU's
cache), with the same floating-point operations as the per-track scan.

Costs
-----
Per track-update, the O(window) numpy work of the per-track detector; but
:meth:`~ChangeDetectorBank.update_many` pays the Python and numpy call overhead
(~25 us per update) once per frame instead of once per track: 4-14x faster per
track-update at 50-500 tracks (``benchmarks/bench_changepoint.py``, results in
``benchmarks/results/changepoint.json``, key ``throughput``).

Memory
------
40 bytes per stored step and slot (start frame and four prefix sums). Rows start
64 steps long and double, up to ``2 max_history_steps + 2`` steps (32 kB per slot
at the default 400-step window), when a track's history first reaches their
length; a history at that length is compacted to its window, as in the per-track
detector. Slots of dropped or evicted tracks are reused; the slot arrays double
when every slot is in use and are repacked to twice the live tracks when fewer
than a quarter are live, so memory stays proportional to the live tracks, at most
``max_tracks``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from livespt.models import _validate
from livespt.server.pipeline.changepoint import (
    INITIAL_CAPACITY_STEPS,
    TINY_UM2_S,
    ChangeConfig,
    ChangePoint,
    append_step_at,
    change_point_at,
    compact_at,
    confirmed_by_dispersion,
    confirmed_by_medians,
    scan_window,
)
from livespt.server.pipeline.track_slots import TrackSlots

__all__ = ["ChangeDetectorBank"]

# Track slots a ChangeDetectorBank allocates first; it doubles them when all are used.
_INITIAL_SLOTS = 16
# Candidate splits a ChangeDetectorBank scans per numpy pass: its work arrays
# (6 x 8 bytes per candidate) then stay in the CPU's cache.
_SCAN_CHUNK = 16384


class ChangeDetectorBank:
    """Online change detectors for many tracks, one per track id, with a bound on live tracks.

    Each track is tested exactly as by its own
    :class:`~livespt.server.pipeline.changepoint.TrackChangeDetector` (same
    statistic, history window and buffer compaction, same floating-point
    operations: the same change points and scores), but the states of all tracks
    are kept together in arrays, one row ("slot") per track, so that
    :meth:`update_many` advances all the tracks of a frame in a few numpy passes
    instead of one Python call per track. Which track owns which slot is kept by a
    :class:`~livespt.server.pipeline.track_slots.TrackSlots` table.

    Parameters
    ----------
    config : ChangeConfig
        Settings shared by all tracks.
    max_tracks : int
        Most tracks kept; beyond it the least recently updated track is dropped
        (a linker that forgets to report ended tracks cannot exhaust memory).

    Attributes
    ----------
    evicted : int
        Tracks dropped so far because ``max_tracks`` was exceeded.

    Notes
    -----
    Method, costs and memory: see :mod:`livespt.server.pipeline.changepoint_bank`.
    """

    def __init__(self, config: ChangeConfig, max_tracks: int = 100_000) -> None:
        if not isinstance(config, ChangeConfig):
            raise ValueError(f"config must be a ChangeConfig, got {type(config).__name__}")
        self.config = config
        self.max_tracks = _validate.positive_int("max_tracks", max_tracks)
        self._dt = config.frame_interval_s
        self._blur = config.blur
        self._threshold = config.threshold
        self._m = config.min_segment_steps
        self._w = config.max_history_steps
        self._max_cap = 2 * self._w + 2  # as TrackChangeDetector: compacted at this length
        self._counts = np.arange(self._w + 1, dtype=np.float64)  # segment lengths
        # Track id -> slot, least recently updated first; evicts beyond max_tracks.
        self._slots = TrackSlots(_INITIAL_SLOTS, max_tracks=self.max_tracks)
        # Per slot: steps stored, first step of the current regime, last frame (-1:
        # none yet), last position (um) and sigma^2 (um^2), last score.
        self._hi = np.zeros(0, dtype=np.int64)
        self._restart = np.zeros(0, dtype=np.int64)
        self._last_frame = np.zeros(0, dtype=np.int64)
        self._last_xy = np.zeros((0, 2))
        self._last_s2 = np.zeros(0)
        self._last_score = np.zeros(0)
        # Per slot and step: start frame; prefix sums (column 0 = 0) of y, c, a, s.
        self._width = min(INITIAL_CAPACITY_STEPS, self._max_cap)
        self._start = np.zeros((0, self._width), dtype=np.int64)
        self._py = np.zeros((0, self._width + 1))
        self._pc = np.zeros((0, self._width + 1))
        self._pa = np.zeros((0, self._width + 1))
        self._ps = np.zeros((0, self._width + 1))
        self._resize(np.zeros(0, dtype=np.intp), self._slots.capacity)
        # Work arrays of the batched scan (candidates of a chunk of windows), made
        # on first use.
        self._pos = np.zeros(0, dtype=np.int64)
        self._pos_f = np.zeros(0)
        self._work = np.zeros((4, 0))

    @property
    def evicted(self) -> int:
        """Tracks dropped so far because ``max_tracks`` was exceeded."""
        return self._slots.evicted

    # ------------------------------------------------------------------ public API
    def update(
        self, track_id: Hashable, frame: int, xy_um: Any, sigma_um: float, *,
        interval_known: bool = True,
    ) -> ChangePoint | None:
        """Feed one position of track ``track_id``; see ``TrackChangeDetector.update``.

        Parameters
        ----------
        track_id : hashable
            The track's identifier, copied into the events.
        frame : int
            Frame index, increasing along the track.
        xy_um : array_like, shape (2,)
            Position (x, y) in um.
        sigma_um : float
            Localization precision per dimension in um, >= 0.
        interval_known : bool
            False: the time since the track's previous position is not what the
            frame numbers say; no step across it (``TrackChangeDetector.update``).

        Returns
        -------
        ChangePoint or None
        """
        if not _hashable(track_id):
            raise ValueError(f"track_id must be hashable, got {track_id!r}")
        f = _validate.positive_int("frame", frame, minimum=0)
        xy = _validate.finite_array("xy_um", xy_um, ndim=1)
        if xy.shape != (2,):
            raise ValueError(f"xy_um must have shape (2,), got {xy.shape}")
        s2 = _validate.non_negative("sigma_um", sigma_um) ** 2
        slot = self._slots.get(track_id)
        if slot is None:  # as update_many, for one track
            slots = self._take_slots([track_id])
            self._advance_one(int(slots[0]), f, xy, s2)  # a first position: no event
            self._slots.free_evicted()
            return None
        prev = self._last_frame.item(slot)
        if f <= prev:
            raise ValueError(f"frame must increase along a track: got {f} after {prev}")
        self._slots.touch(track_id)
        return self._advance_one(slot, f, xy, s2, interval_known=bool(interval_known))

    def update_many(
        self,
        track_ids: Sequence[Hashable] | NDArray[np.int64],
        frame: int,
        xy_um: NDArray[np.float64],
        sigma_um: NDArray[np.float64] | float,
        *,
        interval_known: bool = True,
    ) -> list[ChangePoint]:
        """Feed one position for each of ``n`` distinct tracks, all at the same frame.

        Equivalent to ``bank.update(track_ids[i], frame, xy_um[i], sigma_um[i])`` for
        ``i = 0 .. n-1`` in order, keeping the events that are not None: the same
        events in the same order, with the same fields, and the same
        least-recently-used order and evictions; but the steps and the
        likelihood-ratio scans of all the tracks are computed together, in a few
        numpy passes.

        Parameters
        ----------
        track_ids : sequence of hashable, or ndarray of int, shape (n,)
            Distinct track identifiers; each event's ``track_id`` is the one given
            (an integer array gives Python ints).
        frame : int
            Frame index of all the positions, >= 0, greater than the last frame of
            each of these tracks already in the bank.
        xy_um : array_like, shape (n, 2)
            Positions (x, y) in um.
        sigma_um : array_like, shape (n,)
            Localization precisions per dimension in um, >= 0 (a scalar applies to
            all).
        interval_known : bool
            False when the time since the previous frame is not what the frame
            numbers say (the timing check flagged this frame): the positions start
            the next steps, no step is added across the unknown interval and
            nothing is tested (``TrackChangeDetector.update``).

        Returns
        -------
        list of ChangePoint
            The changes found with these positions, at most one per track, in the
            order of ``track_ids``; each names its track in
            :attr:`ChangePoint.track_id`.

        Raises
        ------
        ValueError
            On repeated or unhashable track ids, a non-integer or negative ``frame``
            or one not after a track's last frame (checked against the bank as the
            call starts), a non-finite or wrongly-shaped ``xy_um``, or a negative,
            non-finite or wrongly-shaped ``sigma_um``. The whole call is rejected
            then: no track is changed.
        """
        if isinstance(track_ids, np.ndarray):
            if track_ids.ndim != 1 or not np.issubdtype(track_ids.dtype, np.integer):
                raise ValueError(
                    f"track_ids must be a sequence or a 1-D integer array, got an array of "
                    f"dtype {track_ids.dtype} and shape {track_ids.shape}"
                )
            ids: list[Hashable] = track_ids.tolist()
        else:
            ids = list(track_ids)
        n = len(ids)
        try:
            distinct = len(set(ids)) == n
        except TypeError:
            bad = next(t for t in ids if not _hashable(t))
            raise ValueError(f"track_ids must be hashable, got {bad!r}") from None
        if not distinct:
            raise ValueError("track_ids must be distinct (one position per track and frame)")
        f = _validate.positive_int("frame", frame, minimum=0)
        if n == 0:
            return []
        xy = _validate.finite_array("xy_um", xy_um, ndim=2)
        if xy.shape != (n, 2):
            raise ValueError(f"xy_um must have shape ({n}, 2), got {xy.shape}")
        sig = _validate.finite_array("sigma_um", sigma_um)
        if sig.ndim == 0:
            sig = np.full(n, float(sig))
        if sig.shape != (n,):
            raise ValueError(f"sigma_um must have shape ({n},), got {sig.shape}")
        if not np.all(sig >= 0.0):
            raise ValueError(f"sigma_um must be >= 0, got {float(np.min(sig))!r}")
        old = self._slots.lookup(ids)
        old = old[old >= 0]
        if old.size:
            last = self._last_frame[old]
            if np.any(last >= f):
                i = int(np.argmax(last >= f))
                raise ValueError(
                    f"frame must increase along a track: got {f} after {int(last[i])} "
                    f"(track {self._slots.id_of(int(old[i]))!r})"
                )
        # Python's float power, as update: numpy's square differs in the last bit of
        # ~0.1 % of the values.
        s2 = np.array([v**2 for v in sig.tolist()])
        # Tracks evicted during the call keep their slots until it ends: a track
        # updated early in the call and evicted later in it still reports its change.
        slots = self._take_slots(ids)
        events = self._advance(slots, f, xy, s2, bool(interval_known))
        self._slots.free_evicted()
        return events

    def drop(self, track_id: Hashable) -> None:
        """Forget an ended track (no error if it is unknown)."""
        if self._slots.release(track_id) is None:
            return
        n_slots = self._slots.capacity
        if n_slots > _INITIAL_SLOTS and 4 * len(self._slots) <= n_slots:
            n_slots = max(_INITIAL_SLOTS, 2 * len(self._slots))
            self._resize(self._slots.repack(n_slots), n_slots)

    def last_score(self, track_id: Hashable) -> float:
        """Score of the track's last update, as ``TrackChangeDetector.last_score``.

        Parameters
        ----------
        track_id : hashable
            A track in the bank.

        Returns
        -------
        float
            Dispersion-corrected max LLR (natural log) of the track's last update;
            0 while its window holds fewer than ``2 min_segment_steps`` steps.

        Raises
        ------
        KeyError
            If the track is not in the bank.
        """
        return float(self._last_score[self._slots.row(track_id)])

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._slots

    # ------------------------------------------------------------------ slots
    def _take_slots(self, ids: Sequence[Hashable]) -> NDArray[np.intp]:
        """Slots of ``ids`` in turn (fresh ones for new tracks), as calls to :meth:`update` would.

        Each track becomes the most recently updated and new tracks evict the least
        recently updated beyond ``max_tracks``; evicted slots are released by
        ``self._slots.free_evicted()`` once the call's positions are processed.
        """
        slots, new = self._slots.rows(ids)
        if self._slots.capacity > self._hi.shape[0]:  # the table doubled: so do the arrays
            self._resize(np.arange(self._hi.shape[0], dtype=np.intp), self._slots.capacity)
        if new.size:
            fresh = slots[new]
            self._hi[fresh] = 0
            self._restart[fresh] = 0
            self._last_frame[fresh] = -1
            self._last_score[fresh] = 0.0
            for p in (self._py, self._pc, self._pa, self._ps):
                p[fresh, 0] = 0.0
        return slots

    def _resize(self, keep: NDArray[np.intp], n_slots: int) -> None:
        """Reallocate the arrays to ``n_slots`` slots: slot ``keep[i]`` becomes slot ``i``."""
        k = keep.size
        for name in ("_hi", "_restart", "_last_frame", "_last_xy", "_last_s2", "_last_score",
                     "_start", "_py", "_pc", "_pa", "_ps"):
            old = getattr(self, name)
            new = np.zeros((n_slots, *old.shape[1:]), dtype=old.dtype)
            new[:k] = old[keep]
            setattr(self, name, new)
        self._last_frame[k:] = -1

    def _make_room(self, hi: int, slot: int) -> None:
        """Before appending a step to a slot whose ``hi`` steps fill its row: widen, or compact."""
        if self._width < self._max_cap:
            width = min(2 * self._width, self._max_cap)
            start = np.zeros((self._hi.shape[0], width), dtype=np.int64)
            start[:, : self._width] = self._start
            self._start = start
            for name in ("_py", "_pc", "_pa", "_ps"):
                p = np.zeros((self._hi.shape[0], width + 1))
                p[:, : self._width + 1] = getattr(self, name)
                setattr(self, name, p)
            self._width = width
        else:
            lo = max(int(self._restart[slot]), hi - self._w)
            compact_at(self._start[slot], (self._py[slot], self._pc[slot], self._pa[slot],
                                            self._ps[slot]), lo, hi)
            self._restart[slot] -= lo
            self._hi[slot] = hi - lo

    # ------------------------------------------------------------------ one track
    def _advance_one(self, slot: int, frame: int, xy: NDArray[np.float64],
                     s2: float, interval_known: bool = True) -> ChangePoint | None:
        """TrackChangeDetector.update (after its checks) on one slot."""
        prev = self._last_frame.item(slot)
        self._last_frame[slot] = frame
        last_xy = self._last_xy[slot]
        q = float(np.sum((xy - last_xy) ** 2))
        last_xy[:] = xy
        s = self._last_s2.item(slot) + s2
        self._last_s2[slot] = s2
        if prev < 0 or not interval_known:
            return None
        hi = self._hi.item(slot)
        if hi == self._width:
            self._make_room(hi, slot)
            hi = self._hi.item(slot)
        py, pc, pa, ps = self._py[slot], self._pc[slot], self._pa[slot], self._ps[slot]
        start = self._start[slot]
        append_step_at(start, py, pc, pa, ps, hi, prev, frame - prev, q, s, self._dt,
                        self._blur)
        hi += 1
        self._hi[slot] = hi
        lo = max(self._restart.item(slot), hi - self._w)
        if hi - lo < 2 * self._m:
            self._last_score[slot] = 0.0
            return None
        jb, score, f = scan_window(py, pc, pa, ps, self._counts, lo, hi, self._m, self._blur,
                                    self._dt)
        self._last_score[slot] = score
        if not score > self._threshold:
            return None
        if not confirmed_by_medians(py, lo, hi, jb):
            return None
        if not confirmed_by_dispersion(py, lo, hi, score, self._threshold):
            return None
        self._restart[slot] = jb
        return change_point_at(py, pc, start, lo, hi, jb, score, f, frame,
                             self.config.confidence, self._slots.id_of(slot))

    # ------------------------------------------------------------------ many tracks
    def _advance(
        self, slots: NDArray[np.intp], frame: int, xy: NDArray[np.float64],
        s2: NDArray[np.float64], interval_known: bool = True,
    ) -> list[ChangePoint]:
        """:meth:`_advance_one` on distinct slots at once, with the same floating-point ops."""
        prev = self._last_frame[slots]
        last_xy = self._last_xy[slots]
        last_s2 = self._last_s2[slots]
        self._last_frame[slots] = frame
        self._last_xy[slots] = xy
        self._last_s2[slots] = s2
        if not interval_known:
            return []
        old = prev >= 0  # tracks with a previous position: one new step each
        if not old.all():
            slots, prev = slots[old], prev[old]
            xy, last_xy, s2, last_s2 = xy[old], last_xy[old], s2[old], last_s2[old]
        if slots.size == 0:
            return []

        # One step per slot (append_step_at).
        for slot in slots[self._hi[slots] == self._width].tolist():
            if self._hi.item(slot) == self._width:  # (one widening serves them all)
                self._make_room(self._width, slot)
        hi = self._hi[slots]
        d = xy - last_xy
        d *= d
        q = d[:, 0] + d[:, 1]  # np.sum of two squares
        s = last_s2 + s2
        a = 2.0 * self._dt * ((frame - prev) - 2.0 * self._blur)
        self._start[slots, hi] = prev
        for p, inc in ((self._py, q / (2.0 * a)), (self._pc, s / a), (self._pa, a),
                       (self._ps, s)):
            p[slots, hi + 1] = p[slots, hi] + inc
        hi += 1
        self._hi[slots] = hi

        # Scan the windows with at least 2 m steps (scan_window).
        lo = np.maximum(self._restart[slots], hi - self._w)
        self._last_score[slots] = 0.0
        full = hi - lo >= 2 * self._m
        if not full.any():
            return []
        slots, lo, hi = slots[full], lo[full], hi[full]
        jb, score, f = self._scan_many(slots, lo, hi)
        self._last_score[slots] = score
        events = []
        for i in np.flatnonzero(score > self._threshold).tolist():
            slot, j = int(slots[i]), int(jb[i])
            if not confirmed_by_medians(self._py[slot], int(lo[i]), int(hi[i]), j):
                continue  # a few steps the model does not describe, not a change of D
            if not confirmed_by_dispersion(self._py[slot], int(lo[i]), int(hi[i]),
                                           float(score[i]), self._threshold):
                continue  # steps heavier-tailed than the model: the score is inflated
            events.append(change_point_at(
                self._py[slot], self._pc[slot], self._start[slot], int(lo[i]), int(hi[i]), j,
                float(score[i]), float(f[i]), frame, self.config.confidence,
                self._slots.id_of(slot),
            ))
            self._restart[slot] = j
        return events

    def _scan_many(
        self, slots: NDArray[np.intp], lo: NDArray[np.int64], hi: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        """:func:`scan_window` of the windows ``[lo, hi)`` of ``slots`` (all >= 2 m steps).

        The candidate splits of all windows are laid end to end in flat arrays,
        processed in chunks of whole windows that fit the work arrays (which stay in
        cache). Exactly as in :func:`scan_window`, element by element, except that
        the negated log-likelihoods ``A = n log(u) + y / u`` are summed (negation is
        exact, so ``-LLR`` is obtained bit for bit) and minimized.
        """
        m = self._m
        n = hi - lo
        row = slots * (self._width + 1)
        py, pc = self._py.reshape(-1), self._pc.reshape(-1)
        pa, ps = self._pa.reshape(-1), self._ps.reshape(-1)
        py_lo, pc_lo = py[row + lo], pc[row + lo]
        y_all, c_all = py[row + hi] - py_lo, pc[row + hi] - pc_lo
        nf = n.astype(np.float64)
        a_all = _neg_profile_ll(nf, y_all, c_all)
        counts = n - (2 * m - 1)  # candidates j = lo + m .. hi - m
        ends = np.cumsum(counts)
        first = ends - counts
        src0 = row + lo + m - first  # flat index of candidate position p: src0 + p
        best = np.empty(n.size, dtype=np.int64)
        low = np.empty(n.size)
        if self._pos.size == 0:
            size = max(_SCAN_CHUNK, self._w)
            self._pos = np.arange(size, dtype=np.int64)
            self._pos_f = np.arange(size, dtype=np.float64)
            self._work = np.empty((4, size))
        chunk = self._pos.size
        b0 = 0
        while b0 < n.size:
            b1 = max(b0 + 1, int(np.searchsorted(ends, first[b0] + chunk, side="right")))
            base = int(first[b0])
            size = int(ends[b1 - 1]) - base
            cnt = counts[b0:b1]
            off = first[b0:b1] - base
            pos, pos_f = self._pos[:size], self._pos_f[:size]
            y_l, c_l, a_l, tmp = (w[:size] for w in self._work)
            index = (src0[b0:b1] + base).repeat(cnt)
            index += pos
            n_l = ((m + base) - first[b0:b1]).astype(np.float64).repeat(cnt)
            n_l += pos_f
            np.take(py, index, out=y_l, mode="clip")
            y_l -= py_lo[b0:b1].repeat(cnt)
            np.take(pc, index, out=c_l, mode="clip")
            c_l -= pc_lo[b0:b1].repeat(cnt)
            _neg_profile_ll(n_l, y_l, c_l, out=a_l, tmp=tmp)
            n_r = nf[b0:b1].repeat(cnt)
            n_r -= n_l
            y_r = y_all[b0:b1].repeat(cnt)
            y_r -= y_l
            c_r = c_all[b0:b1].repeat(cnt)
            c_r -= c_l
            _neg_profile_ll(n_r, y_r, c_r, out=y_l, tmp=tmp)
            a_l += y_l
            a_l -= a_all[b0:b1].repeat(cnt)  # -LLR
            best[b0:b1], low[b0:b1] = _segment_argmin(a_l, off, cnt)
            b0 = b1
        diff = (y_all - c_all) / n
        d0 = np.where(diff > 0.0, diff, 0.0)  # max(0.0, diff)
        f = _dispersion_factors(d0, (pa[row + hi] - pa[row + lo]) / n,
                                (ps[row + hi] - ps[row + lo]) / n, self._blur, self._dt)
        return lo + m + best, -low / f, f


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _neg_profile_ll(
    n: NDArray[np.float64], y: NDArray[np.float64], c: NDArray[np.float64],
    out: NDArray[np.float64] | None = None, tmp: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """``-_profile_ll(n, y, c)`` bit for bit, into ``out`` (``tmp``: work array, same size)."""
    if out is None:
        out = np.empty(np.shape(y))
    if tmp is None:
        tmp = np.empty(np.shape(y))
    np.maximum(y, c, out=tmp)
    tmp /= n
    np.maximum(tmp, TINY_UM2_S, out=tmp)  # u
    np.log(tmp, out=out)
    out *= n
    np.divide(y, tmp, out=tmp)
    out += tmp  # n log(u) + y / u
    return out


def _segment_argmin(
    values: NDArray[np.float64], first: NDArray[np.int64], counts: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """``np.argmin`` and ``np.min`` of each segment ``values[first[i] : first[i] + counts[i]]``.

    Segments are consecutive and not empty; as np.argmin, the first minimum, or
    the first NaN, is taken.
    """
    low = np.minimum.reduceat(values, first)  # NaN where a segment holds one
    at_low = np.flatnonzero(values == low.repeat(counts))
    # A segment without NaN holds its minimum: the first one at or after its start.
    k = np.minimum(np.searchsorted(at_low, first), max(at_low.size - 1, 0))
    best = at_low[k] - first if at_low.size else np.zeros_like(first)
    for i in np.flatnonzero(np.isnan(low)).tolist():
        best[i] = np.argmin(values[first[i] : first[i] + counts[i]])
    return best, low


def _dispersion_factors(
    d_um2_s: NDArray[np.float64], a_mean_s: NDArray[np.float64],
    s_mean_um2: NDArray[np.float64], blur: float, frame_interval_s: float,
) -> NDArray[np.float64]:
    """:func:`dispersion_factor` of arrays of windows, with the same floating-point operations."""
    var = a_mean_s * d_um2_s + s_mean_um2
    cov = 2.0 * blur * d_um2_s * frame_interval_s - 0.5 * s_mean_um2
    with np.errstate(divide="ignore", invalid="ignore"):
        r = cov / var
    r = np.where(-0.5 > r, -0.5, r)  # max(r, -0.5)
    r = np.where(0.5 < r, 0.5, r)  # min(r, 0.5)
    return np.where(var > 0, 1.0 + 2.0 * r * r, 1.0)
