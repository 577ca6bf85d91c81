"""Online particle linker: one frame of detections in, final track ids out.

A live session cannot wait for the end of the movie to link, so this is a
frame-by-frame version of the linear assignment problem (LAP) tracker of
Jaqaman et al. (2008, Nat. Methods 5, 695), the method behind u-track and
TrackMate's LAP tracker, kept online in the way of trackpy's streaming
``Linker``: when frame ``t`` arrives its detections are assigned to the live
tracks and the assignment is final; nothing is revisited later.

Cost model
----------
A track's *head* is its last detected position (um) and the frame it was seen
in. No velocity is predicted: particles are assumed to diffuse. For a head last
seen ``n`` frames before the current one (``n = 1``: the previous frame;
``n - 1`` frames missing in between), the candidate detections lie within the
gate ``max_distance_um * sqrt(n)`` (a Brownian displacement grows like the
square root of the elapsed time) and the cost of linking is

    c = |x_det - x_head|^2 / n * gap_penalty^(n - 1)        (um^2)

i.e. the squared displacement scaled back to one frame of diffusion, times the
u-track gap penalty per extra frame. Every track may instead *end* (death cost
``d``) and every detection may instead *start* a track (birth cost ``b``). The
assignment minimises the total cost over the standard augmented matrix

    [ C (links)        D (deaths, diag) ]
    [ B (births, diag) A (auxiliary)    ]

where ``A`` is the transposed pattern of ``C`` at cost 0, so an allowed link
``i -> j`` is chosen exactly when it beats ``d + b`` in its competition, and a
far detection starts a new track instead of pulling a track away from its
nearer continuation.

Alternative (birth/death) costs: following TrackMate, which sets them to 1.05
times the largest link cost, they default to ``1.05 * max_distance_um^2 / 2``
each, so ``d + b`` is 1.05 times the largest cost a frame-to-frame link inside
the gate can have. We derive them from ``max_distance_um`` rather than from a
percentile of the accepted costs (u-track's choice) because online the
accepted costs are themselves truncated by the alternative cost; a percentile
rule would drift towards rejecting the fast particles' steps, and its decisions
would depend on what else happened to be in the frame.

Speed: the gate is applied with a k-d tree (``scipy.spatial.cKDTree``), the
gated bipartite graph is split into connected components, components with a
single track or a single detection (the vast majority) are solved at once by
their cheapest edge, and only the others go through
``scipy.optimize.linear_sum_assignment``, one small dense matrix each.

Memory: a track that has been missing for more than ``max_gap_frames`` frames
can never be continued; :meth:`OnlineLinker.ended` reports it and forgets it,
so the state holds only tracks seen within the last ``max_gap_frames + 1``
frames, however long the stream. (Call it after every frame: tracks that
expire while it is not called are dropped from the state at the next frame but
their ids wait, as plain integers, until it is.)

Motion-blurred spots
--------------------
A particle that moves a few pixels during the exposure leaves a streak, and the
detector may find two (or more) maxima on it. Left alone, the extra maximum
starts a new track every frame it appears, and the particle's track breaks
into many short pieces (measured: 10 tracks per particle at ``D dt / px^2 =
5``). So a detection that would *start* a track is instead *merged* into a
track linked in the same frame when it lies within ``blur_merge_steps`` times
that track's own RMS frame-to-frame step of the track's detection (and inside
its gate): the region the particle's motion during one exposure can smear it
over. :meth:`OnlineLinker.link` then gives both detections the same id, the
head moves to their weighted mean, and :func:`merge_same_track` turns them into
one point. The radius comes from each track's own history (no merging before a
track's first step), so slow particles, whose RMS step is below the distance at
which two maxima can be found at all, are never merged, and no setting has to
match the sample. Two real particles closer than that radius where one of them
is just appearing are merged too (they cannot be told apart from one streak);
:attr:`OnlineLinker.n_merged` counts merges for the session summary.

Fast particles
--------------
``max_distance_um`` is a setting, and a sample's fastest particles may step
farther than it (a 1.0 um gate loses 0.7 % of the steps of a particle with RMS
step 0.45 um, and each lost step breaks its track). A track with at least
:data:`ADAPTIVE_GATE_MIN_STEPS` steps therefore gets its own gate,
:data:`ADAPTIVE_GATE_STEPS` times its RMS step when that is wider (at most
:data:`ADAPTIVE_GATE_MAX_SCALE` times ``max_distance_um``), and its link costs
are measured in units of that gate: the u-track way of letting each track's
motion set its search radius.

Which track gets which detection
--------------------------------
Where several tracks compete for several detections, the squared-distance cost treats
a slow and a fast particle alike: a fast particle that lands next to a slow one may
take its detection and leave the slow one to jump. Within each such component the
LAP above decides which tracks continue and which detections start tracks; then the
continuing tracks and their detections are re-paired (inside the same gates) to
maximize the likelihood of the steps under each track's own diffusion: a 2-D
Gaussian step of per-axis variance ``v_i n`` (``n`` frames elapsed), cost
``d^2 / (2 v_i n) + log(v_i n)``, with ``v_i`` half the track's recent mean squared
step per frame (:data:`STEP_MEMORY`; localization noise included, as it is in the
steps). Components of one track or one detection are left as they are. Measured on
the report movies of ``docs/accuracy.md`` (four movies, 30 particles of D 0.02-1
um^2/s, linked from true positions with 15 nm noise / from the live detections):
tracks per particle 1.92 -> 1.81 / 2.41 -> 2.31, purity 0.947 -> 0.951 / 0.892 ->
0.904.

Not modelled: splitting and merging of particles, velocity (directed motion),
intensity or shape features in the cost, global gap closing over the whole movie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from livespt.models import _validate

# TrackMate's "alternative linking cost factor": the alternative cost is 5 %
# above the largest admissible link cost, so every gated link stays possible.
ALTERNATIVE_COST_FACTOR = 1.05

# Above this many gated pairs, components are found with scipy.sparse.csgraph
# (fixed overhead ~0.1 ms, scales well); below, by label propagation (faster
# on small graphs, but its rounds grow with the components' diameter).
_PROPAGATION_MAX_EDGES = 1000

# Two maxima on one motion-blurred streak are at most the streak's length apart;
# the streak's end-to-end RMS length is the RMS step times sqrt(exposure /
# interval) <= the RMS step, and a 2-D Brownian displacement exceeds 2.5 times
# its RMS with probability exp(-6.25) = 0.2 %. Measured on the README's movie
# (D dt / px^2 = 5): 1.5 left 3.8 tracks per particle, 2.5 left 2.1 (before the
# adaptive gate below).
BLUR_MERGE_STEPS = 2.5

# A track is taken for a duplicate of an older track on the same streak only while
# it has at most this many steps: duplicates are born on a streak before the
# merge radius is known; two established tracks that meet are two particles.
DUPLICATE_MAX_STEPS = 2

# Fast particles: a track whose own RMS step (over at least ADAPTIVE_GATE_MIN_STEPS
# steps) makes max_distance_um too tight gets a wider gate, ADAPTIVE_GATE_STEPS
# RMS steps (a 2-D Brownian step exceeds 3 RMS steps with probability e^-9), up to
# ADAPTIVE_GATE_MAX_SCALE times max_distance_um.
ADAPTIVE_GATE_STEPS = 3.0
ADAPTIVE_GATE_MIN_STEPS = 3
ADAPTIVE_GATE_MAX_SCALE = 4.0

# Identities by likelihood (see "Which track gets which detection"): each track's recent
# squared step is an exponentially weighted mean with this weight per step (about the
# last 10 steps: a track whose D changed is judged by its new steps), shrunk towards
# the step of the gate's scale, (max_distance_um / 3)^2, with the weight of one step.
STEP_MEMORY = 0.1
# Only components whose continuing tracks' step variances differ by more than this
# factor are re-paired: with equal variances (and elapsed frames) the likelihood
# pairing is the squared-distance one, and re-pairing costs an assignment per component.
LIKELIHOOD_MIN_RATIO = 1.5


@dataclass(frozen=True)
class LinkerConfig:
    """Parameters of :class:`OnlineLinker`, validated on creation.

    Attributes
    ----------
    max_distance_um : float
        Frame-to-frame search radius in um, > 0: a detection farther than this
        from a track's last position cannot continue a track seen in the
        previous frame. Choose a few times the RMS step ``sqrt(4 D dt)`` plus
        the localization error, and below the typical distance between
        particles.
    max_gap_frames : int
        Gap closing: a track missing in up to this many consecutive frames can
        still be continued, >= 0 (0 disables gap closing). The search radius
        for a track last seen ``n`` frames ago is ``max_distance_um * sqrt(n)``.
    gap_penalty : float
        Multiplier, >= 1, of the cost of a link per missing frame (u-track's
        ``gapPenalty``): a link across ``n - 1`` missing frames costs
        ``gap_penalty^(n - 1)`` times its diffusion-scaled squared distance.
        1 compares tracks purely by the diffusion model.
    birth_cost_um2 : float, optional
        Cost in um^2, > 0, of starting a track at a detection; default
        ``1.05 * max_distance_um^2 / 2``.
    death_cost_um2 : float, optional
        Cost in um^2, > 0, of ending a track at this frame; default
        ``1.05 * max_distance_um^2 / 2``.
    max_tracks : int, optional
        Guard, >= 1, on the number of tracks the linker keeps at once: a frame
        that would exceed it is refused with ``ValueError`` (the linker's
        state is left unchanged). None disables the guard.
    blur_merge_steps : float
        A detection that would start a track is merged into a track linked in
        the same frame when closer to that track's detection than this many
        times the track's RMS frame-to-frame step (see "Motion-blurred spots"),
        >= 0; 0 (default) disables merging: the linker alone does not know that
        its detections come from images. A live session sets
        :data:`BLUR_MERGE_STEPS`.
    blur_merge_min_step_um : float
        Only tracks whose RMS step is at least this (um, >= 0) merge: a streak
        much shorter than the PSF has one maximum (a live session uses the
        detector's spot radius).
    adaptive_gate : bool
        Widen the gate of a track whose own RMS step makes ``max_distance_um``
        too tight (see "Fast particles"); False: every track uses
        ``max_distance_um``.
    identity_by_likelihood : bool
        Re-pair competing tracks and detections by the likelihood of each track's
        own steps (see "Which track gets which detection"); False: the LAP's
        squared-distance pairing stands.
    """

    max_distance_um: float
    max_gap_frames: int = 2
    gap_penalty: float = 1.0
    birth_cost_um2: float | None = None
    death_cost_um2: float | None = None
    max_tracks: int | None = 100_000
    blur_merge_steps: float = 0.0
    blur_merge_min_step_um: float = 0.0
    adaptive_gate: bool = True
    identity_by_likelihood: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "max_distance_um", _validate.positive("max_distance_um", self.max_distance_um))
        set_(self, "max_gap_frames",
             _validate.positive_int("max_gap_frames", self.max_gap_frames, minimum=0))
        set_(self, "gap_penalty",
             _validate.in_range("gap_penalty", self.gap_penalty, 1.0, math.inf))
        for name in ("birth_cost_um2", "death_cost_um2"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, _validate.positive(name, value))
        if self.max_tracks is not None:
            set_(self, "max_tracks", _validate.positive_int("max_tracks", self.max_tracks))
        set_(self, "blur_merge_steps",
             _validate.in_range("blur_merge_steps", self.blur_merge_steps, 0.0, 10.0))
        set_(self, "blur_merge_min_step_um",
             _validate.non_negative("blur_merge_min_step_um", self.blur_merge_min_step_um))

    @property
    def alternative_costs_um2(self) -> tuple[float, float]:
        """``(birth, death)`` costs in um^2 in force, defaults resolved."""
        default = ALTERNATIVE_COST_FACTOR * self.max_distance_um**2 / 2.0
        birth = default if self.birth_cost_um2 is None else self.birth_cost_um2
        death = default if self.death_cost_um2 is None else self.death_cost_um2
        return birth, death


class OnlineLinker:
    """Streaming LAP linker with gap closing and bounded state.

    Feed frames in increasing order with :meth:`link`; after each frame call
    :meth:`ended` to collect (and make the linker forget) the tracks that can
    no longer be continued; call :meth:`close` at the end of the stream.

    Parameters
    ----------
    config : LinkerConfig
        Search radius, gap closing and alternative costs.

    Examples
    --------
    >>> linker = OnlineLinker(LinkerConfig(max_distance_um=1.0))
    >>> linker.link(0, np.array([[1.0, 1.0], [5.0, 5.0]])).tolist()
    [0, 1]
    >>> linker.link(1, np.array([[5.2, 5.0], [1.1, 0.9], [9.0, 9.0]])).tolist()
    [1, 0, 2]
    """

    def __init__(self, config: LinkerConfig) -> None:
        if not isinstance(config, LinkerConfig):
            raise ValueError(f"config must be a LinkerConfig, got {type(config).__name__}")
        self.config = config
        self._birth, self._death = config.alternative_costs_um2
        # One row per kept track: id, head position (um), frame last seen.
        self._ids: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._xy: NDArray[np.float64] = np.empty((0, 2), dtype=np.float64)
        self._last: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        # Per track: sum of squared steps scaled to one frame (um^2) and their count,
        # for the blur-merge radius.
        self._s2: NDArray[np.float64] = np.empty(0, dtype=np.float64)
        self._ns: NDArray[np.int64] = np.empty(0, dtype=np.int64)
        # Per track: exponentially weighted sum of squared steps per frame (um^2), for the
        # likelihood of its next step (the sum of its weights follows from _ns).
        self._ew: NDArray[np.float64] = np.empty(0, dtype=np.float64)
        self.n_merged = 0
        """Detections merged into another detection's track (motion-blurred spots), so far."""
        # Ids dropped because a later frame skipped past them, not yet reported.
        self._pending_ended: list[int] = []
        self._next_id = 0
        self._frame: int | None = None

    @property
    def active_count(self) -> int:
        """Number of tracks the linker keeps: those that can still be continued."""
        return int(self._ids.shape[0])

    @property
    def last_frame(self) -> int | None:
        """The latest frame linked or declared done by :meth:`ended`; None before any."""
        return self._frame

    def link(self, frame: int, positions_um: ArrayLike,
             weights: ArrayLike | None = None) -> NDArray[np.int64]:
        """Assign one frame's detections to tracks; the assignment is final.

        Parameters
        ----------
        frame : int
            Frame index, >= 0 and greater than every frame passed before (to
            :meth:`link` or :meth:`ended`). Skipped frame numbers count as
            frames with no detection.
        positions_um : array_like, shape (K, 2)
            Detections ``(x, y)`` in um, finite; ``K = 0`` is an empty frame.
        weights : array_like, shape (K,), optional
            Weight of each detection (e.g. photons, > 0) in the mean position of
            detections merged into one track; None: equal weights.

        Returns
        -------
        ndarray of int64, shape (K,)
            Track id of each detection: the id of the track it continues, or a
            new id (counting up from 0 over the linker's life) for a birth.
            Detections merged as one motion-blurred spot share an id
            (:func:`merge_same_track` makes them one point).

        Raises
        ------
        ValueError
            If ``frame`` is not increasing, ``positions_um`` is not finite of
            shape (K, 2), or the frame would exceed ``max_tracks``.
        """
        f = _validate.positive_int("frame", frame, minimum=0)
        if self._frame is not None and f <= self._frame:
            raise ValueError(f"frame must be greater than the last frame {self._frame}, got {f}")
        pos = _positions("positions_um", positions_um)
        cfg = self.config

        # Tracks already past the gap limit at this frame (ended() was not
        # called for the frames in between) cannot take part; keep them aside.
        alive = (f - self._last - 1) <= cfg.max_gap_frames
        ids, xy, last = self._ids[alive], self._xy[alive], self._last[alive]
        s2, ns, ew = self._s2[alive], self._ns[alive], self._ew[alive]

        det_track = self._assign(f, xy, last, pos, self._gate_scale(s2, ns),
                                 self._step_variance(ew, ns) if cfg.identity_by_likelihood
                                 else None)
        n_merged, dup = self._merge_blurred(det_track, pos, ids, xy, last, s2, ns, f)
        born = det_track < 0
        n_born = int(np.count_nonzero(born))
        n_kept = ids.shape[0] + n_born
        if cfg.max_tracks is not None and n_kept > cfg.max_tracks:
            raise ValueError(
                f"positions_um: frame {f} would make the linker keep {n_kept} tracks, "
                f"more than max_tracks={cfg.max_tracks}"
            )

        # Commit only now, so a refused frame leaves the state as it was
        # (ids, xy and last are copies: boolean indexing copies).
        out = np.empty(pos.shape[0], dtype=np.int64)
        linked = ~born
        out[linked] = ids[det_track[linked]]
        new_ids = np.arange(self._next_id, self._next_id + n_born, dtype=np.int64)
        out[born] = new_ids
        heads = det_track[linked]
        if n_merged:  # the head of a merged track is its detections' weighted mean
            w = (np.ones(pos.shape[0]) if weights is None
                 else np.maximum(np.asarray(weights, dtype=np.float64).reshape(-1), 1e-12))
            wl = w[linked]
            tw = np.bincount(heads, weights=wl, minlength=xy.shape[0])
            new_xy = np.column_stack([
                np.bincount(heads, weights=wl * pos[linked, a], minlength=xy.shape[0])
                for a in range(2)]) / np.maximum(tw, 1e-300)[:, None]
            u = np.unique(heads)
            step2 = np.sum((new_xy[u] - xy[u]) ** 2, axis=1) / (f - last[u])
            xy[u] = new_xy[u]
        else:
            u = heads
            step2 = np.sum((pos[linked] - xy[u]) ** 2, axis=1) / (f - last[u])
            xy[u] = pos[linked]
        s2[u] += step2
        ns[u] += 1
        ew[u] = (1.0 - STEP_MEMORY) * ew[u] + STEP_MEMORY * step2
        last[u] = f
        self.n_merged += n_merged
        self._pending_ended.extend(self._ids[~alive].tolist())
        if dup.size:  # duplicate tracks of a blurred spot end now
            self._pending_ended.extend(ids[dup].tolist())
            keep = np.ones(ids.shape[0], dtype=bool)
            keep[dup] = False
            ids, xy, last, s2, ns = ids[keep], xy[keep], last[keep], s2[keep], ns[keep]
            ew = ew[keep]
        self._ids = np.concatenate([ids, new_ids])
        self._xy = np.concatenate([xy, pos[born]])
        self._last = np.concatenate([last, np.full(n_born, f, dtype=np.int64)])
        self._s2 = np.concatenate([s2, np.zeros(n_born)])
        self._ns = np.concatenate([ns, np.zeros(n_born, dtype=np.int64)])
        self._ew = np.concatenate([ew, np.zeros(n_born)])
        self._next_id += n_born
        self._frame = f
        return out

    def ended(self, frame: int) -> list[int]:
        """Report and forget the tracks that can no longer be continued after ``frame``.

        A track last seen at frame ``s`` can be continued up to frame
        ``s + max_gap_frames + 1``; once ``frame`` reaches that, it has ended.

        Parameters
        ----------
        frame : int
            The frame the stream has reached, >= the last frame linked. Frames
            up to it that were never linked count as empty, and the next
            :meth:`link` must be for a later frame.

        Returns
        -------
        list of int
            Ids of the ended tracks, ascending; each id is reported once.

        Raises
        ------
        ValueError
            If ``frame`` is before the last frame linked.
        """
        f = _validate.positive_int("frame", frame, minimum=0)
        if self._frame is not None and f < self._frame:
            raise ValueError(f"frame must be >= the last frame {self._frame}, got {f}")
        done = self._last <= f - self.config.max_gap_frames - 1
        out = self._pending_ended + self._ids[done].tolist()
        keep = ~done
        self._ids, self._xy, self._last = self._ids[keep], self._xy[keep], self._last[keep]
        self._s2, self._ns, self._ew = self._s2[keep], self._ns[keep], self._ew[keep]
        self._pending_ended = []
        self._frame = f
        return sorted(out)

    def close(self) -> list[int]:
        """End every track (end of stream) and return their ids, ascending.

        The linker stays usable: later frames start new tracks with new ids.
        """
        out = self._pending_ended + self._ids.tolist()
        self._ids = np.empty(0, dtype=np.int64)
        self._xy = np.empty((0, 2), dtype=np.float64)
        self._last = np.empty(0, dtype=np.int64)
        self._s2 = np.empty(0, dtype=np.float64)
        self._ns = np.empty(0, dtype=np.int64)
        self._ew = np.empty(0, dtype=np.float64)
        self._pending_ended = []
        return sorted(out)

    def _merge_blurred(
        self,
        det_track: NDArray[np.int64],
        pos: NDArray[np.float64],
        ids: NDArray[np.int64],
        xy: NDArray[np.float64],
        last: NDArray[np.int64],
        s2: NDArray[np.float64],
        ns: NDArray[np.int64],
        frame: int,
    ) -> tuple[int, NDArray[np.int64]]:
        """Merge detections on one blur streak into one track (``det_track`` in place).

        Returns the number of detections merged and the rows of tracks that were
        duplicates of an older track on the same streak (to be ended now).
        """
        k = self.config.blur_merge_steps
        linked = np.flatnonzero(det_track >= 0)
        none = np.empty(0, dtype=np.int64)
        if k <= 0 or linked.size == 0 or pos.shape[0] < 2:
            return 0, none
        t = det_track[linked]
        el = (frame - last[t]).astype(np.float64)
        now2 = np.sum((pos[linked] - xy[t]) ** 2, axis=1) / el
        # The track's RMS step including this frame's: a track seen once has one step.
        rms = np.sqrt((s2[t] + now2) / (ns[t] + 1))
        radius = np.where(rms >= self.config.blur_merge_min_step_um, k * rms, 0.0)
        if not np.any(radius > 0):
            return 0, none
        tree = cKDTree(pos[linked])
        n_merged = 0
        # 1. A would-be birth on a linked track's streak joins that track.
        born = np.flatnonzero(det_track < 0)
        if born.size:
            pairs = tree.sparse_distance_matrix(cKDTree(pos[born]), float(radius.max()),
                                                output_type="ndarray")
            li, bj, dist = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]
            gate = self.config.max_distance_um * np.sqrt(el[li])
            ok = (dist <= radius[li]) & (np.hypot(*(pos[born[bj]] - xy[t[li]]).T) <= gate)
            if np.any(ok):
                li, bj, dist = li[ok], bj[ok], dist[ok]
                sel = _first_per_group(bj, dist)  # the nearest linked detection per birth
                det_track[born[bj[sel]]] = t[li[sel]]
                n_merged += int(sel.size)
        # 2. Two tracks on one streak (both born on it before a step was known): the
        # younger one's detection joins the older track, and the younger track ends
        # (only while it is at most DUPLICATE_MAX_STEPS steps old).
        young = np.flatnonzero(ns[t] <= DUPLICATE_MAX_STEPS)
        if young.size == 0:  # the usual frame: no young track, nothing to test
            return n_merged, none
        pairs = tree.sparse_distance_matrix(cKDTree(pos[linked[young]]), float(radius.max()),
                                            output_type="ndarray")
        i, j, dist = pairs["i"].astype(np.int64), young[pairs["j"]], pairs["v"]
        older = (ids[t[i]] < ids[t[j]])
        r_old = radius[i]
        heads_apart = np.hypot(*(xy[t[i]] - xy[t[j]]).T)
        ok = older & (ns[t[j]] <= DUPLICATE_MAX_STEPS) & (dist <= r_old) & (heads_apart <= r_old)
        ended: list[int] = []
        if np.any(ok):
            i, j, dist = i[ok], j[ok], dist[ok]
            gone: set[int] = set()
            for a_, b_ in zip(i[np.argsort(dist)].tolist(), j[np.argsort(dist)].tolist(),
                              strict=True):
                if a_ in gone or b_ in gone:
                    continue
                gone.add(b_)
                ended.append(int(t[b_]))
                det_track[det_track == t[b_]] = t[a_]
                n_merged += 1
        return n_merged, np.asarray(ended, dtype=np.int64)

    def _step_variance(self, ew: NDArray[np.float64],
                       ns: NDArray[np.int64]) -> NDArray[np.float64]:
        """Per track: per-axis variance of its next one-frame step, um^2.

        The recent mean squared step, shrunk towards the gate's (module docstring,
        "Which track gets which detection").
        """
        prior = (self.config.max_distance_um / ADAPTIVE_GATE_STEPS) ** 2
        weights = 1.0 - (1.0 - STEP_MEMORY) ** ns  # of the steps in ew: one per step
        return (ew + STEP_MEMORY * prior) / (weights + STEP_MEMORY) / 2.0

    def _gate_scale(self, s2: NDArray[np.float64], ns: NDArray[np.int64]) -> NDArray[np.float64]:
        """Per track: its gate over ``max_distance_um`` (>= 1; see "Fast particles")."""
        if not self.config.adaptive_gate:
            return np.ones(s2.shape[0])
        rms = np.sqrt(s2 / np.maximum(ns, 1))
        scale = np.where(ns >= ADAPTIVE_GATE_MIN_STEPS,
                         ADAPTIVE_GATE_STEPS * rms / self.config.max_distance_um, 1.0)
        return np.clip(scale, 1.0, ADAPTIVE_GATE_MAX_SCALE)

    def _assign(
        self,
        frame: int,
        xy: NDArray[np.float64],
        last: NDArray[np.int64],
        pos: NDArray[np.float64],
        scale: NDArray[np.float64] | None = None,
        step_var: NDArray[np.float64] | None = None,
    ) -> NDArray[np.int64]:
        """Index into the given heads of the track each detection continues, -1 for a birth.

        ``step_var`` (per track, um^2): re-pair the linked tracks and detections of each
        component by likelihood (module docstring); None: by the LAP's cost alone.
        """
        n, k = xy.shape[0], pos.shape[0]
        det_track = np.full(k, -1, dtype=np.int64)
        if n == 0 or k == 0:
            return det_track
        cfg = self.config
        if scale is None:
            scale = np.ones(n)
        elapsed = frame - last  # >= 1
        # Gate with the largest radius any head may have, then per head.
        r_max = cfg.max_distance_um * float(scale.max()) * math.sqrt(int(elapsed.max()))
        pairs = cKDTree(xy).sparse_distance_matrix(cKDTree(pos), r_max, output_type="ndarray")
        ti = pairs["i"].astype(np.int64)
        dj = pairs["j"].astype(np.int64)
        dist = pairs["v"] / scale[pairs["i"].astype(np.int64)]  # in units of the track's gate
        n_el = elapsed[ti].astype(np.float64)
        cost = dist**2 / n_el * cfg.gap_penalty ** (n_el - 1.0)
        # A link dearer than death + birth is never chosen: drop it early so
        # it does not glue unrelated components together.
        ok = (dist <= cfg.max_distance_um * np.sqrt(n_el)) & (cost < self._birth + self._death)
        nll = None
        if step_var is not None:  # minus the log-likelihood of each step, up to a constant
            v = step_var[ti] * n_el
            nll = (pairs["v"] ** 2 / (2.0 * v) + np.log(v))[ok]
        ti, dj, cost = ti[ok], dj[ok], cost[ok]
        if ti.size == 0:
            return det_track
        if np.bincount(ti).max() == 1 and np.bincount(dj).max() == 1:
            # No track or detection has two candidates (common in sparse
            # scenes): every edge is its own component, and is taken.
            det_track[dj] = ti
            return det_track

        # Connected components of the gated bipartite graph are independent
        # assignment problems.
        edge_label = _components(ti, dj, n, k)
        n_labels = int(edge_label.max()) + 1
        first_t = np.unique(ti, return_index=True)[1]
        first_d = np.unique(dj, return_index=True)[1]
        tracks_in = np.bincount(edge_label[first_t], minlength=n_labels)
        dets_in = np.bincount(edge_label[first_d], minlength=n_labels)
        # A component with one track (or one detection) is a star: its
        # optimum is the cheapest edge, since every edge beats death + birth.
        # Most components are stars (usually a single edge), so take them
        # all at once without solving anything.
        star = (tracks_in[edge_label] == 1) | (dets_in[edge_label] == 1)
        s = np.flatnonzero(star)
        best = s[_first_per_group(edge_label[s], cost[s])]
        det_track[dj[best]] = ti[best]

        rest = np.flatnonzero(~star)
        if rest.size:
            self._solve_components(rest, ti, dj, cost, edge_label, det_track, nll, step_var)
        return det_track

    def _solve_components(
        self,
        rest: NDArray[np.int64],
        ti: NDArray[np.int64],
        dj: NDArray[np.int64],
        cost: NDArray[np.float64],
        edge_label: NDArray[np.int64],
        det_track: NDArray[np.int64],
        nll: NDArray[np.float64] | None = None,
        step_var: NDArray[np.float64] | None = None,
    ) -> None:
        """Solve each remaining component's augmented LAP, writing links into ``det_track``.

        With ``nll`` (per edge) and ``step_var`` (per track), the component's linked
        tracks and detections are then re-paired by least total ``nll`` over the same
        edges where their step variances differ (:data:`LIKELIHOOD_MIN_RATIO`).
        """
        rest = rest[np.argsort(edge_label[rest], kind="stable")]
        lab = edge_label[rest]
        # Number each component's tracks and detections 0, 1, ... in one
        # vectorised pass (np.unique per component costs more than the LAP).
        tracks, t_start, t_local = _local_index(ti[rest], lab)
        dets, d_start, d_local = _local_index(dj[rest], lab)
        e_start = np.searchsorted(lab, np.unique(lab))
        bounds = np.append(e_start, lab.size)
        for c in range(e_start.size):
            e = slice(bounds[c], bounds[c + 1])
            ct = tracks[t_start[c]:t_start[c + 1]]
            cd = dets[d_start[c]:d_start[c + 1]]
            rows, cols = _augmented_lap(t_local[e], d_local[e], cost[rest[e]], ct.size, cd.size,
                                        self._birth, self._death)
            if nll is not None and step_var is not None and rows.size >= 2:
                v = step_var[ct[rows]]
                if v.max() > LIKELIHOOD_MIN_RATIO * v.min():
                    rows, cols = _repair_by_likelihood(t_local[e], d_local[e], nll[rest[e]],
                                                       rows, cols)
            det_track[cd[cols]] = ct[rows]


