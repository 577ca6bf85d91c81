"""Training loops of phi and Psi (models/ddpm/train.py), with tiny networks."""

from __future__ import annotations

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
    assert main(["train", "localizer", "--preset", "tiny", "--minutes", "0"]) == 2
