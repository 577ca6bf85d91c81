"""Shapes, ranges and refusals of the localizer's networks (models/ddpm/networks.py)."""

from __future__ import annotations

import pytest
import torch

from livespt.models.ddpm.networks import (
    ConditionalUNet,
    KdeNet,
    KdeNetConfig,
    UNetConfig,
    normalise_frames,
    timestep_embedding,
)


def test_kde_net_is_fully_convolutional_at_4x_with_values_in_0_1() -> None:
    torch.manual_seed(0)
    phi = KdeNet(KdeNetConfig(channels=8)).eval()
    for h, w in [(20, 20), (32, 48)]:
        frames = torch.rand(3, h, w) * 500 + 100
        with torch.no_grad():
            kde = phi(normalise_frames(frames))
        assert kde.shape == (3, 1, 4 * h, 4 * w)
        assert float(kde.min()) >= 0.0 and float(kde.max()) <= 1.0


def test_normalisation_removes_offset_and_gain() -> None:
    frames = torch.rand(2, 20, 20) * 50
    a = normalise_frames(frames)
    b = normalise_frames(frames * 3.7 + 100)  # another camera's gain and offset
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a.shape == (2, 1, 20, 20)


def test_unet_predicts_noise_of_the_input_shape_and_is_deterministic() -> None:
    torch.manual_seed(0)
    psi = ConditionalUNet(UNetConfig(channels=8, multipliers=(1, 2, 4), attention_heads=2))
    psi.eval()
    y = torch.randn(2, 1, 80, 80)
    cond = torch.rand(2, 1, 80, 80)
    t = torch.tensor([0, 99])
    with torch.no_grad():
        out = psi(y, t, cond)
        again = psi(y, t, cond)
        other_t = psi(y, torch.tensor([50, 50]), cond)
    assert out.shape == y.shape
    assert torch.equal(out, again)
    assert not torch.allclose(out, other_t)  # the timestep is used
    with pytest.raises(ValueError, match="multiples of 4"):
        psi(torch.randn(1, 1, 82, 80), torch.tensor([1]), torch.rand(1, 1, 82, 80))


def test_timestep_embedding_is_sinusoidal() -> None:
    e = timestep_embedding(torch.tensor([0, 7]), 16)
    assert e.shape == (2, 16)
    torch.testing.assert_close(e[0], torch.cat([torch.zeros(8), torch.ones(8)]))


def test_kde_net_clamps_only_at_inference_so_training_keeps_its_gradient() -> None:
    torch.manual_seed(0)
    phi = KdeNet(KdeNetConfig(channels=8))
    with torch.no_grad():
        phi.refine[-1].bias.fill_(-5.0)  # every output below 0
    frames = normalise_frames(torch.rand(2, 20, 20) * 100)
    phi.train()
    out = phi(frames)
    assert float(out.max()) < 0.0
    ((out - 0.5) ** 2).mean().backward()
    assert float(phi.refine[-1].bias.grad.abs().sum()) > 0  # HardTanh here would give 0
    phi.eval()
    with torch.no_grad():
        assert float(phi(frames).min()) == 0.0
