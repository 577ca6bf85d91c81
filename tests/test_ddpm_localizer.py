"""The localizer's inference path and weight files (models/ddpm/localizer.py), untrained nets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from livespt.models.ddpm.diffusion import Schedule
from livespt.models.ddpm.localizer import Localizer, load, save
from livespt.models.ddpm.networks import ConditionalUNet, KdeNet, KdeNetConfig, UNetConfig


@pytest.fixture(scope="module")
def localizer() -> Localizer:
    torch.manual_seed(0)
    return Localizer(KdeNet(KdeNetConfig(channels=4, dilations=(1, 2))),
                     ConditionalUNet(UNetConfig(channels=4, multipliers=(1, 2, 4),
                                                attention_heads=1, time_dim=16)),
                     Schedule())


def test_samples_shapes_seeds_and_odd_frame_sizes(localizer: Localizer) -> None:
    frames = np.random.default_rng(0).poisson(10, (2, 21, 19)).astype(np.float64)
    a = localizer.sample(frames, n_samples=3, n_steps=4, seed=1)
    assert a.shape == (2, 3, 84, 76)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0  # clipped to the KDE's range
    assert torch.equal(a, localizer.sample(frames, n_samples=3, n_steps=4, seed=1))
    assert not torch.equal(a, localizer.sample(frames, n_samples=3, n_steps=4, seed=2))
    out = localizer.localize(frames[:1], n_samples=3, n_steps=4)
    assert out[0].mean.shape == out[0].variance.shape == (84, 76)
    assert float(out[0].variance.min()) >= 0.0


def test_draw_returns_phis_estimate_and_the_emitters_are_read_from_it(
        localizer: Localizer) -> None:
    from livespt.models.ddpm.emitters import locate_emitters
    from livespt.models.ddpm.networks import normalise_frames

    frames = np.random.default_rng(3).poisson(10, (2, 16, 16)).astype(np.float64)
    smp, est = localizer.draw(frames, 3, n_steps=4, seed=1)
    assert torch.equal(smp, localizer.sample(frames, 3, n_steps=4, seed=1))
    with torch.no_grad():
        phi = localizer.phi(normalise_frames(torch.as_tensor(frames)))[:, 0]
    assert torch.allclose(est, phi.clamp(0, 1))
    for source, estimate in (("estimate", est[0].numpy()), ("mean", None)):
        got = localizer.localize(frames[:1], 3, n_steps=4, seed=1, threshold=0.01,
                                 emitters_from=source)[0].emitters
        want = locate_emitters(smp[0].numpy(), localizer.upsample, localizer.sigma_y_px,
                               0.01, estimate)
        np.testing.assert_allclose(got.x_px, want.x_px, atol=1e-4)  # batch of 1 vs 2
    with pytest.raises(ValueError, match="emitters_from must be one of"):
        localizer.localize(frames, 2, n_steps=2, emitters_from="phi")


@pytest.mark.parametrize(("frames", "kwargs", "message"), [
    (np.full((1, 20, 20), np.nan), {}, "frames contains NaN"),
    (np.zeros((20, 20)), {}, "frames must have 3 dimension"),
    (np.zeros((1, 20, 20)), {"sampler": "slow"}, "sampler must be 'fast' or 'ancestral'"),
    (np.zeros((1, 20, 20)), {"n_samples": 0}, "n_samples must be an integer >= 1"),
])
def test_bad_frames_are_refused(localizer: Localizer, frames, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        localizer.sample(frames, **kwargs)


def test_weights_round_trip(localizer: Localizer, tmp_path: Path) -> None:
    path = save(localizer, tmp_path / "loc.pt")
    again = load(path)
    frames = np.random.default_rng(1).poisson(10, (1, 20, 20)).astype(np.float64)
    assert torch.equal(localizer.sample(frames, 2, n_steps=3), again.sample(frames, 2, n_steps=3))
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a livespt-ddpm/1 file"):
        load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no such file"):
        load(tmp_path / "missing.pt")


def test_a_card_guards_its_weights(localizer: Localizer, tmp_path: Path) -> None:
    from livespt.models.ddpm.localizer import read_card, write_card

    path = save(localizer, tmp_path / "loc.pt")
    write_card(path, {"name": "loc", "metrics": {}})
    assert load(path).card["name"] == "loc"
    assert read_card(path)["sha256"] == load(path).card["sha256"]
    save(Localizer(localizer.phi, localizer.psi, localizer.schedule, target_scale=2.0), path)
    with pytest.raises(ValueError, match=r"sha256 differs from its card loc\.json"):
        load(path)
    (tmp_path / "loc.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a livespt-ddpm/1 card"):
        load(path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not readable"):
        load(tmp_path / "junk.pt")


def test_the_target_scale_is_undone_when_sampling(localizer: Localizer) -> None:
    # Psi draws k times the target: with an untrained Psi the samples' spread around
    # phi shrinks as k grows (the same noise, divided by k), and stays in [0, 1].
    frames = np.random.default_rng(2).poisson(10, (1, 16, 16)).astype(np.float64)
    spread = []
    for k in (1.0, 10.0):
        loc = Localizer(localizer.phi, localizer.psi, localizer.schedule, target_scale=k)
        smp = loc.sample(frames, 4, n_steps=3).numpy()
        assert smp.min() >= 0 and smp.max() <= 1
        spread.append(float(smp.std(axis=1).mean()))
    assert spread[1] < spread[0]


def test_detection_counts_every_emitter_once_by_its_neighbours_distance(
        localizer: Localizer) -> None:
    from livespt.models.ddpm.evaluate import detection, ours

    data = ours(3, (2, 5), 0)
    det = detection(localizer, data, samples=2, steps=2, threshold=0.01)
    bins = det["recall_by_neighbour_px"]
    assert sum(b["emitters"] for b in bins.values()) == det["emitters"] == sum(
        len(p) for p in data.positions_px)
    assert sum(b["found"] for b in bins.values()) == round(det["recall"] * det["emitters"])
    assert bins["3-inf"]["emitters"] < det["emitters"]  # 2-5 emitters on a 7 px disc
