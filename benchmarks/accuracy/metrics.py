"""Scores of a live-path result against ground truth: detection, tracks, windows, changes.

Every source ends up as the same two tables, so one set of functions scores them all:

* ``points``: one row per localized track point, ``track_id, frame, x_um, y_um,
  precision_um`` (``tracks.csv``) plus ``particle_id`` (the true particle it belongs to,
  -1 when none) and ``x_true_um, y_true_um`` (that particle's exposure-mean position);
* ``estimates``: one row per window, ``track_id, frame_start, frame_end, d_um2_s,
  d_low_um2_s, d_high_um2_s, method`` (``estimates.csv``);

and :class:`TruthD` answers "what was D of particle p in frames a..b" and "where did it
change". Detection counts use :func:`livespt.server.pipeline.scoring.match_detections`
(Hungarian assignment within 2 px, fair border and close-pair rules); each point's
particle is the same assignment without the border/close-pair bookkeeping (so points
near the border keep their particle). Change points use
:func:`~livespt.server.pipeline.scoring.match_change_points` (AnDi 2024 rule, 10 frames).

Windows are scored only where the answer is known: all points of the window belong to
one true particle and that particle's D is the same in every frame from ``frame_start``
to ``frame_end``. On those windows four estimates are compared: the live window
estimate (``method`` says ``cve`` or ``vit:<model>``), the sigma-unknown CVE on the same
window's positions (:func:`livespt.models.estimators.cve_batch`, ``sigma_um=None``), the
same CVE on the TRUE positions plus Gaussian noise of each point's reported precision
(the floor for perfect detection and linking), and the exact Cramer-Rao bound
(:func:`livespt.models.estimators.crlb_d_exact`, sigma unknown) of that window's frames
at the true D and the window's measured RMS position error.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from livespt.models.estimators import crlb_d_exact, cve, cve_batch
from livespt.server.pipeline.scoring import (
    change_point_pairs,
    match_change_points,
    match_detections,
)

__all__ = [
    "DECADES",
    "TruthD",
    "change_scores",
    "detection_scores",
    "label_points",
    "linking_references",
    "rel_rmse",
    "summarize_windows",
    "track_d_scores",
    "track_scores",
    "visits",
    "window_table",
]

DECADES = ((0.01, 0.1), (0.1, 1.0), (1.0, 10.0))
"""D decades (um^2/s) for the median bias."""

MAX_DISTANCE_PX = 2.0
"""Pairing radius of detections to true particles, pixels."""


# ------------------------------------------------------------------------ truth
@dataclass(frozen=True, eq=False)
class TruthD:
    """D of every true particle in every frame (NaN where unknown).

    Attributes
    ----------
    d_um2_s : ndarray, shape (P, T)
        D in force during each frame (images) or of the step starting at that frame
        (trajectories), um^2/s; NaN where the particle is not in the truth.
    """

    d_um2_s: NDArray[np.float64]

    @classmethod
    def from_table(cls, truth: pd.DataFrame, n_frames: int) -> TruthD:
        """From a ground-truth table (``particle_id, frame, d_um2_s``)."""
        p = int(truth["particle_id"].max()) + 1 if len(truth) else 0
        d = np.full((p, n_frames), np.nan)
        d[truth["particle_id"].to_numpy(), truth["frame"].to_numpy()] = truth["d_um2_s"]
        return cls(d)

    def window_d(self, pid: int, first: int, last: int) -> float:
        """D of particle ``pid`` if it is known and the same in frames first..last, else NaN."""
        seg = self.d_um2_s[pid, first:last + 1]
        if seg.size == 0 or not np.all(np.isfinite(seg)):
            return math.nan
        return float(seg[0]) if np.all(seg == seg[0]) else math.nan

    def changes(self, pid: int, first: int, last: int) -> NDArray[np.int64]:
        """Frames c in (first, last] where particle ``pid``'s D differs from frame c - 1."""
        seg = self.d_um2_s[pid, first:last + 1]
        ok = np.isfinite(seg[1:]) & np.isfinite(seg[:-1])
        return (np.flatnonzero(ok & (seg[1:] != seg[:-1])) + first + 1).astype(np.int64)


