"""Deterministic tests of the classical estimators: algebra, API, input errors.

The statistical claims (unbiasedness, variance, coverage) are in
test_estimators_mc.py; the Cramer-Rao bounds in test_bounds.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import norm

from livespt.models.estimators import (
    Estimate,
    EstimateBatch,
    _tracks,
    cve,
    cve_batch,
    cve_relative_variance,
    cve_variance,
    msd,
    msd_curve,
    msd_fit,
    msd_fit_batch,
    msd_fit_variance,
    quadform,
)
from livespt.models.estimators.cve import _cve_form

DT = 0.01
D = 0.5


def dense(t: _tracks.Tridiagonal) -> np.ndarray:
    return np.diag(t.diag) + np.diag(t.off, 1) + np.diag(t.off, -1)


def random_walk(n: int, ndim: int = 2, seed: int = 0, sigma: float = 0.03) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, math.sqrt(2 * D * DT), (n, ndim))
    return np.cumsum(steps, axis=0) + rng.normal(0.0, sigma, (n, ndim))


# ---------------------------------------------------------------- model and algebra


def test_step_covariance_matches_exposure_averaged_brownian_motion() -> None:
    # Var of the difference of two exposure averages k frames apart is 2 D (k dt - te/3),
    # the adjacent covariance D te / 3 = 2 R D dt (Berglund 2010), for any gaps.
    te, sigma2 = 0.006, 0.002
    gaps = np.array([1.0, 3.0, 1.0, 2.0])
    r = te / (6 * DT)
    cov = _tracks.step_covariance(gaps, D, sigma2, DT, r)
    np.testing.assert_allclose(cov.diag, 2 * D * (gaps * DT - te / 3) + 2 * sigma2)
    np.testing.assert_allclose(cov.off, D * te / 3 - sigma2)


@pytest.mark.parametrize("sigma_known", [False, True])
@pytest.mark.parametrize("frames", [np.arange(12), np.array([0, 1, 2, 4, 5, 8, 9, 10, 13])])
def test_cve_is_algebraically_unbiased(frames: np.ndarray, sigma_known: bool) -> None:
    # E[s^T A s] = D tr(A Sigma_D) + sigma^2 tr(A Sigma_S); unbiased iff (1, 0) for the
    # sigma-unknown CVE; with sigma known the constant -2 sigma^2 / (2 dt (kbar - 2R))
    # removes exactly sigma^2 tr(A Sigma_S).
    r = 0.12
    a = _cve_form(frames, DT, r, sigma_known)
    sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), DT, r)
    t_d, t_s = quadform.tridiagonal_mean_coefficients(a, sig_d, sig_s)
    assert t_d == pytest.approx(1.0, rel=1e-12)
    kbar = _tracks.gaps(frames).mean()
    expected_s = 2.0 / (2 * DT * (kbar - 2 * r)) if sigma_known else 0.0
    assert t_s == pytest.approx(expected_s, rel=1e-12, abs=1e-9)


def test_tridiagonal_variance_equals_dense_trace_formula() -> None:
    frames = np.array([0, 1, 3, 4, 5, 6, 9, 10])
    r = 0.1
    a = _cve_form(frames, DT, r, False)
    sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), DT, r)
    q = quadform.tridiagonal_variance_coefficients(a, sig_d, sig_s)
    for d, s2 in [(1.0, 0.0), (0.0, 1.0), (0.3, 0.002)]:
        sigma = d * dense(sig_d) + s2 * dense(sig_s)
        am = dense(a)
        expected = 2 * np.trace(am @ sigma @ am @ sigma)
        assert float(quadform.variance(q, d, s2, 1)) == pytest.approx(expected, rel=1e-12)


def test_vestergaard_formula_is_the_exact_variance_to_leading_orders() -> None:
    # At x = 0, R = 0 the steps are iid and the exact variance is
    # D^2 (2/N + 4/(N-1)) / d = D^2 (6/N + 4/(N(N-1))) / d; the formula has 4/N^2 in
    # place of 4/(N(N-1)).
    for n in (5, 20, 100):
        exact = cve_variance(n + 1, D, 0.0, DT, 0.0, 2)
        assert exact == pytest.approx(D**2 * (2 / n + 4 / (n - 1)) / 2, rel=1e-12)
        formula = cve_relative_variance(n, D, 0.0, DT, 0.0, 2) * D**2
        assert formula == pytest.approx(D**2 * (6 / n + 4 / n**2) / 2, rel=1e-12)

    # With noise and blur too, the two agree in their O(1/N) and O(1/N^2) terms: the
    # relative difference is O(1/N^2), so N^2 (ratio - 1) settles to a constant, with
    # an O(1/N) drift between N = 200 and N = 400.
    def scaled(n: int) -> float:
        ratio = cve_variance(n + 1, D, 0.05, DT) / (cve_relative_variance(n, D, 0.05, DT) * D**2)
        return n**2 * (ratio - 1)

    assert scaled(400) == pytest.approx(scaled(200), rel=2 * (1 / 200))


def test_msd_closed_form_covariance_equals_dense_quadratic_form() -> None:
    # Two independent routes to Var(sum_n h_n m_n): the closed-form lag-lag covariance of
    # a gap-free track, and 2 tr(A Sigma A Sigma) with A built from pair weights.
    rng = np.random.default_rng(5)
    r = 0.15
    for n_steps in (2, 5, 17, 40):
        frames = np.arange(n_steps + 1)
        lags = np.arange(1, n_steps + 1)
        h = rng.standard_normal((3, n_steps))
        q1 = quadform.contiguous_msd_variance_coefficients(h, lags, n_steps, DT, r)
        weights = np.zeros((3, n_steps + 1))
        weights[:, 1:] = h / (n_steps + 1 - lags)
        sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), DT, r)
        q2 = quadform.pair_weight_variance_coefficients(frames, weights, sig_d, sig_s)
        for a, b in zip(q1, q2, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-11)


def test_pair_weighted_form_with_gaps_matches_brute_force() -> None:
    frames = np.array([0, 1, 3, 4, 5, 8, 9, 10, 11, 14])
    r = 0.1
    max_lag = 6
    rng = np.random.default_rng(1)
    weights = np.zeros((1, max_lag + 1))
    weights[0, 1:] = rng.standard_normal(max_lag)
    sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), DT, r)
    q = quadform.pair_weight_variance_coefficients(frames, weights, sig_d, sig_s)
    n = frames.size - 1
    a = np.zeros((n, n))
    for i in range(frames.size):
        for j in range(i + 1, frames.size):
            lag = frames[j] - frames[i]
            if lag <= max_lag:
                u = np.zeros(n)
                u[i:j] = 1.0
                a += weights[0, lag] * np.outer(u, u)
    for d, s2 in [(1.0, 0.0), (0.0, 1.0), (0.4, 0.003)]:
        sigma = d * dense(sig_d) + s2 * dense(sig_s)
        expected = 2 * np.trace(a @ sigma @ a @ sigma)
        assert float(quadform.variance(q, d, s2, 1)[0]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_test_inversion_interval_matches_grid_search(seed: int) -> None:
    # The closed-form roots against a brute-force scan of {D >= 0 : (D_hat - D)^2 <= z^2 Var(D)}.
    rng = np.random.default_rng(seed)
    m = 200
    d_hat = rng.normal(0.2, 0.6, m)
    q = quadform.VarianceCoefficients(
        rng.uniform(0.01, 0.8, m), rng.uniform(0.0, 40.0, m), rng.uniform(0.0, 500.0, m)
    )
    s2 = rng.uniform(-0.001, 0.01, m)
    low, high, _ = quadform.interval_by_test_inversion(d_hat, q, s2, 2, 0.9)
    z2 = norm.ppf(0.95) ** 2
    for i in range(m):
        s2p = max(s2[i], 0.0)

        def accepts(dd: np.ndarray, i: int = i, s2p: float = s2p) -> np.ndarray:
            var = (q.dd[i] * dd**2 + q.ds[i] * dd * s2p + q.ss[i] * s2p**2) / 2
            return (d_hat[i] - dd) ** 2 <= z2 * var

        top = 2 * high[i] + 1 if np.isfinite(high[i]) else 1e3
        grid = np.linspace(0.0, top, 200001)
        accepted = grid[accepts(grid)]
        step = grid[1]
        if accepted.size == 0:
            assert (low[i], high[i]) == (0.0, 0.0)
            continue
        assert low[i] == pytest.approx(accepted[0], abs=2 * step)
        if np.isinf(high[i]):
            assert accepted[-1] == grid[-1] and accepts(np.array([1e9]))[0]
        else:
            assert high[i] == pytest.approx(accepted[-1], abs=2 * step)


def test_interval_is_never_negative_and_can_be_unbounded() -> None:
    # Three positions cannot bound D from above (Var(D)/D^2 * z^2 > 1); a negative
    # estimate keeps a lower bound at 0.
    pos = np.array([[0.0, 0.0], [0.05, -0.02], [0.01, 0.03]])
    est = cve(pos, DT, track_id=3)
    assert est.d_low_um2_s >= 0.0
    assert est.d_high_um2_s == math.inf
    rng = np.random.default_rng(2)
    batch = cve_batch(rng.normal(0, 0.1, (500, 8, 2)), DT)  # pure noise: D_hat often < 0
    assert np.any(batch.d_um2_s < 0)
    assert np.all(batch.d_low_um2_s >= 0)
    assert np.all(batch.d_high_um2_s >= batch.d_low_um2_s)
    assert np.all(batch.d_low_um2_s[batch.d_um2_s <= 0] == 0)


# ---------------------------------------------------------------- CVE


def test_cve_by_hand_one_dimension() -> None:
    x = np.array([0.0, 0.3, 0.1, 0.6])
    s = np.diff(x)
    m2 = np.mean(s**2)
    m1 = np.mean(s[1:] * s[:-1])
    r = 0.1
    est = cve(x, DT, blur_coefficient=r)
    assert est.d_um2_s == pytest.approx(m2 / (2 * DT) + m1 / DT)
    assert est.sigma2_um2 == pytest.approx(r * m2 + (2 * r - 1) * m1)
    known = cve(x, DT, sigma_um=0.05, blur_coefficient=r)
    assert known.d_um2_s == pytest.approx((m2 - 2 * 0.05**2) / (2 * (1 - 2 * r) * DT))
    assert known.sigma2_um2 == pytest.approx(0.05**2)
    assert known.variant == "sigma-known" and est.variant == "sigma-unknown"


def test_cve_with_gaps_uses_moment_equations() -> None:
    frames = np.array([0, 1, 3, 4, 6])
    x = np.array([[0.0], [0.2], [0.1], [0.5], [0.4]])
    s = np.diff(x[:, 0])
    kbar = np.diff(frames).mean()
    est = cve(x, DT, frames, exposure_s=0.0)
    m2, m1 = np.mean(s**2), np.mean(s[1:] * s[:-1])
    assert est.d_um2_s == pytest.approx((m2 + 2 * m1) / (2 * DT * kbar))
    assert est.sigma2_um2 == pytest.approx(-m1)


def test_cve_single_equals_batch_row_and_result_api() -> None:
    rng = np.random.default_rng(3)
    pos = np.cumsum(rng.normal(0, 0.1, (5, 30, 2)), axis=1)
    frames = np.arange(30) * 2 + 7  # every other frame: uniform gaps of 2
    batch = cve_batch(pos, DT, frames, exposure_s=0.004)
    assert isinstance(batch, EstimateBatch) and len(batch) == 5
    for i in range(5):
        single = cve(pos[i], DT, frames, exposure_s=0.004, track_id=f"t{i}")
        assert single == batch.estimate(i, track_id=f"t{i}")
    d = single.to_dict()
    for key in (
        "d_um2_s",
        "d_low_um2_s",
        "d_high_um2_s",
        "se_um2_s",
        "sigma2_um2",
        "n_positions",
        "n_steps",
        "method",
        "variant",
        "track_id",
    ):
        assert key in d
    assert d["method"] == "cve" and d["n_positions"] == 30 and d["n_steps"] == 29
    cols = batch.to_dict()
    assert all(np.shape(v) == (5,) for v in cols.values())


def test_blur_coefficient_override_and_exposure_default() -> None:
    pos = random_walk(40)

    def same(a: Estimate, b: Estimate) -> None:
        # R = dt / (6 dt) and 1/6 may differ in the last bit
        da, db = a.to_dict(), b.to_dict()
        for key, value in da.items():
            if isinstance(value, float):
                assert value == pytest.approx(db[key], rel=1e-12), key
            else:
                assert value == db[key], key

    same(cve(pos, DT), cve(pos, DT, exposure_s=DT))
    same(cve(pos, DT), cve(pos, DT, blur_coefficient=1 / 6))
    same(cve(pos, DT, exposure_s=0.0), cve(pos, DT, blur_coefficient=0.0))


# ---------------------------------------------------------------- MSD


def brute_msd(pos: np.ndarray, frames: np.ndarray, lag: int) -> tuple[float, int]:
    vals = [
        float(np.sum((pos[j] - pos[i]) ** 2))
        for i in range(len(frames))
        for j in range(i + 1, len(frames))
        if frames[j] - frames[i] == lag
    ]
    return (float(np.mean(vals)) if vals else math.nan), len(vals)


def test_msd_curve_matches_brute_force() -> None:
    pos = random_walk(25, ndim=3)
    lags, values, counts = msd_curve(pos)
    assert list(lags) == list(range(1, 25))
    for lag, v, c in zip(lags, values, counts, strict=True):
        expected, n = brute_msd(pos, np.arange(25), lag)
        assert c == n == 25 - lag
        assert v == pytest.approx(expected, rel=1e-12)


def test_msd_with_gaps_equals_full_track_restricted_to_available_pairs() -> None:
    pos_full = random_walk(40, seed=4)
    frames_full = np.arange(40)
    keep = np.ones(40, dtype=bool)
    keep[[3, 4, 10, 17, 18, 19, 30]] = False
    lags, values, counts = msd_curve(pos_full[keep], frames_full[keep], max_lag=25)
    for lag, v, c in zip(lags, values, counts, strict=True):
        # pairs of the full track whose two ends both survived
        pairs = [
            float(np.sum((pos_full[i + lag] - pos_full[i]) ** 2))
            for i in range(40 - lag)
            if keep[i] and keep[i + lag]
        ]
        assert c == len(pairs)
        if pairs:
            assert v == pytest.approx(np.mean(pairs), rel=1e-12)
        else:
            assert math.isnan(v)


def test_msd_curve_1d_and_max_lag() -> None:
    lags, values, counts = msd_curve([0.0, 1.0, 3.0, 6.0], max_lag=2)
    np.testing.assert_array_equal(lags, [1, 2])
    np.testing.assert_allclose(values, [(1 + 4 + 9) / 3, (9 + 25) / 2])
    np.testing.assert_array_equal(counts, [3, 2])


@pytest.mark.parametrize("fit", ["full", "optimal", "weighted"])
def test_msd_fit_single_equals_batch_and_reports_lags(fit: str) -> None:
    rng = np.random.default_rng(7)
    pos = np.cumsum(rng.normal(0, 0.1, (4, 40, 2)), axis=1) + rng.normal(0, 0.05, (4, 40, 2))
    batch = msd_fit_batch(pos, DT, fit=fit, exposure_s=0.005)
    for i in range(4):
        single = msd_fit(pos[i], DT, fit=fit, exposure_s=0.005, track_id=i)
        assert single == batch.estimate(i, track_id=i)
        assert single.method == "msd" and single.variant == fit
    lags = batch.max_lag
    assert lags is not None
    if fit == "full":
        assert set(lags) == {10}
    if fit == "weighted":
        assert set(lags) == {20}
    assert np.all(lags >= 2)


def test_msd_fit_is_the_least_squares_line() -> None:
    pos = random_walk(60, seed=9)
    r = 0.1
    est = msd_fit(pos, DT, max_lag=8, blur_coefficient=r)
    lags, values, _ = msd_curve(pos, max_lag=8)
    slope, intercept = np.polyfit(lags - 2 * r, values / 2, 1)
    assert est.d_um2_s == pytest.approx(slope / (2 * DT), rel=1e-10)
    assert est.sigma2_um2 == pytest.approx(intercept / 2, rel=1e-8)
    assert est.max_lag == 8


def test_msd_fit_variance_dense_path_equals_closed_form(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tracks with gaps take the dense pair-weight path; forcing it on a gap-free track
    # (where its weights, scaled by a pair-count ratio of 1, are the same) must give
    # the closed-form result.
    frames = np.arange(31)
    closed = [msd_fit_variance(frames, D, 0.03, DT, fit=f) for f in ("full", "weighted")]
    monkeypatch.setattr(_tracks, "is_contiguous", lambda f: False)
    dense_path = [msd_fit_variance(frames, D, 0.03, DT, fit=f) for f in ("full", "weighted")]
    np.testing.assert_allclose(dense_path, closed, rtol=1e-10)


@pytest.mark.parametrize("fit", ["full", "weighted"])
@pytest.mark.parametrize("drop", [0.1, 0.3])
def test_long_gapped_track_approximation(
    monkeypatch: pytest.MonkeyPatch, drop: float, fit: str
) -> None:
    # Above DENSE_MAX_STEPS, gapped tracks use the gap-free closed form with the
    # random-thinning correction. Forced on a 300-frame track with random gaps, it is
    # within 1.5 % of the exact variance (measured: 0.3 % at 10 %, 1.5 % at 30 % missing
    # frames, 4 % at 50 %); 3 % is asserted.
    rng = np.random.default_rng(0)
    keep = rng.random(300) > drop
    keep[[0, -1]] = True
    frames = np.flatnonzero(keep)
    exact = msd_fit_variance(frames, D, 0.03, DT, fit=fit)
    monkeypatch.setattr(msd, "DENSE_MAX_STEPS", 10)
    approx = msd_fit_variance(frames, D, 0.03, DT, fit=fit)
    assert approx == pytest.approx(exact, rel=0.03)


def test_msd_fit_default_lags_widen_over_gaps() -> None:
    # Frames 0, 5, 10, 15, ...: lags 1..4 have no pairs; the default (N // 4 = 2) widens
    # to the second lag that has pairs (10); an explicit too-small max_lag is an error.
    frames = np.arange(12) * 5
    pos = random_walk(12)
    est = msd_fit(pos, DT, frames)
    assert est.max_lag == 10
    with pytest.raises(ValueError, match="max_lag"):
        msd_fit(pos, DT, frames, max_lag=6)


# ---------------------------------------------------------------- errors


GOOD = random_walk(10)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cve(GOOD, -0.01), "frame_interval_s"),
        (lambda: cve(GOOD, DT, exposure_s=0.02), "exposure_s"),
        (lambda: cve(GOOD, DT, exposure_s=-1.0), "exposure_s"),
        (lambda: cve(GOOD, DT, sigma_um=-0.1), "sigma_um"),
        (lambda: cve(GOOD, DT, confidence=1.0), "confidence"),
        (lambda: cve(GOOD, DT, confidence=1.5), "confidence"),
        (lambda: cve(GOOD, DT, blur_coefficient=0.3), "blur_coefficient"),
        (lambda: cve([], DT, track_id=4), "track 4: positions_um is empty"),
        (lambda: cve(np.zeros((0, 2)), DT), "positions_um is empty"),
        (
            lambda: cve(np.array([[0, 0], [1, np.nan], [2, 2]]), DT, track_id=5),
            "track 5: positions_um contains NaN",
        ),
        (lambda: cve(np.array([[0, 0], [1, np.inf], [2, 2]]), DT), "positions_um contains NaN"),
        (
            lambda: cve(np.zeros((2, 2)), DT, track_id=17),
            "track 17: positions_um needs at least 3 positions, got 2",
        ),
        (lambda: cve(np.zeros((2, 50)), DT), "positions_um must have shape"),
        (
            lambda: cve(GOOD, DT, frames=[0, 1, 2, 2, 3, 4, 5, 6, 7, 8], track_id="a"),
            "track a: frames must be strictly increasing",
        ),
        (lambda: cve(GOOD, DT, frames=np.arange(9)), "frames must have one entry per position"),
        (lambda: cve(GOOD, DT, frames=np.arange(10) + 0.5), "frames must be integers"),
        (lambda: cve_batch(np.zeros((3, 2, 2)), DT), "positions_um needs at least 3"),
        (lambda: cve_batch(np.full((3, 5, 2), np.nan), DT), "positions_um contains NaN"),
        (lambda: msd_fit(GOOD, DT, fit="best"), "fit must be one of"),
        (lambda: msd_fit(GOOD, DT, max_lag=1), "max_lag"),
        (lambda: msd_fit(GOOD, DT, max_lag=10, track_id=8), "track 8: max_lag"),
        (lambda: msd_fit(np.zeros((2, 2)), DT, track_id=17), "track 17: positions_um needs"),
        (lambda: msd_fit(GOOD, DT, exposure_s=0.5), "exposure_s"),
        (lambda: msd_curve(GOOD, max_lag=0), "max_lag"),
        (lambda: msd_curve(GOOD, frames=np.arange(10)[::-1]), "frames must be strictly"),
        (lambda: cve_relative_variance(10, -1.0, 0.03, DT), "d_um2_s"),
        (lambda: cve_relative_variance(10, 0.0, 0.03, DT), "d_um2_s"),
        (lambda: cve_relative_variance(1, D, 0.03, DT), "n_steps"),
        (lambda: cve_variance(2, D, 0.03, DT), "n_positions"),
        (lambda: cve_variance(10, D, 0.03, DT, ndim=0), "ndim"),
        (lambda: msd_fit_variance(10, -D, 0.03, DT), "d_um2_s"),
        (lambda: msd_fit_variance(10, D, 0.03, DT, fit="optimal"), "fit"),
    ],
)
def test_errors_name_the_parameter(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_estimate_is_frozen() -> None:
    est = cve(GOOD, DT)
    assert isinstance(est, Estimate)
    with pytest.raises(AttributeError):
        est.d_um2_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("fit", ["full", "optimal", "weighted"])
def test_degenerate_tracks_give_finite_valid_results(fit: str) -> None:
    # A particle that never moves (identical positions) and pure localization noise
    # (D = 0): estimates stay finite, intervals valid, nothing raises.
    still = np.ones((20, 2))
    rng = np.random.default_rng(8)
    noise = rng.normal(0.0, 0.05, (300, 20, 2))
    for est in (
        cve(still, DT),
        msd_fit(still, DT, fit=fit),
        *[cve_batch(noise, DT).estimate(i) for i in range(3)],
        *[msd_fit_batch(noise, DT, fit=fit).estimate(i) for i in range(3)],
    ):
        values = [est.d_um2_s, est.d_low_um2_s, est.se_um2_s, est.sigma2_um2]
        assert all(math.isfinite(v) for v in values)
        assert 0.0 <= est.d_low_um2_s <= est.d_high_um2_s
    assert cve(still, DT).d_um2_s == 0.0 and cve(still, DT).d_high_um2_s == 0.0


def test_cve_batch_accepts_one_known_sigma_per_track() -> None:
    from livespt.models.estimators import cve, cve_batch

    rng = np.random.default_rng(5)
    pos = np.cumsum(rng.normal(0, 0.1, size=(4, 12, 2)), axis=1)
    sig = np.array([0.0, 0.01, 0.02, 0.05])
    batch = cve_batch(pos, 0.05, sigma_um=sig)
    for i in range(4):
        one = cve(pos[i], 0.05, sigma_um=float(sig[i]))
        assert batch.d_um2_s[i] == pytest.approx(one.d_um2_s)
        assert batch.d_low_um2_s[i] == pytest.approx(one.d_low_um2_s)
        assert batch.d_high_um2_s[i] == pytest.approx(one.d_high_um2_s)
    with pytest.raises(ValueError, match="sigma_um"):
        cve_batch(pos, 0.05, sigma_um=np.array([0.01, 0.02]))
    with pytest.raises(ValueError, match="sigma_um"):
        cve_batch(pos, 0.05, sigma_um=np.array([0.01, -0.02, 0.0, 0.0]))


def test_cve_d_windows_equals_the_batch_cve_for_every_frame_pattern() -> None:
    from livespt.models.estimators import cve_d_windows

    rng = np.random.default_rng(31)
    pos = np.cumsum(rng.normal(0.0, 0.1, (12, 10, 2)), axis=1)
    frames = np.cumsum(rng.integers(1, 3, (12, 10)), axis=1)  # gaps differ per window
    d = cve_d_windows(pos, frames, 0.05)
    for i in range(12):
        ref = cve_batch(pos[i:i + 1], 0.05, frames[i], exposure_s=0.03).d_um2_s[0]
        assert d[i] == pytest.approx(ref, rel=1e-12, abs=1e-15)
    with pytest.raises(ValueError, match="positions_um must be"):
        cve_d_windows(pos[:, :2], frames[:, :2], 0.05)
