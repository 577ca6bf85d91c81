"""SMLM frames rendered by DeepTrack2 (used as published), for the localizer's evaluation.

The frames of :func:`livespt.models.ddpm.evaluate.ours` come from our own simulator, whose
pixel-integrated Gaussian PSF the localizer was trained on. These come from deeptrack's
``Fluorescence`` optics (a pupil-function PSF of the given NA and wavelength: an Airy-like
spot with rings) and its noise features (``dt.Poisson``, ``dt.Gaussian`` read noise,
gain, offset, rounding to uint16), through the renderer of
:mod:`benchmarks.accuracy.deeptrack_movies` (checked there against ``dt.PointParticle``).
Only the emitters' positions are ours: 20 x 20 px frames, emitters uniform on a disc of
radius 7 px around the centre, as at the seed's settings; the truth is exact.

The PSF's Gaussian-equivalent width ``0.21 wavelength / NA`` is 0.92 px for NA 1.37,
wavelength 0.6 um and 0.1 um pixels (the seed's 0.92 px). The CRLB and MCMC references
use that Gaussian: an approximation for this PSF, labelled as such in the report.
"""

from __future__ import annotations

import numpy as np

from benchmarks.accuracy.deeptrack_movies import render_movie
from benchmarks.accuracy.movies import MovieSpec
from livespt.models.ddpm.evaluate import SmlmSet

GAIN, OFFSET = 2.0, 100.0


def deeptrack_smlm(n_frames: int, n_emitters: int | tuple[int, int], seed: int,
                   i0: float = 200.0, background: float = 2.0, read_noise_e: float = 1.0,
                   numerical_aperture: float = 1.37, wavelength_um: float = 0.6) -> SmlmSet:
    """Frames of 1 or more static emitters rendered by deeptrack, in photo-electrons.

    Parameters
    ----------
    n_frames : int
        Frames.
    n_emitters : int or (int, int)
        Emitters per frame (fixed, or an inclusive range).
    seed : int
        Seed of the positions and of deeptrack's noise.
    i0, background, read_noise_e : float
        Photons per emitter, background photons per pixel, read noise (e-).
    numerical_aperture, wavelength_um : float
        The optics (the PSF's Gaussian-equivalent SD is ``0.21 wavelength / NA``).

    Returns
    -------
    SmlmSet
        Frames converted back to photo-electrons with the camera's known offset and gain.
    """
    rng = np.random.default_rng(seed)
    lo, hi = (n_emitters, n_emitters) if isinstance(n_emitters, int) else n_emitters
    counts = rng.integers(lo, hi + 1, n_frames)
    kmax = int(counts.max())
    r = 7.0 * np.sqrt(rng.random((kmax, n_frames)))
    a = 2 * np.pi * rng.random((kmax, n_frames))
    centre = (20 - 1) / 2
    x, y = centre + r * np.cos(a), centre + r * np.sin(a)
    px = 0.1
    spec = MovieSpec(name="deeptrack-smlm", shape_px=(20, 20), n_frames=n_frames,
                     n_particles=kmax, pixel_size_um=px, frame_interval_s=0.01,
                     exposure_s=0.01, substeps=1, photons=i0, background_photons=background,
                     gain_adu_per_e=GAIN, offset_adu=OFFSET, read_noise_e=read_noise_e,
                     numerical_aperture=numerical_aperture, wavelength_um=wavelength_um,
                     seed=seed)
    sub = np.stack([x * px, y * px], axis=-1)[:, :, None, :]  # (P, T, 1, 2), um
    photons = np.where(np.arange(kmax)[:, None] < counts[None, :], i0, 0.0)
    frames, _ = render_movie(spec, sub, photons)
    pos = [np.stack([x[:counts[k], k], y[:counts[k], k]], axis=1) for k in range(n_frames)]
    return SmlmSet("deeptrack (Fluorescence optics, Airy-like PSF)",
                   (frames.astype(np.float64) - OFFSET) / GAIN, pos, i0, background,
                   read_noise_e, spec.psf_sigma_um / px, False)