# ------------------------------------------------------------------------ detections
def _assign(det: NDArray[np.float64], tru: NDArray[np.float64],
            max_distance: float) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Minimum summed distance one-to-one pairs closer than ``max_distance``."""
    if len(det) == 0 or len(tru) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    dist = np.hypot(det[:, None, 0] - tru[None, :, 0], det[:, None, 1] - tru[None, :, 1])
    big = 1e6
    cost = np.where(dist <= max_distance, dist, big)
    r, c = linear_sum_assignment(cost)
    good = cost[r, c] < big
    return r[good].astype(np.intp), c[good].astype(np.intp)


def label_points(tracks: pd.DataFrame, truth: pd.DataFrame, pixel_size_um: float,
                 shape_px: tuple[int, int], n_frames: int) -> tuple[pd.DataFrame,
                                                                    dict[str, Any]]:
    """Give every track point its true particle; count detections as the tests do.

    Parameters
    ----------
    tracks : pandas.DataFrame
        ``tracks.csv`` (``track_id, frame, x_um, y_um, precision_um``).
    truth : pandas.DataFrame
        Ground truth (``particle_id, frame, x_um, y_um, photons``).
    pixel_size_um : float
        Pixel size, um.
    shape_px : tuple of int
        ``(height, width)``.
    n_frames : int
        Frames in the movie.

    Returns
    -------
    points : pandas.DataFrame
        ``tracks`` plus ``particle_id`` (-1: no particle within 2 px) and
        ``x_true_um, y_true_um`` (NaN when unpaired).
    detection : dict
        ``true_positives, false_positives, false_negatives, recall, precision`` summed
        over frames with :func:`~livespt.server.pipeline.scoring.match_detections`.
    """
    pts = tracks.sort_values(["frame", "track_id"]).reset_index(drop=True)
    pid = np.full(len(pts), -1, dtype=np.int64)
    xt = np.full(len(pts), np.nan)
    yt = np.full(len(pts), np.nan)
    tp = fp = fn = 0
    det_by_frame = {f: g.index.to_numpy() for f, g in pts.groupby("frame")}
    tru_by_frame = {f: g for f, g in truth.groupby("frame")}
    empty = truth.iloc[:0]
    for f in range(n_frames):
        di = det_by_frame.get(f, np.zeros(0, dtype=np.intp))
        tr = tru_by_frame.get(f, empty)
        det = pts.loc[di, ["x_um", "y_um"]].to_numpy() / pixel_size_um
        tru = tr[["x_um", "y_um"]].to_numpy() / pixel_size_um
        m = match_detections(det, tru, shape_px, max_distance_px=MAX_DISTANCE_PX,
                             emitting=tr["photons"].to_numpy() > 0)
        tp, fp, fn = tp + m.n_true_positive, fp + m.n_false_positive, fn + m.n_false_negative
        r, c = _assign(det, tru, MAX_DISTANCE_PX)
        rows = di[r]
        pid[rows] = tr["particle_id"].to_numpy()[c]
        xt[rows] = tr["x_um"].to_numpy()[c]
        yt[rows] = tr["y_um"].to_numpy()[c]
    pts["particle_id"] = pid
    pts["x_true_um"] = xt
    pts["y_true_um"] = yt
    detection = {"true_positives": tp, "false_positives": fp, "false_negatives": fn,
                 "recall": tp / max(tp + fn, 1), "precision": tp / max(tp + fp, 1)}
    return pts, detection


ISOLATED_UM = 0.6
"""A point is *isolated* when no other true particle is within this distance, um."""

CLOSE_UM = 0.3
"""A point is on a *close pair* when another true particle is within this distance, um."""


def nearest_other(points: pd.DataFrame, truth: pd.DataFrame) -> NDArray[np.float64]:
    """Per point: distance (um) from its true particle to the nearest other true particle
    in the same frame (inf when alone or unpaired)."""
    out = np.full(len(points), np.inf)
    by_frame = {int(f): g for f, g in truth.groupby("frame")}
    pid = points["particle_id"].to_numpy()
    xt, yt = points["x_true_um"].to_numpy(), points["y_true_um"].to_numpy()
    for f, idx in points.groupby("frame").indices.items():
        g = by_frame.get(int(f))
        if g is None or len(g) < 2:
            continue
        gx, gy, gp = g["x_um"].to_numpy(), g["y_um"].to_numpy(), g["particle_id"].to_numpy()
        idx = idx[pid[idx] >= 0]
        if not idx.size:
            continue
        d = np.hypot(xt[idx, None] - gx[None], yt[idx, None] - gy[None])
        d[pid[idx, None] == gp[None]] = np.inf
        out[idx] = d.min(axis=1)
    return out


def detection_scores(points: pd.DataFrame, truth_d: TruthD | None = None,
                     truth: pd.DataFrame | None = None) -> dict[str, Any]:
    """Position error of paired points: RMSE per axis (um) and Var(error / precision).

    With ``truth_d``, Var(error / precision) is also given separately for points of
    particles slower and faster than D = 0.1 um^2/s (motion blur grows with D); with
    ``truth`` as well, for isolated points (no other particle within
    :data:`ISOLATED_UM`) slow and fast, and for points on close pairs (another particle
    within :data:`CLOSE_UM`: one spot for two particles).
    """
    ok = (points["particle_id"] >= 0).to_numpy() & np.isfinite(points["x_true_um"].to_numpy())
    p = points[ok]
    ex = (p["x_um"] - p["x_true_um"]).to_numpy()
    ey = (p["y_um"] - p["y_true_um"]).to_numpy()
    prec = p["precision_um"].to_numpy()
    e = np.concatenate([ex, ey])
    z2 = np.concatenate([(ex / prec) ** 2, (ey / prec) ** 2])
    out: dict[str, Any] = {
        "rmse_um": float(np.sqrt(np.mean(e**2))) if e.size else math.nan,
        "rms_precision_um": float(np.sqrt(np.mean(prec**2))) if prec.size else math.nan,
        "z_variance": float(np.mean(z2)) if z2.size else math.nan,
        "n_points": len(p)}
    if truth_d is not None and len(p):
        pid, fr = p["particle_id"].to_numpy(), p["frame"].to_numpy()
        inside = pid < truth_d.d_um2_s.shape[0]
        d = np.full(len(p), np.nan)
        d[inside] = truth_d.d_um2_s[pid[inside], fr[inside]]
        d2 = np.concatenate([d, d])
        groups = [("slow", d2 < 0.1), ("fast", d2 >= 0.1)]
        if truth is not None:
            nn = nearest_other(p.reset_index(drop=True), truth)
            nn2 = np.concatenate([nn, nn])
            iso = nn2 > ISOLATED_UM
            groups += [("isolated_slow", iso & (d2 < 0.1)), ("isolated_fast", iso & (d2 >= 0.1)),
                       ("close", nn2 < CLOSE_UM)]
        for name, m in groups:
            out[f"z_variance_{name}"] = float(np.mean(z2[m])) if m.any() else math.nan
            out[f"n_points_{name}"] = int(m.sum() // 2)
    return out


# ------------------------------------------------------------------------ tracks
def track_scores(points: pd.DataFrame, truth: pd.DataFrame,
                 min_frames_present: int = 100, max_gap_frames: int = 2) -> dict[str, Any]:
    """Fragmentation and purity of the linked tracks.

    Fragmentation: for each true particle present (in the field of view) in at least
    ``min_frames_present`` frames and found at least once, the number of distinct
    tracks holding its points; the mean over those particles, also split by the
    particle's largest D (below / from 0.1 um^2/s). Purity: over tracks of
    at least 2 points, the points of each track's majority particle divided by all its
    points (unpaired points count against it), summed over tracks.
    ``visits_per_particle`` is the mean of :func:`visits` over the same particles: the
    fewest tracks per particle a linker with memory ``max_gap_frames`` can give (a particle
    that leaves the field for longer must come back as a new track).
    ``tracks_per_visit`` is the mean over the same particles of their tracks divided by
    their visits: 1 when no visit is split, whatever the field of view does (the measure
    of "one track per particle" for particles that leave and come back).
    """
    present = truth.groupby("particle_id").size()
    long_ids = present.index[present >= min_frames_present].to_numpy()
    paired = points[points["particle_id"] >= 0]
    per_particle = paired.groupby("particle_id")["track_id"].nunique()
    frag = per_particle.reindex(long_ids).dropna()
    sizes = points.groupby("track_id").size()
    multi = points[points["track_id"].isin(sizes.index[sizes >= 2])]
    majority = 0
    for _, g in multi.groupby("track_id"):
        ids = g["particle_id"].to_numpy()
        ids = ids[ids >= 0]
        majority += int(np.bincount(ids).max()) if ids.size else 0
    d_of = truth.groupby("particle_id")["d_um2_s"].max().reindex(frag.index).to_numpy()
    split = {}
    for name, m in (("slow", d_of < 0.1), ("fast", d_of >= 0.1)):
        split[f"tracks_per_particle_{name}"] = float(frag[m].mean()) if m.any() else math.nan
        split[f"particles_long_{name}"] = int(m.sum())
    vis = visits(truth, max_gap_frames).reindex(frag.index)
    return {
        **split,
        "particles_long": int(frag.size),
        "tracks_per_particle": float(frag.mean()) if frag.size else math.nan,
        "visits_per_particle": float(vis.mean()) if frag.size else math.nan,
        "tracks_per_visit": float((frag / vis).mean()) if frag.size else math.nan,
        "max_tracks_per_particle": int(frag.max()) if frag.size else 0,
        "purity": majority / max(len(multi), 1),
        "n_tracks": int(points["track_id"].nunique()),
    }


def visits(truth: pd.DataFrame, max_gap_frames: int) -> pd.Series:
    """Per particle: its visits to the field of view, the fewest tracks any linker can give it.

    A visit is a run of frames in the truth (the particle's exposure-mean position inside
    the field) whose absences last at most ``max_gap_frames`` frames: a particle that stays
    out longer cannot be continued by a linker with that memory and must start a new track.
    """
    out = {}
    for pid, f in truth.groupby("particle_id")["frame"]:
        fr = np.sort(f.to_numpy())
        out[pid] = 1 + int(np.count_nonzero(np.diff(fr) > max_gap_frames + 1))
    return pd.Series(out, dtype=np.int64)


def linking_references(detections: pd.DataFrame, truth: pd.DataFrame, *,
                       max_distance_um: float, max_gap_frames: int, pixel_size_um: float,
                       shape_px: tuple[int, int], n_frames: int,
                       min_frames_present: int) -> dict[str, dict[str, Any]]:
    """Fragmentation and purity of other linkers on the same movie, scored like the live path.

    * ``trackpy_on_detections``: ``trackpy.link`` (the peer; search range
      ``max_distance_um``, memory ``max_gap_frames``) on the live path's own points
      (``tracks.csv`` without its ids): linking alone, on LiveSPT's detections;
    * ``livespt_on_truth``: LiveSPT's :class:`~livespt.server.pipeline.link.OnlineLinker`
      (the session's settings, no blur merge: one point per particle) on the TRUE
      exposure-mean positions: what perfect detection would leave;
    * ``trackpy_on_truth``: ``trackpy.link`` on the true positions.

    The two ``on_truth`` rows measure how ambiguous the movie is for a frame-to-frame
    linker: Brownian particles that pass closer than their step give any such linker a
    coin flip. Each row holds :func:`track_scores`, or ``{"error": ...}`` when that linker
    failed (e.g. trackpy's subnetwork size limit).
    """
    from livespt.server.pipeline.link import LinkerConfig, OnlineLinker

    def ours(pts: pd.DataFrame) -> pd.DataFrame:
        lk = OnlineLinker(LinkerConfig(max_distance_um=max_distance_um,
                                       max_gap_frames=max_gap_frames))
        by_frame = {int(f): g for f, g in pts.groupby("frame")}
        parts = []
        for f in range(n_frames):
            g = by_frame.get(f)
            xy = np.zeros((0, 2)) if g is None else g[["x_um", "y_um"]].to_numpy()
            ids = lk.link(f, xy)
            lk.ended(f)
            if g is not None:
                parts.append(g.assign(track_id=ids))
        return pd.concat(parts, ignore_index=True)

    def peer(pts: pd.DataFrame) -> pd.DataFrame:
        import trackpy

        trackpy.quiet()
        t = trackpy.link(pts.rename(columns={"x_um": "x", "y_um": "y"}),
                         search_range=max_distance_um, memory=max_gap_frames)
        return pd.DataFrame({"track_id": t["particle"].to_numpy(),
                             "frame": t["frame"].to_numpy(),
                             "x_um": t["x"].to_numpy(), "y_um": t["y"].to_numpy()})

    det = detections[["frame", "x_um", "y_um"]].reset_index(drop=True)
    tru = truth[["frame", "x_um", "y_um"]].reset_index(drop=True)
    out: dict[str, dict[str, Any]] = {}
    for name, link, pts in (("trackpy_on_detections", peer, det),
                            ("livespt_on_truth", ours, tru),
                            ("trackpy_on_truth", peer, tru)):
        try:
            linked = link(pts).assign(precision_um=np.nan)
        except Exception as exc:  # a peer's own limit is a result to report, not a crash
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        labelled, _ = label_points(linked, truth, pixel_size_um, shape_px, n_frames)
        out[name] = track_scores(labelled, truth, min_frames_present=min_frames_present,
                                 max_gap_frames=max_gap_frames)
    return out


def majority_particle(points: pd.DataFrame) -> pd.DataFrame:
    """Per track: its majority particle, purity, first and last frame, number of points."""
    rows = []
    for tid, g in points.groupby("track_id"):
        ids = g["particle_id"].to_numpy()
        good = ids[ids >= 0]
        if good.size:
            counts = np.bincount(good)
            maj, nmaj = int(counts.argmax()), int(counts.max())
        else:
            maj, nmaj = -1, 0
        rows.append((tid, maj, nmaj / len(g), int(g["frame"].min()), int(g["frame"].max()),
                     len(g)))
    return pd.DataFrame(rows, columns=["track_id", "particle_id", "purity", "first", "last",
                                       "n_points"])


# ------------------------------------------------------------------------ windows
def window_table(points: pd.DataFrame, estimates: pd.DataFrame, truth_d: TruthD,
                 frame_interval_s: float, exposure_s: float, *, seed: int = 0,
                 crlb_cache: dict[Any, float] | None = None) -> pd.DataFrame:
    """Every live window with the truth and the three reference estimates.

    Parameters
    ----------
    points : pandas.DataFrame
        Labelled track points (:func:`label_points`).
    estimates : pandas.DataFrame
        ``estimates.csv``.
    truth_d : TruthD
        True D per particle and frame.
    frame_interval_s, exposure_s : float
        Acquisition (the CVE and the bound use the blur coefficient ``exposure / (6 dt)``).
    seed : int
        Seed of the noise added to the true positions (floor).
    crlb_cache : dict, optional
        Shared memo of bounds keyed by frame pattern, D and sigma (rounded to 0.1 nm).

    Returns
    -------
    pandas.DataFrame
        One row per window: the ``estimates`` columns, ``n``, ``particle_id``
        (-1 when the points are not all one particle), ``d_true`` (NaN unless known and
        constant), ``eligible``, ``sigma_rep_um`` (RMS reported precision),
        ``sigma_err_um`` (RMS position error per axis), and for the references
        ``d_cve, d_cve_low, d_cve_high``, ``d_floor, d_floor_low, d_floor_high`` and
        ``crlb_sd`` (sqrt of the bound, um^2/s).
    """
    cache = {} if crlb_cache is None else crlb_cache
    rng = np.random.default_rng(seed)
    # Per track, sorted by frame: frames, positions, precisions, particles, true positions.
    pts = points.sort_values(["track_id", "frame"])
    tid_all = pts["track_id"].to_numpy()
    cuts = np.flatnonzero(np.diff(tid_all)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(pts)]))
    fr_all = pts["frame"].to_numpy()
    xy_all = pts[["x_um", "y_um"]].to_numpy(float)
    prec_all = pts["precision_um"].to_numpy(float)
    pid_all = pts["particle_id"].to_numpy()
    true_all = pts[["x_true_um", "y_true_um"]].to_numpy(float)
    span = {int(tid_all[a]): (int(a), int(b)) for a, b in zip(starts, ends, strict=True)} \
        if len(pts) else {}
    n = len(estimates)
    out = estimates.reset_index(drop=True).copy()
    cols: dict[str, Any] = {k: np.full(n, np.nan) for k in (
        "d_true", "sigma_rep_um", "sigma_err_um", "d_cve", "d_cve_low", "d_cve_high",
        "d_floor", "d_floor_low", "d_floor_high", "crlb_sd")}
    pid_out = np.full(n, -1, dtype=np.int64)
    n_pts = np.zeros(n, dtype=np.int64)
    patterns: list[tuple[int, ...] | None] = [None] * n
    groups: dict[tuple[int, ...], list[tuple[int, NDArray[np.float64], NDArray[np.float64],
                                             NDArray[np.float64]]]] = {}
    w_tid = out["track_id"].to_numpy()
    w_fs = out["frame_start"].to_numpy()
    w_fe = out["frame_end"].to_numpy()
    d_rows = truth_d.d_um2_s.shape[0]
    for i in range(n):
        ab = span.get(int(w_tid[i]))
        if ab is None:
            continue
        a0, b0 = ab
        fr = fr_all[a0:b0]
        a = a0 + int(np.searchsorted(fr, w_fs[i]))
        b = a0 + int(np.searchsorted(fr, w_fe[i], "right"))
        n_pts[i] = b - a
        if b - a < 3:
            continue
        frames = fr_all[a:b]
        xy = xy_all[a:b]
        prec = prec_all[a:b]
        ids = pid_all[a:b]
        cols["sigma_rep_um"][i] = float(np.sqrt(np.mean(prec**2)))
        pattern = tuple((frames - frames[0]).tolist())
        patterns[i] = pattern
        noisy_true = np.full_like(xy, np.nan)
        if ids[0] >= 0 and np.all(ids == ids[0]):
            pid = int(ids[0])
            pid_out[i] = pid
            xy_true = true_all[a:b]
            if np.all(np.isfinite(xy_true)):
                cols["sigma_err_um"][i] = float(np.sqrt(np.mean((xy - xy_true) ** 2)))
                noisy_true = xy_true + rng.standard_normal(xy.shape) * prec[:, None]
            if pid < d_rows:
                cols["d_true"][i] = truth_d.window_d(pid, int(w_fs[i]), int(w_fe[i]))
        groups.setdefault(pattern, []).append((i, xy, noisy_true, prec))
    for pattern, items in groups.items():
        idx = np.array([it[0] for it in items])
        frames = np.array(pattern)
        est = cve_batch(np.stack([it[1] for it in items]), frame_interval_s, frames,
                        exposure_s=exposure_s, sigma_um=None)
        cols["d_cve"][idx] = est.d_um2_s
        cols["d_cve_low"][idx] = est.d_low_um2_s
        cols["d_cve_high"][idx] = est.d_high_um2_s
        have = np.array([np.all(np.isfinite(it[2])) for it in items])
        if have.any():
            fl = cve_batch(np.stack([it[2] for it, h in zip(items, have, strict=True) if h]),
                           frame_interval_s, frames, exposure_s=exposure_s, sigma_um=None)
            cols["d_floor"][idx[have]] = fl.d_um2_s
            cols["d_floor_low"][idx[have]] = fl.d_low_um2_s
            cols["d_floor_high"][idx[have]] = fl.d_high_um2_s
    have_bound = (np.isfinite(cols["d_true"]) & (cols["d_true"] > 0)
                  & np.isfinite(cols["sigma_err_um"]))
    for i in np.flatnonzero(have_bound):
        pattern = patterns[i]
        assert pattern is not None
        d = float(cols["d_true"][i])
        s = max(float(np.round(cols["sigma_err_um"][i], 4)), 1e-4)
        key = (pattern, round(d, 12), s)
        if key not in cache:
            cache[key] = crlb_d_exact(np.array(pattern), d, s, frame_interval_s, exposure_s,
                                      sigma_known=False)
        cols["crlb_sd"][i] = math.sqrt(cache[key])
    for k, v in cols.items():
        out[k] = v
    out["particle_id"] = pid_out
    out["n"] = n_pts
    out["eligible"] = (pid_out >= 0) & np.isfinite(out["d_true"]) & (out["d_true"] > 0) \
        & np.isfinite(out["d_cve"])
    return out


def rel_rmse(d_hat: Any, d_true: Any) -> float:
    """sqrt(mean(((d_hat - d) / d)^2)) over finite pairs (NaN when none)."""
    e = (np.asarray(d_hat, float) - np.asarray(d_true, float)) / np.asarray(d_true, float)
    e = e[np.isfinite(e)]
    return float(np.sqrt(np.mean(e**2))) if e.size else math.nan


def _coverage(low: Any, high: Any, d: Any) -> float:
    low, high, d = (np.asarray(v, float) for v in (low, high, d))
    ok = np.isfinite(low) & np.isfinite(d) & ~np.isnan(high)
    return float(np.mean((low[ok] <= d[ok]) & (d[ok] <= high[ok]))) if ok.any() else math.nan


def _median_bias_by_decade(d_hat: Any, d: Any) -> dict[str, float | None]:
    d_hat, d = np.asarray(d_hat, float), np.asarray(d, float)
    out: dict[str, float | None] = {}
    for lo, hi in DECADES:
        m = (d >= lo) & (d < hi) & np.isfinite(d_hat)
        out[f"{lo:g}-{hi:g}"] = float(np.median(d_hat[m] / d[m] - 1.0)) if m.sum() >= 5 else None
    return out


def summarize_windows(win: pd.DataFrame) -> dict[str, Any]:
    """Relative RMSE, 90 % coverage and median bias per decade on the eligible windows."""
    e = win[win["eligible"]]
    methods = sorted(set(e["method"])) if len(e) else []
    d = e["d_true"].to_numpy()
    res: dict[str, Any] = {
        "n_windows": len(win), "n_eligible": len(e), "live_methods": methods,
        "method_share": ({str(k): float(v) for k, v in
                          win["method"].value_counts(normalize=True).items()} if len(win) else {}),
        "n_particles": int(e["particle_id"].nunique()),
    }
    for name, col in (("live", "d_um2_s"), ("cve", "d_cve"), ("floor", "d_floor")):
        low = "d_low_um2_s" if name == "live" else f"{col}_low"
        high = "d_high_um2_s" if name == "live" else f"{col}_high"
        res[name] = {
            "rel_rmse": rel_rmse(e[col], d),
            "coverage_90": _coverage(e[low], e[high], d),
            "median_bias_by_decade": _median_bias_by_decade(e[col], d),
        }
    crlb = (e["crlb_sd"] / e["d_true"]).to_numpy()
    crlb = crlb[np.isfinite(crlb)]
    res["crlb_rel_rmse"] = float(np.sqrt(np.mean(crlb**2))) if crlb.size else math.nan
    return res


def bootstrap_rmse_difference(win: pd.DataFrame, a: str, b: str, n_boot: int = 2000,
                              seed: int = 0) -> tuple[float, NDArray[np.float64]]:
    """Relative RMSE of column ``a`` minus that of ``b`` on eligible windows, and its bootstrap.

    Windows of one track overlap (stride 1), so tracks are resampled, not windows
    (cluster bootstrap, keyed by ``(source, track_id)`` when a ``source`` column exists).

    Returns
    -------
    difference : float
        Observed ``rel_rmse(a) - rel_rmse(b)``.
    replicates : ndarray, shape (n_boot,)
        The same difference on resampled tracks.
    """
    e = win[win["eligible"]]
    key = (e["source"].astype(str) + ":" + e["track_id"].astype(str)) if "source" in e \
        else e["track_id"].astype(str)
    codes, uniq = pd.factorize(key)
    d = e["d_true"].to_numpy()
    sa = ((e[a].to_numpy() - d) / d) ** 2
    sb = ((e[b].to_numpy() - d) / d) ** 2
    k = len(uniq)
    sum_a = np.bincount(codes, sa, minlength=k)
    sum_b = np.bincount(codes, sb, minlength=k)
    cnt = np.bincount(codes, minlength=k).astype(float)
    obs = math.sqrt(sum_a.sum() / cnt.sum()) - math.sqrt(sum_b.sum() / cnt.sum())
    rng = np.random.default_rng(seed)
    w = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(float)  # (B, k)
    n = w @ cnt
    reps = np.sqrt((w @ sum_a) / n) - np.sqrt((w @ sum_b) / n)
    return obs, reps


# ------------------------------------------------------------------------ per-track D
def track_d_scores(points: pd.DataFrame, truth_d: TruthD, frame_interval_s: float,
                   exposure_s: float, min_points: int = 20,
                   min_purity: float = 0.95) -> dict[str, Any]:
    """Whole-track CVE (sigma unknown) against the true D on pure, constant-D tracks."""
    maj = majority_particle(points)
    by_track = {int(t): g.sort_values("frame") for t, g in points.groupby("track_id")}
    d_hat, d_true, low, high = [], [], [], []
    for r in maj.itertuples(index=False):
        if r.n_points < min_points or r.purity < min_purity or r.particle_id < 0:
            continue
        if r.particle_id >= truth_d.d_um2_s.shape[0]:
            continue
        d = truth_d.window_d(int(r.particle_id), int(r.first), int(r.last))
        if not np.isfinite(d) or d <= 0:
            continue
        g = by_track[int(r.track_id)]
        est = cve(g[["x_um", "y_um"]].to_numpy(), frame_interval_s, g["frame"].to_numpy(),
                  exposure_s=exposure_s)
        d_hat.append(est.d_um2_s)
        low.append(est.d_low_um2_s)
        high.append(est.d_high_um2_s)
        d_true.append(d)
    return {"n_tracks": len(d_hat), "rel_rmse": rel_rmse(d_hat, d_true),
            "coverage_90": _coverage(low, high, d_true),
            "median_bias_by_decade": _median_bias_by_decade(d_hat, d_true)}


# ------------------------------------------------------------------------ change points
def _pairs(true: NDArray[np.float64], pred: NDArray[np.float64],
           tol: float) -> NDArray[np.float64]:
    """Frame differences of the pairs :func:`match_change_points` counts as true positives."""
    if true.size == 0 or pred.size == 0:
        return np.zeros(0)
    dist = np.abs(true[:, None] - pred[None, :])
    cost = np.where(dist <= tol, dist, tol * (true.size + pred.size) + 1.0 + dist)
    r, c = linear_sum_assignment(cost)
    diff = pred[c] - true[r]
    return diff[np.abs(diff) <= tol]


def change_scores(points: pd.DataFrame, changes: pd.DataFrame, truth_d: TruthD,
                  tolerance_frames: float = 10.0, min_points: int = 11,
                  pure_purity: float = 1.0) -> dict[str, Any]:
    """Change points of every track against its majority particle's changes of D.

    Tracks of at least ``min_points`` points (the detector needs ``2 m + 1`` with
    ``min_segment_steps`` m = 5). True changes of a track are its majority particle's
    changes inside the track's frame span. False alarms per 1000 track-frames are
    counted on tracks whose particle did not change within the track, over all of them
    and over the pure ones (every point on the majority particle: the detector's own
    calibration, without linking errors).
    """
    maj = majority_particle(points)
    chg = {int(t): g["frame"].to_numpy(float) for t, g in changes.groupby("track_id")} \
        if len(changes) else {}
    tp = fp = fn = 0
    res_tp = res_fn = res_fp = n_res = 0  # changes with >= RESOLVABLE_STEPS on both sides
    errors: list[NDArray[np.float64]] = []
    fa = {"all": [0, 0], "pure": [0, 0]}  # alarms, track-frames
    n_true = 0
    for r in maj.itertuples(index=False):
        if r.n_points < min_points:
            continue
        pred = chg.get(int(r.track_id), np.zeros(0))
        true = np.zeros(0)
        if 0 <= r.particle_id < truth_d.d_um2_s.shape[0]:
            true = truth_d.changes(int(r.particle_id), int(r.first), int(r.last)).astype(float)
        n_true += true.size
        a, b, c = match_change_points(true, pred, tolerance_frames)
        tp, fp, fn = tp + a, fp + b, fn + c
        ok = _resolvable(true, int(r.first), int(r.last))
        n_res += int(ok.sum())
        hit_true, hit_pred = _matched(true, pred, tolerance_frames)
        res_tp += int(np.sum(hit_true & ok))
        res_fn += int(np.sum(~hit_true & ok))
        res_fp += int(np.sum(~hit_pred))
        errors.append(_pairs(true, pred, tolerance_frames))
        if true.size == 0 and r.particle_id >= 0:
            fa["all"][0] += pred.size
            fa["all"][1] += int(r.n_points)
            if r.purity >= pure_purity:
                fa["pure"][0] += pred.size
                fa["pure"][1] += int(r.n_points)
    err = np.concatenate(errors) if errors else np.zeros(0)

    def rate(k: str) -> float:
        alarms, frames = fa[k]
        return 1000.0 * alarms / frames if frames else math.nan

    return {
        "true_changes": n_true, "true_positives": tp, "false_positives": fp,
        "false_negatives": fn,
        "jaccard": tp / (tp + fp + fn) if (tp + fp + fn) else math.nan,
        "position_rmse_frames": float(np.sqrt(np.mean(err**2))) if err.size else math.nan,
        "false_alarms": fa["all"][0], "no_change_track_frames": fa["all"][1],
        "false_alarms_per_1000": rate("all"),
        "false_alarms_pure": fa["pure"][0], "pure_no_change_track_frames": fa["pure"][1],
        "false_alarms_per_1000_pure": rate("pure"),
        "resolvable_changes": n_res, "resolvable_true_positives": res_tp,
        "resolvable_false_negatives": res_fn, "resolvable_false_positives": res_fp,
        "jaccard_resolvable": (res_tp / (res_tp + res_fp + res_fn)
                               if (res_tp + res_fp + res_fn) else math.nan),
    }


RESOLVABLE_STEPS = 5
"""Steps on each side of a true change for it to count as resolvable: the change detector's
default ``min_segment_steps``; a change with fewer on one side cannot be reported by it."""


def _resolvable(true: NDArray[np.float64], first: int, last: int) -> NDArray[np.bool_]:
    """Which true changes have >= RESOLVABLE_STEPS frame steps to the neighbouring change
    (or the track's first / last frame) on both sides."""
    t = np.sort(np.asarray(true, dtype=np.float64))
    if t.size == 0:
        return np.zeros(0, dtype=bool)
    before = t - np.concatenate([[first], t[:-1]])
    after = np.concatenate([t[1:], [last]]) - t
    return (before >= RESOLVABLE_STEPS) & (after >= RESOLVABLE_STEPS)


def _matched(true: NDArray[np.float64], pred: NDArray[np.float64],
             tolerance_frames: float) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Which true (sorted) and predicted changes are paired (``scoring.change_point_pairs``)."""
    t = np.sort(np.asarray(true, dtype=np.float64))
    p = np.asarray(pred, dtype=np.float64)
    hit_t, hit_p = np.zeros(t.size, dtype=bool), np.zeros(p.size, dtype=bool)
    rows, cols = change_point_pairs(t, p, tolerance_frames)
    hit_t[rows] = True
    hit_p[cols] = True
    return hit_t, hit_p


def concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate tables, ignoring empty ones."""
    parts = [f for f in frames if len(f)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
