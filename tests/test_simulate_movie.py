"""Tests of full-frame movie simulation (models/simulate/movie.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from livespt.models.psf import centred_pixel_fraction
from livespt.models.simulate import (
    GROUND_TRUTH_COLUMNS,
    Camera,
    MovieConfig,
    Photophysics,
    photons_for_snr,
    render_expected,
    simulate_movie,
)

Z = 4.0


def _small(**kw: object) -> MovieConfig:
    base: dict[str, object] = {
        "shape_px": (32, 40), "n_frames": 12, "n_particles": 6, "photons": 400.0,
    }
    return MovieConfig(**(base | kw))  # type: ignore[arg-type]


def test_frames_and_ground_truth_layout() -> None:
    m = simulate_movie(_small(d_um2_s=1.0), seed=1)
    assert m.frames.shape == (12, 32, 40)
    assert m.frames.dtype == np.uint16
    assert tuple(m.ground_truth.columns) == GROUND_TRUTH_COLUMNS
    assert list(m.ground_truth.columns[:5]) == ["particle_id", "frame", "x_um", "y_um", "d_um2_s"]
    gt = m.ground_truth
    px = 0.1
    # One row per particle and frame whose exposure mean lies in the field of view.
    mean = m.trajectories.mean_um.numpy() / px
    inside = ((mean[..., 0] >= -0.5) & (mean[..., 0] < 39.5)
              & (mean[..., 1] >= -0.5) & (mean[..., 1] < 31.5))
    assert len(gt) == inside.sum()
    assert (gt["x_um"] / px).between(-0.5, 39.5, inclusive="left").all()
    np.testing.assert_allclose(gt["x_um"], mean[gt["particle_id"], gt["frame"], 0] * px)
    assert (gt["photons"] == 400.0).all()
    assert gt.groupby("particle_id")["frame"].apply(lambda f: f.is_monotonic_increasing).all()


def _inside_fraction(sub_um: np.ndarray, shape: tuple[int, int], px: float, sigma_um: float
                     ) -> np.ndarray:
    """Fraction of each sub-step's photons landing in the field of view, (P, T, S)."""
    h, w = shape
    s = sigma_um / px
    x, y = sub_um[..., 0] / px, sub_um[..., 1] / px
    fx = norm.cdf((w - 0.5 - x) / s) - norm.cdf((-0.5 - x) / s)
    fy = norm.cdf((h - 0.5 - y) / s) - norm.cdf((-0.5 - y) / s)
    return fx * fy


def test_photon_budget_is_exact() -> None:
    # Particles diffuse fast and leave the small field: the expected image of each frame
    # must hold exactly the photons that fall inside it.
    cfg = _small(d_um2_s=2.0, n_particles=30, photons=500.0, n_frames=8)
    m = simulate_movie(cfg, seed=3, return_expected=True)
    sub = m.trajectories.substeps_um.numpy()
    frac = _inside_fraction(sub, cfg.shape_px, cfg.pixel_size_um, cfg.sigma_um)
    budget = (m.photons.numpy()[:, :, None] / sub.shape[2] * frac).sum(axis=(0, 2))
    assert 0.2 < budget.min() / (30 * 500) < 0.999  # some light really is lost
    exact = render_expected(m.trajectories.substeps_um, m.photons, cfg.shape_px,
                            cfg.pixel_size_um, cfg.sigma_um)
    assert exact.dtype == torch.float64
    np.testing.assert_allclose(exact.sum(dim=(1, 2)).numpy(), budget, rtol=1e-12)
    assert m.expected is not None
    # float32 image: ~1e-7 relative per pixel, accumulated over 1280 pixels.
    np.testing.assert_allclose(m.expected.sum(axis=(1, 2), dtype=np.float64), budget, rtol=1e-5)


def test_static_pixel_centred_particle_peak() -> None:
    px = 0.1
    cfg = _small(n_particles=1, d_um2_s=0.0, start_um=[[3 * px, 5 * px]], photons=1000.0,
                 n_frames=2)
    m = simulate_movie(cfg, seed=0, return_expected=True)
    assert m.expected is not None
    img = m.expected[0]
    assert np.unravel_index(img.argmax(), img.shape) == (5, 3)  # row y = 5, column x = 3
    assert img[5, 3] == pytest.approx(1000 * centred_pixel_fraction(cfg.sigma_px), rel=1e-6)
    assert m.ground_truth["x_um"].iloc[0] == pytest.approx(3 * px, abs=1e-15)
    assert m.ground_truth["y_um"].iloc[0] == pytest.approx(5 * px, abs=1e-15)


