"""Tests of patch-sequence simulation (models/simulate/patches.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from livespt.models.simulate import (
    Camera,
    Photophysics,
    localization_precision_um,
    photons_for_snr,
    simulate_patches,
)

Z = 4.0


def test_shapes_and_dtypes() -> None:
    ps = simulate_patches(6, 5, patch_px=11, photons=500.0, substeps=4, seed=0)
    assert ps.images.shape == (6, 5, 11, 11)
    assert ps.images.dtype == torch.float32
    assert ps.patch_origin_um.shape == (6, 5, 2)
    assert ps.true_substeps_um.shape == (6, 5, 4, 2)
    assert ps.true_mean_um.shape == ps.localized_um.shape == (6, 5, 2)
    assert ps.localization_sigma_um.shape == ps.d_um2_s.shape == ps.photons.shape == (6, 5)
    assert ps.expected is None
    assert torch.all(ps.images == torch.round(ps.images))  # digitised ADU


def test_localization_error_has_the_mortensen_variance() -> None:
    # (localized - true) / sigma are 2 B T independent standard normals: their mean
    # square has SD sqrt(2 / n).
    b, t = 400, 10
    cam = Camera(background_photons=8.0, read_noise_e=1.2)
    ps = simulate_patches(b, t, photons=300.0, camera=cam, d_um2_s=0.2, seed=1)
    sigma = localization_precision_um(300.0, ps.psf_sigma_um, ps.pixel_size_um, 8.0, 1.2)
    torch.testing.assert_close(ps.localization_sigma_um,
                               torch.full((b, t), float(sigma), dtype=torch.float64))
    z = ((ps.localized_um - ps.true_mean_um) / ps.localization_sigma_um[..., None]).numpy()
    assert abs((z**2).mean() - 1) < Z * math.sqrt(2 / z.size)
    assert abs(z.mean()) < Z / math.sqrt(z.size)


def test_patch_is_centred_on_the_pixel_of_the_localization() -> None:
    px = 0.1
    ps = simulate_patches(200, 8, patch_px=9, pixel_size_um=px, photons=150.0, d_um2_s=1.0,
                          seed=2)
    idx = ps.patch_origin_um / px
    torch.testing.assert_close(idx, torch.round(idx), rtol=0, atol=1e-9)
    off = (ps.localized_um - ps.patch_origin_um) / px
    assert float(off.abs().max()) <= 0.5 + 1e-9
    # The particle really is off-centre: by the sub-pixel phase and the localization error.
    true_off = ((ps.true_mean_um - ps.patch_origin_um) / px).numpy()
    assert true_off.std() > 0.25


def test_rendered_centroid_is_true_position_relative_to_patch() -> None:
    # Noise-free patch: the intensity centroid in patch pixels is the mean sub-step position
    # relative to the patch's pixel 0 up to exp(-2 pi^2 sigma_px^2) / pi (pixel aliasing);
    # slow particles with many photons stay far from the patch edges (truncation < 1e-6 px).
    px = 0.1
    ps = simulate_patches(50, 4, patch_px=21, pixel_size_um=px, photons=5000.0, d_um2_s=0.01,
                          return_expected=True, seed=3)
    assert ps.expected is not None
    img = ps.expected.double()
    jj = torch.arange(21, dtype=torch.float64)
    mass = img.sum(dim=(-1, -2))
    cx = (img.sum(-2) * jj).sum(-1) / mass
    cy = (img.sum(-1) * jj).sum(-1) / mass
    expected = (ps.true_mean_um - ps.patch_origin_um) / px + 10  # centre pixel index 10
    sigma_px = ps.psf_sigma_um / px
    bound = 1.01 * math.exp(-2 * math.pi**2 * sigma_px**2) / math.pi + 1e-5
    assert float((cx - expected[..., 0]).abs().max()) <= bound
    assert float((cy - expected[..., 1]).abs().max()) <= bound
    torch.testing.assert_close(mass, torch.full_like(mass, 5000.0), rtol=1e-5, atol=0)


def test_snr_per_sequence_and_piecewise_d() -> None:
    cam = Camera(background_photons=5.0, read_noise_e=1.0)
    snr = np.array([3.0, 10.0])
    ps = simulate_patches(2, 6, snr=snr, camera=cam, d_um2_s=[0.1, 1.0], change_frames=(3,),
                          seed=4)
    sigma_px = ps.psf_sigma_um / ps.pixel_size_um
    for k in range(2):
        assert float(ps.photons[k, 0]) == pytest.approx(photons_for_snr(snr[k], sigma_px, 5, 1))
    np.testing.assert_array_equal(ps.d_um2_s.numpy(), [[0.1] * 3 + [1.0] * 3] * 2)


def test_dark_frames_hold_the_last_localization() -> None:
    ps = simulate_patches(30, 40, photons=400.0, d_um2_s=0.5,
                          photophysics=Photophysics(p_off=0.3, p_on=0.4), seed=5)
    dark = ps.photons == 0
    assert bool(dark.any()) and bool((~dark).any())
    assert bool(torch.isnan(ps.localization_sigma_um[dark]).all())
    assert bool(torch.isfinite(ps.localization_sigma_um[~dark]).all())
    for b in range(30):
        for t in range(1, 40):
            if dark[b, t] and not bool(dark[b, : t].all()):
                assert torch.equal(ps.localized_um[b, t], ps.localized_um[b, t - 1])


def test_reproducible() -> None:
    a = simulate_patches(3, 4, photons=200.0, seed=9)
    b = simulate_patches(3, 4, photons=200.0, seed=9)
    c = simulate_patches(3, 4, photons=200.0, seed=10)
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.localized_um, b.localized_um)
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_sequences": 0}, "n_sequences"),
        ({"n_frames": -1}, "n_frames"),
        ({"patch_px": 0}, "patch_px"),
        ({"photons": None}, "photons"),
        ({"snr": 3.0}, "photons"),
        ({"photons": [1.0, 2.0, 3.0]}, "photons"),
        ({"photons": None, "snr": [1.0, float("nan")]}, "snr"),
        ({"d_um2_s": -0.5}, "d_um2_s"),
        ({"exposure_s": 1.0}, "exposure_s"),
        ({"pixel_size_um": 0.0}, "pixel_size_um"),
        ({"psf_sigma_um": -0.1}, "psf_sigma_um"),
        ({"camera": Camera(background_map=np.ones((5, 5)))}, "camera"),
        ({"photophysics": "blinking"}, "photophysics"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs: dict, name: str) -> None:
    args = {"n_sequences": 2, "n_frames": 3, "photons": 100.0} | kwargs
    with pytest.raises(ValueError, match=f"^{name}"):
        simulate_patches(**args)
