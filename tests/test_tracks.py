"""Track analysis and the window estimator as plain functions on arrays (no gRPC)."""

from __future__ import annotations

import numpy as np
import pytest

from livespt.models.estimators import cve
from livespt.models.simulate import simulate_trajectories
from livespt.server.inference.resident import ModelRegistry
from livespt.server.pipeline.changepoint import ChangeConfig
from livespt.server.pipeline.estimate import Acquisition, WindowEstimator
from livespt.server.pipeline.tracks import Track, analyze_tracks
from livespt.server.pipeline.windows import WindowConfig, sliding_windows

DT = 0.05
ACQ = Acquisition(frame_interval_s=DT, exposure_s=DT)


def _tracks(n: int, length: int, d: float, seed: int) -> list[Track]:
    traj = simulate_trajectories(n, length, d_um2_s=d, frame_interval_s=DT, seed=seed)
    xy = traj.mean_um.numpy() + np.random.default_rng(seed).normal(0, 0.02, (n, length, 2))
    return [Track.from_arrays(i, np.arange(length), xy[i, :, 0], xy[i, :, 1])
            for i in range(n)]


def test_analysis_matches_the_cve_per_track_and_per_window() -> None:
    tracks = _tracks(5, 40, 0.3, seed=2)
    out = analyze_tracks(tracks, ACQ, WindowConfig(length=10, stride=5))
    assert [t.track_id for t in out.tracks] == list(range(5))
    for tr, est in zip(tracks, out.tracks, strict=True):
        ref = cve(tr.xy_um, DT, tr.frames, exposure_s=DT)
        assert est.d_um2_s == pytest.approx(ref.d_um2_s, rel=1e-12)
        assert est.n_spots == 40 and est.method == "cve"
    # windows ending at points 9, 14, ..., 39: 7 per track, each the sigma-unknown CVE
    assert len(out.windows) == 5 * 7
    w = out.windows[0]
    ref = cve(tracks[0].xy_um[:10], DT, tracks[0].frames[:10], exposure_s=DT)
    assert (w.track_id, w.frame_start, w.frame_end) == (0, 0, 9)
    assert w.d_um2_s == pytest.approx(ref.d_um2_s, rel=1e-12)
    assert out.changes == [] and out.warnings == []


def test_short_tracks_are_warned_about_and_the_rest_estimated() -> None:
    tracks = [*_tracks(2, 30, 0.2, seed=3), Track.from_arrays(9, [0, 1], [0.0, 0.1], [0.0, 0.0])]
    out = analyze_tracks(tracks, ACQ, WindowConfig(), ChangeConfig(frame_interval_s=DT))
    assert [t.track_id for t in out.tracks] == [0, 1]
    assert [code for code, _ in out.warnings] == ["TRACK_TOO_SHORT"]
    assert "tracks[2] (track_id 9)" in out.warnings[0][1]


@pytest.mark.parametrize("frames,x,prec,message", [
    ([0, 1, 1], [0, 0, 0], None, "frames must strictly increase"),
    ([0, 1, 2], [0, np.nan, 0], None, "NaN or infinite"),
    ([0, 1, 2], [0, 0], None, "same length"),
    ([0, 1, 2], [0, 0, 0], [0.01, 0.01], "precision_um must be empty or have 3 values"),
    ([0, 1, 2], [0, 0, 0], [0.01, -1, 0.01], r"precision_um must be in \[0, 1000\] um"),
    ([0, 1, 2], [0, 0, 0], [0.01, 1e300, 0.01], r"precision_um must be in \[0, 1000\] um"),
    ([0, 1, 2], [0, 2e6, 0], None, r"x_um/y_um must be within \+-1e\+06 um"),
    ([-1, 1, 2], [0, 0, 0], None, "frames must be >= 0"),
])
def test_bad_tracks_are_errors_naming_the_track_and_field(frames, x, prec, message) -> None:
    with pytest.raises(ValueError, match=message) as err:
        Track.from_arrays(4, frames, x, [0.0] * len(frames), prec, where="tracks[1] (track_id 4)")
    assert str(err.value).startswith("tracks[1] (track_id 4): ")


def test_duplicate_ids_and_no_tracks_are_errors() -> None:
    t = _tracks(1, 12, 0.1, seed=4)[0]
    with pytest.raises(ValueError, match="track_id is not unique"):
        analyze_tracks([t, t], ACQ, WindowConfig())
    with pytest.raises(ValueError, match="tracks is empty"):
        analyze_tracks([], ACQ, WindowConfig())


@pytest.fixture(scope="module")
def registry():
    reg = ModelRegistry(None, "cpu")
    yield reg
    reg.close()


def test_the_estimator_uses_a_model_only_where_it_can(registry: ModelRegistry) -> None:
    image, features = registry.window_model, registry.track_model
    assert image is not None and features is not None
    # An image model with no pixel size, or a window longer than the model takes: the CVE,
    # and the reason is said once.
    no_px = WindowEstimator(WindowConfig(), ACQ, image)
    assert no_px.model is None and no_px.method == "cve" and "pixel_size_um" in no_px.warnings[0]
    too_long = WindowEstimator(WindowConfig(length=image.max_frames + 1),
                               Acquisition(DT, DT, pixel_size_um=0.1), image)
    assert too_long.model is None and "window.length" in too_long.warnings[0]
    # Image windows without patches fall back to the CVE per call.
    with_px = WindowEstimator(WindowConfig(), Acquisition(DT, DT, pixel_size_um=0.1), image)
    assert with_px.patch_px == image.patch_px and with_px.warnings == []
    tr = _tracks(1, 20, 0.3, seed=5)[0]
    due = sliding_windows(WindowConfig(), 0, tr.frames, tr.xy_um, tr.precision_um)
    assert {e.method for e in with_px.estimate(due)} == {"cve"}
    # A features model takes positions alone, with or without a pixel size.
    feat = WindowEstimator(WindowConfig(), ACQ, features)
    est = feat.estimate(due)
    assert feat.patch_px is None and {e.method for e in est} == {features.method}
    assert all(0 < e.d_low_um2_s <= e.d_um2_s <= e.d_high_um2_s for e in est)
