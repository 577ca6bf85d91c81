"""Each track's noise from its step history: unbiased, its stated variance right, used by windows.

Statistical checks use tests/tracksim.py (positions averaged over sub-steps inside each
exposure, i.e. motion blur, plus Gaussian noise) with fixed seeds and bands of Z
standard errors (tracksim.Z = 5).
"""

from __future__ import annotations

import numpy as np
import pytest
from tracksim import Z, coverage_band, mean_band, simulate_tracks

from livespt.models.estimators import cve_batch
from livespt.server.pipeline.estimate import TRACK_SIGMA_METHOD, Acquisition, WindowEstimator
from livespt.server.pipeline.track_noise import MIN_STEP_PAIRS, TrackNoise, track_sigma
from livespt.server.pipeline.windows import WindowConfig, sliding_windows

DT = 0.05


@pytest.mark.parametrize(("d", "sigma"), [(0.05, 0.03), (0.5, 0.03), (1.0, 0.0)])
def test_track_sigma_is_unbiased_and_its_variance_is_right(d: float, sigma: float) -> None:
    """sigma^2 estimates over 400 tracks of 100 frames: mean = truth, spread = stated variance."""
    sim = simulate_tracks(400, 100, d, DT, sigma_um=sigma, substeps=20, seed=11)
    est = np.array([track_sigma(sim.frames, p, sim.blur_coefficient) for p in sim.positions_um])
    s2_hat = np.sign(est[:, 0]) * est[:, 0] ** 2  # clipped at 0: compare above the clip
    var = est[:, 1]
    # The clip at 0 biases sigma^2 up when sigma = 0; the raw moments are unbiased.
    if sigma > 0:
        emp_var = float(np.var(s2_hat))
        assert abs(s2_hat.mean() - sigma**2) < mean_band(len(s2_hat), emp_var)
        # The stated variance (Gaussian approximation, correlations between the two
        # moments neglected) must not understate the real one, and be within 2x of it.
        ratio = float(np.mean(var)) / emp_var
        print(f"D={d} sigma={sigma}: stated/empirical variance {ratio:.2f}")
        assert 0.8 < ratio < 2.0
    else:
        assert np.median(est[:, 0]) < 0.03 * np.sqrt(2 * d * DT)


def test_streaming_equals_the_whole_track_and_skips_gaps() -> None:
    sim = simulate_tracks(3, 120, 0.3, DT, sigma_um=0.02, drop_fraction=0.1, seed=2)
    noise = TrackNoise(sim.blur_coefficient)
    for i, f in enumerate(sim.frames.tolist()):
        noise.update_many([7, 8, 9], f, sim.positions_um[:, i])
    got_s, got_v = noise.sigma([7, 8, 9, 10])
    for j in range(3):
        s, v = track_sigma(sim.frames, sim.positions_um[j], sim.blur_coefficient)
        assert got_s[j] == pytest.approx(s, rel=1e-9) and got_v[j] == pytest.approx(v, rel=1e-9)
    assert np.isnan(got_s[3]) and np.isnan(got_v[3])  # unknown track
    # Too few one-frame step pairs: no estimate.
    short = TrackNoise(sim.blur_coefficient)
    for i in range(MIN_STEP_PAIRS):  # MIN_STEP_PAIRS points give MIN_STEP_PAIRS - 2 pairs
        short.update_many([1], i, sim.positions_um[0, i][None])
    assert np.isnan(short.sigma([1])[0][0])
    noise.drop(7)
    assert np.isnan(noise.sigma([7])[0][0])


def test_steps_of_unknown_interval_are_left_out_as_gaps() -> None:
    # A frame that came after an interval of unknown length (interval_known=False, the
    # timing check's flag) counts as a gap: the same estimate as the track with that frame
    # moved one frame later, whatever the position crossed.
    sim = simulate_tracks(1, 120, 0.3, DT, sigma_um=0.02, seed=3)
    flagged = set(range(15, 120, 12))
    told, gap = TrackNoise(sim.blur_coefficient), TrackNoise(sim.blur_coefficient)
    jump = np.zeros(2)
    for i, f in enumerate(sim.frames.tolist()):
        if f in flagged:
            jump = jump + 2.0  # a 2.8 um step across the unknown interval
        told.update_many([0], f, (sim.positions_um[0, i] + jump)[None],
                         interval_known=f not in flagged)
        gap.update_many([0], f + sum(g <= f for g in flagged), sim.positions_um[0, i][None])
    s_told, v_told = told.sigma([0])
    s_gap, v_gap = gap.sigma([0])
    assert np.isfinite(s_told[0])
    assert s_told[0] == pytest.approx(s_gap[0], rel=1e-9)
    assert v_told[0] == pytest.approx(v_gap[0], rel=1e-9)


