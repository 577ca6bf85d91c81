"""Movies rendered by DeepTrack2 (``deeptrack``, used as published) with known ground truth.

Why: a detector, linker and estimator tuned on the project's own simulator can share its
blind spots. These movies take the image formation from a package we did not write:
DeepTrack2's ``Fluorescence`` optics (a pupil-function PSF of the given NA and
wavelength: an Airy-like spot with rings, not our Gaussian), its placement of point
emitters on the pixel grid (bilinear, as ``dt.PointParticle``), and its noise features
(``dt.Background``, ``dt.Poisson``, ``dt.Multiply``, ``dt.Gaussian``, ``dt.Clip``).
Only the Brownian paths are ours (plain numpy here, independent of
``livespt.models.simulate``): the truth must be known exactly.

Motion blur: each frame is the sum of ``substeps`` point emitters per particle at the
sub-step times ``(j + 1/2) exposure / S`` inside the exposure, each with ``photons / S``
photons, i.e. what a camera integrates; the true position scored is the mean of those
sub-step positions (the exposure-mean position).

Speed: ``dt.PointParticle`` costs ~5 ms per emitter in deeptrack 2.0.2 (pint unit
conversions per scatterer), 10-50 s per movie at 10 sub-steps. All emitters of a frame are
therefore handed to the optics as ONE scatterer, :class:`EmitterMap` (a
``VolumeScatterer`` subclass, deeptrack's extension point for new sample types): the
emitters placed on the voxel grid with exactly the bilinear weights ``dt.PointParticle``
gets inside deeptrack's ``_create_volume``; the optics and noise are unchanged.
:func:`render_reference_frame` renders the same emitters as ``dt.PointParticle ^ M``, and
``tests/test_thirdparty.py`` checks the two agree to 1e-6 of the peak.

Conventions: deeptrack positions are ``(row, column)`` in pixels with pixel centres at
integers (checked: a centred emitter's intensity centroid lies on its position to
< 0.003 px with ``upscale=1``; with ``upscale=2`` deeptrack 2.0.2 shifts spots by
+0.49 px on both axes, so upscaling is not used). LiveSPT's convention is pixel
``(i, j)`` centred at ``(x, y) = (j, i) * pixel_size_um``, so ``row = y / px``,
``column = x / px``.

Particles: D, changes of D and start positions come from
:func:`benchmarks.accuracy.movies.diffusion_plan` (``default_rng(seed)``), the same plan our
simulator renders for the same spec; the paths use ``default_rng(seed + 1)``; deeptrack's
noise features draw from numpy's global generator, seeded with ``seed`` before each movie
(:func:`render_movie` therefore changes the global numpy state).

Cost: ~20-50 ms per frame for 128-160 px frames with 30 particles x 10 sub-steps on one
core (one FFT convolution per frame; the sub-step placement is ``np.add.at``).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from functools import lru_cache
from importlib.metadata import version
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.accuracy.movies import (
    DiffusionPlan,
    ImageMovie,
    MovieSpec,
    diffusion_plan,
    ground_truth_table,
)

__all__ = [
    "brownian_paths",
    "deeptrack_movie",
    "deeptrack_version",
    "render_movie",
    "render_reference_frame",
]


def deeptrack_version() -> str:
    """Installed deeptrack version, or raise ImportError naming how to install it."""
    try:
        return version("deeptrack")
    except Exception as exc:  # PackageNotFoundError
        raise ImportError("deeptrack is not installed: `make install-validation` "
                          "(pip install -e '.[validation]')") from exc


def brownian_paths(spec: MovieSpec, plan: DiffusionPlan) -> NDArray[np.float64]:
    """Brownian sub-step positions ``(x, y)`` in um, shape (P, T, S, 2).

    Increments run from each frame start to the sub-step times ``(j + 1/2) exposure / S``
    inside the exposure and on to the next frame start, each Gaussian with variance
    ``2 D tau`` per axis, D the value in force during that frame (``plan.d_um2_s``). Drawn
    from ``numpy.random.default_rng(spec.seed + 1)`` (the plan used ``spec.seed``).
    """
    rng = np.random.default_rng(spec.seed + 1)
    p, t, s = spec.n_particles, spec.n_frames, spec.substeps
    tau = (np.arange(s) + 0.5) * spec.exposure_s / s
    dur = np.diff(np.concatenate(([0.0], tau, [spec.frame_interval_s])))  # (S + 1,)
    std = np.sqrt(2.0 * plan.d_um2_s[:, :, None] * dur[None, None, :])  # (P, T, S + 1)
    steps = rng.standard_normal((p, t, s + 1, 2)) * std[..., None]
    path = plan.start_um[:, None, :] + np.cumsum(steps.reshape(p, t * (s + 1), 2), axis=1)
    return path.reshape(p, t, s + 1, 2)[:, :, :s, :]


def _optics(spec: MovieSpec) -> Any:
    import deeptrack as dt

    h, w = spec.shape_px
    pad = spec.padding_px
    return dt.Fluorescence(NA=spec.numerical_aperture, wavelength=spec.wavelength_um * 1e-6,
                           magnification=1, resolution=spec.pixel_size_um * 1e-6,
                           output_region=(0, 0, h, w), padding=(pad, pad, pad, pad))


def _emitter_map_class() -> Any:
    from deeptrack.optical.scatterers import VolumeScatterer

    class EmitterMap(VolumeScatterer):  # type: ignore[misc]
        """Many point emitters as one deeptrack scatterer (see the module docstring)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(crop_empty=False, **kwargs)

        def get(self, *args: Any, source: NDArray[np.float64], **kwargs: Any) -> Any:
            return source

    return EmitterMap


