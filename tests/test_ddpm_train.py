"""Training loops of phi and Psi (models/ddpm/train.py), with tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livespt.models.ddpm.networks import KdeNetConfig, UNetConfig
from livespt.models.ddpm.train import LocalizerTrainConfig, SmlmDistribution, train_ddpm, train_phi

TINY = LocalizerTrainConfig(phi=KdeNetConfig(channels=4, dilations=(1, 2)),
                            unet=UNetConfig(channels=4, multipliers=(1, 2), attention_heads=1,
                                            time_dim=16),
                            batch_size=4, max_steps=3, max_minutes=5.0)


def test_batches_draw_their_own_camera() -> None:
    gen = torch.Generator().manual_seed(0)
    data = SmlmDistribution()
    a, kde = data.batch(8, gen)
    b, _ = data.batch(8, gen)
    assert a.shape == (8, 20, 20) and kde.shape == (8, 80, 80)
    assert abs(float(a.median()) - float(b.median())) > 0.1  # another background level


def test_training_runs_its_steps_and_moves_the_weights() -> None:
    torch.manual_seed(TINY.seed)
    from livespt.models.ddpm.networks import KdeNet
    start = KdeNet(TINY.phi).state_dict()
    phi, hist = train_phi(TINY, log=lambda _: None)
    assert hist["steps"] == 3 and hist["frames_seen"] == 12
    moved = [not torch.equal(start[k], v) for k, v in phi.state_dict().items()
             if v.dtype.is_floating_point]
    assert any(moved)
    psi, hist = train_ddpm(TINY, phi, log=lambda _: None)
    assert hist["steps"] == 3 and not psi.training
    with torch.no_grad():
        out = psi(torch.randn(2, 1, 80, 80), torch.tensor([0, 5]), torch.rand(2, 1, 80, 80))
    assert out.shape == (2, 1, 80, 80)


def test_livespt_train_localizer_writes_a_loadable_file(tmp_path) -> None:
    from livespt.models.ddpm.localizer import load
    from livespt.server.cli.main import main

    out = tmp_path / "loc.pt"
    assert main(["train", "localizer", "--preset", "tiny", "--device", "cpu",
                 "--out", str(out)]) == 0
    loc = load(out)
    assert loc.phi.config == TINY.phi
    assert loc.target == "residual" and loc.target_scale > 1  # the residual's RMS << 1
    assert loc.card["name"] == "loc" and loc.card["training"]["batch_size"] == TINY.batch_size
    assert loc.card["history"]["ddpm"]["target_scale"] == pytest.approx(loc.target_scale)
    assert main(["train", "localizer", "--preset", "tiny", "--minutes", "0"]) == 2
    again = tmp_path / "again.pt"
    assert main(["train", "localizer", "--preset", "tiny", "--phi-from", str(out),
                 "--out", str(again)]) == 0
    kept = load(again)
    assert all(torch.equal(a, b) for a, b in zip(kept.phi.state_dict().values(),
                                                 loc.phi.state_dict().values(), strict=True))
    assert kept.card["history"]["phi"]["from"] == str(out)
    assert "--phi-from" in kept.card["command"]
    assert main(["train", "localizer", "--preset", "cpu", "--phi-from", str(out)]) == 2


def test_the_kde_kernel_is_a_training_flag(tmp_path, capsys) -> None:
    from livespt.models.ddpm.localizer import load
    from livespt.server.cli.main import main

    out = tmp_path / "k15.pt"
    assert main(["train", "localizer", "--preset", "tiny", "--device", "cpu",
                 "--kde-sigma", "1.5", "--out", str(out)]) == 0
    loc = load(out)
    assert loc.sigma_y_px == 1.5 and loc.card["training"]["data"]["sigma_y_px"] == 1.5
    assert "--kde-sigma 1.5" in loc.card["command"]
    from livespt.models.ddpm.train import PRESETS
    assert PRESETS["tiny"].data.sigma_y_px == 2.0  # the default since the kernel-3 ceiling
    capsys.readouterr()
    assert main(["train", "localizer", "--preset", "tiny", "--kde-sigma", "0.1"]) == 2
    assert "--kde-sigma must be in [0.5, 8] fine pixels, got 0.1" in capsys.readouterr().err
    # train phi, then train ddpm on it: the two commands
    phi_file, loc_file = tmp_path / "phi.pt", tmp_path / "from_phi.pt"
    assert main(["train", "phi", "--preset", "tiny", "--device", "cpu", "--kde-sigma", "2",
                 "--out", str(phi_file)]) == 0
    from livespt.models.ddpm.localizer import load_phi
    phi, kernel, card = load_phi(phi_file)
    assert kernel == 2.0 and card["format"] == "livespt-phi/1" and "psi" not in card["history"]
    assert main(["train", "ddpm", "--preset", "tiny", "--device", "cpu", "--kde-sigma", "2",
                 "--phi-from", str(phi_file), "--out", str(loc_file)]) == 0
    both = load(loc_file)
    assert all(torch.equal(a, b) for a, b in zip(both.phi.state_dict().values(),
                                                 phi.state_dict().values(), strict=True))
    assert both.card["command"].startswith("livespt train ddpm")
    capsys.readouterr()
    assert main(["train", "ddpm", "--preset", "tiny"]) == 2
    assert "--phi-from is required by train ddpm" in capsys.readouterr().err
    assert main(["train", "phi", "--preset", "tiny", "--init-from", str(phi_file)]) == 2
    assert "--init-from is for train vit" in capsys.readouterr().err
    assert main(["train", "ddpm", "--preset", "tiny", "--phi-from", str(tmp_path / "no.pt")]) == 2
    assert f"phi weights {tmp_path / 'no.pt'}: no such file" in capsys.readouterr().err
    # a phi trained on another kernel is refused, naming the flag
    assert main(["train", "localizer", "--preset", "tiny", "--phi-from", str(out),
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "kernel 1.5 fine px, not 2 (set --kde-sigma to match)" in capsys.readouterr().err


def test_the_target_is_scaled_to_unit_rms() -> None:
    from livespt.models.ddpm.train import target_scale

    def draw(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return 0.02 * torch.randn(64, 1, 8, 8, generator=gen), torch.zeros(1)
    k = target_scale(draw, torch.Generator().manual_seed(0), torch.device("cpu"))
    # RMS of 8 x 4096 normal values times 0.02: 1/k within a few 1/sqrt(32768) of 0.02.
    assert 1 / k == pytest.approx(0.02, rel=4 / np.sqrt(2 * 8 * 4096))
