"""Tests of the Brownian trajectory simulator (models/simulate/trajectories.py).

Statistical tolerances are 4 standard deviations of the tested statistic, where
the standard deviation is derived from the exact covariance of the simulated
process (see ``_mean_cov``), not tuned: the seeds are fixed, so the tests are
deterministic, and a correct simulator lands within 4 SD with probability 0.99994.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from livespt.models.simulate import (
    diffusion_schedule,
    effective_blur_coefficient,
    simulate_trajectories,
    substep_times_s,
)
from livespt.models.units import blur_coefficient

Z = 4.0  # tolerance in standard deviations


def _mean_cov(n_frames: int, tau: np.ndarray, dt: float) -> np.ndarray:
    """Covariance / (2 D) of the exposure means M_0..M_{T-1} along one axis.

    The path is Brownian from x(0) = start, so Cov(x(s), x(u)) = 2 D min(s, u) and
    Cov(M_i, M_j) = 2 D mean_ab min(i dt + tau_a, j dt + tau_b).
    """
    t = np.arange(n_frames)[:, None] * dt + tau[None, :]  # (T, S) sample times
    return np.minimum(t[:, None, :, None], t[None, :, None, :]).mean(axis=(2, 3))


def test_shapes_dtypes_and_start() -> None:
    start = np.array([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0]])
    tr = simulate_trajectories(3, 7, 0.2, 0.05, 0.03, substeps=4, start_um=start, seed=1)
    assert tr.substeps_um.shape == (3, 7, 4, 2)
    assert tr.mean_um.shape == (3, 7, 2)
    assert tr.d_um2_s.shape == (3, 7)
    assert tr.substeps_um.dtype == torch.float64
    torch.testing.assert_close(tr.mean_um, tr.substeps_um.mean(dim=2))
    np.testing.assert_allclose(tr.substep_times_s, (np.arange(4) + 0.5) * 0.03 / 4)
    assert tr.exposure_s == 0.03
    # D = 0: particles stay exactly at their start.
    still = simulate_trajectories(3, 5, 0.0, 0.05, start_um=start, seed=1)
    torch.testing.assert_close(still.mean_um, torch.tensor(start)[:, None, :].expand(3, 5, 2))


def test_exposure_defaults_to_interval() -> None:
    tr = simulate_trajectories(2, 3, 0.1, 0.04, seed=0)
    assert tr.exposure_s == 0.04
    assert tr.substep_times_s[-1] == pytest.approx(0.04 * 9.5 / 10)


def test_effective_blur_coefficient_closed_form_and_limit() -> None:
    te, dt = 0.03, 0.05
    for s in (1, 2, 3, 10, 57):
        r = effective_blur_coefficient(te, dt, s)
        assert r == pytest.approx(te / (6 * dt) * (1 - 1 / s**2), rel=1e-12, abs=1e-15)
        # Same as the brief's form R = (t_E - 2 m) / (2 dt), m = mean_ij min(tau_i, tau_j).
        tau = substep_times_s(te, s)
        m = np.minimum(tau[:, None], tau[None, :]).mean()
        assert r == pytest.approx((te - 2 * m) / (2 * dt), rel=1e-12, abs=1e-15)
    assert effective_blur_coefficient(te, dt, 1) == 0.0
    assert effective_blur_coefficient(te, dt, 2000) == pytest.approx(
        blur_coefficient(te, dt), rel=1e-6
    )
    assert effective_blur_coefficient(dt, dt, 10**4) == pytest.approx(1 / 6, rel=1e-7)


def test_exact_covariance_gives_one_minus_two_r() -> None:
    # Deterministic check of the derivation: the one-frame step variance of the exposure
    # means, from the exact Brownian covariance, is 2 D dt (1 - 2 R_eff); a lag of n frames
    # gives 2 D dt (n - 2 R_eff).
    te, dt, s = 0.04, 0.05, 7
    c = _mean_cov(6, substep_times_s(te, s), dt)
    r = effective_blur_coefficient(te, dt, s)
    for n in range(1, 5):
        var_step = c[n, n] + c[0, 0] - 2 * c[0, n]
        assert var_step == pytest.approx(dt * (n - 2 * r), rel=1e-12)


@pytest.mark.parametrize(
    ("exposure", "substeps"),
    [(1e-9, 1), (0.05, 1), (0.05, 10), (0.02, 3)],  # no blur ... full blur, coarse blur
)
def test_msd_slope_and_intercept_recover_d_and_blur(exposure: float, substeps: int) -> None:
    # MSD_n = mean_p |M_n - M_0|^2 for lags n = 1..L is fitted with a line; its slope is
    # 4 D dt and its intercept -8 D R_eff dt. The MSD_n of independent particles have
    # Cov(MSD_i, MSD_j) = 2 dims * 2 * (2 D C_ij)^2 / P (Gaussian fourth moments), C the
    # exact covariance of X_n = M_n - M_0 / 2D, which propagates to the fit coefficients.
    p, t, d, dt = 3000, 6, 0.5, 0.05
    tr = simulate_trajectories(p, t, d, dt, exposure, substeps=substeps, seed=11)
    x = (tr.mean_um - tr.mean_um[:, :1]).numpy()
    lags = np.arange(1, t)
    msd = (x[:, 1:] ** 2).sum(-1).mean(0)

    cm = _mean_cov(t, np.asarray(tr.substep_times_s), dt)
    cx = cm[1:, 1:] - cm[1:, :1] - cm[:1, 1:] + cm[0, 0]  # Cov(X_i, X_j) / (2D)
    cov_msd = 2 * 2 * (2 * d * cx) ** 2 / p
    design = np.stack([lags * 1.0, np.ones_like(lags, dtype=float)], axis=1)
    fit = np.linalg.solve(design.T @ design, design.T)  # (2, L): coefficients = fit @ msd
    slope, intercept = fit @ msd
    sd_slope, sd_intercept = np.sqrt(np.diag(fit @ cov_msd @ fit.T))

    r = effective_blur_coefficient(exposure, dt, substeps)
    assert abs(slope - 4 * d * dt) < Z * sd_slope
    assert abs(intercept - (-8 * d * r * dt)) < Z * sd_intercept
    d_hat = slope / (4 * dt)
    assert abs(d_hat - d) < Z * sd_slope / (4 * dt)


@pytest.mark.parametrize("substeps", [3, 10])
def test_one_step_msd_is_reduced_by_blur(substeps: int) -> None:
    # One-frame steps of exposure means: E[dx^2] = 2 D dt (1 - 2 R_eff) per axis. Steps
    # of one track are correlated (lag-1 covariance 2 D R dt), so the variance of the
    # pooled mean square is sum_nm 2 Cov(D_n, D_m)^2 over the steps, from the exact
    # covariance, divided by P (independent particles) and by 2 axes.
    p, t, d, dt, te = 4000, 11, 0.3, 0.05, 0.05
    tr = simulate_trajectories(p, t, d, dt, te, substeps=substeps, seed=5)
    steps = torch.diff(tr.mean_um, dim=1).numpy()
    msd1 = (steps**2).sum(-1).mean()

    r = effective_blur_coefficient(te, dt, substeps)
    expected = 2 * 2 * d * dt * (1 - 2 * r)
    cm = 2 * d * _mean_cov(t, np.asarray(tr.substep_times_s), dt)
    diff = np.eye(t)[1:] - np.eye(t)[:-1]  # steps = diff @ M
    cs = diff @ cm @ diff.T
    var_sum_sq = 2 * (cs**2).sum()  # Var(sum_n D_n^2) for one axis of one particle
    sd = math.sqrt(var_sum_sq / (2 * p)) * 2 / (t - 1)
    assert abs(msd1 - expected) < Z * sd
    # Blur is not negligible here: the unblurred value is many SD away.
    assert abs(msd1 - 2 * 2 * d * dt) > 10 * sd


def test_change_points_land_where_asked() -> None:
    # S = 1 sample at tau_0 = dt/2: steps n -> n+1 with n + 1 < c see only D_0, steps with
    # n >= c only D_1, and the step across the change 2 (D_0 (dt - tau_0) + D_1 tau_0) per
    # axis. The mean square of N independent N(0, v) draws has relative SD sqrt(2/N).
    p, t, c, dt = 2000, 20, 10, 0.05
    d0, d1 = 0.1, 0.4
    tr = simulate_trajectories(p, t, np.array([d0, d1]), dt, substeps=1, change_frames=(c,),
                               seed=7)
    assert torch.all(tr.d_um2_s[:, :c] == d0)
    assert torch.all(tr.d_um2_s[:, c:] == d1)
    steps = torch.diff(tr.mean_um, dim=1).numpy()
    before = steps[:, : c - 1]
    after = steps[:, c:]
    v0, v1 = (before**2).mean(), (after**2).mean()
    n0, n1 = before.size, after.size
    sd_log_ratio = math.sqrt(2 / n0 + 2 / n1)
    assert abs(math.log(v1 / v0) - math.log(d1 / d0)) < Z * sd_log_ratio
    assert abs(v0 / (2 * d0 * dt) - 1) < Z * math.sqrt(2 / n0)
    across = steps[:, c - 1]
    v_across = 2 * (d0 * dt / 2 + d1 * dt / 2)
    assert abs((across**2).mean() / v_across - 1) < Z * math.sqrt(2 / across.size)


def test_per_particle_and_piecewise_schedules() -> None:
    sched = diffusion_schedule([0.1, 0.2, 0.3], 3, 4)
    np.testing.assert_array_equal(sched, np.array([[0.1] * 4, [0.2] * 4, [0.3] * 4]))
    sched = diffusion_schedule([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], 2, 6, change_frames=(2, 5))
    np.testing.assert_array_equal(sched, [[1, 1, 2, 2, 2, 3], [4, 4, 5, 5, 5, 6]])
    sched = diffusion_schedule(np.array([0.5, 1.5]), 3, 3, change_frames=[1])
    np.testing.assert_array_equal(sched, [[0.5, 1.5, 1.5]] * 3)
    sched = diffusion_schedule(torch.tensor([0.1, 0.2], dtype=torch.float64), 2, 2)
    np.testing.assert_array_equal(sched, [[0.1, 0.1], [0.2, 0.2]])


def test_confinement_keeps_particles_in_the_disc_and_fills_it() -> None:
    # Reflecting Brownian motion in a disc of radius r relaxes (slowest mode
    # r^2 / (3.39 D) = 0.24 s here) to the uniform distribution, for which |X - c|^2 = r^2 U
    # with U uniform: mean r^2 / 2, SD r^2 / sqrt(12). After 3 s = 12 relaxation times the
    # P independent particles' mean of |X|^2 is within 4 SD of r^2 / 2.
    p, t, r = 3000, 60, 0.2
    start = np.column_stack([np.linspace(-5, 5, p), np.zeros(p)])
    tr = simulate_trajectories(p, t, 0.05, 0.05, substeps=10, start_um=start,
                               confinement_radius_um=r, seed=3)
    rel = tr.substeps_um - torch.tensor(start)[:, None, None, :]
    dist2 = rel.square().sum(-1)
    assert float(dist2.max()) <= r * r * (1 + 1e-12)
    last = dist2[:, -1, 0].numpy()
    assert abs(last.mean() - r * r / 2) < Z * r * r / math.sqrt(12 * p)


def test_confinement_fast_path_matches_free_motion() -> None:
    # A disc much larger than the motion never reflects: the result equals free diffusion
    # from the same random draws.
    free = simulate_trajectories(5, 20, 0.01, 0.05, seed=2)
    wide = simulate_trajectories(5, 20, 0.01, 0.05, seed=2, confinement_radius_um=100.0)
    torch.testing.assert_close(free.substeps_um, wide.substeps_um)


def test_reproducible_from_seed() -> None:
    a = simulate_trajectories(4, 9, 0.3, 0.05, seed=42)
    b = simulate_trajectories(4, 9, 0.3, 0.05, seed=42)
    c = simulate_trajectories(4, 9, 0.3, 0.05, seed=43)
    assert torch.equal(a.substeps_um, b.substeps_um)
    assert not torch.equal(a.substeps_um, c.substeps_um)
    g1 = torch.Generator().manual_seed(5)
    g2 = torch.Generator().manual_seed(5)
    assert torch.equal(simulate_trajectories(2, 3, 0.1, 0.05, generator=g1).mean_um,
                       simulate_trajectories(2, 3, 0.1, 0.05, generator=g2).mean_um)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"d_um2_s": -0.1}, "d_um2_s"),
        ({"d_um2_s": float("nan")}, "d_um2_s"),
        ({"d_um2_s": [0.1, 0.2]}, "d_um2_s"),  # 2 values for 3 particles
        ({"d_um2_s": []}, "d_um2_s"),
        ({"n_particles": 0}, "n_particles"),
        ({"n_frames": 0}, "n_frames"),
        ({"frame_interval_s": 0.0}, "frame_interval_s"),
        ({"exposure_s": 0.06}, "exposure_s"),
        ({"exposure_s": 0.0}, "exposure_s"),
        ({"exposure_s": -1.0}, "exposure_s"),
        ({"substeps": 0}, "substeps"),
        ({"substeps": 2.5}, "substeps"),
        ({"change_frames": (0,), "d_um2_s": [0.1, 0.2]}, "change_frames"),
        ({"change_frames": (5,), "d_um2_s": [0.1, 0.2]}, "change_frames"),
        ({"change_frames": (3, 2), "d_um2_s": [0.1, 0.2, 0.3]}, "change_frames"),
        ({"change_frames": (2,), "d_um2_s": [0.1, 0.2, 0.3]}, "d_um2_s"),
        ({"start_um": np.zeros((2, 2))}, "start_um"),
        ({"start_um": np.full((3, 2), np.nan)}, "start_um"),
        ({"confinement_radius_um": 0.0}, "confinement_radius_um"),
        ({"seed": -1}, "seed"),
        ({"device": "nonsense"}, "device"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs: dict, name: str) -> None:
    args = {"n_particles": 3, "n_frames": 5, "d_um2_s": 0.1, "frame_interval_s": 0.05} | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        simulate_trajectories(**args)
