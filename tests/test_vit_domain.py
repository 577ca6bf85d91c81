"""Domain randomisation of the transformer's training data and the per-frame patch normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from livespt.models.simulate import Camera, simulate_patches
from livespt.models.simulate.psf_shapes import PsfShape, render_mixture_spots
from livespt.models.vit.data import (
    TrainingDistribution,
    _draw_domain,
    _structured_background,
    simulate_windows,
)
from livespt.models.vit.inputs import (
    N_STATS,
    frame_background_and_noise,
    normalise_patches_per_frame,
    prepare,
)


def _patches(camera: Camera, seed: int = 0) -> torch.Tensor:
    sim = simulate_patches(4, 6, d_um2_s=0.2, snr=15.0, psf_sigma_um=0.12, camera=camera,
                           seed=seed, digitize=False)
    return sim.images


def test_per_frame_normalisation_does_not_depend_on_gain_or_offset() -> None:
    # The same photons through two cameras (same seed: same electrons, read noise
    # scaled with the gain); no rounding, so the only difference is gain and offset.
    a = _patches(Camera(background_photons=20.0, read_noise_e=2.0, gain_adu_per_e=1.0,
                        offset_adu=100.0))
    b = _patches(Camera(background_photons=20.0, read_noise_e=2.0, gain_adu_per_e=7.0,
                        offset_adu=900.0))
    valid = torch.ones(a.shape[:2], dtype=torch.bool)
    na, sa = normalise_patches_per_frame(a, valid)
    nb, sb = normalise_patches_per_frame(b, valid)
    # Up to the 1/12 ADU^2 rounding term of the noise estimate (~1 % here).
    assert torch.allclose(na, nb, atol=0.02)
    assert torch.allclose(sa[:, :4], sb[:, :4], atol=0.03)
    assert sb[:, 4] - sa[:, 4] == pytest.approx(torch.full((4,), math.log(7.0)), abs=0.02)


def test_a_frame_token_input_depends_only_on_its_own_patch() -> None:
    x = _patches(Camera(background_photons=10.0))
    valid = torch.ones(x.shape[:2], dtype=torch.bool)
    before, _ = normalise_patches_per_frame(x, valid)
    y = x.clone()
    y[:, 3] = y[:, 3] * 5.0 + 300.0  # another frame of the window changes
    after, _ = normalise_patches_per_frame(y, valid)
    keep = [0, 1, 2, 4, 5]
    assert torch.equal(before[:, keep], after[:, keep])


def test_noise_estimate_is_robust_and_floored() -> None:
    g = torch.Generator().manual_seed(1)
    x = 50.0 + 3.0 * torch.randn(2000, 15, 15, generator=g)
    x[:, 0, :3] += 500.0  # a bright neighbour in the border
    bg, sd = frame_background_and_noise(x)
    assert float(bg.median()) == pytest.approx(50.0, abs=0.3)
    assert float(sd.median()) == pytest.approx(3.0, rel=0.1)
    _, sd0 = frame_background_and_noise(torch.full((3, 15, 15), 7.0))
    assert torch.all(sd0 == 0.5)


@pytest.mark.parametrize("norm", ["window", "frame"])
def test_prepare_gives_stats_and_both_normalisations(norm: str) -> None:
    b = simulate_windows(8, TrainingDistribution(), torch.Generator().manual_seed(0),
                         length=10, patch_norm=norm)
    assert b.inputs.stats is not None and b.inputs.stats.shape == (8, N_STATS)
    assert torch.isfinite(b.inputs.stats).all()
    other = b.inputs_for("frame" if norm == "window" else "window")
    assert torch.equal(other.features, b.inputs.features)
    assert not torch.equal(other.images, b.inputs.images)
    with pytest.raises(ValueError, match="patch_norm"):
        prepare(b.images_adu, b.patch_origin_um, b.localized_um, b.sigma_um, b.frames,
                b.valid, pixel_size_um=0.1, frame_interval_s=0.05, exposure_s=0.05,
                psf_sigma_um=0.12, patch_norm="batch")


def test_psf_shapes_keep_their_photons_and_their_shape() -> None:
    x = torch.full((1, 1), 20.0, dtype=torch.float64)
    ph = torch.full((1, 1), 1000.0, dtype=torch.float64)
    moments = {}
    for shape in (PsfShape(), PsfShape("airy", ring_weight=0.1),
                  PsfShape("defocus", ring_weight=0.5, ring_radius=2.0, core_scale=1.2),
                  PsfShape("astigmatic", astigmatism=0.3)):
        img = render_mixture_spots(x, x, ph, (41, 41), 1.2, shape, torch.float64)[0]
        assert float(img.sum()) == pytest.approx(1000.0, rel=1e-6), shape.kind
        idx = torch.arange(41, dtype=torch.float64) - 20.0
        vx = float((img.sum(0) * idx**2).sum() / 1000.0)
        vy = float((img.sum(1) * idx**2).sum() / 1000.0)
        moments[shape.kind] = (vx, vy)
    assert moments["gaussian"][0] == pytest.approx(1.2**2 + 1 / 12, rel=1e-3)
    assert moments["airy"][0] > 1.5 * moments["gaussian"][0]  # the ring's photons
    assert moments["astigmatic"][0] > 1.5 * moments["astigmatic"][1]
    with pytest.raises(ValueError, match="kind"):
        PsfShape("vortex")


def test_simulate_patches_defaults_are_unchanged_by_the_new_options() -> None:
    kw = dict(d_um2_s=0.3, snr=10.0, seed=5)
    a = simulate_patches(3, 5, **kw)
    b = simulate_patches(3, 5, psf_shape=None, background_patches=None, **kw)
    assert torch.equal(a.images, b.images)
    c = simulate_patches(3, 5, background_patches=torch.ones(1, 1, 15, 15), **kw)
    assert c.images.shape == a.images.shape
    with pytest.raises(ValueError, match="background_patches"):
        simulate_patches(3, 5, background_patches=torch.ones(2, 15, 15), **kw)


def test_domain_draws_cover_the_stated_ranges() -> None:
    dist = TrainingDistribution()
    g = torch.Generator().manual_seed(0)
    snr = torch.full((16,), 10.0, dtype=torch.float64)
    cams, subs, kinds = [], [], set()
    for _ in range(300):
        cam, n_sub, shape, sig_f, psf_f = _draw_domain(dist, g, torch.device("cpu"), 10.0, 0.1,
                                                      snr, 1.2)
        cams.append(cam)
        subs.append(n_sub)
        kinds.add("gaussian" if shape is None else shape.kind)
        assert 0.3 < sig_f < 3.0 and 0.5 < psf_f < 2.0
    bits = [c.bit_depth for c in cams]
    assert 0.15 < bits.count(8) / len(bits) < 0.35
    g16 = [c.gain_adu_per_e for c in cams if c.bit_depth == 16]
    assert min(g16) >= 0.5 and max(g16) <= 10.0 and max(g16) > 5.0
    assert max(c.offset_adu for c in cams) > 500.0
    assert max(c.read_noise_e for c in cams) > 8.0
    assert min(subs) >= 5 and max(subs) <= 50
    assert kinds == {"gaussian", "airy", "defocus", "astigmatic"}
    bg = _structured_background(4, 12, dist, g, torch.device("cpu"))
    assert bg.shape == (4, 12, 15, 15) and bool((bg >= 0).all())


def test_realistic_windows_reach_fast_blurred_particles_and_8_bit_clipping() -> None:
    dist = TrainingDistribution()
    assert dist.d_star_range[1] >= 5.0
    g = torch.Generator().manual_seed(2)
    saw_8bit = False
    for _ in range(30):  # P(no 8-bit batch) = 0.75^30 < 1e-3
        b = simulate_windows(8, dist, g, length=6)
        assert b.images_adu is not None
        saw_8bit |= float(b.images_adu.max()) <= 255.0
        assert torch.isfinite(b.inputs.images).all()
    assert saw_8bit
