"""Tests of SMLM frame and KDE simulation (models/simulate/smlm.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from livespt.models.simulate import simulate_smlm

Z = 4.0


def test_shapes_kde_range_and_disc() -> None:
    batch = simulate_smlm(64, seed=0)
    assert batch.frames.shape == (64, 20, 20)
    assert batch.kde.shape == (64, 80, 80)
    assert batch.frames.dtype == batch.kde.dtype == torch.float32
    assert batch.positions_px.shape == (64, 5, 2)
    assert batch.mask.shape == (64, 5)
    counts = batch.mask.sum(1)
    assert int(counts.min()) >= 1 and int(counts.max()) <= 5
    assert len(torch.unique(counts)) > 1  # the range is really drawn from
    torch.testing.assert_close(batch.kde.amax(dim=(1, 2)), torch.ones(64))
    assert float(batch.kde.min()) >= 0.0
    r = (batch.positions_px - 9.5).norm(dim=-1)
    assert float(r[batch.mask].max()) <= 7.0
    assert torch.all(batch.positions_px[~batch.mask] == 0)


def test_emitters_are_uniform_on_the_disc() -> None:
    # Uniform on a disc of radius R: (r / R)^2 is uniform on [0, 1], mean 1/2, SD 1/sqrt(12).
    batch = simulate_smlm(2000, n_emitters=3, seed=1)
    r2 = ((batch.positions_px - 9.5).norm(dim=-1) / 7.0) ** 2
    n = r2.numel()
    assert abs(float(r2.mean()) - 0.5) < Z / math.sqrt(12 * n)


def test_single_emitter_kde_peak_is_at_the_emitter() -> None:
    # The pixel-integrated kernel is largest in the fine pixel containing the emitter,
    # whose centre is within half a fine pixel of it; fine pixel k is centred at
    # (k + 1/2) / upsample - 1/2 low-resolution pixels.
    batch = simulate_smlm(100, n_emitters=1, seed=2)
    flat = batch.kde.reshape(100, -1).argmax(dim=1)
    row, col = flat // 80, flat % 80
    peak = torch.stack(((col + 0.5) / 4 - 0.5, (row + 0.5) / 4 - 0.5), dim=-1).double()
    err = (peak - batch.positions_px[:, 0]).abs()
    assert float(err.max()) <= 0.5 / 4 + 1e-9


def test_frame_photons_match_i0() -> None:
    # Emitters are >= 2.5 px (2.7 sigma) inside the frame; the expected total per frame is
    # i0 times the fraction inside, summed over emitters (+ background). Poisson: the sum
    # over all frames has variance equal to its mean.
    batch = simulate_smlm(500, n_emitters=2, background_photons=1.5, seed=3)
    pos = batch.positions_px.numpy()
    s = 0.92
    fx = norm.cdf((19.5 - pos[..., 0]) / s) - norm.cdf((-0.5 - pos[..., 0]) / s)
    fy = norm.cdf((19.5 - pos[..., 1]) / s) - norm.cdf((-0.5 - pos[..., 1]) / s)
    mean = 200.0 * (fx * fy).sum() + 1.5 * 400 * 500
    total = float(batch.frames.double().sum())
    assert abs(total - mean) < Z * math.sqrt(mean)


def test_read_noise_and_reproducibility() -> None:
    a = simulate_smlm(4, read_noise_e=1.0, seed=5)
    b = simulate_smlm(4, read_noise_e=1.0, seed=5)
    c = simulate_smlm(4, read_noise_e=1.0, seed=6)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.kde, b.kde)
    assert not torch.equal(a.frames, c.frames)
    assert not np.allclose(a.frames.numpy(), np.round(a.frames.numpy()))  # Gaussian read noise


def test_empty_frames_are_allowed_and_all_zero() -> None:
    batch = simulate_smlm(50, n_emitters=(0, 1), seed=4)
    empty = batch.mask.sum(1) == 0
    assert bool(empty.any())
    assert float(batch.kde[empty].abs().max()) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_frames": 0}, "n_frames"),
        ({"n_emitters": 0}, "n_emitters"),
        ({"n_emitters": (3, 2)}, "n_emitters"),
        ({"n_emitters": (1, 2, 3)}, "n_emitters"),
        ({"frame_px": 0}, "frame_px"),
        ({"upsample": 0}, "upsample"),
        ({"sigma_x_px": 0.0}, "sigma_x_px"),
        ({"i0": -1.0}, "i0"),
        ({"disc_radius_px": 0.0}, "disc_radius_px"),
        ({"sigma_y_px": float("inf")}, "sigma_y_px"),
        ({"background_photons": -1.0}, "background_photons"),
        ({"read_noise_e": -1.0}, "read_noise_e"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs: dict, name: str) -> None:
    args = {"n_frames": 2} | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        simulate_smlm(**args)
