"""Cramer-Rao bounds: exact Fisher information, Whittle's large-N form, limits, and the
check that no estimator beats the bound (Monte-Carlo, bands as in tracksim)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.integrate import quad
from tracksim import simulate_tracks, variance_band

from livespt.models.estimators import (
    _tracks,
    bounds,
    crlb_d_exact,
    crlb_d_large_n,
    cve_batch,
    cve_variance,
    fisher_information_exact,
    fisher_information_large_n,
    msd_fit_batch,
)

D = 0.5
DT = 0.01


def brute_force_information(
    frames: np.ndarray, d: float, s2: float, r: float, ndim: int
) -> np.ndarray:
    sig_d, sig_s = _tracks.step_covariance_basis(_tracks.gaps(frames), DT, r)

    def dense(t: _tracks.Tridiagonal) -> np.ndarray:
        return np.diag(t.diag) + np.diag(t.off, 1) + np.diag(t.off, -1)

    parts = [dense(sig_d), dense(sig_s)]
    inv = np.linalg.inv(d * parts[0] + s2 * parts[1])
    return np.array([[0.5 * ndim * np.trace(inv @ a @ inv @ b) for b in parts] for a in parts])


@pytest.mark.parametrize(
    "frames",
    [np.arange(4), np.arange(40), np.array([0, 1, 2, 5, 6, 9, 10, 11, 12, 20, 21, 22, 23, 30])],
)
@pytest.mark.parametrize(("sigma", "r"), [(0.03, 1 / 6), (0.0, 0.0), (0.2, 0.1)])
def test_exact_information_equals_dense_computation(
    monkeypatch: pytest.MonkeyPatch, frames: np.ndarray, sigma: float, r: float
) -> None:
    monkeypatch.setattr(bounds, "_BLOCK", 7)  # several column blocks, ragged last one
    info = fisher_information_exact(frames, D, sigma, DT, ndim=3, blur_coefficient=r)
    expected = brute_force_information(frames, D, sigma**2, r, 3)
    np.testing.assert_allclose(info, expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("sigma", "r"),
    # includes b = Cov(adjacent) = 0 (sigma^2 = 2 R D dt), where c -> 0 in the closed form
    [(0.0, 0.0), (0.0, 1 / 6), (math.sqrt(2 * 0.1 * D * DT), 0.1), (0.05, 0.0), (0.3, 1 / 6)],
)
def test_whittle_closed_form_equals_quadrature(sigma: float, r: float) -> None:
    s2 = sigma**2
    a = 2 * D * DT * (1 - 2 * r) + 2 * s2
    c = 2 * (2 * r * D * DT - s2)
    deriv = [(2 * DT * (1 - 2 * r), 4 * r * DT), (2.0, -2.0)]
    expected = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):

            def integrand(w: float, i: int = i, j: int = j) -> float:
                fi = deriv[i][0] + deriv[i][1] * math.cos(w)
                fj = deriv[j][0] + deriv[j][1] * math.cos(w)
                return fi * fj / (a + c * math.cos(w)) ** 2

            expected[i, j] = (
                0.5 * quad(integrand, -math.pi, math.pi, epsabs=0, epsrel=1e-13)[0] / (2 * math.pi)
            )
    info = fisher_information_large_n(1, D, sigma, DT, ndim=1, blur_coefficient=r)
    np.testing.assert_allclose(info, expected, rtol=1e-10)


@pytest.mark.parametrize("sigma", [0.0, 0.03, 0.2])
def test_exact_information_is_large_n_plus_an_end_correction(sigma: float) -> None:
    # I_exact(N) = N I_step + E + (terms decaying geometrically in N): the end correction
    # E = I_exact(N) - I_large(N) stops changing as N grows.
    def end(n: int) -> np.ndarray:
        return fisher_information_exact(n + 1, D, sigma, DT) - fisher_information_large_n(
            n, D, sigma, DT
        )

    scale = np.abs(fisher_information_large_n(400, D, sigma, DT)).max()
    np.testing.assert_allclose(end(400), end(200), rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("sigma", [0.0, 0.03, 0.2])
@pytest.mark.parametrize("sigma_known", [False, True])
def test_exact_bound_tends_to_large_n_bound(sigma: float, sigma_known: bool) -> None:
    # With a constant end correction, exact / large - 1 = a / N + O(1/N^2): N (ratio - 1)
    # settles to a; between N = 400 and 800 it moves by O(1/N), well under 1 %.
    def scaled_excess(n: int) -> float:
        exact = crlb_d_exact(n + 1, D, sigma, DT, sigma_known=sigma_known)
        return n * (exact / crlb_d_large_n(n, D, sigma, DT, sigma_known=sigma_known) - 1)

    a400, a800 = scaled_excess(400), scaled_excess(800)
    if sigma == 0.0 and sigma_known:
        # iid steps: the exact and large-N bounds coincide
        assert abs(a400) < 1e-9 and abs(a800) < 1e-9
    else:
        assert a800 == pytest.approx(a400, rel=0.01)


def test_long_tracks_extrapolate_the_exact_information(monkeypatch: pytest.MonkeyPatch) -> None:
    # Above EXACT_MAX_STEPS the gap-free information is N I_step + converged end
    # correction; it must equal the full exact computation.
    n = 2600
    for sigma in (0.03, 0.5):  # x = 0.18 and x = 50 (longer correlation)
        fast = fisher_information_exact(n + 1, D, sigma, DT)
        monkeypatch.setattr(bounds, "EXACT_MAX_STEPS", 10**6)
        slow = fisher_information_exact(n + 1, D, sigma, DT)
        monkeypatch.undo()
        np.testing.assert_allclose(fast, slow, rtol=1e-9)


@pytest.mark.parametrize("n_steps", [5, 50, 1000])
def test_limits_without_noise_and_blur(n_steps: int) -> None:
    # sigma = 0, R = 0: the steps are iid N(0, 2 D dt) per dimension.
    # sigma known: Var >= 2 D^2 / (N d) exactly (the variance of the mean squared step).
    known = crlb_d_exact(n_steps + 1, D, 0.0, DT, 0.0, ndim=2, sigma_known=True)
    assert known == pytest.approx(2 * D**2 / (n_steps * 2), rel=1e-12)
    # sigma unknown: not the same limit. Large N: [I^-1]_DD = 6 D^2 / (N d), three times
    # more (sigma^2 must be estimated even when it is 0), ...
    large = crlb_d_large_n(n_steps, D, 0.0, DT, 0.0, ndim=2)
    assert large == pytest.approx(6 * D**2 / (n_steps * 2), rel=1e-12)
    # ... and at finite N the exact bound is attained by the CVE, whose variance there is
    # D^2 (2/N + 4/(N - 1)) / d.
    exact = crlb_d_exact(n_steps + 1, D, 0.0, DT, 0.0, ndim=2)
    assert exact == pytest.approx(D**2 * (2 / n_steps + 4 / (n_steps - 1)) / 2, rel=1e-10)


@pytest.mark.parametrize("exposure_s", [0.0, 0.5 * DT, DT])
@pytest.mark.parametrize("n_steps", [9, 100])
def test_cve_attains_the_bound_at_x_zero_and_approaches_it_for_small_x(
    exposure_s: float, n_steps: int
) -> None:
    # At x = sigma^2 / (D dt) - 2R = 0 the adjacent steps are uncorrelated and the CVE is
    # efficient at every N, with or without blur. For small x the excess is second order
    # in x (the bound is smooth and touches the CVE variance at x = 0): halving x
    # quarters it, up to a relative O(x) correction.
    r = exposure_s / (6 * DT)

    def ratio(x: float) -> float:
        sigma = math.sqrt((x + 2 * r) * D * DT)
        return cve_variance(n_steps + 1, D, sigma, DT, exposure_s) / crlb_d_exact(
            n_steps + 1, D, sigma, DT, exposure_s
        )

    assert ratio(0.0) == pytest.approx(1.0, rel=1e-10)
    e1, e2 = ratio(0.1) - 1, ratio(0.05) - 1
    assert 0 < e2 < e1
    assert e2 / e1 == pytest.approx(0.25, rel=2 * 0.1)


def test_design_claim_ten_frame_window() -> None:
    # DESIGN.md: for a 10-frame window (9 steps, 2D), no unbiased estimator beats about
    # 47-60 % relative error. Noise-free ends of that range: 50 % with continuous
    # exposure (R = 1/6) and exactly sqrt((2/9 + 4/8) / 2) = 60.1 % with R = 0.
    blur = math.sqrt(crlb_d_exact(10, D, 0.0, DT, DT)) / D
    flash = math.sqrt(crlb_d_exact(10, D, 0.0, DT, 0.0)) / D
    assert flash == pytest.approx(math.sqrt((2 / 9 + 4 / 8) / 2), rel=1e-10)
    assert blur == pytest.approx(0.50, abs=0.005)
    # noise only raises the bound
    assert math.sqrt(crlb_d_exact(10, D, 0.03, DT, DT)) / D > blur


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: crlb_d_exact(10, 0.0, 0.03, DT), "d_um2_s"),
        (lambda: crlb_d_exact(10, -1.0, 0.03, DT), "d_um2_s"),
        (lambda: crlb_d_exact(10, D, -0.03, DT), "sigma_um"),
        (lambda: crlb_d_exact(10, D, 0.03, -DT), "frame_interval_s"),
        (lambda: crlb_d_exact(10, D, 0.03, DT, exposure_s=2 * DT), "exposure_s"),
        (lambda: crlb_d_exact(2, D, 0.03, DT), "n_positions"),
        (lambda: crlb_d_exact(10, D, 0.03, DT, ndim=0), "ndim"),
        (lambda: crlb_d_exact(10, D, 0.03, DT, blur_coefficient=0.3), "blur_coefficient"),
        (lambda: crlb_d_exact([0, 1, 1, 2], D, 0.03, DT), "frames must be strictly"),
        (lambda: crlb_d_exact([0, 1], D, 0.03, DT), "frames"),
        (lambda: crlb_d_large_n(0, D, 0.03, DT), "n_steps"),
        (lambda: crlb_d_large_n(10, D, 0.03, DT, exposure_s=-1.0), "exposure_s"),
        (lambda: crlb_d_large_n(10, D, 0.0, DT, blur_coefficient=0.25), "blur_coefficient"),
    ],
)
def test_bound_errors_name_the_parameter(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------- Monte-Carlo

M = 4000


@functools.cache
def estimates(x: float, exposure_s: float, n_frames: int) -> dict[str, np.ndarray]:
    r_sim = exposure_s / (6 * DT) * (1 - 1 / 100) if exposure_s > 0 else 0.0
    sigma = math.sqrt((x + 2 * r_sim) * D * DT)
    key = [7, round(x * 1000), round(exposure_s * 1e6), n_frames]
    sim = simulate_tracks(
        M,
        n_frames,
        D,
        DT,
        exposure_s=exposure_s,
        sigma_um=sigma,
        seed=int(np.random.SeedSequence(key).generate_state(1)[0]),
    )
    r = sim.blur_coefficient
    out = {
        "cve": cve_batch(sim.positions_um, DT, blur_coefficient=r).d_um2_s,
        "cve-sigma-known": cve_batch(
            sim.positions_um, DT, sigma_um=sigma, blur_coefficient=r
        ).d_um2_s,
    }
    for fit in ("full", "optimal", "weighted"):
        out[f"msd-{fit}"] = msd_fit_batch(sim.positions_um, DT, fit=fit, blur_coefficient=r).d_um2_s
    out["crlb"] = np.array(crlb_d_exact(n_frames, D, sigma, DT, blur_coefficient=r))
    out["crlb-sigma-known"] = np.array(
        crlb_d_exact(n_frames, D, sigma, DT, sigma_known=True, blur_coefficient=r)
    )
    return out


BOUND_SETTINGS = [(x, te, n) for x in (0.1, 1.0, 5.0) for te in (0.0, DT) for n in (11, 51)]
ESTIMATORS = ["cve", "cve-sigma-known", "msd-full", "msd-optimal", "msd-weighted"]


@pytest.mark.parametrize(("x", "exposure_s", "n_frames"), BOUND_SETTINGS)
@pytest.mark.parametrize("name", ESTIMATORS)
def test_no_estimator_beats_the_exact_crlb(
    name: str, x: float, exposure_s: float, n_frames: int
) -> None:
    # Var(estimate) >= CRLB for unbiased estimators; the empirical variance may fall
    # below by Monte-Carlo error only. (The optimal MSD fit is slightly biased by its
    # data-dependent lag count; its variance is compared all the same.)
    est = estimates(x, exposure_s, n_frames)
    bound = float(est["crlb-sigma-known" if name == "cve-sigma-known" else "crlb"])
    values = est[name]
    assert values.var() >= bound - variance_band(values)


@pytest.mark.parametrize("exposure_s", [0.0, DT])
def test_cve_variance_at_the_bound_for_small_x(exposure_s: float) -> None:
    # Monte-Carlo counterpart of the efficiency claim: at x = 0.1 and 50 steps the CVE's
    # empirical variance matches the bound within Monte-Carlo error plus its small
    # analytic excess (cve_variance / crlb - 1 < 1 % here).
    est = estimates(0.1, exposure_s, 51)
    bound = float(est["crlb"])
    values = est["cve"]
    r = exposure_s / (6 * DT) * (1 - 1 / 100) if exposure_s > 0 else 0.0
    sigma = math.sqrt((0.1 + 2 * r) * D * DT)
    excess = cve_variance(51, D, sigma, DT, blur_coefficient=r) - bound
    assert 0 <= excess < 0.01 * bound
    assert abs(values.var() - bound) <= variance_band(values) + excess
