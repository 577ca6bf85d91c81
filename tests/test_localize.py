"""The exact localization references (models/localize): image model, likelihood, CRLB, MLE, MCMC.

Statistical checks use fixed seeds and tolerances from the known sampling variance: the
standard error of a sample variance of ``n`` near-normal values is ``var * sqrt(2 / n)``;
for MCMC means, batch means give the standard error of a correlated chain.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from livespt.models.localize import (
    crlb,
    expected_image,
    expected_image_and_jacobian,
    fisher_information,
    fit_emitters,
    log_prob_exact,
    pack,
    pixel_information,
    sample_posterior,
)
from livespt.models.localize.crlb import MIN_EXACT_READ_NOISE_E
from livespt.models.simulate import simulate_smlm

SHAPE = (20, 20)
SIGMA = 0.92  # the seed's PSF width, pixels
Z = 4.0


def batch_se(values: np.ndarray, n_batches: int = 30) -> float:
    """Standard error of the mean of a correlated chain, by batch means."""
    batches = np.array_split(values, n_batches)
    return float(np.std([b.mean() for b in batches], ddof=1) / math.sqrt(n_batches))


def test_jacobian_matches_finite_differences_and_photons_are_conserved() -> None:
    theta = pack([9.3, 5.0], [10.1, 12.2], [1000.0, 500.0], 5.0)
    mu, jac = expected_image_and_jacobian(theta, SHAPE, SIGMA)
    assert jac is not None and jac.shape == (7, 20, 20)
    for p in range(theta.size):
        step = np.zeros_like(theta)
        step[p] = 1e-6
        fd = (expected_image(theta + step, SHAPE, SIGMA)
              - expected_image(theta - step, SHAPE, SIGMA)) / 2e-6
        np.testing.assert_allclose(fd, jac[p], atol=1e-6 * np.abs(jac[p]).max())
    # Both spots lie many sigmas inside the frame: every photon lands in it.
    assert mu.sum() == pytest.approx(1500.0 + 400 * 5.0, rel=1e-9)
    # Pixel (i, j) is centred at x = j, y = i: the brightest pixel of a spot at (9.3, 10.1).
    one = expected_image(pack([9.3], [10.1], [1000.0], 0.0), SHAPE, SIGMA)
    assert np.unravel_index(one.argmax(), one.shape) == (10, 9)


@pytest.mark.parametrize("mu", [0.5, 4.0, 40.0])
def test_exact_density_has_the_moments_of_shot_plus_read_noise(mu: float) -> None:
    """p(x | mu) integrates to 1 with mean mu and variance mu + r^2 (Poisson + Gaussian)."""
    r = 1.5
    x = np.arange(-15.0, mu + 12 * math.sqrt(mu) + 20, 0.01)
    p = np.exp(log_prob_exact(x, np.full_like(x, mu), r))
    total = p.sum() * 0.01
    mean = (x * p).sum() * 0.01
    var = ((x - mean) ** 2 * p).sum() * 0.01
    assert total == pytest.approx(1.0, abs=1e-6)
    assert mean == pytest.approx(mu, abs=1e-5)
    assert var == pytest.approx(mu + r * r, rel=1e-5)
    # Without read noise: the Poisson pmf.
    k = np.arange(0, 30.0)
    np.testing.assert_allclose(log_prob_exact(k, np.full_like(k, mu), 0.0),
                               stats.poisson.logpmf(k, mu))


def test_pixel_information_limits_and_monte_carlo() -> None:
    mus = np.array([0.3, 1.0, 10.0, 100.0, 1000.0])
    # Read noise only loses information; at the Poisson limit J = 1/mu.
    for r in (0.3, 1.5, 3.0):
        assert np.all(pixel_information(mus, r) <= 1.0 / mus * (1 + 1e-9))
    just_above = pixel_information(mus, MIN_EXACT_READ_NOISE_E * 1.0001)
    np.testing.assert_allclose(just_above * mus, 1.0, atol=2e-3)
    # Bright pixels: the shifted-Poisson form 1 / (mu + r^2) is close.
    assert pixel_information([1000.0], 1.5)[0] * 1002.25 == pytest.approx(1.0, abs=5e-3)
    # J = Var(d log p / d mu), by Monte Carlo with the exact density.
    rng = np.random.default_rng(0)
    mu, r, n = 3.0, 1.5, 20_000
    x = rng.poisson(mu, n) + rng.normal(0.0, r, n)
    h = 1e-4
    score = (log_prob_exact(x, np.full(n, mu + h), r)
             - log_prob_exact(x, np.full(n, mu - h), r)) / (2 * h)
    j_mc = float(np.mean(score ** 2))
    se = float(np.std(score ** 2, ddof=1) / math.sqrt(n))
    assert abs(j_mc - pixel_information([mu], r)[0]) < Z * se
    assert abs(float(np.mean(score))) < Z * math.sqrt(j_mc / n)  # a score has mean 0


def test_fisher_information_is_the_covariance_of_the_score() -> None:
    """Poisson frames (r = 0, exact): Cov(d log p / d theta) over frames equals I."""
    theta = pack([9.3], [10.1], [800.0], 8.0)
    mu, jac = expected_image_and_jacobian(theta, SHAPE, SIGMA)
    assert jac is not None
    rng = np.random.default_rng(1)
    n = 4000
    frames = rng.poisson(mu, (n, *SHAPE))
    scores = np.einsum("pij,nij->np", jac, frames / mu - 1.0)
    empirical = np.cov(scores.T)
    info = fisher_information(theta, SHAPE, SIGMA, 0.0)
    diag = np.diag(info)
    np.testing.assert_array_less(np.abs(np.diag(empirical) - diag), Z * diag * math.sqrt(2 / n))


def test_mle_on_the_foundation_simulator_reaches_the_crlb() -> None:
    """Frames from simulate_smlm (one emitter, i0 = 200 as in the seed, background 5,
    read noise 1.5 e): the ML errors divided by the exact CRLB have mean 0 and SD 1."""
    n = 200
    batch = simulate_smlm(n, n_emitters=1, background_photons=5.0, read_noise_e=1.5, seed=3)
    rng = np.random.default_rng(3)
    z = []
    for k in range(n):
        x, y = batch.positions_px[k, 0].numpy()
        truth = pack([x], [y], [200.0], 5.0)
        start = truth + np.r_[rng.normal(0, 0.3, 2), 40.0, 1.0]
        fit = fit_emitters(batch.frames[k].numpy().astype(np.float64), start, SIGMA, 1.5)
        assert fit.converged
        z.append((fit.theta - truth) / crlb(truth, SHAPE, SIGMA, 1.5))
    zs = np.array(z)
    sd = zs.std(axis=0, ddof=1)
    # Positions and photons: efficient within the SE of an SD (1/sqrt(2 n) = 5 %), allowing
    # the few % excess of a finite-photon MLE.
    assert np.all(np.abs(sd[:3] - 1.0) < 0.05 * Z / 2 + 0.05), sd
    assert np.all(np.abs(zs.mean(axis=0)[:2]) < Z / math.sqrt(n)), zs.mean(axis=0)


def test_mcmc_recovers_the_gamma_posterior_of_the_photon_count() -> None:
    """Known position, no background, pure Poisson: with a flat prior on N the posterior is
    Gamma(sum x + 1, rate = sum of the PSF fractions in the frame), exactly."""
    theta = pack([9.3], [10.1], [300.0], 0.0)
    rng = np.random.default_rng(4)
    frame = rng.poisson(expected_image(theta, SHAPE, SIGMA)).astype(np.float64)
    fixed = np.array([True, True, False, True])
    chain = sample_posterior(frame, theta, SIGMA, 0.0, n_samples=8000, burn_in=1000,
                             fixed=fixed, seed=4)
    shape = frame.sum() + 1.0
    rate = expected_image(pack([9.3], [10.1], [1.0], 0.0), SHAPE, SIGMA).sum()
    n_draws = chain.samples[:, 2]
    assert abs(n_draws.mean() - shape / rate) < Z * batch_se(n_draws)
    assert n_draws.std(ddof=1) == pytest.approx(math.sqrt(shape) / rate, rel=0.1)
    q = stats.gamma.cdf(n_draws, shape, scale=1 / rate)  # uniform if the draws are right
    assert abs(q.mean() - 0.5) < Z * batch_se(q)
    assert 0.2 < chain.acceptance < 0.45


def test_mcmc_posterior_width_is_the_crlb_when_photons_are_many_and_tempering_widens_it() -> None:
    """Bright isolated emitter (5,000 photons, background 10, read noise 1.5 e): the posterior
    SD of each parameter is the CRLB within 12 %; the seed's beta = 0.2 makes it
    1/sqrt(0.2) = 2.24 times wider."""
    theta = pack([9.3], [10.1], [5000.0], 10.0)
    rng = np.random.default_rng(5)
    frame = rng.poisson(expected_image(theta, SHAPE, SIGMA)) + rng.normal(0, 1.5, SHAPE)
    fit = fit_emitters(frame, theta, SIGMA, 1.5)
    chain = sample_posterior(frame, fit.theta, SIGMA, 1.5, n_samples=8000, burn_in=1000,
                             seed=5)
    bound = crlb(fit.theta, SHAPE, SIGMA, 1.5)
    np.testing.assert_allclose(chain.sd() / bound, 1.0, atol=0.12)
    assert np.all(np.abs(chain.mean() - fit.theta) < Z * bound / math.sqrt(200))
    tempered = sample_posterior(frame, fit.theta, SIGMA, 1.5, n_samples=8000, burn_in=1000,
                                beta=0.2, seed=6)
    np.testing.assert_allclose(tempered.sd() / chain.sd(), 1 / math.sqrt(0.2), rtol=0.15)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: expected_image([1.0, 2.0], SHAPE, SIGMA), "theta must have shape (3 K + 1,)"),
    (lambda: expected_image(pack([1.0], [1.0], [1.0], 1.0), SHAPE, 0.0),
     "sigma_px must be > 0"),
    (lambda: fit_emitters(np.full(SHAPE, np.nan), pack([9], [9], [100], 1), SIGMA),
     "frame_e contains NaN"),
    (lambda: log_prob_exact([0.5], [2.0], 0.0), "whole numbers"),
    (lambda: pixel_information([-1.0], 1.0), "mu must be > 0"),
    (lambda: sample_posterior(np.ones(SHAPE), pack([9], [9], [100], 1), SIGMA,
                              fixed=[True] * 4), "fixed leaves no parameter"),
    (lambda: sample_posterior(np.ones(SHAPE), pack([30], [9], [100], 1), SIGMA),
     "init_theta lies outside the prior"),
    (lambda: sample_posterior(np.ones(SHAPE), pack([9], [9], [100], 1), SIGMA, beta=2.0),
     "beta must be in"),
    (lambda: fisher_information(pack([9], [9], [100], 0.0), (60, 60), SIGMA),
     "expected count <= 0"),
])
def test_bad_input_names_the_parameter(call, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+")):
        call()
