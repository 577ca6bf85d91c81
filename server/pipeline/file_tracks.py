"""Tracks read from files (TrackMate XML or CSV): into the track analysis and back onto spots.

A file's tracks come as a table of points (``track_id``, ``segment``, ``spot_id``,
``frame``, ``x_um``, ``y_um``; :class:`livespt.server.io.trackmate_xml.TrackMateTracks`).
:func:`tracks_from_points` makes one :class:`~livespt.server.pipeline.tracks.Track`
per linear segment, with an internal id; :class:`FileAnalysis` holds
:func:`~livespt.server.pipeline.tracks.analyze_tracks`' result with every record
mapped back to the file's ``track_id`` and ``segment``, and the per-spot and
per-track values written back into the file (:meth:`FileAnalysis.spot_values`,
:meth:`FileAnalysis.track_values`).

Per spot: the window estimate whose window is centred nearest the spot's frame
(ties: the earlier window), its 90 % interval and method code
(:data:`METHOD_CODES`), and 1 where a change of D starts at the spot's frame.
Per track: the whole-track D of its longest segment (a track cut at a split or
merge has one estimate per segment in ``track_estimates.csv``) and the number of
changes over all its segments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from livespt.server.pipeline.tracks import MIN_TRACK_POINTS, Track, TrackAnalysis

METHOD_CODES: dict[str, int] = {"none": 0, "vit": 1, "cve": 2}
"""Numeric codes of the window methods in TrackMate features (which hold numbers only):
the part of ``method`` before the first colon."""


def method_code(method: str) -> int:
    """The :data:`METHOD_CODES` entry of a ``method`` string (``vit:...`` -> 1, ``cve...`` -> 2)."""
    return METHOD_CODES.get(method.split(":", 1)[0], 0)


def tracks_from_points(points: pd.DataFrame) -> tuple[list[Track], pd.DataFrame]:
    """One checked Track per (track_id, segment) of a points table.

    Parameters
    ----------
    points : pandas.DataFrame
        Columns ``track_id, segment, frame, x_um, y_um`` (``spot_id`` optional),
        sorted by track, segment and frame.

    Returns
    -------
    tracks : list of Track
        Internal ids 0, 1, ... (unique per segment).
    ids : pandas.DataFrame
        Columns ``internal_id, track_id, segment, n_spots``: the file's ids of each
        internal id.

    Raises
    ------
    ValueError
        When a segment has two spots in one frame (naming the track).
    """
    tracks: list[Track] = []
    rows: list[tuple[int, int, int, int]] = []
    for k, (key, g) in enumerate(points.groupby(["track_id", "segment"], sort=True)):
        tid, seg = (int(v) for v in key)  # type: ignore[call-overload]
        g = g.sort_values("frame", kind="stable")
        where = f"track {tid}" + (f" segment {seg}" if seg else "")
        f = g["frame"].to_numpy(np.int64)
        if f.size > 1 and np.any(np.diff(f) == 0):
            raise ValueError(f"{where}: two spots in frame {int(f[np.diff(f) == 0][0])}")
        tracks.append(Track.from_arrays(k, f, g["x_um"].to_numpy(), g["y_um"].to_numpy(),
                                        None, where=where))
        rows.append((k, tid, seg, int(f.size)))
    ids = pd.DataFrame(rows, columns=["internal_id", "track_id", "segment", "n_spots"])
    return tracks, ids


@dataclass
class FileAnalysis:
    """A track analysis in the file's ids.

    Attributes
    ----------
    track_estimates, estimates, changes : pandas.DataFrame
        ``track_estimates.csv``, ``estimates.csv`` and ``changes.csv`` (DESIGN.md
        columns, ``track_id`` as in the file, plus ``segment``).
    short_tracks : pandas.DataFrame
        ``track_id, segment, n_spots, reason`` of the segments too short for a D.
    warnings : list of (code, message)
        The analysis' warnings.
    model_check : dict
        The analysis' model check (:attr:`TrackAnalysis.model_check`).
    """

    track_estimates: pd.DataFrame
    estimates: pd.DataFrame
    changes: pd.DataFrame
    short_tracks: pd.DataFrame
    warnings: list[tuple[str, str]] = field(default_factory=list)
    model_check: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_analysis(cls, analysis: TrackAnalysis, ids: pd.DataFrame) -> FileAnalysis:
        """Map an analysis of :func:`tracks_from_points`' tracks back to the file's ids."""
        by_internal = ids.set_index("internal_id")

        def frame(records: list, cols: list[str]) -> pd.DataFrame:
            df = pd.DataFrame([[getattr(r, c) for c in cols] for r in records], columns=cols)
            internal = df["track_id"].to_numpy(np.int64)
            df["track_id"] = by_internal.loc[internal, "track_id"].to_numpy()
            df["segment"] = by_internal.loc[internal, "segment"].to_numpy()
            return df

        te = frame(analysis.tracks, ["track_id", "n_spots", "d_um2_s", "d_low_um2_s",
                                     "d_high_um2_s", "method"])
        est = frame(analysis.windows, ["track_id", "frame_start", "frame_end", "d_um2_s",
                                       "d_low_um2_s", "d_high_um2_s", "method"])
        chg = frame(analysis.changes, ["track_id", "frame", "detected_at_frame",
                                       "d_before_um2_s", "d_after_um2_s", "score"])
        short = ids[ids["n_spots"] < MIN_TRACK_POINTS][["track_id", "segment", "n_spots"]].copy()
        short["reason"] = f"fewer than {MIN_TRACK_POINTS} positions"
        warnings = [(c, m) for c, m in analysis.warnings if c != "TRACK_TOO_SHORT"]
        if len(short):
            warnings.append(("TRACK_TOO_SHORT", f"{len(short)} track segment(s) have fewer than "
                             f"{MIN_TRACK_POINTS} positions: no D (listed in summary.json)"))
        return cls(te, est, chg, short.reset_index(drop=True), warnings,
                   dict(analysis.model_check))

    def spot_values(self, points: pd.DataFrame) -> dict[int, tuple[float, ...]]:
        """Spot ID -> (window D, low, high, method code, change flag) for every spot of a track.

        The window is the one centred nearest the spot's frame (NaN and code 0 where
        the spot's segment has no window).
        """
        out: dict[int, tuple[float, ...]] = {}
        est = self.estimates
        groups = {key: g for key, g in est.groupby(["track_id", "segment"])} if len(est) else {}
        starts = (set(zip(self.changes["track_id"], self.changes["segment"],
                          self.changes["frame"], strict=True)) if len(self.changes) else set())
        for (tid, seg), pts in points.groupby(["track_id", "segment"]):
            frames = pts["frame"].to_numpy(np.int64)
            spot_ids = pts["spot_id"].to_numpy(np.int64)
            g = groups.get((tid, seg))
            if g is None:
                vals = [(math.nan, math.nan, math.nan, 0)] * frames.size
            else:
                centre = 0.5 * (g["frame_start"].to_numpy() + g["frame_end"].to_numpy())
                k = np.argmin(np.abs(frames[:, None] - centre[None, :]), axis=1)
                d, lo, hi = (g[c].to_numpy()[k] for c in ("d_um2_s", "d_low_um2_s",
                                                          "d_high_um2_s"))
                codes = [method_code(m) for m in g["method"].to_numpy()[k]]
                vals = list(zip(d.tolist(), lo.tolist(), hi.tolist(), codes, strict=True))
            for sid, f, v in zip(spot_ids.tolist(), frames.tolist(), vals, strict=True):
                flag = 1 if (tid, seg, f) in starts else 0
                out[sid] = (*v, flag)
        return out

    def track_values(self) -> dict[int, tuple[float, ...]]:
        """TRACK_ID -> (D, low, high, number of changes); D of the longest segment."""
        out: dict[int, tuple[float, ...]] = {}
        n_changes = (self.changes.groupby("track_id").size().to_dict()
                     if len(self.changes) else {})
        te = self.track_estimates
        if len(te):
            best = te.sort_values(["track_id", "n_spots", "segment"],
                                  ascending=[True, False, True]).drop_duplicates("track_id")
            for r in best.itertuples(index=False):
                out[int(r.track_id)] = (float(r.d_um2_s), float(r.d_low_um2_s),
                                        float(r.d_high_um2_s),
                                        int(n_changes.get(r.track_id, 0)))
        for tid in self.short_tracks["track_id"].unique().tolist():
            out.setdefault(int(tid), (math.nan, math.nan, math.nan, 0))
        return out
