"""The frame timing check: dropped frames and stage jumps are found from the steps alone."""

from __future__ import annotations

import numpy as np
import pytest

from livespt.models.units import blur_coefficient
from livespt.server.pipeline.frame_timing import FrameTiming
from livespt.server.pipeline.track_noise import TrackNoise

DT = 0.05
N_TRACKS = 400
N_FRAMES = 120
SIGMA_UM = 0.03


def _positions(intervals: np.ndarray, seed: int) -> np.ndarray:
    """Brownian positions (T, N, 2) at the given intervals (in frame intervals) plus noise;
    D log-uniform over 0.05-1 um^2/s."""
    rng = np.random.default_rng(seed)
    d = np.exp(rng.uniform(np.log(0.05), np.log(1.0), N_TRACKS))
    steps = rng.normal(size=(len(intervals), N_TRACKS, 2)) \
        * np.sqrt(2 * d[None, :, None] * DT * intervals[:, None, None])
    xy = np.concatenate([np.zeros((1, N_TRACKS, 2)), np.cumsum(steps, axis=0)])
    return xy + rng.normal(0.0, SIGMA_UM, xy.shape)


def _run(xy: np.ndarray) -> FrameTiming:
    """What the session does per frame: ask the track noise for the steps, then update it."""
    noise = TrackNoise(blur_coefficient(0.0, DT))
    timing = FrameTiming()
    ids = np.arange(N_TRACKS)
    for f in range(xy.shape[0]):
        timing.test(f, ids, noise.steps_into(ids, f, xy[f]))
        noise.update_many(ids, f, xy[f])
    return timing


def test_evenly_spaced_frames_are_not_flagged() -> None:
    timing = _run(_positions(np.ones(N_FRAMES - 1), seed=1))
    # frames 11.. have tracks with >= 10 earlier steps; 10 more build the baseline
    assert timing.n_tested == N_FRAMES - 11
    assert timing.flagged == []


def test_dropped_frames_are_flagged_with_their_ratio() -> None:
    # 400 tracks: a doubled interval (ratio ~1.6 with the noise) is ~7 SE; with 200
    # tracks it is ~4.5 SE and found about half the time (Z = 5).
    intervals = np.ones(N_FRAMES - 1)
    dropped = np.arange(30, N_FRAMES, 12)  # frame f comes two intervals after f - 1
    intervals[dropped - 1] = 2.0
    timing = _run(_positions(intervals, seed=2))
    frames = [f.frame for f in timing.flagged]
    print(f"\nflagged {frames}; ratios {[round(f.ratio, 2) for f in timing.flagged]}")
    assert frames == dropped.tolist()
    for f in timing.flagged:
        # Below 2: the localization noise adds the same to every step, and the tracks'
        # mean steps include the earlier long ones. log(median) of 400 exponentials has
        # an SE of 0.07.
        assert 1.3 < f.ratio < 2.3
        assert f.ratio_without_common == pytest.approx(f.ratio, rel=0.1)
    s = timing.summary()
    assert s["frames_flagged"] == len(dropped) and s["period_frames"] == 12
    assert "dropped frame" in timing.flagged[0].describe()


def test_a_stage_jump_is_told_apart_by_the_common_displacement() -> None:
    xy = _positions(np.ones(N_FRAMES - 1), seed=3)
    xy[60:] += np.array([0.8, -0.5])  # the whole field moves between frames 59 and 60
    timing = _run(xy)
    assert [f.frame for f in timing.flagged] == [60]
    jump = timing.flagged[0]
    assert jump.ratio > 3.0
    assert jump.ratio_without_common == pytest.approx(1.0, abs=0.35)
