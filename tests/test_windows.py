"""Window buffers and the window estimator: the ring buffers give the same windows and CVE
estimates as a plain per-track reference."""

from __future__ import annotations

import numpy as np
import pytest

from livespt.models.estimators import cve
from livespt.server.pipeline.estimate import Acquisition, WindowEstimator
from livespt.server.pipeline.windows import WindowBuffers, WindowConfig, sliding_windows


def _reference_windows(frames, xy, sigma, length, stride):
    """Windows a per-track deque would produce: ends at L-1, L-1+stride, ..."""
    out = []
    for end in range(length - 1, len(frames), stride):
        sl = slice(end - length + 1, end + 1)
        out.append((int(frames[sl][0]), int(frames[sl][-1]), sl))
    return out


@pytest.mark.parametrize("length,stride", [(10, 1), (5, 3), (3, 2)])
def test_interleaved_tracks_match_per_track_reference(length, stride):
    rng = np.random.default_rng(7)
    cfg = WindowConfig(length=length, stride=stride)
    est = WindowBuffers(cfg)
    estimator = WindowEstimator(cfg, Acquisition(frame_interval_s=0.05, exposure_s=0.03))
    # 150 tracks with random start frames, lengths and gaps, fed frame by frame,
    # with tracks ending (dropped) so rows are reused, and the arrays have to grow.
    tracks = {}
    for tid in range(150):
        start = int(rng.integers(0, 40))
        frames = start + np.cumsum(rng.integers(1, 3, size=int(rng.integers(2, 40))))
        xy = np.cumsum(rng.normal(0, 0.05, (frames.size, 2)), axis=0)
        sigma = rng.uniform(0.01, 0.04, frames.size)
        tracks[tid] = (frames, xy, sigma)
    last = max(int(f[-1]) for f, _, _ in tracks.values())
    got = []
    for frame in range(last + 1):
        ids, xs, ys, ss = [], [], [], []
        for tid, (f, xy, s) in tracks.items():
            k = np.flatnonzero(f == frame)
            if k.size:
                ids.append(tid)
                xs.append(xy[k[0], 0])
                ys.append(xy[k[0], 1])
                ss.append(s[k[0]])
        est.add_many(ids, frame, xs, ys, ss)
        got.extend(estimator.estimate(est.take_due()))
        for tid, (f, _, _) in tracks.items():
            if f[-1] == frame:
                est.drop(tid)
    assert est.n_tracks == 0
    expected = {}
    for tid, (f, xy, s) in tracks.items():
        for a, b, sl in _reference_windows(f, xy, s, length, stride):
            ref = cve(xy[sl], 0.05, f[sl], exposure_s=0.03, sigma_um=float(s[sl].mean()))
            expected[(tid, a, b)] = ref.d_um2_s
    assert {(w.track_id, w.frame_start, w.frame_end) for w in got} == set(expected)
    for w in got:
        assert w.d_um2_s == pytest.approx(expected[(w.track_id, w.frame_start, w.frame_end)],
                                          rel=1e-9, abs=1e-12)
        assert w.method == "cve"


def test_track_windows_equals_feeding_points_one_by_one():
    rng = np.random.default_rng(3)
    frames = np.cumsum(rng.integers(1, 3, 60))
    xy = np.cumsum(rng.normal(0, 0.05, (60, 2)), axis=0)
    sigma = np.full(60, np.nan)  # unknown precision: the sigma-unknown CVE
    cfg = WindowConfig(length=8, stride=2)
    est = WindowBuffers(cfg)
    estimator = WindowEstimator(cfg, Acquisition(frame_interval_s=0.02, exposure_s=0.02))
    one_by_one = []
    for k in range(60):
        est.add(5, int(frames[k]), float(xy[k, 0]), float(xy[k, 1]), float(sigma[k]))
        one_by_one.extend(estimator.estimate(est.take_due()))
    whole = estimator.estimate(sliding_windows(cfg, 5, frames, xy, sigma))
    assert len(whole) == len(one_by_one) == (60 - 8) // 2 + 1
    for a, b in zip(whole, one_by_one, strict=True):
        assert (a.frame_start, a.frame_end) == (b.frame_start, b.frame_end)
        assert a.d_um2_s == pytest.approx(b.d_um2_s, rel=1e-12)
        assert a.d_high_um2_s == pytest.approx(b.d_high_um2_s, rel=1e-12)


def test_windows_queued_before_a_drop_are_still_estimated():
    cfg = WindowConfig(length=3, stride=1)
    est = WindowBuffers(cfg)
    for f in range(3):
        est.add(1, f, 0.1 * f, 0.0, 0.01)
    est.drop(1)
    due = est.take_due()
    assert [(int(t), int(f[0]), int(f[-1])) for t, f in zip(due.track_ids, due.frames,
                                                          strict=True)] == [(1, 0, 2)]
