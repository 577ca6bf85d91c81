"""Monte-Carlo tests of the estimators' statistical claims.

Thousands of tracks are simulated at once by tracksim (exposure-averaged Brownian
motion + localization noise) and analysed by the batch entry points. Tolerances are
bands of Z = 5 Monte-Carlo standard errors (tracksim.mean_band / variance_band /
coverage_band, derivations there); the simulator's blur coefficient is exact, so the
theory is compared with no modelling slack.

Settings are named by x = sigma^2 / (D dt) - 2R, Vestergaard et al.'s reduced noise.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from tracksim import (
    SimulatedTracks,
    coverage_band,
    mean_band,
    simulate_tracks,
    variance_band,
)

from livespt.models.estimators import (
    cve_batch,
    cve_relative_variance,
    cve_variance,
    msd_fit,
    msd_fit_batch,
    msd_fit_variance,
    noise_spread_samples,
)
from livespt.models.estimators.quadform import VarianceCoefficients

D = 0.5  # um^2/s
DT = 0.01  # s
M = 4000  # tracks per setting


def sigma_for(x: float, r: float) -> float:
    """Localization precision giving reduced noise x at blur R: sigma^2 = (x + 2R) D dt."""
    return float(np.sqrt((x + 2.0 * r) * D * DT))


@functools.cache
def tracks(
    x: float, exposure_s: float, n_frames: int, drop: float = 0.0, seed: int = 0
) -> tuple[SimulatedTracks, float]:
    """Cached simulation shared by the tests of one setting; returns (tracks, sigma)."""
    r = exposure_s / (6 * DT) * (1 - 1 / 10**2) if exposure_s > 0 else 0.0
    sigma = sigma_for(x, r)
    # independent random numbers for every setting, reproducible
    key = [seed, round(x * 1000), round(exposure_s * 1e6), n_frames, round(drop * 1000)]
    sim = simulate_tracks(
        M,
        n_frames,
        D,
        DT,
        exposure_s=exposure_s,
        sigma_um=sigma,
        drop_fraction=drop,
        seed=int(np.random.SeedSequence(key).generate_state(1)[0]),
        substeps=10,
    )
    assert sim.blur_coefficient == pytest.approx(r)
    return sim, sigma


SETTINGS = [(x, te) for x in (0.1, 1.0, 5.0) for te in (0.0, DT)]


@pytest.mark.parametrize(("x", "exposure_s"), SETTINGS)
def test_cve_unbiased_with_the_predicted_variance(x: float, exposure_s: float) -> None:
    sim, sigma = tracks(x, exposure_s, 51)
    r = sim.blur_coefficient
    n_steps = 50

    # sigma unknown: against Vestergaard's formula (DESIGN.md), which differs from the
    # exact variance by O(1/N^2) (0.03 % here); that difference is added to the band.
    est = cve_batch(sim.positions_um, DT, sim.frames, blur_coefficient=r).d_um2_s
    formula = cve_relative_variance(n_steps, D, sigma, DT, ndim=2, blur_coefficient=r) * D**2
    exact = cve_variance(sim.frames, D, sigma, DT, ndim=2, blur_coefficient=r)
    assert abs(est.mean() - D) <= mean_band(M, exact)
    assert abs(est.var() - formula) <= variance_band(est) + abs(formula - exact)

    # sigma known: against the exact quadratic-form variance
    known = cve_batch(sim.positions_um, DT, sim.frames, sigma_um=sigma, blur_coefficient=r)
    exact_known = cve_variance(
        sim.frames, D, sigma, DT, ndim=2, sigma_known=True, blur_coefficient=r
    )
    assert abs(known.d_um2_s.mean() - D) <= mean_band(M, exact_known)
    assert abs(known.d_um2_s.var() - exact_known) <= variance_band(known.d_um2_s)


@pytest.mark.parametrize("sigma_known", [False, True])
def test_cve_with_gaps_unbiased_with_exact_variance(sigma_known: bool) -> None:
    sim, sigma = tracks(1.0, DT, 61, drop=0.2, seed=1)
    r = sim.blur_coefficient
    assert sim.frames.size < 61 and np.any(np.diff(sim.frames) > 1)
    est = cve_batch(
        sim.positions_um,
        DT,
        sim.frames,
        sigma_um=sigma if sigma_known else None,
        blur_coefficient=r,
    ).d_um2_s
    exact = cve_variance(
        sim.frames, D, sigma, DT, ndim=2, sigma_known=sigma_known, blur_coefficient=r
    )
    assert abs(est.mean() - D) <= mean_band(M, exact)
    assert abs(est.var() - exact) <= variance_band(est)


COVERAGE = [
    (kind, x, drop)
    for kind in ("cve", "cve-sigma-known", "msd-optimal")
    for x, drop in ((0.1, 0.0), (5.0, 0.0), (1.0, 0.2))
]


@pytest.mark.parametrize(("kind", "x", "drop"), COVERAGE)
def test_90_percent_intervals_cover_the_truth(kind: str, x: float, drop: float) -> None:
    # 100-step tracks: long enough for the normal approximation behind the interval.
    sim, sigma = tracks(x, DT, 101, drop=drop, seed=2)
    r = sim.blur_coefficient
    if kind == "msd-optimal":
        est = msd_fit_batch(sim.positions_um, DT, sim.frames, fit="optimal", blur_coefficient=r)
    else:
        known = sigma if kind == "cve-sigma-known" else None
        est = cve_batch(sim.positions_um, DT, sim.frames, sigma_um=known, blur_coefficient=r)
    covered = (est.d_low_um2_s <= D) & (D <= est.d_high_um2_s)
    assert est.confidence == 0.9
    assert abs(covered.mean() - 0.9) <= coverage_band(M, 0.9)


MSD_SETTINGS = [(x, te, drop) for x in (0.1, 1.0, 5.0) for te, drop in ((DT, 0.0), (0.0, 0.0))]
MSD_SETTINGS.append((1.0, DT, 0.2))


@pytest.mark.parametrize(("x", "exposure_s", "drop"), MSD_SETTINGS)
@pytest.mark.parametrize("fit", ["full", "weighted"])
def test_msd_fit_unbiased_with_exact_variance(
    fit: str, x: float, exposure_s: float, drop: float
) -> None:
    # Lags and weights of these fits do not depend on the data, so with sigma and R in
    # the model the fit is exactly unbiased and its variance an exact quadratic form.
    sim, sigma = tracks(x, exposure_s, 51, drop=drop, seed=3)
    r = sim.blur_coefficient
    est = msd_fit_batch(sim.positions_um, DT, sim.frames, fit=fit, blur_coefficient=r).d_um2_s
    exact = msd_fit_variance(sim.frames, D, sigma, DT, ndim=2, fit=fit, blur_coefficient=r)
    assert abs(est.mean() - D) <= mean_band(M, exact)
    assert abs(est.var() - exact) <= variance_band(est)


def test_msd_slope_recovers_d_without_noise_or_blur() -> None:
    # sigma = 0, instantaneous exposure: MSD(n) = 2 d D dt n exactly in expectation.
    sim = simulate_tracks(M, 101, D, DT, exposure_s=0.0, sigma_um=0.0, seed=4)
    est = msd_fit_batch(sim.positions_um, DT, fit="full", exposure_s=0.0)
    exact = msd_fit_variance(101, D, 0.0, DT, exposure_s=0.0)
    assert abs(est.d_um2_s.mean() - D) <= mean_band(M, exact)
    # the intercept (sigma^2 = 0 here) is unbiased too; its spread taken from the sample
    assert abs(est.sigma2_um2.mean()) <= mean_band(M, float(est.sigma2_um2.var()))
    # one long track: within Z of its own standard error
    one = simulate_tracks(1, 20001, D, DT, exposure_s=0.0, seed=5)
    single = msd_fit(one.positions_um[0], DT, exposure_s=0.0, max_lag=10)
    assert abs(single.d_um2_s - D) <= mean_band(1, single.se_um2_s**2)


# ---------------------------------------------------------------------------
# Sigma-known CVE from both moments (weight_at_d_um2_s): with blur the adjacent
# products carry D too; the least-variance combination must stay unbiased, have the
# variance of its quadratic form, never be noisier than either classic variant, and
# its intervals must cover.


def _both_moments_variance(sim: SimulatedTracks, sigma: float) -> float:
    """Exact variance of the combination at the true (D, sigma): the form's coefficients."""
    from livespt.models.estimators.cve import _known_both_moments
    from livespt.models.estimators.quadform import variance

    r = sim.blur_coefficient
    one = sim.positions_um[:1]
    _, q, extra, _ = _known_both_moments(one, sim.frames, DT, r, sigma**2, 0.0, D, 1.0)
    return float(variance(VarianceCoefficients(*(np.asarray(c)[0] for c in q)), D,
                          sigma**2, 2)[()] + np.asarray(extra).reshape(-1)[0])


