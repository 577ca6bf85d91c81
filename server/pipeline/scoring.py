"""Scoring of results against ground truth: detections, links and change points.

What the tests and benchmarks use to measure the pipeline on simulated data,
kept out of the live modules: :mod:`livespt.server.pipeline.detect`,
:mod:`~livespt.server.pipeline.link` and :mod:`~livespt.server.pipeline.changepoint`
hold only what a session runs, and the live path (server, sessions, pipeline)
never imports this module (``tests/test_layout.py`` checks it).

Detections (one frame, :func:`match_detections`; a movie, :func:`score_movie`):
minimum-cost (Hungarian) assignment of detections to true particles within a
pairing radius, with fair-counting rules for the border and for close pairs,
:func:`common_errors` to compare position errors of several detectors on the
particles all of them found, and :func:`best_f1_threshold` to compare detectors
each at its best threshold. Links (:func:`link_scores`): link precision and
recall over consecutive detections. Change points (:func:`match_change_points`):
minimum-cost matching within a tolerance, as in the AnDi 2024 challenge.

Costs: one ``scipy.optimize.linear_sum_assignment`` per frame (detections) or
per track (change points) on the pairs within reach; :func:`link_scores` is two
sorts of the N detections. Nothing is kept between calls.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from livespt.models import _validate

__all__ = [
    "DetectionMatch",
    "DetectionScore",
    "LinkScores",
    "best_f1_threshold",
    "change_point_pairs",
    "common_errors",
    "link_scores",
    "match_change_points",
    "match_detections",
    "score_movie",
]


# -------------------------------------------------------------------- detections
@dataclass(frozen=True, eq=False)
class DetectionMatch:
    """Detections of one frame matched to the ground truth (:func:`match_detections`).

    Attributes
    ----------
    n_true_positive, n_false_positive, n_false_negative : int
        Counts over the particles and detections that are scored.
    n_ignored_truth : int
        Ground-truth particles not scored (near the border, not emitting, or
        the unresolved partner of a close pair).
    errors_px : ndarray, shape (n_true_positive, 2)
        Detected minus true position ``(dx, dy)`` of each true positive, pixels.
    detection_index, truth_index : ndarray of int
        Indices of the true-positive pairs in the inputs.
    """

    n_true_positive: int
    n_false_positive: int
    n_false_negative: int
    n_ignored_truth: int
    errors_px: NDArray[np.float64]
    detection_index: NDArray[np.intp]
    truth_index: NDArray[np.intp]


def match_detections(
    detected_xy_px: Any,
    true_xy_px: Any,
    shape_px: tuple[int, int],
    *,
    max_distance_px: float = 2.0,
    border_px: float = 2.0,
    close_pair_px: float = 2.5,
    emitting: Any = None,
) -> DetectionMatch:
    """Score one frame's detections against ground truth by optimal (Hungarian) assignment.

    Detections and particles are paired one to one, minimising the summed
    distance over pairs closer than ``max_distance_px``
    (``scipy.optimize.linear_sum_assignment``). Fair-counting rules:

    * particles whose true position lies within ``border_px`` of the frame edge,
      or that emit no photons, are not scored, and neither are unpaired
      detections within ``border_px`` of the edge (they may be particles just
      outside the field of view);
    * particles closer than ``close_pair_px`` to each other (connected groups)
      cannot be resolved by a diffraction-limited detector: a group counts as
      found when at least one member is paired; its unpaired members are then
      not scored (neither missed nor found); an unpaired group is one miss per
      member.

    Parameters
    ----------
    detected_xy_px : array_like, shape (K, 2)
        Detected ``(x, y)`` in pixels.
    true_xy_px : array_like, shape (P, 2)
        True ``(x, y)`` in pixels (e.g. ``x_um / pixel_size_um``).
    shape_px : tuple of int
        ``(height, width)`` of the frame.
    max_distance_px, border_px, close_pair_px : float
        Pairing radius, border margin and close-pair distance in pixels.
    emitting : array_like of bool, shape (P,), optional
        Which particles emit in this frame (default: all).

    Returns
    -------
    DetectionMatch
        Counts, position errors and the matched pairs.
    """
    det = np.asarray(detected_xy_px, dtype=np.float64).reshape(-1, 2)
    tru = np.asarray(true_xy_px, dtype=np.float64).reshape(-1, 2)
    h, w = shape_px
    maxd = _validate.positive("max_distance_px", max_distance_px)
    bpx = _validate.non_negative("border_px", border_px)
    close = _validate.non_negative("close_pair_px", close_pair_px)
    emit = np.ones(len(tru), dtype=bool) if emitting is None else \
        np.asarray(emitting, dtype=bool).reshape(-1)
    if emit.shape[0] != tru.shape[0]:
        raise ValueError(f"emitting must have {tru.shape[0]} entries, got {emit.shape[0]}")

    def in_band(xy: NDArray[np.float64]) -> NDArray[np.bool_]:
        return ((xy[:, 0] < -0.5 + bpx) | (xy[:, 0] > w - 0.5 - bpx)
                | (xy[:, 1] < -0.5 + bpx) | (xy[:, 1] > h - 0.5 - bpx))

    det_idx = np.zeros(0, dtype=np.intp)
    tru_idx = np.zeros(0, dtype=np.intp)
    if len(det) and len(tru):
        # Only detections and particles with a partner within reach take part:
        # keeps the dense assignment small for permissive thresholds.
        near = cKDTree(tru).query_ball_point(det, maxd)
        rows = np.flatnonzero([len(n) > 0 for n in near])
        if rows.size:
            cols = np.unique(np.concatenate([near[i] for i in rows])).astype(np.intp)
            sub_d, sub_t = det[rows], tru[cols]
            dist = np.hypot(sub_d[:, None, 0] - sub_t[None, :, 0],
                            sub_d[:, None, 1] - sub_t[None, :, 1])
            big = 1e6
            cost = np.where(dist <= maxd, dist, big)
            ri, ci = linear_sum_assignment(cost)
            good = cost[ri, ci] < big
            det_idx, tru_idx = rows[ri[good]], cols[ci[good]]

    scored = emit & ~in_band(tru)
    paired_t = np.zeros(len(tru), dtype=bool)
    paired_t[tru_idx] = True
    paired_d = np.zeros(len(det), dtype=bool)
    paired_d[det_idx] = True
    # Close groups (connected components of pairs closer than close_pair_px).
    group = np.arange(len(tru))
    if close > 0 and len(tru) > 1:
        pairs = cKDTree(tru).query_pairs(close, output_type="ndarray")
        if len(pairs):
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components

            g = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                           shape=(len(tru), len(tru)))
            _, group = connected_components(g, directed=False)
    group_found = np.zeros(group.max() + 1 if len(group) else 0, dtype=bool)
    np.logical_or.at(group_found, group, paired_t)
    unresolved = ~paired_t & group_found[group]  # partner of a found close pair
    tp_mask = scored[tru_idx]
    fn = int((scored & ~paired_t & ~unresolved).sum())
    ignored = int((~scored).sum() + (scored & unresolved).sum())
    fp = int((~paired_d & ~in_band(det)).sum())
    di, ti = det_idx[tp_mask], tru_idx[tp_mask]
    return DetectionMatch(
        n_true_positive=int(tp_mask.sum()),
        n_false_positive=fp,
        n_false_negative=fn,
        n_ignored_truth=ignored,
        errors_px=det[di] - tru[ti],
        detection_index=di,
        truth_index=ti,
    )


@dataclass(frozen=True, eq=False)
class DetectionScore:
    """Detections of a whole movie scored against its ground truth (:func:`score_movie`).

    Attributes
    ----------
    n_true_positive, n_false_positive, n_false_negative : int
        Sums over the frames of :class:`DetectionMatch`.
    errors_px : ndarray, shape (n_true_positive, 2)
        Detected minus true ``(dx, dy)`` of every true positive, pixels.
    """

    n_true_positive: int
    n_false_positive: int
    n_false_negative: int
    errors_px: NDArray[np.float64]

    @property
    def recall(self) -> float:
        """True positives over scored particles (0 when none)."""
        return self.n_true_positive / max(self.n_true_positive + self.n_false_negative, 1)

    @property
    def precision(self) -> float:
        """True positives over scored detections (0 when none)."""
        return self.n_true_positive / max(self.n_true_positive + self.n_false_positive, 1)

    @property
    def f1(self) -> float:
        """Harmonic mean of recall and precision."""
        r, p = self.recall, self.precision
        return 2 * r * p / max(r + p, 1e-12)

    def counts(self) -> dict[str, Any]:
        """Counts, recall, precision and F1 (rounded to 4 decimals) for reports."""
        return {"true_positives": self.n_true_positive,
                "false_positives": self.n_false_positive,
                "false_negatives": self.n_false_negative,
                "recall": round(self.recall, 4), "precision": round(self.precision, 4),
                "f1": round(self.f1, 4)}

    @property
    def rmse_px(self) -> float:
        """Root-mean-square position error per axis, pixels (NaN without true positives)."""
        e = self.errors_px
        return float(np.sqrt((e**2).mean())) if len(e) else math.nan

    @property
    def median_error_px(self) -> float:
        """Median 2D distance to the truth, pixels (NaN without true positives)."""
        e = self.errors_px
        return float(np.median(np.hypot(e[:, 0], e[:, 1]))) if len(e) else math.nan


def score_movie(
    xy_per_frame: Any,
    ground_truth: Any,
    pixel_size_um: float,
    shape_px: tuple[int, int],
    *,
    max_distance_px: float = 2.0,
) -> DetectionScore:
    """Score the detections of every frame of a simulated movie (:func:`match_detections`).

    Parameters
    ----------
    xy_per_frame : sequence of array_like, shape (K_t, 2)
        Detected ``(x, y)`` in pixels, one array per frame from frame 0.
    ground_truth : pandas.DataFrame
        One row per particle and frame with ``frame``, ``x_um``, ``y_um`` and
        ``photons`` (as :func:`livespt.models.simulate.simulate_movie` gives); particles
        with no photons in a frame are not scored there.
    pixel_size_um : float
        Pixel size, um.
    shape_px : tuple of int
        ``(height, width)`` of the frames.
    max_distance_px : float
        Pairing radius, pixels.

    Returns
    -------
    DetectionScore
        Counts and position errors summed over the frames.
    """
    px = _validate.positive("pixel_size_um", pixel_size_um)
    frames = ground_truth["frame"].to_numpy()
    xy_true = ground_truth[["x_um", "y_um"]].to_numpy() / px
    emitting = ground_truth["photons"].to_numpy() > 0
    tp = fp = fn = 0
    errors = [np.zeros((0, 2))]
    for t, xy in enumerate(xy_per_frame):
        rows = frames == t
        m = match_detections(xy, xy_true[rows], shape_px, max_distance_px=max_distance_px,
                             emitting=emitting[rows])
        tp, fp, fn = tp + m.n_true_positive, fp + m.n_false_positive, fn + m.n_false_negative
        errors.append(m.errors_px)
    return DetectionScore(tp, fp, fn, np.concatenate(errors))


def common_errors(
    xy_by_method: dict[str, Any],
    ground_truth: Any,
    pixel_size_um: float,
    shape_px: tuple[int, int],
    *,
    max_distance_px: float = 2.0,
) -> dict[str, NDArray[np.float64]]:
    """Position errors of several detectors over the particles that all of them found.

    Methods find different hard cases (close pairs, blurred spots); comparing
    their RMSE over all their own true positives would penalise the one with
    the higher recall. Frames and scoring rules as :func:`score_movie`.

    Parameters
    ----------
    xy_by_method : dict of str to sequence of array_like, shape (K_t, 2)
        For each method, detected ``(x, y)`` in pixels, one array per frame.
    ground_truth, pixel_size_um, shape_px, max_distance_px
        As :func:`score_movie`.

    Returns
    -------
    dict of str to ndarray, shape (n, 2)
        For each method, detected minus true ``(dx, dy)`` in pixels of the same
        ``n`` particle-frames, in the same order.
    """
    px = _validate.positive("pixel_size_um", pixel_size_um)
    frames = ground_truth["frame"].to_numpy()
    xy_true = ground_truth[["x_um", "y_um"]].to_numpy() / px
    emitting = ground_truth["photons"].to_numpy() > 0
    n_frames = len(next(iter(xy_by_method.values())))
    errors: dict[str, list[NDArray[np.float64]]] = {k: [np.zeros((0, 2))] for k in xy_by_method}
    for t in range(n_frames):
        rows = frames == t
        matches = {k: match_detections(v[t], xy_true[rows], shape_px,
                                       max_distance_px=max_distance_px, emitting=emitting[rows])
                   for k, v in xy_by_method.items()}
        common = functools.reduce(np.intersect1d, [m.truth_index for m in matches.values()])
        for k, m in matches.items():
            order = np.argsort(m.truth_index)
            keep = order[np.isin(m.truth_index[order], common)]
            errors[k].append(m.errors_px[keep])
    return {k: np.concatenate(e) for k, e in errors.items()}


def best_f1_threshold(
    per_frame: Any,
    ground_truth: Any,
    pixel_size_um: float,
    shape_px: tuple[int, int],
    *,
    max_distance_px: float = 2.0,
) -> float:
    """Threshold on a per-detection score that maximises F1 on a calibration movie.

    Used to compare detectors each at its best: every threshold of a grid
    (60 quantiles and 60 evenly spaced values of the scores) is scored with
    :func:`score_movie` (F1 rounded to 4 decimals), and the median of the
    thresholds within 1e-4 of the best F1 is returned: the middle of the
    plateau, not the edge of the gap between noise and spot scores, which would
    favour one method by chance.

    Parameters
    ----------
    per_frame : sequence of (array_like (K_t, 2), array_like (K_t,))
        For each frame, detected ``(x, y)`` in pixels and each detection's score
        (e.g. LoG quality, trackpy mass) from a permissive run.
    ground_truth, pixel_size_um, shape_px, max_distance_px
        As :func:`score_movie`.

    Returns
    -------
    float
        The threshold; keep detections whose score is strictly above it.
    """
    pairs = [(np.asarray(xy, dtype=np.float64).reshape(-1, 2), np.asarray(s, dtype=np.float64))
             for xy, s in per_frame]
    scores = np.concatenate([s for _, s in pairs])
    if scores.size == 0:
        raise ValueError("per_frame has no detections to choose a threshold from")
    grid = np.unique(np.concatenate([
        np.quantile(scores, np.linspace(0.0, 0.999, 60)),
        np.linspace(scores.min(), scores.max(), 60),
    ]))
    f1 = np.array([round(score_movie([xy[s > thr] for xy, s in pairs], ground_truth,
                                     pixel_size_um, shape_px,
                                     max_distance_px=max_distance_px).f1, 4)
                   for thr in grid])
    best = grid[f1 >= f1.max() - 1e-4]
    return float(np.median(best))


# -------------------------------------------------------------------- links
class LinkScores(NamedTuple):
    """Link precision and recall of a tracking result against ground truth."""

    precision: float
    """Fraction of predicted links joining two detections of the same true particle."""
    recall: float
    """Fraction of true links (consecutive detections of a particle) predicted."""
    n_predicted: int
    """Number of predicted links."""
    n_true: int
    """Number of true links."""


def link_scores(frames: ArrayLike, true_ids: ArrayLike, track_ids: ArrayLike) -> LinkScores:
    """Score a linking result link by link.

    A link joins two consecutive detections (in frame order) of one track. A
    predicted link is correct when both detections belong to the same true
    particle; a true link joins consecutive detections of one particle (across
    missed detections too) and is recovered when the same pair is a predicted
    link.

    Parameters
    ----------
    frames : array_like of int, shape (N,)
        Frame of each detection.
    true_ids : array_like of int, shape (N,)
        Ground-truth particle of each detection.
    track_ids : array_like of int, shape (N,)
        Track assigned to each detection by the linker under test.

    Returns
    -------
    LinkScores
        Precision, recall and the link counts (a score is 1.0 when it has no link to score).
    """
    f = np.asarray(frames, dtype=np.int64)
    t = np.asarray(true_ids, dtype=np.int64)
    p = np.asarray(track_ids, dtype=np.int64)
    if not f.shape == t.shape == p.shape or f.ndim != 1:
        raise ValueError(
            f"frames, true_ids and track_ids must be 1-D of one length, got "
            f"{f.shape}, {t.shape}, {p.shape}"
        )
    n = f.size

    def pairs(groups: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        order = np.lexsort((f, groups))
        same = groups[order][1:] == groups[order][:-1]
        return order[:-1][same], order[1:][same]

    pa, pb = pairs(p)
    ta, tb = pairs(t)
    n_pred, n_true = pa.size, ta.size
    precision = float(np.mean(t[pa] == t[pb])) if n_pred else 1.0
    recall = float(np.mean(np.isin(ta * n + tb, pa * n + pb))) if n_true else 1.0
    return LinkScores(precision, recall, int(n_pred), int(n_true))


# -------------------------------------------------------------------- change points
def match_change_points(
    true_frames: Any, predicted_frames: Any, tolerance_frames: float = 10.0
) -> tuple[int, int, int]:
    """Match predicted to true change points of one track, as in the AnDi 2024 challenge.

    Pairs are found by a minimum-cost assignment on ``|true - predicted|``; a pair
    further apart than ``tolerance_frames`` does not count. The Jaccard index of a set
    of tracks is ``TP / (TP + FP + FN)`` with the counts summed over tracks.

    Parameters
    ----------
    true_frames, predicted_frames : array_like of int
        Frames where D changed, and where changes were reported.
    tolerance_frames : float
        Largest distance in frames of a true positive, >= 0.

    Returns
    -------
    tuple of int
        ``(true_positives, false_positives, false_negatives)``.
    """
    t_idx, _ = change_point_pairs(true_frames, predicted_frames, tolerance_frames)
    n_true = np.asarray(true_frames).size
    n_pred = np.asarray(predicted_frames).size
    tp = int(t_idx.size)
    return tp, n_pred - tp, n_true - tp


def change_point_pairs(
    true_frames: Any, predicted_frames: Any, tolerance_frames: float = 10.0
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The pairs of :func:`match_change_points`: indices into the true and predicted frames.

    Parameters
    ----------
    true_frames, predicted_frames : array_like of int
        Frames where D changed, and where changes were reported.
    tolerance_frames : float
        Largest distance in frames of a pair, >= 0.

    Returns
    -------
    tuple of ndarray of int
        ``(true_index, predicted_index)`` of the admissible pairs of the assignment.
    """
    tol = _validate.non_negative("tolerance_frames", tolerance_frames)
    t = np.asarray(true_frames, dtype=np.float64).reshape(-1)
    p = np.asarray(predicted_frames, dtype=np.float64).reshape(-1)
    if t.size == 0 or p.size == 0:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    dist = np.abs(t[:, None] - p[None, :])
    # Pairs beyond the tolerance cost more than any admissible set of pairs, so
    # the assignment maximizes the number of admissible pairs first.
    cost = np.where(dist <= tol, dist, tol * (t.size + p.size) + 1.0 + dist)
    rows, cols = linear_sum_assignment(cost)
    ok = dist[rows, cols] <= tol
    return rows[ok].astype(np.intp), cols[ok].astype(np.intp)
