"""Tests of the pixel-integrated Gaussian PSF (models/psf.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import erf
from scipy.stats import norm

from livespt.models.psf import (
    centred_pixel_fraction,
    integrated_gaussian_1d,
    psf_sigma_um,
    render_gaussian_spots,
)


def test_psf_sigma_from_wavelength_and_na() -> None:
    assert psf_sigma_um(0.6, 1.4) == pytest.approx(0.21 * 0.6 / 1.4, rel=1e-15)
    assert psf_sigma_um(0.6, 1.4) == pytest.approx(0.09, rel=1e-12)


@pytest.mark.parametrize(
    ("args", "name"),
    [((-0.6, 1.4), "wavelength_um"), ((0.6, 0.0), "numerical_aperture"),
     ((float("nan"), 1.4), "wavelength_um")],
)
def test_psf_sigma_bad_parameters(args: tuple[float, float], name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}"):
        psf_sigma_um(*args)


@pytest.mark.parametrize("sigma", [0.3, 0.92, 1.7, 6.0])
@pytest.mark.parametrize("extra_px", [0, 400])  # narrow grid (dense path) and wide (windowed)
def test_fractions_sum_to_one_on_a_wide_grid(sigma: float, extra_px: int) -> None:
    # Centres at least 15 sigma from both ends: the missing mass is erfc(15/sqrt2) ~ 1e-50.
    n_pixels = math.ceil(30 * sigma) + 1 + extra_px
    centres = torch.tensor(
        [15 * sigma, 0.5 * n_pixels + 0.37, n_pixels - 1 - 15 * sigma], dtype=torch.float64
    )
    e = integrated_gaussian_1d(centres, n_pixels, sigma)
    assert e.shape == (3, n_pixels)
    assert torch.all(e >= 0)
    np.testing.assert_allclose(e.sum(-1).numpy(), 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_pixels", [30, 300])
def test_fractions_match_gaussian_cdf_differences(n_pixels: int) -> None:
    centres = np.array([-4.2, 0.0, 3.5, 10.49, 25.0, 299.9, 400.0])
    sigma = 1.3
    e = integrated_gaussian_1d(torch.tensor(centres), n_pixels, sigma).numpy()
    j = np.arange(n_pixels)[None, :]
    ref = norm.cdf((j + 0.5 - centres[:, None]) / sigma) - norm.cdf(
        (j - 0.5 - centres[:, None]) / sigma
    )
    np.testing.assert_allclose(e, ref, rtol=0, atol=1e-15)


def test_far_tail_keeps_relative_accuracy() -> None:
    # erf differences would round these to 0 or to noise; erfc keeps ~1e-13 relative accuracy.
    centre, sigma = 2.0, 1.0
    e = integrated_gaussian_1d(torch.tensor([centre], dtype=torch.float64), 12, sigma).numpy()[0]
    j = np.arange(12)
    ref = norm.sf((j - 0.5 - centre) / sigma) - norm.sf((j + 0.5 - centre) / sigma)
    np.testing.assert_allclose(e[6:], ref[6:], rtol=1e-12)
    assert e[-1] < 1e-15  # truly tiny, yet accurate


@pytest.mark.parametrize("n_pixels", [41, 400])  # dense and windowed paths
def test_per_spot_sigma_tensor(n_pixels: int) -> None:
    centres = torch.tensor([20.0, 20.0], dtype=torch.float64)
    sigmas = torch.tensor([0.5, 2.0], dtype=torch.float64)
    e = integrated_gaussian_1d(centres, n_pixels, sigmas)
    for k in range(2):
        ref = integrated_gaussian_1d(centres[k : k + 1], n_pixels, float(sigmas[k]))
        torch.testing.assert_close(e[k : k + 1], ref, rtol=0, atol=1e-15)


def test_float32_output_keeps_position_accuracy() -> None:
    # A position of 500.3 px is not representable to 1e-7 px in float32, but the distance
    # to each edge is formed in float64 first, so the float32 result is accurate.
    c = torch.tensor([500.3], dtype=torch.float64)
    e32 = integrated_gaussian_1d(c, 512, 0.9, dtype=torch.float32)
    e64 = integrated_gaussian_1d(c, 512, 0.9)
    assert e32.dtype == torch.float32
    torch.testing.assert_close(e32.double(), e64, rtol=0, atol=1e-6)


def test_render_matches_direct_per_pixel_evaluation() -> None:
    gen = torch.Generator().manual_seed(3)
    n, k, h, w, sigma = 3, 4, 9, 13, 1.1
    x = torch.rand((n, k), generator=gen, dtype=torch.float64) * w
    y = torch.rand((n, k), generator=gen, dtype=torch.float64) * h
    ph = torch.rand((n, k), generator=gen, dtype=torch.float64) * 100
    img = render_gaussian_spots(x, y, ph, (h, w), sigma, dtype=torch.float64).numpy()
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    s2 = math.sqrt(2) * sigma
    for b in range(n):
        ref = np.zeros((h, w))
        for q in range(k):
            xq, yq = x[b, q].item(), y[b, q].item()
            fx = 0.5 * (erf((jj + 0.5 - xq) / s2) - erf((jj - 0.5 - xq) / s2))
            fy = 0.5 * (erf((ii + 0.5 - yq) / s2) - erf((ii - 0.5 - yq) / s2))
            ref += ph[b, q].item() * fx * fy
        np.testing.assert_allclose(img[b], ref, rtol=1e-12, atol=1e-12)


def test_pixel_centred_spot_peak_and_convention() -> None:
    # Particle at the centre of column 3, row 5: the brightest pixel is [5, 3] and holds
    # photons * erf(1 / (2 sqrt2 sigma))^2.
    photons, sigma = 1000.0, 0.9
    x = torch.tensor([[3.0]], dtype=torch.float64)
    y = torch.tensor([[5.0]], dtype=torch.float64)
    img = render_gaussian_spots(x, y, torch.tensor([[photons]], dtype=torch.float64), (12, 8),
                                sigma, dtype=torch.float64)[0]
    assert divmod(int(img.argmax()), 8) == (5, 3)
    assert img[5, 3].item() == pytest.approx(photons * centred_pixel_fraction(sigma), rel=1e-14)
    assert centred_pixel_fraction(sigma) == pytest.approx(math.erf(0.5 / (math.sqrt(2) * sigma))
                                                          ** 2)


def test_centroid_is_the_spot_position() -> None:
    # sum_j j dE_j(c) = E[round(X)], X ~ N(c, sigma^2); by Poisson summation its deviation
    # from c is bounded by sum_k exp(-2 pi^2 k^2 sigma^2) / (pi k) <= exp(-2 pi^2 sigma^2) / pi
    # * (1 + small), which bounds the test tolerance.
    sigma = 0.6
    bound = 1.01 * math.exp(-2 * math.pi**2 * sigma**2) / math.pi
    c = torch.tensor([10.0, 10.13, 10.25, 10.5, 10.77], dtype=torch.float64)
    e = integrated_gaussian_1d(c, 21, sigma)
    centroid = (e * torch.arange(21, dtype=torch.float64)).sum(-1) / e.sum(-1)
    assert torch.all((centroid - c).abs() <= bound)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_pixels": 0}, "n_pixels"),
        ({"sigma_px": -1.0}, "sigma_px"),
        ({"sigma_px": float("nan")}, "sigma_px"),
        ({"centres_px": torch.tensor([float("nan")])}, "centres_px"),
        ({"centres_px": torch.tensor([])}, "centres_px"),
        ({"sigma_px": torch.tensor([0.0])}, "sigma_px"),
    ],
)
def test_integrated_gaussian_bad_parameters(kwargs: dict, name: str) -> None:
    args = {"centres_px": torch.tensor([1.0]), "n_pixels": 5, "sigma_px": 1.0} | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        integrated_gaussian_1d(**args)


def test_render_bad_parameters() -> None:
    x = torch.zeros((1, 2))
    with pytest.raises(ValueError, match=r"^photons"):
        render_gaussian_spots(x, x, -torch.ones((1, 2)), (4, 4), 1.0)
    with pytest.raises(ValueError, match=r"^x_px"):
        render_gaussian_spots(x, torch.zeros((1, 3)), torch.ones((1, 2)), (4, 4), 1.0)
    with pytest.raises(ValueError, match=r"^sigma_px"):
        render_gaussian_spots(x, x, torch.ones((1, 2)), (4, 4), 0.0)