def _repair_by_likelihood(
    ii: NDArray[np.int64],
    jj: NDArray[np.int64],
    nll: NDArray[np.float64],
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Re-pair one component's linked tracks ``rows`` and detections ``cols`` by likelihood.

    Least total ``nll`` over the component's allowed edges ``(ii, jj)``; the LAP's
    pairing is one of the candidates, so a pairing always exists.
    """
    if rows.size == 2 and ii.size <= 4:  # the usual case: two tracks, two detections
        e = {(int(a), int(b)): float(v) for a, b, v in zip(ii, jj, nll, strict=True)}
        r0, r1, c0, c1 = int(rows[0]), int(rows[1]), int(cols[0]), int(cols[1])
        swapped = (r0, c1) in e and (r1, c0) in e
        if swapped and e[(r0, c1)] + e[(r1, c0)] < e[(r0, c0)] + e[(r1, c1)]:
            return rows, cols[::-1].copy()
        return rows, cols
    t_pos = np.full(int(ii.max()) + 1, -1)
    t_pos[rows] = np.arange(rows.size)
    d_pos = np.full(int(jj.max()) + 1, -1)
    d_pos[cols] = np.arange(cols.size)
    keep = (t_pos[ii] >= 0) & (d_pos[jj] >= 0)
    m = np.full((rows.size, cols.size), np.inf)
    m[t_pos[ii[keep]], d_pos[jj[keep]]] = nll[keep]
    r, c = linear_sum_assignment(m)
    return rows[r], cols[c]


def _first_per_group(group: NDArray[np.integer[Any]],
                     key: NDArray[np.float64]) -> NDArray[np.intp]:
    """Index of the smallest ``key`` in each group, groups in increasing order."""
    order = np.lexsort((key, group))
    first = np.ones(order.size, dtype=bool)
    first[1:] = group[order[1:]] != group[order[:-1]]
    return order[first]


def _components(
    ti: NDArray[np.int64], dj: NDArray[np.int64], n: int, k: int
) -> NDArray[np.int64]:
    """Connected component of each edge of the bipartite graph of ``n`` tracks and ``k`` detections.

    Labels are arbitrary non-negative integers, equal for edges of one component.
    """
    if ti.size > _PROPAGATION_MAX_EDGES:
        graph = coo_matrix((np.ones(ti.size), (ti, n + dj)), shape=(n + k, n + k))
        return connected_components(graph, directed=False)[1][ti].astype(np.int64)
    # Small graphs (the usual case): label propagation with pointer jumping,
    # several times faster than building a scipy.sparse graph. Each track's
    # label is the smallest track index reachable so far.
    lab = np.arange(n)
    while True:
        d_lab = np.full(k, n)
        np.minimum.at(d_lab, dj, lab[ti])
        new = lab.copy()
        np.minimum.at(new, ti, d_lab[dj])
        while True:  # labels are track indices: follow them to their root
            root = new[new]
            if np.array_equal(root, new):
                break
            new = root
        if np.array_equal(new, lab):
            return lab[ti]
        lab = new


def _local_index(
    nodes: NDArray[np.int64], lab: NDArray[np.integer[Any]]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Number the distinct ``nodes`` of each component (``lab`` sorted) from 0.

    Returns the distinct nodes grouped by component, the start of each
    component's group in that array (plus the end), and each entry's number
    within its component.
    """
    base = int(nodes.max()) + 1
    uniq, inverse = np.unique(lab.astype(np.int64) * base + nodes, return_inverse=True)
    u_lab = uniq // base
    starts = np.searchsorted(u_lab, np.unique(u_lab))
    group_start = np.append(starts, uniq.size)
    first_of = np.repeat(starts, np.diff(group_start))
    local = (np.arange(uniq.size) - first_of)[inverse]
    return uniq - u_lab * base, group_start, local


def _augmented_lap(
    ii: NDArray[np.int64],
    jj: NDArray[np.int64],
    cost: NDArray[np.float64],
    n: int,
    m: int,
    birth: float,
    death: float,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Solve one component's augmented LAP; return its linked (track, detection) local indices.

    ``ii``, ``jj`` and ``cost`` list the allowed links between ``n`` tracks and
    ``m`` detections.
    """
    big = np.full((n + m, m + n), np.inf)
    big[ii, jj] = cost  # links
    big[np.arange(n), m + np.arange(n)] = death  # track i ends
    big[n + np.arange(m), np.arange(m)] = birth  # detection j starts a track
    # Auxiliary block: the transpose of the link pattern, so that the birth
    # row of a linked detection can fill the death column of its track. Cost
    # 0, so a link is taken when cost < birth + death (see module docstring).
    big[n + jj, m + ii] = 0.0
    rows, cols = linear_sum_assignment(big)
    is_link = (rows < n) & (cols < m)
    return rows[is_link], cols[is_link]


def _positions(name: str, values: Any) -> NDArray[np.float64]:
    """Return ``values`` as a finite float64 (K, 2) array, K >= 0, or raise naming ``name``."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (K, 2), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def merge_same_track(
    track_ids: NDArray[np.int64],
    xy_um: NDArray[np.float64],
    precision_um: NDArray[np.float64],
    weights: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """One point per track from a frame's detections (merging a blurred spot's maxima).

    Parameters
    ----------
    track_ids : ndarray of int, shape (K,)
        Track id of each detection (:meth:`OnlineLinker.link`; merged
        detections share one).
    xy_um : ndarray, shape (K, 2)
        Positions, um.
    precision_um : ndarray, shape (K,)
        Localization precision per axis, um.
    weights : ndarray, shape (K,), optional
        Weights of the mean position (e.g. photons); None: equal.

    Returns
    -------
    representative : ndarray of int, shape (P,)
        For each point, the detection with the largest weight (for per-detection
        data such as image patches).
    ids : ndarray of int, shape (P,)
    xy_um : ndarray, shape (P, 2)
        Weighted mean position of the track's detections.
    precision_um : ndarray, shape (P,)
        Per axis: the weighted mean's propagated precision combined in
        quadrature with the RMS spread of the merged detections about their mean
        (a streak's fitted maxima are not its exposure-mean position).

    Notes
    -----
    Without duplicates the inputs are returned unchanged (same order).
    """
    ids = np.asarray(track_ids, dtype=np.int64)
    uniq, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    if uniq.size == ids.size:
        return np.arange(ids.size), ids, xy_um, precision_um
    w = (np.ones(ids.size) if weights is None
         else np.maximum(np.asarray(weights, dtype=np.float64).reshape(-1), 1e-12))
    tw = np.bincount(inv, weights=w)
    mx = np.bincount(inv, weights=w * xy_um[:, 0]) / tw
    my = np.bincount(inv, weights=w * xy_um[:, 1]) / tw
    var_mean = np.bincount(inv, weights=(w * precision_um) ** 2) / tw**2
    spread = np.bincount(inv, weights=w * ((xy_um[:, 0] - mx[inv]) ** 2
                                           + (xy_um[:, 1] - my[inv]) ** 2) / 2.0) / tw
    prec = np.sqrt(var_mean + spread / counts)
    # Representative: the heaviest detection of each track, in first-appearance order.
    rep_by_track = _first_per_group(inv, -w)  # indexed by position in ``uniq``
    appear = np.unique(inv, return_index=True)[1]
    seq = np.argsort(appear, kind="stable")  # tracks in order of first detection
    return (rep_by_track[seq], uniq[seq], np.column_stack([mx, my])[seq],
            np.where(counts > 1, prec, np.asarray(precision_um)[rep_by_track])[seq])
