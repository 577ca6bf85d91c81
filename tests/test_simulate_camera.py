"""Tests of the camera noise model, SNR definition and photophysics.

Tolerances are 4 standard deviations of the tested statistic, derived in each
test from the variance of the simulated distribution (seeds are fixed).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from livespt.models.psf import centred_pixel_fraction, render_gaussian_spots
from livespt.models.simulate import (
    Camera,
    Photophysics,
    emission_states,
    emitted_photons,
    expose,
    localization_precision_um,
    photons_for_snr,
    smooth_background_map,
    snr_of,
)

Z = 4.0


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("digitize", [False, True])
def test_flat_background_mean_and_variance(digitize: bool) -> None:
    # ADU = g Poisson(b) + N(0, g^2 r^2) + o: mean g b + o, variance g^2 (b + r^2), fourth
    # cumulant g^4 b (Poisson's cumulants all equal b; the Gaussian adds none). For n pixels
    # SD(mean) = sqrt(var / n) and SD(sample variance) = sqrt((kappa4 + 2 var^2) / n).
    # Rounding to integers adds 1/12 ADU^2 (Sheppard; exact to ~exp(-2 pi^2 var) here).
    b, r, g, o = 20.0, 2.0, 2.5, 100.0
    cam = Camera(background_photons=b, read_noise_e=r, gain_adu_per_e=g, offset_adu=o)
    frames = expose(torch.zeros((16, 128, 128), dtype=torch.float64), cam, _gen(1),
                    digitize=digitize)
    x = frames.numpy().ravel()
    n = x.size
    var = g * g * (b + r * r) + (1 / 12 if digitize else 0.0)
    kappa4 = g**4 * b
    assert abs(x.mean() - (g * b + o)) < Z * math.sqrt(var / n)
    assert abs(x.var(ddof=1) - var) < Z * math.sqrt((kappa4 + 2 * var * var) / n)
    if digitize:
        assert np.all(x == np.round(x))


def test_background_map_and_overdispersion() -> None:
    # Background b * map with a log-normal factor of CV c per pixel and frame:
    # Poisson-lognormal variance = b m + (c b m)^2 (+ r^2 = 0 here), mean b m.
    b, c = 30.0, 0.5
    bmap = np.ones((64, 64))
    bmap[:, 32:] = 2.0
    cam = Camera(background_photons=b, read_noise_e=0.0, offset_adu=0.0, background_map=bmap,
                 background_cv=c)
    x = expose(torch.zeros((40, 64, 64), dtype=torch.float64), cam, _gen(2),
               digitize=False).numpy()
    for half, m in ((x[..., :32], 1.0), (x[..., 32:], 2.0)):
        mean, var = b * m, b * m + (c * b * m) ** 2
        assert abs(half.mean() - mean) < Z * math.sqrt(var / half.size)
        # SD of a sample variance: sqrt((mu4 - var^2) / n), with the fourth central moment
        # mu4 of this heavy-tailed law estimated from the sample itself (plug-in).
        mu4 = ((half - half.mean()) ** 4).mean()
        assert abs(half.var() - var) < Z * math.sqrt((mu4 - var * var) / half.size)
    skew = ((x - x.mean()) ** 3).mean() / x.std() ** 3
    assert skew > 0.5  # right-skewed, unlike a Gaussian background


def test_scmos_maps_replace_scalars() -> None:
    h, w = 32, 32
    off = np.full((h, w), 100.0)
    off[:16] = 300.0
    gain = np.full((h, w), 2.0)
    gain[:, :16] = 4.0
    var = np.full((h, w), 9.0)
    cam = Camera(background_photons=10.0, read_noise_e=0.0, offset_map_adu=off,
                 gain_map_adu_per_e=gain, variance_map_adu2=var)
    x = expose(torch.zeros((200, h, w), dtype=torch.float64), cam, _gen(4), digitize=False)
    m = x.mean(0).numpy()
    v = x.var(0).numpy()
    for rows, cols in ((slice(0, 16), slice(0, 16)), (slice(16, 32), slice(16, 32))):
        g, o = gain[rows, cols][0, 0], off[rows, cols][0, 0]
        mean_expected, var_expected = g * 10 + o, g * g * 10 + 9.0
        n = 200 * 16 * 16
        assert abs(m[rows, cols].mean() - mean_expected) < Z * math.sqrt(var_expected / n)
        # Per-pixel variances over 200 frames averaged over 256 pixels: SD of a sample
        # variance is sqrt((kappa4 + 2 var^2) / n), kappa4 = g^4 b from the Poisson part.
        kappa4 = g**4 * 10
        sd_var = math.sqrt((kappa4 + 2 * var_expected**2) / 200 / 256)
        assert abs(v[rows, cols].mean() - var_expected) < Z * sd_var


def test_digitisation_clips_to_bit_depth() -> None:
    big = torch.full((1, 4, 4), 1e6)
    assert float(expose(big, Camera(), _gen(0)).max()) == 65535.0
    assert float(expose(big, Camera(bit_depth=12), _gen(0)).max()) == 4095.0
    neg = expose(torch.zeros((1, 4, 4)), Camera(offset_adu=0.0, read_noise_e=50.0), _gen(0))
    assert float(neg.min()) >= 0.0


def test_snr_round_trip_and_value() -> None:
    sigma, b, r = 0.9, 10.0, 1.5
    for n in (10.0, 321.0, 5e4):
        assert photons_for_snr(snr_of(n, sigma, b, r), sigma, b, r) == pytest.approx(n, rel=1e-12)
    peak = 500 * centred_pixel_fraction(sigma)
    assert snr_of(500, sigma, b, r) == pytest.approx(peak / math.sqrt(peak + b + r * r))
    # Without background and read noise SNR = sqrt(peak).
    assert snr_of(400, 0.5, 0.0, 0.0) == pytest.approx(math.sqrt(400 * centred_pixel_fraction(0.5)))


def test_snr_matches_the_simulated_peak_pixel() -> None:
    # A static particle centred on a pixel, exposed n times: (mean - offset) / g - b
    # estimates the peak signal and std / g the noise; their ratio is the nominal SNR.
    # The peak estimate has relative SD 1 / (sqrt(n) SNR), the sample SD relative SD
    # ~ 1 / sqrt(2 n) (near-Gaussian pixel at these counts), so the ratio's relative SD
    # is sqrt(1 / (2 n) + 1 / (n SNR^2)).
    sigma, b, r, g, o, snr = 1.0, 15.0, 2.0, 1.7, 100.0, 6.0
    cam = Camera(background_photons=b, read_noise_e=r, gain_adu_per_e=g, offset_adu=o)
    photons = photons_for_snr(snr, sigma, b, r)
    one = torch.tensor([[2.0]], dtype=torch.float64)
    img = render_gaussian_spots(one, one, torch.tensor([[photons]], dtype=torch.float64), (5, 5),
                                sigma, dtype=torch.float64)
    n = 40000
    x = expose(img.expand(n, 5, 5).contiguous(), cam, _gen(9), digitize=False)[:, 2, 2].numpy()
    measured = ((x.mean() - o) / g - b) / (x.std() / g)
    rel_sd = math.sqrt(1 / (2 * n) + 1 / (n * snr**2))
    assert abs(measured / snr - 1) < Z * rel_sd


def test_blinking_on_fraction_is_stationary() -> None:
    # Two-state chain with eigenvalue lam = 1 - p_on - p_off: the time average over T frames
    # has variance pi (1 - pi) / T * (1 + lam) / (1 - lam) (started in stationarity),
    # averaged over P independent particles.
    ph = Photophysics(p_off=0.1, p_on=0.3)
    p, t = 500, 200
    on = emission_states(p, t, ph, seed=3).numpy()
    pi, lam = ph.on_fraction, 1 - 0.1 - 0.3
    assert pi == pytest.approx(0.75)
    sd = math.sqrt(pi * (1 - pi) / (p * t) * (1 + lam) / (1 - lam))
    assert abs(on.mean() - pi) < Z * sd
    # Transition probabilities: binomial proportions.
    a, nxt = on[:, :-1], on[:, 1:]
    n_on, n_off = a.sum(), (~a).sum()
    p_off_hat = (a & ~nxt).sum() / n_on
    p_on_hat = (~a & nxt).sum() / n_off
    assert abs(p_off_hat - 0.1) < Z * math.sqrt(0.1 * 0.9 / n_on)
    assert abs(p_on_hat - 0.3) < Z * math.sqrt(0.3 * 0.7 / n_off)


def test_bleaching_survival() -> None:
    # Emitting in frame t with probability (1 - p)^t; binomial SD over P particles.
    p_b, p = 0.05, 20000
    on = emission_states(p, 30, Photophysics(p_bleach=p_b), seed=8).numpy()
    for t in (0, 1, 10, 29):
        q = (1 - p_b) ** t
        assert abs(on[:, t].mean() - q) < Z * math.sqrt(q * (1 - q) / p) + 1e-12
    # Bleaching is permanent.
    assert not np.any(~on[:, :-1] & on[:, 1:])


def test_emitted_photons_and_brightness_fluctuation() -> None:
    flat = emitted_photons(100.0, 5, Photophysics(), n_particles=3)
    assert torch.all(flat == 100.0)
    ph = Photophysics(brightness_cv=0.3)
    x = emitted_photons(np.array([50.0, 200.0]), 20000, ph, seed=1).numpy()
    for row, n in zip(x, (50.0, 200.0), strict=True):
        # Log-normal factor of mean 1 and CV 0.3: SD of the mean = 0.3 n / sqrt(T).
        assert abs(row.mean() - n) < Z * 0.3 * n / math.sqrt(row.size)
    off = emitted_photons(100.0, 50, Photophysics(p_off=0.5, p_on=0.5), n_particles=4, seed=2)
    assert set(np.unique(off.numpy())) <= {0.0, 100.0}


def test_localization_precision_formula() -> None:
    # Mortensen et al. 2010, eq. 6, evaluated by hand.
    n, s, a, b = 1000.0, 0.09, 0.1, 10.0
    sa2 = s * s + a * a / 12
    ref = math.sqrt(sa2 / n * (16 / 9 + 8 * math.pi * sa2 * b / (n * a * a)))
    assert localization_precision_um(n, s, a, b) == pytest.approx(ref, rel=1e-14)
    t = localization_precision_um(torch.tensor([n, 0.0]), s, a, b)
    assert isinstance(t, torch.Tensor)
    assert float(t[0]) == pytest.approx(ref, rel=1e-14)
    assert math.isinf(float(t[1]))
    emccd = localization_precision_um(n, s, a, b, excess_noise_factor=2.0)
    assert emccd == pytest.approx(math.sqrt(2) * ref)


def test_smooth_background_map() -> None:
    m = smooth_background_map((64, 48), 5.0, 0.4, generator=_gen(0))
    assert m.shape == (64, 48)
    assert np.all(m > 0)
    assert m.mean() == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"background_photons": -1.0}, "background_photons"),
        ({"read_noise_e": float("nan")}, "read_noise_e"),
        ({"gain_adu_per_e": 0.0}, "gain_adu_per_e"),
        ({"offset_adu": -5.0}, "offset_adu"),
        ({"bit_depth": 17}, "bit_depth"),
        ({"bit_depth": 0}, "bit_depth"),
        ({"background_cv": -0.1}, "background_cv"),
        ({"background_map": -np.ones((4, 4))}, "background_map"),
        ({"gain_map_adu_per_e": np.zeros((4, 4))}, "gain_map_adu_per_e"),
        ({"offset_map_adu": np.ones(4)}, "offset_map_adu"),
        ({"background_map": np.ones((4, 4)), "offset_map_adu": np.ones((3, 3))},
         "background_map"),
    ],
)
def test_camera_bad_parameters(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}"):
        Camera(**kwargs)


def test_other_bad_parameters() -> None:
    with pytest.raises(ValueError, match=r"^p_off"):
        Photophysics(p_off=1.5)
    with pytest.raises(ValueError, match=r"^p_bleach"):
        Photophysics(p_bleach=-0.1)
    with pytest.raises(ValueError, match=r"^snr"):
        photons_for_snr(0.0, 1.0, 10.0, 1.0)
    with pytest.raises(ValueError, match=r"^psf_sigma_px|^sigma_px"):
        snr_of(100.0, -1.0, 10.0, 1.0)
    with pytest.raises(ValueError, match=r"^background_photons"):
        snr_of(100.0, 1.0, -10.0, 1.0)
    with pytest.raises(ValueError, match=r"^camera maps"):
        expose(torch.zeros((1, 3, 3)), Camera(background_map=np.ones((4, 4))), _gen(0))
    with pytest.raises(ValueError, match=r"^expected_photons"):
        expose(-torch.ones((1, 3, 3)), Camera(), _gen(0))
    with pytest.raises(ValueError, match=r"^photons"):
        emitted_photons(-1.0, 3, Photophysics(), n_particles=2)
    with pytest.raises(ValueError, match=r"^n_particles"):
        emission_states(0, 3, Photophysics())