@pytest.mark.parametrize("px", [0.1, 0.2])
def test_units_round_trip_centroid(px: float) -> None:
    # The intensity centroid of a particle's noise-free image, in pixels, is the mean over
    # sub-steps of E[round(X)], X ~ N(position, sigma_px^2); it differs from the true
    # exposure-mean position by at most exp(-2 pi^2 sigma_px^2) / pi (Poisson summation),
    # plus nothing from the frame edge: the particle stays > 20 sigma inside.
    field_um = 6.4
    shape = (round(field_um / px), round(field_um / px))
    cfg = MovieConfig(shape_px=shape, n_frames=10, n_particles=1, pixel_size_um=px,
                      d_um2_s=0.05, start_um=[[3.2, 3.1]], photons=1000.0)
    m = simulate_movie(cfg, seed=4, return_expected=True)
    assert m.expected is not None
    bound = 1.01 * math.exp(-2 * math.pi**2 * cfg.sigma_px**2) / math.pi
    img = m.expected.astype(np.float64)
    ii, jj = np.indices(shape)
    cx = (img * jj).sum(axis=(1, 2)) / img.sum(axis=(1, 2))
    cy = (img * ii).sum(axis=(1, 2)) / img.sum(axis=(1, 2))
    gt = m.ground_truth.sort_values("frame")
    assert len(gt) == 10
    np.testing.assert_allclose(cx, gt["x_um"] / px, rtol=0, atol=bound + 1e-4)
    np.testing.assert_allclose(cy, gt["y_um"] / px, rtol=0, atol=bound + 1e-4)


@pytest.mark.parametrize(("px", "n"), [(0.1, 128), (0.2, 64)])
def test_ground_truth_d_is_in_um2_per_s_at_any_pixel_size(px: float, n: int) -> None:
    # Same field (12.8 um) and D in um^2/s at two pixel sizes: the ground-truth steps give D
    # in um^2/s. With blur, E[step^2] = 2 D dt (1 - 2R) per axis and adjacent steps of a
    # track covary by c = 2 D R dt; so Var(sum of squares) = 2 axes * (N 2 v^2 + N_adj 4 c^2)
    # for N steps with N_adj adjacent pairs, from which the SD of D_hat follows.
    d, dt = 0.2, 0.05
    cfg = MovieConfig(shape_px=(n, n), n_frames=20, n_particles=300, pixel_size_um=px,
                      frame_interval_s=dt, d_um2_s=d, photons=300.0)
    gt = simulate_movie(cfg, seed=6).ground_truth
    assert (gt["d_um2_s"] == d).all()
    gt = gt.sort_values(["particle_id", "frame"])
    same = (np.diff(gt["particle_id"]) == 0) & (np.diff(gt["frame"]) == 1)
    dx, dy = np.diff(gt["x_um"])[same], np.diff(gt["y_um"])[same]
    r = cfg.blur_coefficient
    v, c = 2 * d * dt * (1 - 2 * r), 2 * d * r * dt
    n_steps = same.sum()
    n_adj = (same[1:] & same[:-1]).sum()
    total = (dx**2 + dy**2).sum()
    d_hat = d * total / (2 * n_steps * v)
    sd = d * math.sqrt(2 * (n_steps * 2 * v * v + n_adj * 4 * c * c)) / (2 * n_steps * v)
    assert abs(d_hat - d) < Z * sd