def _place(rows: NDArray[np.float64], cols: NDArray[np.float64],
           weights: NDArray[np.float64]) -> tuple[NDArray[np.float64], tuple[float, float]]:
    """Emitters on the voxel grid with dt.PointParticle's bilinear weights.

    Returns the (h, w, 1) source array and the position to give the scatterer so that
    deeptrack puts the array's pixel (0, 0) on the frame pixel ``(floor(min row),
    floor(min col))``: deeptrack places a scatterer at ``position - centre_of_mass``.
    """
    from scipy import ndimage

    fr, fc = np.floor(rows), np.floor(cols)
    r0, c0 = int(fr.min()), int(fc.min())
    a = np.zeros((int(fr.max()) - r0 + 2, int(fc.max()) - c0 + 2, 1))
    dr, dc = rows - fr, cols - fc
    ir, ic = (fr - r0).astype(np.intp), (fc - c0).astype(np.intp)
    np.add.at(a, (ir, ic, 0), weights * (1 - dr) * (1 - dc))
    np.add.at(a, (ir, ic + 1, 0), weights * (1 - dr) * dc)
    np.add.at(a, (ir + 1, ic, 0), weights * dr * (1 - dc))
    np.add.at(a, (ir + 1, ic + 1, 0), weights * dr * dc)
    com = ndimage.center_of_mass(np.abs(a))
    return a, (r0 + float(com[0]), c0 + float(com[1]))


@lru_cache(maxsize=8)
def _photons_per_intensity(spec_key: tuple[Any, ...]) -> float:
    """Image sum of one unit-intensity emitter at the centre of a frame (deeptrack units)."""
    import deeptrack as dt

    spec = MovieSpec(**dict(spec_key))
    h, w = spec.shape_px
    img = np.asarray(_optics(spec)(dt.PointParticle(position=(h / 2, w / 2), z=0,
                                                     intensity=1.0)).update()())
    return float(img.sum())


def _spec_key(spec: MovieSpec) -> tuple[Any, ...]:
    return tuple(sorted((k, v) for k, v in asdict(spec).items()))


