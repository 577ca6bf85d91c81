"""Shared helpers of the server tests: raw streams and ground-truth matching."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb


def config(height: int = 32, width: int = 32, pixel_type: int = pb.PIXEL_TYPE_UINT16,
           **kw: object) -> pb.StreamConfig:
    """A valid small stream config (override fields with keywords)."""
    c = pb.StreamConfig(pixel_size_um=0.1, frame_interval_s=0.05, pixel_type=pixel_type,
                        height=height, width=width)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def frame_msg(index: int, frame: np.ndarray) -> pb.StreamRequest:
    return pb.StreamRequest(frame=pb.Frame(index=index, data=frame.tobytes()))


def background_frames(n: int, h: int = 32, w: int = 32, seed: int = 0) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield (100 + rng.poisson(10, size=(h, w))).astype(np.uint16)


def match_track_points(
    points: pd.DataFrame, truth: pd.DataFrame, pixel_size_um: float, max_px: float = 2.0,
    shape_px: tuple[int, int] | None = None, border_px: float = 3.0,
) -> pd.DataFrame:
    """Match a stream's track points to ground truth frame by frame (Hungarian, within ``max_px``).

    DataFrame-level and keeps track ids, unlike
    :func:`livespt.server.pipeline.scoring.match_detections` (arrays of one frame), which
    the detector benchmarks use.

    Returns one row per ground-truth or detected point: ``frame, particle_id, track_id,
    dist_px`` with NaN where unmatched. Ground-truth particles within ``border_px`` of
    the edge are not counted against recall (a detector may legitimately miss them),
    nor are detections matched to them counted against precision.
    """
    rows = []
    for frame, gt in truth.groupby("frame"):
        det = points[points["frame"] == frame]
        g = gt[["x_um", "y_um"]].to_numpy() / pixel_size_um
        d = det[["x_um", "y_um"]].to_numpy() / pixel_size_um
        inside = np.ones(len(g), bool)
        if shape_px is not None:
            h, w = shape_px
            inside = ((g[:, 0] >= border_px) & (g[:, 0] <= w - 1 - border_px)
                      & (g[:, 1] >= border_px) & (g[:, 1] <= h - 1 - border_px))
        matched_g, matched_d = set(), set()
        if len(g) and len(d):
            cost = np.hypot(g[:, None, 0] - d[None, :, 0], g[:, None, 1] - d[None, :, 1])
            r, c = linear_sum_assignment(np.where(cost <= max_px, cost, 1e6))
            for i, j in zip(r, c, strict=True):
                if cost[i, j] <= max_px:
                    matched_g.add(i)
                    matched_d.add(j)
                    rows.append((frame, gt["particle_id"].iloc[i], det["track_id"].iloc[j],
                                 cost[i, j], bool(inside[i])))
        for i in range(len(g)):
            if i not in matched_g:
                rows.append((frame, gt["particle_id"].iloc[i], np.nan, np.nan, bool(inside[i])))
        for j in range(len(d)):
            if j not in matched_d:
                # An unmatched detection near the border may be a half-visible particle.
                x, y = d[j]
                near = shape_px is not None and not (
                    border_px <= x <= shape_px[1] - 1 - border_px
                    and border_px <= y <= shape_px[0] - 1 - border_px)
                rows.append((frame, np.nan, det["track_id"].iloc[j], np.nan, not near))
    return pd.DataFrame(rows, columns=["frame", "particle_id", "track_id", "dist_px", "counted"])