@pytest.mark.parametrize(("x", "drop"), [(0.1, 0.0), (1.0, 0.0), (5.0, 0.0), (1.0, 0.2)])
def test_cve_both_moments_unbiased_and_never_noisier(x: float, drop: float) -> None:
    sim, sigma = tracks(x, DT, 11, drop=drop, seed=3)
    r = sim.blur_coefficient
    both = cve_batch(sim.positions_um, DT, sim.frames, sigma_um=sigma, blur_coefficient=r,
                     weight_at_d_um2_s=D)
    assert both.variant == "sigma-known, both moments"
    exact = _both_moments_variance(sim, sigma)
    assert abs(both.d_um2_s.mean() - D) <= mean_band(M, exact)
    assert abs(both.d_um2_s.var() - exact) <= variance_band(both.d_um2_s)
    # the two classic variants are members of the family (w = 1 and w = 1 - 2R):
    # the least-variance member is never worse than either (exact variances)
    for known in (True, False):
        other = cve_variance(sim.frames, D, sigma, DT, ndim=2, sigma_known=known,
                             blur_coefficient=r)
        assert exact <= other * (1 + 1e-9)
    # at x = 1 (sigma^2 = 1.33 D dt here) the gain over the better classic one is large
    if x == 1.0 and drop == 0.0:
        best = min(cve_variance(sim.frames, D, sigma, DT, ndim=2, sigma_known=k,
                                blur_coefficient=r) for k in (True, False))
        assert exact < 0.8 * best


