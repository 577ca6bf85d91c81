"""Emitters read from KDE maps (models/ddpm/emitters.py), on exact KDE targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from livespt.models.ddpm.emitters import locate_emitters, match_positions
from livespt.models.psf import render_gaussian_spots
from livespt.models.simulate import simulate_smlm


def test_isolated_emitters_are_found_where_they_are() -> None:
    batch = simulate_smlm(100, n_emitters=1, seed=1)
    errors = []
    for k in range(100):
        e = locate_emitters(batch.kde[k:k + 1].numpy())
        assert len(e.x_px) == 1
        errors.append(math.hypot(e.x_px[0] - float(batch.positions_px[k, 0, 0]),
                                 e.y_px[0] - float(batch.positions_px[k, 0, 1])))
    assert max(errors) < 0.02  # px: the read-out adds nothing that matters


@pytest.mark.parametrize(("kernel", "precision", "recall"), [
    (3.0, 0.984, 0.941), (2.0, 1.0, 0.983), (1.5, 1.0, 0.991)])
def test_the_ceiling_on_exact_kdes_at_the_seeds_settings(kernel: float, precision: float,
                                                         recall: float) -> None:
    """A perfect network's output (the exact targets, 1-5 emitters, 300 frames, about 900
    emitters): precision and recall of the read-out itself, by KDE kernel (fine px; module
    docstring). Binomial standard error at 0.94 and 900 emitters: 0.008; the numbers are
    the measured ones (fixed seed), the tolerance keeps the kernels apart."""
    batch = simulate_smlm(300, n_emitters=(1, 5), sigma_y_px=kernel, seed=0)
    tp = fp = fn = 0
    for k in range(300):
        e = locate_emitters(batch.kde[k:k + 1].numpy(), 4, kernel)
        truth = batch.positions_px[k][batch.mask[k]].numpy()
        m = len(match_positions(truth, np.stack([e.x_px, e.y_px], axis=1)))
        tp, fp, fn = tp + m, fp + len(e.x_px) - m, fn + len(truth) - m
    assert tp / (tp + fp) == pytest.approx(precision, abs=0.005)
    assert tp / (tp + fn) == pytest.approx(recall, abs=0.005)


def _displaced_spots(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """64 KDE samples (80 x 80 fine px, kernel 3) of one emitter at (9.3, 10.1) px displaced
    by N(0, 0.1 px) per axis; returns the samples and the displacements (px)."""
    shift = rng.normal(0.0, 0.1, (64, 2))
    fine = lambda v: (v + 0.5) * 4 - 0.5  # noqa: E731
    x = torch.tensor(fine(9.3 + shift[:, 0]))[:, None]
    y = torch.tensor(fine(10.1 + shift[:, 1]))[:, None]
    imgs = render_gaussian_spots(x, y, torch.ones(64, 1, dtype=torch.float64), (80, 80), 3.0)
    return (imgs / imgs.amax(dim=(1, 2), keepdim=True)).numpy(), shift


def test_position_spread_over_samples_is_measured() -> None:
    """64 samples with the emitter displaced by N(0, 0.1 px): the reported SD is the
    displacements' SD."""
    imgs, shift = _displaced_spots(np.random.default_rng(0))
    e = locate_emitters(imgs)
    assert len(e.x_px) == 1
    np.testing.assert_allclose([e.x_sd_px[0], e.y_sd_px[0]], shift.std(axis=0, ddof=1),
                               rtol=0.02)
    assert abs(e.x_px[0] - 9.3 - shift[:, 0].mean()) < 0.02
    with pytest.raises(ValueError, match="samples must have 3 dimension"):
        locate_emitters(np.zeros((80, 80)))


def test_pixel_noise_in_the_samples_does_not_pass_for_position_spread() -> None:
    """The same displaced spots plus pixel noise of SD 0.05 (a sample's noise away from its
    peak): the mean shift still reports the displacements' SD within 15 % (64 samples: the
    SD's own standard error is 9 %, the same draws on both sides); the first read-out
    (arg-max + parabola) reported about 1.45 times it here (module docstring)."""
    rng = np.random.default_rng(1)
    imgs, shift = _displaced_spots(rng)
    noisy = imgs + rng.normal(0.0, 0.05, imgs.shape)
    e = locate_emitters(noisy)
    assert len(e.x_px) == 1
    np.testing.assert_allclose([e.x_sd_px[0], e.y_sd_px[0]], shift.std(axis=0, ddof=1),
                               rtol=0.15)


def test_an_estimate_places_the_emitters_and_the_samples_their_spread() -> None:
    """Emitters found on a given estimate of the mean KDE (a spot 0.2 px right of the
    samples' mean and a second spot the samples lack): positions and peaks are the
    estimate's, each SD still the displacements' over the samples."""
    imgs, shift = _displaced_spots(np.random.default_rng(0))
    fine = lambda v: torch.tensor([[(v + 0.5) * 4 - 0.5]], dtype=torch.float64)  # noqa: E731
    x0 = 9.3 + shift[:, 0].mean() + 0.2
    est = render_gaussian_spots(torch.cat([fine(x0), fine(4.0)], dim=1),
                                torch.cat([fine(10.1), fine(4.0)], dim=1),
                                torch.ones(1, 2, dtype=torch.float64), (80, 80), 3.0)[0]
    est = (est / est.max()).numpy()
    e = locate_emitters(imgs, estimate=est)
    assert len(e.x_px) == 2
    first = int(np.argmin(np.abs(e.x_px - x0)))
    assert abs(e.x_px[first] - x0) < 0.02 and abs(e.y_px[first] - 10.1) < 0.02
    np.testing.assert_allclose([e.x_sd_px[first], e.y_sd_px[first]],
                               shift.std(axis=0, ddof=1), rtol=0.02)
    np.testing.assert_allclose(e.peak, 1.0, atol=0.05)
    with pytest.raises(ValueError, match=r"estimate: shape \(80, 79\) is not the samples'"):
        locate_emitters(imgs, estimate=est[:, :79])
    with pytest.raises(ValueError, match="estimate contains NaN"):
        locate_emitters(imgs, estimate=np.full((80, 80), np.nan))


def test_matching_is_one_to_one_and_closest_first() -> None:
    truth = np.array([[0.0, 0.0], [1.0, 0.0]])
    found = np.array([[0.9, 0.0], [0.2, 0.0], [5.0, 5.0]])
    assert sorted(match_positions(truth, found)) == [(0, 1), (1, 0)]
    assert match_positions(truth, found[:1]) == [(1, 0)]  # one find pairs once
    assert match_positions(truth, np.zeros((0, 2))) == []