def test_change_frames_switch_the_ground_truth_d() -> None:
    cfg = _small(d_um2_s=np.array([0.1, 0.5, 0.2]), change_frames=(4, 9))
    gt = simulate_movie(cfg, seed=2).ground_truth
    expected = np.where(gt["frame"] < 4, 0.1, np.where(gt["frame"] < 9, 0.5, 0.2))
    np.testing.assert_array_equal(gt["d_um2_s"], expected)
    per = _small(d_um2_s=np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    gt = simulate_movie(per, seed=2).ground_truth
    np.testing.assert_allclose(gt["d_um2_s"], 0.1 * (gt["particle_id"] + 1))


def test_reproducible_and_seed_dependent() -> None:
    cfg = _small()
    a, b, c = (simulate_movie(cfg, seed=s) for s in (7, 7, 8))
    assert np.array_equal(a.frames, b.frames)
    assert a.ground_truth.equals(b.ground_truth)
    assert not np.array_equal(a.frames, c.frames)


def test_expected_does_not_depend_on_chunking() -> None:
    a = simulate_movie(_small(chunk_frames=1), seed=5, return_expected=True)
    b = simulate_movie(_small(chunk_frames=5), seed=5, return_expected=True)
    assert a.expected is not None and b.expected is not None
    np.testing.assert_allclose(a.expected, b.expected, rtol=1e-6, atol=1e-6)


def test_snr_sets_photons_and_noise_is_present() -> None:
    cam = Camera(background_photons=12.0, read_noise_e=2.0, offset_adu=100.0)
    cfg = _small(photons=None, snr=7.0, camera=cam)
    n = photons_for_snr(7.0, cfg.sigma_px, 12.0, 2.0)
    np.testing.assert_allclose(cfg.photons_per_particle(), n)
    np.testing.assert_allclose(cfg.nominal_snr(), 7.0)
    m = simulate_movie(cfg, seed=0)
    # Background pixels: mean offset + b (gain 1), far from any particle most pixels are.
    assert abs(np.median(m.frames) - 112) <= 2


def test_blinking_zeroes_photons_of_dark_frames() -> None:
    cfg = _small(n_particles=1, d_um2_s=0.0, start_um=[[2.0, 1.6]], n_frames=60,
                 photophysics=Photophysics(p_off=0.3, p_on=0.3))
    m = simulate_movie(cfg, seed=1, return_expected=True)
    assert m.expected is not None
    dark = m.ground_truth["photons"].to_numpy() == 0
    assert 0 < dark.sum() < 60
    assert np.all(m.expected[dark] == 0)
    assert np.all(m.expected[~dark].sum(axis=(1, 2)) > 390)


def test_confined_movie_particles_stay_near_start() -> None:
    start = [[1.0, 1.0], [2.0, 2.0]]
    cfg = _small(n_particles=2, d_um2_s=5.0, confinement_radius_um=0.3, start_um=start)
    m = simulate_movie(cfg, seed=1)
    rel = m.trajectories.substeps_um - torch.tensor(start)[:, None, None, :]
    assert float(rel.square().sum(-1).max()) <= 0.3**2 * (1 + 1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"d_um2_s": -1.0}, "d_um2_s"),
        ({"d_um2_s": [0.1, 0.2]}, "d_um2_s"),
        ({"n_particles": 0}, "n_particles"),
        ({"n_frames": 0}, "n_frames"),
        ({"shape_px": (0, 10)}, "shape_px"),
        ({"shape_px": 10}, "shape_px"),
        ({"pixel_size_um": float("nan")}, "pixel_size_um"),
        ({"exposure_s": 0.1}, "exposure_s"),
        ({"substeps": 0}, "substeps"),
        ({"photons": None}, "photons"),
        ({"snr": 5.0}, "photons"),
        ({"photons": -3.0}, "photons"),
        ({"photons": None, "snr": -1.0}, "snr"),
        ({"psf_sigma_um": 0.0}, "psf_sigma_um"),
        ({"numerical_aperture": -1.0}, "numerical_aperture"),
        ({"camera": Camera(background_map=np.ones((3, 3)))}, "camera"),
        ({"camera": "sCMOS"}, "camera"),
        ({"change_frames": (20,), "d_um2_s": [0.1, 0.2]}, "change_frames"),
        ({"confinement_radius_um": -1.0}, "confinement_radius_um"),
        ({"start_um": [[0.0, 0.0]]}, "start_um"),
        ({"chunk_frames": 0}, "chunk_frames"),
    ],
)
def test_bad_config_names_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}"):
        _small(**kwargs)


def test_bad_call_arguments() -> None:
    with pytest.raises(ValueError, match=r"^config"):
        simulate_movie("config")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^seed"):
        simulate_movie(_small(), seed=-2)
    with pytest.raises(ValueError, match=r"^substeps_um"):
        render_expected(torch.zeros(3, 2), torch.zeros(3), (4, 4), 0.1, 0.1)
    with pytest.raises(ValueError, match=r"^photons"):
        render_expected(torch.zeros(1, 2, 3, 2), -torch.ones(1, 2), (4, 4), 0.1, 0.1)