def test_cve_both_moments_without_blur_is_the_squared_step_cve() -> None:
    sim, sigma = tracks(1.0, 0.0, 11, seed=4)
    a = cve_batch(sim.positions_um, DT, sim.frames, sigma_um=sigma, blur_coefficient=0.0,
                  weight_at_d_um2_s=D)
    b = cve_batch(sim.positions_um, DT, sim.frames, sigma_um=sigma, blur_coefficient=0.0)
    assert a.variant == b.variant == "sigma-known"
    np.testing.assert_array_equal(a.d_um2_s, b.d_um2_s)


@pytest.mark.parametrize(("x", "drop"), [(0.1, 0.0), (5.0, 0.0), (1.0, 0.2)])
def test_cve_both_moments_90_percent_intervals_cover(x: float, drop: float) -> None:
    sim, sigma = tracks(x, DT, 101, drop=drop, seed=2)
    est = cve_batch(sim.positions_um, DT, sim.frames, sigma_um=sigma,
                    blur_coefficient=sim.blur_coefficient, weight_at_d_um2_s=D)
    covered = (est.d_low_um2_s <= D) & (D <= est.d_high_um2_s)
    assert abs(covered.mean() - 0.9) <= coverage_band(M, 0.9)


@pytest.mark.parametrize("spread", [0.0, 1.0])
def test_noise_spread_samples_estimate_the_spread_of_window_noise(spread: float) -> None:
    # Every track's noise variance is sigma^2 + delta, delta uniform in +-a (Var = a^2/3);
    # the track noise handed to the estimator is sigma. The samples' mean must be
    # a^2 / 3 (0 when the model holds), within 5 Monte-Carlo standard errors.
    base, _ = tracks(0.0, DT, 11, seed=5)  # x = 0: sigma^2 = 2R D dt
    r = base.blur_coefficient
    sigma2 = (2.0 * r + 1.0) * D * DT
    a = spread * 0.9 * D * DT  # the added variance D dt + delta stays > 0
    rng = np.random.default_rng(7)
    # base has sigma^2 = 2R D dt already; add the rest per track, per axis
    add = sigma2 - 2.0 * r * D * DT + rng.uniform(-a, a, M)
    pos = base.positions_um + rng.normal(size=base.positions_um.shape) * np.sqrt(add)[:, None,
                                                                                      None]
    s = noise_spread_samples(pos, DT, base.frames, sigma_um=np.sqrt(sigma2),
                             weight_at_d_um2_s=D, blur_coefficient=r)
    target = a * a / 3.0
    assert abs(s.mean() - target) <= 5.0 * s.std() / np.sqrt(M)
    if spread:
        assert s.mean() > 5.0 * s.std() / np.sqrt(M)  # and it is told from 0