def render_movie(spec: MovieSpec, substeps_um: NDArray[np.float64],
                 photons: NDArray[np.float64] | None = None) -> tuple[NDArray[np.uint16], float]:
    """Render sub-step positions to uint16 camera frames with deeptrack.

    Parameters
    ----------
    spec : MovieSpec
        Optics, camera and frame geometry.
    substeps_um : ndarray, shape (P, T, S, 2)
        ``(x, y)`` positions in um at the sub-step times.
    photons : ndarray, shape (P, T), optional
        Photons per particle and frame (default ``spec.photons``).

    Returns
    -------
    frames : ndarray, shape (T, H, W), uint16
        Camera counts in ADU.
    photons_per_intensity : float
        deeptrack's image sum per unit ``intensity`` (the photon normalisation used).
    """
    import deeptrack as dt

    warnings.filterwarnings("ignore", module="deeptrack")
    p, t, s, _ = substeps_um.shape
    h, w = spec.shape_px
    pad = spec.padding_px
    k = _photons_per_intensity(_spec_key(spec))
    ph = np.full((p, t), spec.photons) if photons is None else np.asarray(photons, float)
    state: dict[str, Any] = {}
    emitters = _emitter_map_class()(position=lambda: state["position"], z=0, intensity=1.0,
                                    source=lambda: state["source"])
    scene = _optics(spec)(emitters)
    background = dt.Background(offset=spec.background_photons)
    # Poisson: deeptrack scales the image by (snr / peak)^2 before sampling; with snr equal
    # to the frame's peak (background=0 in its formula) the scale is 1: the frame, in
    # expected photons, is sampled as it is.
    camera = (dt.Poisson(snr=lambda: state["peak"], background=0)
              >> dt.Multiply(value=spec.gain_adu_per_e)
              >> dt.Gaussian(mu=spec.offset_adu, sigma=spec.read_noise_e * spec.gain_adu_per_e)
              >> dt.Clip(min=0, max=65535))
    np.random.seed(spec.seed)  # noqa: NPY002  (deeptrack's noise uses numpy's global generator)
    out = np.empty((t, h, w), dtype=np.uint16)
    rows_all = substeps_um[..., 1] / spec.pixel_size_um
    cols_all = substeps_um[..., 0] / spec.pixel_size_um
    for f in range(t):
        rows, cols = rows_all[:, f, :].ravel(), cols_all[:, f, :].ravel()
        weights = np.repeat(ph[:, f] / s / k, s)
        keep = ((rows > -pad + 1) & (rows < h + pad - 2) & (cols > -pad + 1)
                & (cols < w + pad - 2) & (weights > 0))
        if keep.any():
            state["source"], state["position"] = _place(rows[keep], cols[keep], weights[keep])
            clean = np.asarray(scene.update()())
        else:
            clean = np.zeros((h, w, 1))
        clean = np.asarray(background(clean))
        state["peak"] = max(float(clean.max()), 1e-12)
        noisy = np.asarray(camera.update()(clean))[..., 0]
        out[f] = np.rint(noisy).astype(np.uint16)
    return out, k


def render_reference_frame(spec: MovieSpec, rows: NDArray[np.float64], cols: NDArray[np.float64],
                           photons: NDArray[np.float64]) -> tuple[NDArray[np.float64],
                                                                  NDArray[np.float64]]:
    """One noise-free frame of point emitters, as ``dt.PointParticle ^ M`` and as EmitterMap.

    Parameters
    ----------
    spec : MovieSpec
        Optics and frame geometry.
    rows, cols : ndarray, shape (M,)
        Emitter positions in pixels (row = y / px, column = x / px).
    photons : ndarray, shape (M,)
        Photons of each emitter.

    Returns
    -------
    reference, fast : ndarray, shape (H, W)
        Expected photons per pixel rendered both ways (no background, no noise).
    """
    import deeptrack as dt

    warnings.filterwarnings("ignore", module="deeptrack")
    k = _photons_per_intensity(_spec_key(spec))
    inten = np.asarray(photons, float) / k
    pos = np.column_stack([rows, cols])
    particle = dt.PointParticle(position=lambda _ID: tuple(pos[_ID[-1]]), z=0,
                                intensity=lambda _ID: float(inten[_ID[-1]]))
    reference = np.asarray(_optics(spec)(particle ^ len(rows)).update()())[..., 0]
    source, position = _place(np.asarray(rows, float), np.asarray(cols, float), inten)
    emitters = _emitter_map_class()(position=position, z=0, intensity=1.0, source=source)
    fast = np.asarray(_optics(spec)(emitters).update()())[..., 0]
    return reference, fast


def deeptrack_movie(spec: MovieSpec) -> ImageMovie:
    """The spec's particles (:func:`~benchmarks.accuracy.movies.diffusion_plan`) on Brownian
    paths (:func:`brownian_paths`), rendered by deeptrack (:func:`render_movie`)."""
    plan = diffusion_plan(spec)
    sub = brownian_paths(spec, plan)
    frames, k = render_movie(spec, sub)
    info = {"renderer": "deeptrack", "deeptrack_version": deeptrack_version(),
            "photons_per_intensity": k,
            "features": "dt.Fluorescence (NA, wavelength, resolution = pixel size, upscale 1) "
                        "of one EmitterMap per frame (dt.PointParticle placement), "
                        "dt.Background, dt.Poisson (scale 1), dt.Multiply (gain), "
                        "dt.Gaussian (offset, read noise), dt.Clip; rounded to uint16"}
    truth = ground_truth_table(spec, sub.mean(axis=2), plan.d_um2_s)
    return ImageMovie(frames, truth, dict(plan.change_frames), spec, "deeptrack", info)
