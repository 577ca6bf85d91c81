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
)

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