def test_windows_with_the_track_sigma_beat_the_sigma_unknown_cve_and_cover() -> None:
    """Same windows: lower RMSE than the sigma-unknown CVE, and 90 % intervals that hold."""
    d, sigma, n_tracks = 0.2, 0.04, 150
    sim = simulate_tracks(n_tracks, 120, d, DT, sigma_um=sigma, substeps=20, seed=5)
    cfg = WindowConfig(length=10, stride=10)
    est = WindowEstimator(cfg, Acquisition(frame_interval_s=DT, exposure_s=DT),
                          use_fitted_sigma=False)
    ours, plain, covered = [], [], []
    for t, p in enumerate(sim.positions_um):
        due = sliding_windows(cfg, t, sim.frames, p, np.full(len(p), np.nan))
        s, v = track_sigma(sim.frames, p, sim.blur_coefficient)
        recs = est.estimate(due.with_track_noise(np.full(len(due), s), np.full(len(due), v)))
        assert {r.method for r in recs} == {TRACK_SIGMA_METHOD}
        ours += [r.d_um2_s for r in recs]
        covered += [r.d_low_um2_s <= d <= r.d_high_um2_s for r in recs]
        plain += cve_batch(due.values[:, :, :2], DT, due.frames[0], exposure_s=DT).d_um2_s.tolist()
    ours_a, plain_a = np.array(ours) / d - 1, np.array(plain) / d - 1
    rmse_ours, rmse_plain = np.sqrt(np.mean(ours_a**2)), np.sqrt(np.mean(plain_a**2))
    cov = float(np.mean(covered))
    print(f"rel. RMSE: track sigma {rmse_ours:.3f}, sigma unknown {rmse_plain:.3f}; "
          f"coverage {cov:.3f} over {len(covered)} windows")
    # Paired comparison on the same windows: the squared-error difference, Z bands.
    diff = ours_a**2 - plain_a**2
    assert diff.mean() + mean_band(len(diff), float(np.var(diff))) < 0
    # Windows of one track share its sigma estimate, so coverage varies more than
    # binomially: band for the number of tracks, not of windows.
    assert abs(cov - 0.9) < coverage_band(n_tracks, 0.9)
    assert Z == 5.0


def test_dispersion_is_one_for_gaussian_steps_and_matches_a_direct_computation() -> None:
    """phi = 2 E[u^2] / (1 - E[u^2]), u over squared steps two apart: 1 under the model."""
    n, frames = 300, 200
    sim = simulate_tracks(n, frames, 0.2, DT, sigma_um=0.03, substeps=20, seed=21)
    noise = TrackNoise(sim.blur_coefficient)
    ids = np.arange(n)
    for f in range(frames):
        noise.update_many(ids, f, sim.positions_um[:, f])
    phi = noise.dispersion(ids)
    assert np.all(np.isfinite(phi))
    print(f"\nGaussian steps: mean phi {phi.mean():.4f} (SD {phi.std():.3f} per track)")
    assert abs(phi.mean() - 1.0) < mean_band(n, float(np.var(phi)))
    # Streaming with gaps equals the direct formula over runs of one-frame steps.
    rng = np.random.default_rng(3)
    keep = np.sort(rng.choice(frames, 150, replace=False))
    xy = sim.positions_um[0, keep]
    gapped = TrackNoise(sim.blur_coefficient)
    for f, p in zip(keep, xy, strict=True):
        gapped.update_many([5], int(f), p[None])
    q = np.sum(np.diff(xy, axis=0) ** 2, axis=1)
    one = np.diff(keep) == 1
    u2 = [((q[i] - q[i - 2]) / (q[i] + q[i - 2])) ** 2 for i in range(2, len(q))
          if one[i] and one[i - 1] and one[i - 2]]
    m = float(np.mean(u2))
    assert len(u2) >= MIN_STEP_PAIRS
    assert gapped.dispersion([5])[0] == pytest.approx(2 * m / (1 - m), rel=1e-12)
    assert np.isnan(gapped.dispersion([99])[0])


def test_dispersion_widens_the_interval_and_leaves_the_estimate() -> None:
    sim = simulate_tracks(20, 10, 0.2, DT, sigma_um=0.03, seed=4)
    kw = dict(exposure_s=DT, sigma_um=0.03)
    base = cve_batch(sim.positions_um, DT, **kw)
    wide = cve_batch(sim.positions_um, DT, dispersion=np.full(20, 4.0), **kw)
    np.testing.assert_array_equal(wide.d_um2_s, base.d_um2_s)
    np.testing.assert_allclose(wide.se_um2_s, 2.0 * base.se_um2_s, rtol=1e-12)
    assert np.all(wide.d_high_um2_s > base.d_high_um2_s)
    assert np.all(wide.d_low_um2_s <= base.d_low_um2_s)
    with pytest.raises(ValueError, match="dispersion must be >= 1"):
        cve_batch(sim.positions_um, DT, dispersion=0.5, **kw)
