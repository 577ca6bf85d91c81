"""Spot detection: a TrackMate-style LoG detector and a batched Poisson MLE fit.

One frame in, one :class:`Spots` table out, fast enough for a live stream
(about 4 ms for a 512 x 512 frame with 50 spots on one core of the 2-vCPU
development machine, half of it the FFT; see ``docs/pipeline.md`` and
``benchmarks/bench_detect.py``).

Method
------
1. *Optional 3 x 3 median filter* (``median_filter``), as TrackMate, against
   salt noise (hot pixels, cosmic rays). ``invert=True`` (dark particles on a
   light background) negates the frame first.
2. *Laplacian of Gaussian (LoG)* with TrackMate's kernel (TrackMate 7,
   ``DetectionUtils.createLoGKernel``): ``sigma = radius_px / sqrt(2)`` and::

       k(x, y) = -[(x^2/sigma^2 - 1) + (y^2/sigma^2 - 1)] / (pi sigma^4)
                 * exp(-(x^2 + y^2) / (2 sigma^2)),

   i.e. ``-2 laplacian(G_sigma)`` of the normalised Gaussian (pixel units),
   sampled at integer offsets up to ``m = 1 + max(2, int(3 sigma + 0.5) + 1)``
   pixels, applied with mirror boundaries. TrackMate 7 does not scale the LoG
   by ``sigma^2``: its ``1 / (pi sigma^2)`` normalisation makes the quality
   independent of the image calibration. One change: TrackMate's sampled,
   truncated kernel does not sum exactly to 0 (3.9e-5 for sigma = 0.9 px), so
   its quality shifts with the baseline; ours is made zero-sum (every tap
   shifted by the mean), so a camera offset or flat background contributes
   nothing and ``invert`` is exact. The response at a pixel is its
   ``quality``: TrackMate's LoG quality minus ``sum(k_TM)`` times the local
   mean intensity (``4e-5 x`` the background for ``radius_px`` 1.27), so a
   threshold tuned in TrackMate carries over. The correlation is one real FFT
   of the mirror-padded frame, 4x cheaper than four 1-D ``scipy.ndimage``
   passes.
3. *Local maxima* of the quality in a ``(2n + 1)^2`` neighbourhood,
   ``n = ceil(radius_px)``, strictly above the threshold (ties: the first pixel
   in raster order).
4. *Fit* (``fit=True``): every maximum gets a ``w x w`` window
   (``fit_window_px``) centred on it, shifted to lie inside the frame near the
   borders: edge spots keep a full-size window and, the model being
   pixel-integrated, a partly visible spot is fitted without bias. All windows
   of a frame are fitted together, as a ``(K, w, w)`` batch, by
   Levenberg-Marquardt iterations (Fisher scoring with Marquardt damping, at
   most 20, typically 3-5, stopping when every position step is below
   5e-3 px) on the Poisson log-likelihood of::

       mu_ij = b + s N E_i(y, sigma) E_j(x, sigma),
       E_j(x, sigma) = [erf((j + 1/2 - x) / (sqrt(2) sigma))
                        - erf((j - 1/2 - x) / (sqrt(2) sigma))] / 2,

   the Gaussian integrated over pixel ``j``, with ``N`` photons, ``b``
   background photons per pixel and ``s = +1``, or ``-1`` with ``invert`` (a
   dip of ``N`` photons below a light background ``b``: the frame itself is
   fitted, not its negation, because its noise is the Poisson one). Data are
   converted to photons, ``(ADU - offset_adu) / gain_adu_per_e``, plus
   ``read_noise_e^2`` (absorbed by ``b`` and removed from the reported
   background). The start is the maximum refined by a parabola through the
   quality map (TrackMate's sub-pixel step), the window-border median as
   background, the window sum as photons and ``sigma = radius_px / sqrt(2)``.
   A fit that leaves its window, puts its width on a bound (0.3 px, w/2) or
   does not converge is flagged ``converged=False`` and replaced by the
   background-subtracted centroid.
5. *Crowding*: a spot with other maxima closer than ``w`` pixels is first
   fitted on its Voronoi cell only (the window pixels nearer to its own
   maximum), so that two neighbours do not merge into one wide Gaussian
   between them; if a neighbour is closer than 6 LoG sigmas, it is then
   refitted on the whole window with the neighbours' fitted spots added to
   the model as fixed light (one round of DAOPHOT-style neighbour
   subtraction). Two particles closer than about ``n + 1`` pixels give a
   single maximum and are reported as one spot between them.

Precision
---------
``precision_px`` is the Cramer-Rao bound of the fitted model at the fit, from
the expected Fisher information::

    I_pq = sum_ij (d mu_ij / d theta_p)(d mu_ij / d theta_q) / mu_ij,
    theta = (x, y, N, b, sigma),
    precision_px = sqrt(([I^-1]_xx + [I^-1]_yy) / 2)    (per axis).

An efficient estimator reaches it under Poisson noise (Smith et al. 2010, Nat.
Methods 7, 373), and the MLE does for static spots (tested: RMS(error /
precision) = 1.006-1.017 +- 0.010 at SNR 10-20). Read noise enters through ``read_noise_e`` (its
variance is added to every pixel's, Huang et al. 2013); motion blur does not
(the fitted width grows with the blur and the bound with it, but a smeared spot
is not a Gaussian and its fitted centre is not its exposure-mean position), nor
does the median filter. Where the fit failed, ``precision_px`` is the
first-order Poisson error of the centroid, so it is always finite and can feed
the CVE as the known localization error.

Model mismatch
--------------
A real PSF is not a Gaussian (an Airy pattern, defocus, aberrations), and a
bound computed for the wrong model is optimistic. The misfit shows in the
residuals: under the model, a window's Pearson statistic ``sum (d - mu)^2 / mu``
is chi^2 with ``w^2 - 5`` degrees of freedom. Each frame's *dispersion* is the
median of that statistic per degree of freedom over the narrower half of its
converged fits (motion blur widens a spot and adds a misfit of its own), divided
by the median a correct model gives; where it exceeds 1, every bound of the frame
is multiplied by its square root (quasi-likelihood scaling;
:attr:`Spots.dispersion`). Measured (``docs/accuracy.md``,
``tests/test_thirdparty.py``): DeepTrack2's Airy PSF (NA 1.4, 600 nm) gives a
dispersion of about 1.2, and the variance of (error / precision) on its isolated
slow spots went 1.12 -> 0.92 (conservative: the rings inflate the residuals more
than the position error); on the report's movies isolated slow spots 1.02-1.16 ->
0.93-1.03, isolated fast (blurred) ones 4.1-5.9 -> 3.6-5.4 (blur is still not in
the bound).
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import fft as _fft
from scipy import special as _special
from scipy.spatial import cKDTree

from livespt.models import _validate

__all__ = [
    "AUTO_THRESHOLD_NOISE_SD",
    "DetectorConfig",
    "Spots",
    "detect",
    "log_kernel",
    "quality_map",
    "quality_noise_sd",
]

#: With ``threshold=None`` the threshold of a frame is this many robust standard
#: deviations (1.4826 x median absolute deviation of a sub-sample) of its quality
#: map above its median. Measured on 512 x 512 frames of the simulator's default
#: camera (10 background photons, 1.5 e- read noise): 0.9, 0.03 and 0 noise
#: maxima per frame above 5, 6 and 7 of them; with an over-dispersed background
#: (``background_cv`` 0.3, a heavier right tail) 34, 4.6 and 0.7. A static SNR-5
#: spot (definition in :mod:`livespt.models.simulate.camera`) reaches ~11.
AUTO_THRESHOLD_NOISE_SD = 7.0

DISPERSION_MIN_SPOTS = 5
"""Converged fits a frame needs for its model dispersion (``Spots.dispersion``)."""

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_SQRTPI = math.sqrt(math.pi)
# LM iterations: the start (maximum + parabola) is within ~0.3 px of the optimum,
# so Fisher scoring converges in ~4-6 iterations; 20 is a safety margin, and the
# loop stops as soon as every spot has converged.
_MAX_ITER = 20
# A position step below this (px) ends the iterations: the remaining error is
# then ~5e-4 px RMS, < 1 % of the precision in quadrature even at SNR 20.
_STEP_TOL_PX = 5e-3
_SIGMA_MIN_PX = 0.3  # narrower than this is a hot pixel, not a PSF
_MU_MIN = 1e-6  # photons; keeps log(mu) finite where the model touches 0
_N_MIN = 1e-2  # photons; amplitude floor (the amplitude must stay positive)
# Spots with a neighbour closer than this many LoG sigmas are refitted with the
# neighbour's fitted light subtracted (``_refit_crowded``).
_REFIT_REACH_SIGMAS = 6.0
# Per-thread FFT input buffers: a fresh 1 MiB array per frame costs page faults
# (~0.2 ms); sessions may call detect from several threads, hence per thread.
_BUFFERS = threading.local()


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of :func:`detect` (validated on creation).

    Attributes
    ----------
    radius_px : float
        Expected spot radius in pixels, as TrackMate's: the LoG sigma is
        ``radius_px / sqrt(2)``, which matches a Gaussian PSF of that standard
        deviation (0.5 to 200).
    threshold : float or None
        Minimum quality of a detection (LoG response at the maximum, TrackMate
        units, >= 0). A static spot of ``N`` photons, gain ``g`` and PSF sigma
        ``s`` near the LoG sigma reaches about ``0.93 * 2 g N / (pi (sigma^2 +
        s^2 + 1/12)^2)`` (127 for 625 photons, sigma = s = 0.9 px; motion blur
        lowers it). None (default): per frame, :data:`AUTO_THRESHOLD_NOISE_SD`
        robust standard deviations of the frame's quality map above its median.
        :func:`quality_noise_sd` converts a pixel noise into quality units.
    median_filter : bool
        Median-filter (3 x 3) the frame before the LoG and the fit.
    invert : bool
        Dark particles on a light background: detect on the negated frame and
        fit a dip below the background.
    fit : bool
        Fit every spot (sub-pixel position, photons, background, width and
        precision); False: positions from the parabola through the quality map,
        moment estimates of photons and background, NaN width, centroid
        precision, ``converged`` False.
    fit_window_px : int, optional
        Odd side of the fit window in pixels (>= 3); default
        ``2 ceil(3 radius_px / sqrt(2)) + 1`` (7 for ``radius_px`` 1.27). Frames
        smaller than the window use the largest odd window that fits.
    max_spots : int
        Most spots per frame (>= 1). Above it only the highest-quality maxima
        are kept and :attr:`Spots.n_dropped` counts the others: a guard against
        a threshold that lets the noise through.
    offset_adu : float
        Camera offset (baseline) in ADU, subtracted before the photon conversion.
    gain_adu_per_e : float
        Camera gain in ADU per photo-electron (> 0).
    read_noise_e : float
        Camera read noise in electrons (>= 0), added as ``read_noise_e**2`` to
        the Poisson variance of every pixel (Huang et al. 2013, Nat. Methods 10,
        653). 0 (default): pure Poisson; with read noise ignored the precision
        is optimistic for dim spots (measured RMSE / precision 1.05 at SNR 10,
        1.11 at SNR 5 for 1.5 e- and 10 background photons).
    """

    radius_px: float
    threshold: float | None = None
    median_filter: bool = False
    invert: bool = False
    fit: bool = True
    fit_window_px: int | None = None
    max_spots: int = 5000
    offset_adu: float = 100.0
    gain_adu_per_e: float = 1.0
    read_noise_e: float = 0.0

    def __post_init__(self) -> None:
        r = _validate.in_range("radius_px", self.radius_px, 0.5, 200.0)
        object.__setattr__(self, "radius_px", r)
        if self.threshold is not None:
            object.__setattr__(self, "threshold",
                               _validate.non_negative("threshold", self.threshold))
        for name in ("median_filter", "invert", "fit"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.fit_window_px is None:
            w = 2 * math.ceil(3.0 * self.sigma_px) + 1
        else:
            w = _validate.positive_int("fit_window_px", self.fit_window_px, minimum=3)
            if w % 2 == 0:
                raise ValueError(f"fit_window_px must be odd, got {w}")
        object.__setattr__(self, "fit_window_px", w)
        object.__setattr__(self, "max_spots", _validate.positive_int("max_spots", self.max_spots))
        # Any finite offset: a camera may be read with the offset already removed.
        off = _validate.in_range("offset_adu", self.offset_adu, -math.inf, math.inf)
        object.__setattr__(self, "offset_adu", off)
        object.__setattr__(self, "gain_adu_per_e",
                           _validate.positive("gain_adu_per_e", self.gain_adu_per_e))
        object.__setattr__(self, "read_noise_e",
                           _validate.non_negative("read_noise_e", self.read_noise_e))

    @property
    def sigma_px(self) -> float:
        """LoG sigma in pixels, ``radius_px / sqrt(2)`` (also the start of the fitted width)."""
        return self.radius_px / _SQRT2

    @property
    def neighbourhood_px(self) -> int:
        """Half-side ``n = ceil(radius_px)`` of the ``(2n + 1)^2`` local-maximum neighbourhood."""
        return max(1, math.ceil(self.radius_px - 1e-9))


@dataclass(frozen=True, eq=False)
class Spots:
    """The spots of one frame; equal-length float64 arrays, one entry per spot (raster order).

    Attributes
    ----------
    x_px, y_px : ndarray
        Position in pixels: pixel ``(i, j)`` has its centre at ``x = j, y = i``.
    precision_px : ndarray
        Localization precision per axis in pixels (standard deviation): the
        Cramer-Rao bound of the fitted model, or the centroid's error where
        ``converged`` is False (see the module docstring). Always finite.
    photons : ndarray
        Total photons of the spot (fitted ``N``; with ``invert``, the photons
        missing from the dip); moment estimate where ``converged`` is False.
    background : ndarray
        Background in photons per pixel.
    sigma_px : ndarray
        Fitted Gaussian width in pixels (blurred particles appear wider); NaN
        where ``converged`` is False.
    quality : ndarray
        LoG response at the maximum pixel (TrackMate units).
    converged : ndarray of bool
        True where the position comes from a fit that converged inside its window.
    n_dropped : int
        Maxima above the threshold dropped by the ``max_spots`` guard.
    threshold : float
        The quality threshold used for this frame.
    dispersion : float
        The frame's model dispersion: the median over its converged fits of the
        Pearson chi^2 per degree of freedom of each fit window, over the median a
        correct model gives (see "Model mismatch" in the module docstring); NaN
        with fewer than :data:`DISPERSION_MIN_SPOTS` converged fits.
    """

    x_px: NDArray[np.float64]
    y_px: NDArray[np.float64]
    precision_px: NDArray[np.float64]
    photons: NDArray[np.float64]
    background: NDArray[np.float64]
    sigma_px: NDArray[np.float64]
    quality: NDArray[np.float64]
    converged: NDArray[np.bool_]
    n_dropped: int = 0
    threshold: float = field(default=math.nan)
    dispersion: float = field(default=math.nan)

    def __len__(self) -> int:
        return int(self.x_px.shape[0])

    @classmethod
    def empty(cls, threshold: float = math.nan) -> Spots:
        """A table with no spots."""
        z = np.zeros(0)
        return cls(z, z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), z.copy(),
                   np.zeros(0, dtype=bool), 0, threshold)


# --------------------------------------------------------------------------- LoG
def log_kernel(radius_px: float) -> NDArray[np.float64]:
    """TrackMate's LoG kernel for spots of radius ``radius_px`` (pixel units).

    Parameters
    ----------
    radius_px : float
        Spot radius in pixels; the Gaussian sigma is ``radius_px / sqrt(2)``.

    Returns
    -------
    ndarray, shape (2m + 1, 2m + 1)
        ``-2 * laplacian(G_sigma)`` sampled at integer offsets ``-m..m`` with
        ``m = 1 + max(2, int(3 sigma + 0.5) + 1)`` (TrackMate's support and
        normalisation), shifted by its mean so that it sums to 0; weights in
        1/pixel^2 (the quality of an image in ADU is in ADU/pixel^2).
    """
    sigma = _validate.positive("radius_px", radius_px) / _SQRT2
    return _log_kernel(sigma)


@functools.lru_cache(maxsize=16)
def _log_kernel(sigma: float) -> NDArray[np.float64]:
    half = 1 + max(2, int(3.0 * sigma + 0.5) + 1)
    x = np.arange(-half, half + 1, dtype=np.float64)
    e = np.exp(-x * x / (2.0 * sigma * sigma))
    a = (x * x / (sigma * sigma) - 1.0) / (sigma * sigma) * e
    k = -(a[:, None] * e[None, :] + e[:, None] * a[None, :]) / (math.pi * sigma * sigma)
    # TrackMate's sampled, truncated kernel does not sum to 0 (3.9e-5 for
    # sigma = 0.9 px, 0.016 for 0.71 px), so its quality moves with the camera
    # offset and background. Making it zero-sum (a uniform shift of every tap)
    # removes that: a constant contributes nothing and inversion is exact.
    k -= k.mean()
    k.setflags(write=False)
    return k


@functools.lru_cache(maxsize=16)
def _kernel_spectrum(sigma: float, shape: tuple[int, int]) -> NDArray[np.float32]:
    """Real spectrum of the LoG kernel on a circular grid of ``shape`` (even kernel)."""
    k = _log_kernel(sigma)
    half = k.shape[0] // 2
    grid = np.zeros(shape)
    offs = np.arange(-half, half + 1)
    grid[np.ix_(offs % shape[0], offs % shape[1])] = k
    # The kernel is even in both axes, so its transform is real: a real multiply
    # per frequency instead of a complex one.
    spec = np.ascontiguousarray(_fft.rfft2(grid).real, dtype=np.float32)
    spec.setflags(write=False)
    return spec


def _fft_buffer(fh: int, fw: int) -> NDArray[np.float32]:
    """Return the calling thread's zeroed-once float32 buffer of shape (fh, fw).

    Only its top-left ``(H + 2p, W + 2p)`` block is rewritten per frame; the
    rest stays zero, and the crop of the circular correlation never sees it.
    """
    cache: dict[tuple[int, int], NDArray[np.float32]] | None = getattr(_BUFFERS, "cache", None)
    if cache is None:
        cache = {}
        _BUFFERS.cache = cache
    buf = cache.get((fh, fw))
    if buf is None:
        if len(cache) > 4:  # a thread serving many frame shapes: do not hoard memory
            cache.clear()
        buf = cache[(fh, fw)] = np.zeros((fh, fw), dtype=np.float32)
    return buf


def _log_response(img: NDArray[np.float32], sigma: float) -> NDArray[np.float32]:
    """TrackMate LoG quality of ``img`` (mirror boundaries), float32."""
    h, w = img.shape
    k = _log_kernel(sigma)
    p = k.shape[0] // 2
    # The kernel is zero-sum, so subtracting a constant changes nothing but
    # keeps float32 FFT round-off relative to the spots rather than to the
    # camera baseline (a 65535 - frame image would otherwise lose ~0.05 ADU).
    c = float(img[:: max(1, h // 16), :: max(1, w // 16)].mean())
    fh = _fft.next_fast_len(h + 2 * p, real=True)
    fw = _fft.next_fast_len(w + 2 * p, real=True)
    buf = _fft_buffer(fh, fw)
    if h > p and w > p:
        # Mirror padding ("d c b | a b c d", scipy 'mirror', imglib2's
        # extendMirrorSingle as in TrackMate) by slicing: cheaper than np.pad.
        np.subtract(img, np.float32(c), out=buf[p:p + h, p:p + w])
        buf[:p, p:p + w] = buf[2 * p:p:-1, p:p + w]
        buf[p + h:h + 2 * p, p:p + w] = buf[p + h - 2:h - 2:-1, p:p + w]
        buf[:h + 2 * p, :p] = buf[:h + 2 * p, 2 * p:p:-1]
        buf[:h + 2 * p, p + w:w + 2 * p] = buf[:h + 2 * p, p + w - 2:w - 2:-1]
    else:  # tiny frames: the padding needs repeated reflections
        buf[:h + 2 * p, :w + 2 * p] = np.pad(img - np.float32(c), p, mode="reflect")
    spec = _fft.rfft2(buf)
    spec *= _kernel_spectrum(sigma, (fh, fw))
    # A view into the padded result: callers index it in 2-D, no copy needed.
    return _fft.irfft2(spec, s=(fh, fw), overwrite_x=True)[p:p + h, p:p + w]


def _prepare(frame: Any, config: DetectorConfig) -> NDArray[np.float32]:
    """Validate ``frame`` and return the float32 image the detector works on."""
    if not isinstance(config, DetectorConfig):
        raise ValueError(f"config must be a DetectorConfig, got {type(config)!r}")
    arr = np.asarray(frame)
    if arr.ndim != 2:
        raise ValueError(f"frame must have 2 dimensions (H, W), got shape {arr.shape}")
    if arr.dtype.kind not in "uif":
        raise ValueError(f"frame must have an integer or float dtype, got {arr.dtype}")
    if min(arr.shape) < 3:
        raise ValueError(f"frame must be at least 3 x 3 pixels, got shape {arr.shape}")
    with np.errstate(over="ignore"):  # overflow to inf is reported just below
        img = arr.astype(np.float32)  # always a copy: negated / filtered in place below
    # Checked after the cast: float64 values beyond float32's range become inf.
    if arr.dtype.kind == "f" and not np.isfinite(img).all():
        raise ValueError("frame contains NaN or infinite values (or beyond float32 range)")
    if config.invert:
        np.negative(img, out=img)
    if config.median_filter:
        img = _median3x3(img)
    return img


# Paeth's 19-comparator network for the median of 9 values (as in Devillard's
# "opt_med9"); compare-swaps whose outputs never reach the median are pruned.
_MEDIAN9_NET = ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
                (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2))


def _median9_plan() -> tuple[tuple[int, int, bool, bool], ...]:
    live, plan = {4}, []
    for a, b in reversed(_MEDIAN9_NET):
        need_min, need_max = a in live, b in live
        plan.append((a, b, need_min, need_max))
        if need_min or need_max:
            live |= {a, b}
    return tuple(reversed(plan))


_MEDIAN9_PLAN = _median9_plan()


def _median3x3(img: NDArray[np.float32]) -> NDArray[np.float32]:
    """3 x 3 median with mirror boundaries, identical to ``scipy.ndimage.median_filter``.

    A sorting network of 30 elementwise minima/maxima over the nine shifted
    copies: ~2 ms at 512 x 512 instead of ~30 ms for scipy's per-pixel selection.
    """
    h, w = img.shape
    pad = np.pad(img, 1, mode="reflect")  # numpy 'reflect' is scipy 'mirror'
    work = np.empty((10, h, w), dtype=img.dtype)
    p = list(work)
    for k in range(9):
        np.copyto(p[k], pad[k // 3:k // 3 + h, k % 3:k % 3 + w])
    tmp = p[9]
    for a, b, need_min, need_max in _MEDIAN9_PLAN:
        if need_min and need_max:
            np.minimum(p[a], p[b], out=tmp)
            np.maximum(p[a], p[b], out=p[b])
            p[a], tmp = tmp, p[a]
        elif need_min:
            np.minimum(p[a], p[b], out=p[a])
        elif need_max:
            np.maximum(p[a], p[b], out=p[b])
    return np.array(p[4])


def quality_map(frame: Any, config: DetectorConfig) -> NDArray[np.float32]:
    """LoG quality of every pixel, after the median filter and inversion of ``config``.

    Parameters
    ----------
    frame : array_like, shape (H, W)
        Camera frame (any integer or float dtype), ADU.
    config : DetectorConfig
        Detector settings (``radius_px``, ``median_filter``, ``invert``).

    Returns
    -------
    ndarray, shape (H, W), float32
        LoG quality (TrackMate units: units of ``frame`` per pixel^2), useful to
        choose a threshold.
    """
    return np.ascontiguousarray(_log_response(_prepare(frame, config), config.sigma_px))


def detection_image(frame: Any, config: DetectorConfig) -> NDArray[np.float32]:
    """The image the LoG runs on: ADU, negated for dark spots, median-filtered if asked.

    Parameters
    ----------
    frame : array_like, shape (H, W)
        Camera frame (any integer or float dtype), ADU.
    config : DetectorConfig
        Detector settings (``median_filter``, ``invert``).

    Returns
    -------
    ndarray, shape (H, W), float32
        A new array (e.g. for another LoG detector, TrackMate's, on the same terms).
    """
    return _prepare(frame, config)


def automatic_threshold(frame: Any, config: DetectorConfig) -> float:
    """The quality threshold :func:`detect` uses when ``config.threshold`` is None.

    :data:`AUTO_THRESHOLD_NOISE_SD` robust standard deviations of the frame's LoG
    quality above its median, in quality units (ADU per pixel^2).
    """
    return _auto_threshold(quality_map(frame, config))


def quality_noise_sd(radius_px: float, pixel_noise_sd: float) -> float:
    """Standard deviation of the LoG quality on a background of independent pixel noise.

    Parameters
    ----------
    radius_px : float
        Spot radius in pixels (as :attr:`DetectorConfig.radius_px`).
    pixel_noise_sd : float
        Standard deviation of a background pixel in ADU, e.g.
        ``gain * sqrt(background_photons + read_noise_e**2)``, >= 0.

    Returns
    -------
    float
        ``pixel_noise_sd * ||k||_2`` for the LoG kernel ``k`` (about
        ``pixel_noise_sd * sqrt(2 / pi) / sigma^3``), in quality units. With
        Poisson-like noise, about 0.03 noise maxima per 512 x 512 frame exceed
        6 times this and none 7 times (see :data:`AUTO_THRESHOLD_NOISE_SD`).
    """
    s = _validate.non_negative("pixel_noise_sd", pixel_noise_sd)
    return s * float(np.sqrt((log_kernel(radius_px) ** 2).sum()))


def _auto_threshold(q: NDArray[np.float32]) -> float:
    h, w = q.shape
    # ~4096 pixels spaced beyond the kernel's correlation length: independent
    # samples, and a median of 4096 values costs microseconds, not milliseconds.
    step = max(1, int(math.sqrt(h * w / 4096.0)))
    sub = q[::step, ::step].ravel().astype(np.float64)
    med = float(np.median(sub))
    mad = float(np.median(np.abs(sub - med)))
    return med + AUTO_THRESHOLD_NOISE_SD * 1.4826 * mad


def _local_maxima(
    q: NDArray[np.float32], threshold: float, half: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Rows and columns of the pixels above ``threshold`` that are maxima of their neighbourhood."""
    h, w = q.shape
    # Only pixels above the threshold can be maxima: test their neighbourhoods
    # by gathering, instead of a full-frame maximum filter (~5 ms at 512 x 512).
    idx = np.flatnonzero(q > threshold)
    if idx.size == 0:
        return idx, idx
    r, c = np.divmod(idx, w)
    offs = np.arange(-half, half + 1)
    rr = np.clip(r[:, None, None] + offs[None, :, None], 0, h - 1)
    cc = np.clip(c[:, None, None] + offs[None, None, :], 0, w - 1)
    nv = q[rr, cc]
    v = q[r, c][:, None, None]
    # Strictly greater than earlier (raster-order) neighbours, >= later ones: a
    # plateau of equal values yields one maximum. Clipped indices repeat edge
    # pixels or the pixel itself, which the rule accepts.
    later = (rr * w + cc) >= idx[:, None, None]
    ok = (nv < v) | ((nv == v) & later)
    keep = ok.reshape(idx.size, -1).all(axis=1)
    return r[keep], c[keep]


@functools.lru_cache(maxsize=64)
def _chi2_median_per_dof(dof: int) -> float:
    """Median of chi^2 with ``dof`` degrees of freedom, over ``dof`` (about 1 - 2 / (3 dof))."""
    from scipy.stats import chi2

    return float(chi2.median(dof)) / dof


def _dispersion(d: NDArray[np.float64], theta: NDArray[np.float64], ok: NDArray[np.bool_],
                sign: float, win: int) -> float:
    """The frame's median Pearson chi^2 per dof of the converged fits, over a correct model's."""
    good = np.flatnonzero(ok)
    if good.size < DISPERSION_MIN_SPOTS:
        return math.nan
    # The narrower half: motion blur widens a spot and adds a misfit of its own, which
    # the frame's other spots do not share; the PSF's shape is common to all.
    good = good[theta[good, 4] <= np.median(theta[good, 4])]
    mu, _ = _model(theta[good], win, sign, want_jac=False)
    dof = win * win - 5
    pearson = np.sum((d[good] - mu) ** 2 / mu, axis=1) / dof
    return float(np.median(pearson)) / _chi2_median_per_dof(dof)


def _parabola_offset(qm: NDArray[np.float64], q0: NDArray[np.float64],
                     qp: NDArray[np.float64]) -> NDArray[np.float64]:
    """Vertex of the parabola through (-1, qm), (0, q0), (1, qp), clipped to +-0.5 px."""
    den = 2.0 * q0 - qm - qp
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(den > 0, 0.5 * (qp - qm) / den, 0.0)
    return np.clip(d, -0.5, 0.5)


# --------------------------------------------------------------------------- fit
def _pixel_profiles(
    c: NDArray[np.float64], s: NDArray[np.float64], w: int, derivs: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None, NDArray[np.float64] | None]:
    """Pixel-integrated 1-D Gaussians (M, w) centred at ``c`` (M,), and d/dc, d/ds."""
    edges = np.arange(w + 1, dtype=np.float64) - 0.5
    z = (edges[None, :] - c[:, None]) * (1.0 / (_SQRT2 * s))[:, None]
    erf = _special.erf(z)
    e = 0.5 * (erf[:, 1:] - erf[:, :-1])
    if not derivs:
        return e, None, None
    g = np.exp(-z * z)
    zg = z * g
    de_dc = (g[:, :-1] - g[:, 1:]) * (1.0 / (_SQRT2PI * s))[:, None]
    de_ds = (zg[:, :-1] - zg[:, 1:]) * (1.0 / (_SQRTPI * s))[:, None]
    return e, de_dc, de_ds


def _model(theta: NDArray[np.float64], w: int, sign: float, want_jac: bool = True,
           extra: NDArray[np.float64] | None = None
           ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """Expected photons ``mu`` (K, w*w) and its Jacobian (K, 5, w*w) at ``theta`` (K, 5).

    ``extra`` (K, w*w), fixed photons added to ``mu`` (fitted neighbours).
    ``mu`` is floored at a tiny positive value so that log(mu) stays finite.
    """
    k = theta.shape[0]
    # x and y profiles in one call (2K rows): half the numpy calls of two.
    e, de_dc, de_ds = _pixel_profiles(np.concatenate([theta[:, 0], theta[:, 1]]),
                                      np.concatenate([theta[:, 4], theta[:, 4]]), w, want_jac)
    ex, ey = e[:k, None, :], e[k:, :, None]
    psf = ey * ex  # (K, w, w): rows y, columns x
    sn = (sign * theta[:, 2])[:, None, None]
    mu = (theta[:, 3, None, None] + sn * psf).reshape(k, w * w)
    if extra is not None:
        mu += extra
    np.maximum(mu, _MU_MIN, out=mu)
    if not want_jac:
        return mu, None
    assert de_dc is not None and de_ds is not None
    jac = np.empty((k, 5, w, w))
    np.multiply(sn * ey, de_dc[:k, None, :], out=jac[:, 0])
    np.multiply(sn * de_dc[k:, :, None], ex, out=jac[:, 1])
    np.multiply(psf, sign, out=jac[:, 2])
    jac[:, 3] = 1.0
    np.multiply(sn, de_ds[k:, :, None] * ex + ey * de_ds[:k, None, :], out=jac[:, 4])
    return mu, jac.reshape(k, 5, w * w)


def _loglik(d: NDArray[np.float64], mu: NDArray[np.float64],
            wts: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """Poisson log-likelihood per spot over the pixels of weight 1, without log(d!)."""
    terms = d * np.log(mu) - mu
    if wts is not None:
        terms *= wts
    return terms.sum(axis=1)


def _scores(d: NDArray[np.float64], mu: NDArray[np.float64], jac: NDArray[np.float64],
            wts: NDArray[np.float64] | None = None
            ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gradient (K, 5) and expected Fisher information (K, 5, 5) of the log-likelihood."""
    res = d / mu - 1.0
    inv = 1.0 / mu
    if wts is not None:
        res *= wts
        inv *= wts
    grad = np.matmul(jac, res[:, :, None])[:, :, 0]
    fisher = np.matmul(jac * inv[:, None, :], jac.transpose(0, 2, 1))
    return grad, fisher


def _clamp(theta: NDArray[np.float64], w: int) -> None:
    """Keep the amplitude positive and the width in [_SIGMA_MIN_PX, w / 2] (in place)."""
    np.maximum(theta[:, 2], _N_MIN, out=theta[:, 2])
    np.maximum(theta[:, 4], _SIGMA_MIN_PX, out=theta[:, 4])
    np.minimum(theta[:, 4], 0.5 * w, out=theta[:, 4])


def _fit_windows(
    d: NDArray[np.float64], theta0: NDArray[np.float64], sign: float,
    wts: NDArray[np.float64] | None = None, extra: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Batched Levenberg-Marquardt Poisson MLE of the windows of one frame.

    Parameters
    ----------
    d : ndarray, shape (K, w*w)
        Photons per window pixel.
    theta0 : ndarray, shape (K, 5)
        Start ``(x, y, N, b, sigma)`` in window pixel coordinates.
    sign : float
        +1 bright spots, -1 dips.
    wts : ndarray, shape (K, w*w), optional
        1 for the pixels that enter the likelihood, 0 for the others.
    extra : ndarray, shape (K, w*w), optional
        Fixed photons added to the model (neighbouring spots).

    Returns
    -------
    theta : ndarray, shape (K, 5)
        Fitted parameters.
    fisher : ndarray, shape (K, 5, 5)
        Expected Fisher information at ``theta``.
    converged : ndarray, shape (K,), bool
        Converged inside the window with the width off its bounds.
    """
    k = d.shape[0]
    w = round(math.sqrt(d.shape[1]))
    theta = theta0.copy()
    _clamp(theta, w)
    fisher = np.empty((k, 5, 5))
    done = np.zeros(k, dtype=bool)
    # Working set: the spots still iterating, compacted when some finish, so an
    # iteration costs no gather or scatter (numpy call overhead dominates here).
    idx = np.arange(k)
    th, dd, ww, xx = theta.copy(), d, wts, extra
    mu, jac = _model(th, w, sign, extra=xx)
    assert jac is not None
    ll = _loglik(dd, mu, ww)
    gr, fi = _scores(dd, mu, jac, ww)
    lm = np.full(k, 1e-3)
    for _ in range(_MAX_ITER):
        # Marquardt damping (the diagonal scaled by 1 + lambda) makes the step
        # invariant to the parameters' units (px, photons); the tiny floor keeps
        # degenerate windows (no signal) solvable.
        a = fi.copy()
        dg = a.reshape(-1, 25)[:, ::6]  # a view of the diagonals
        dg *= (1.0 + lm)[:, None]
        dg += 1e-12
        step = np.linalg.solve(a, gr[:, :, None])[:, :, 0]
        # Trust region: at most 1 px and half the width per iteration, so one
        # bad step cannot throw a spot out of its window.
        pos = step[:, :2]
        np.maximum(pos, -1.0, out=pos)
        np.minimum(pos, 1.0, out=pos)
        lim = 0.5 * th[:, 4]
        np.maximum(step[:, 4], -lim, out=step[:, 4])
        np.minimum(step[:, 4], lim, out=step[:, 4])
        trial = th + step
        _clamp(trial, w)
        # Steps are rarely rejected after the first iteration, so the Jacobian
        # is computed with the likelihood in one pass rather than afterwards.
        mu_t, jac_t = _model(trial, w, sign, extra=xx)
        assert jac_t is not None
        ll_t = _loglik(dd, mu_t, ww)
        acc = ll_t >= ll  # False for NaN
        if acc.all():
            th, ll = trial, ll_t
            gr, fi = _scores(dd, mu_t, jac_t, ww)
        elif acc.any():
            th[acc], ll[acc] = trial[acc], ll_t[acc]
            gr[acc], fi[acc] = _scores(dd[acc], mu_t[acc], jac_t[acc],
                                       None if ww is None else ww[acc])
        lm = np.where(acc, np.maximum(lm * 0.1, 1e-7), lm * 10.0)
        # Done: an accepted step below tolerance, or no improvement possible
        # even with a vanishing step (numerically at the optimum).
        fin = (acc & (np.abs(step[:, :2]).max(axis=1) < _STEP_TOL_PX)) | (lm > 1e8)
        if fin.any():
            g = idx[fin]
            theta[g], fisher[g], done[g] = th[fin], fi[fin], True
            keep = ~fin
            if not keep.any():
                break
            idx, th, ll, gr, fi, lm, dd = (idx[keep], th[keep], ll[keep], gr[keep], fi[keep],
                                           lm[keep], dd[keep])
            ww = None if ww is None else ww[keep]
            xx = None if xx is None else xx[keep]
    else:  # iterations exhausted: keep the last accepted state, not converged
        theta[idx], fisher[idx] = th, fi
    ok = done & np.isfinite(theta).all(axis=1) & np.isfinite(fisher).all(axis=(1, 2))
    # A fit that leaves its window, or whose width sits on a bound, is not a
    # spot model we trust: flag it (the caller falls back to the centroid).
    ok &= (theta[:, 0] > -0.5) & (theta[:, 0] < w - 0.5)
    ok &= (theta[:, 1] > -0.5) & (theta[:, 1] < w - 0.5)
    ok &= (theta[:, 4] > _SIGMA_MIN_PX * 1.001) & (theta[:, 4] < 0.5 * w * 0.999)
    ok &= theta[:, 2] > _N_MIN * 1.001
    return theta, fisher, ok


def _crlb_precision(fisher: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-axis Cramer-Rao precision sqrt((C_xx + C_yy) / 2), C = inverse Fisher information."""
    k = fisher.shape[0]
    if k == 0:
        return np.zeros(0)
    # Equilibrate before inverting: the parameters span px, photons and
    # photons / px^2, so the raw matrix is badly scaled.
    diag = np.diagonal(fisher, axis1=1, axis2=2)
    # A parameter without information (e.g. the amplitude on its floor leaves
    # x, y and sigma undetermined) has no bound: infinite precision, and the
    # caller falls back to the centroid.
    good = np.asarray(np.isfinite(fisher).all(axis=(1, 2)) & (diag > 1e-200).all(axis=1),
                      dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dg = np.sqrt(np.where(good[:, None], diag, 1.0))
        scaled = fisher / (dg[:, :, None] * dg[:, None, :])
        scaled[~good] = np.eye(5)
        try:
            inv = np.linalg.inv(scaled)
        except np.linalg.LinAlgError:  # a singular matrix somewhere: invert one by one
            inv = np.stack([np.linalg.pinv(m) for m in scaled])
        var = 0.5 * (inv[:, 0, 0] / dg[:, 0] ** 2 + inv[:, 1, 1] / dg[:, 1] ** 2)
        # A non-positive variance means a numerically singular information matrix.
        var[~good | ~(var > 0)] = np.inf
        return np.sqrt(var)


def _centroids(d: NDArray[np.float64], b0: NDArray[np.float64], sign: float, w: int,
               wts: NDArray[np.float64] | None = None) -> tuple[NDArray[np.float64], ...]:
    """Background-subtracted centroid, its Poisson error and moment photons, per window."""
    k = d.shape[0]
    sig = np.clip(sign * (d - b0[:, None]), 0.0, None)
    if wts is not None:
        sig *= wts
    tot = sig.sum(axis=1)
    jj = np.tile(np.arange(w, dtype=np.float64), w)
    ii = np.repeat(np.arange(w, dtype=np.float64), w)
    safe = np.where(tot > 0, tot, 1.0)
    xc = np.where(tot > 0, (sig * jj).sum(axis=1) / safe, 0.5 * (w - 1))
    yc = np.where(tot > 0, (sig * ii).sum(axis=1) / safe, 0.5 * (w - 1))
    # First-order error propagation of sum(s_i x_i) / sum(s_i) with Var(s_i) =
    # expected photons of pixel i (Poisson): Var(xc) = sum var_i (x_i - xc)^2 / S^2.
    var_i = np.maximum(np.abs(d), 1.0)
    if wts is not None:
        var_i = var_i * wts
    vx = (var_i * (jj[None, :] - xc[:, None]) ** 2).sum(axis=1) / safe**2
    vy = (var_i * (ii[None, :] - yc[:, None]) ** 2).sum(axis=1) / safe**2
    prec = np.sqrt(0.5 * (vx + vy))
    # No signal at all: the position is only known to be in the window.
    prec = np.where(tot > 0, np.minimum(prec, w / math.sqrt(12.0)), w / math.sqrt(12.0))
    return xc, yc, prec, tot.reshape(k)


def _neighbours(x: NDArray[np.float64], y: NDArray[np.float64], reach: float,
                kmax: int = 4) -> NDArray[np.intp]:
    """Indices (K, kmax) of each spot's nearest other spots within ``reach`` px, -1 if none.

    Within the window side ``w`` a neighbour's cell boundary (half-way) or its
    light (beyond ~4 sigma it is < 1e-4 of its peak) can reach the window.
    """
    k = x.shape[0]
    if k < 2:
        return np.full((k, kmax), -1, dtype=np.intp)
    m = min(kmax + 1, k)
    dist, idx = cKDTree(np.column_stack([x, y])).query(
        np.column_stack([x, y]), k=m, distance_upper_bound=reach)
    idx = np.where(np.isfinite(dist), idx, -1)[:, 1:]  # column 0 is the spot itself
    if idx.shape[1] < kmax:
        idx = np.pad(idx, ((0, 0), (0, kmax - idx.shape[1])), constant_values=-1)
    return idx.astype(np.intp)


def _voronoi_weights(x: NDArray[np.float64], y: NDArray[np.float64], r0: NDArray[np.intp],
                     c0: NDArray[np.intp], win: int, nb: NDArray[np.intp],
                     crowded: NDArray[np.intp]) -> NDArray[np.float64]:
    """Pixel weights (K, win*win): 1 where a pixel is nearer its own spot than any neighbour."""
    k = x.shape[0]
    wts = np.ones((k, win * win))
    ar = np.arange(win, dtype=np.float64)
    jj = (c0[crowded, None, None] + ar[None, None, :])[:, None]  # (C, 1, 1, w)
    ii = (r0[crowded, None, None] + ar[None, :, None])[:, None]  # (C, 1, w, 1)
    own = (jj[:, 0] - x[crowded, None, None]) ** 2 + (ii[:, 0] - y[crowded, None, None]) ** 2
    n = nb[crowded]
    nx = np.where(n >= 0, x[n], np.inf)[:, :, None, None]
    ny = np.where(n >= 0, y[n], np.inf)[:, :, None, None]
    other = ((jj - nx) ** 2 + (ii - ny) ** 2).min(axis=1)
    wts[crowded] = (own <= other).reshape(crowded.size, -1)
    return wts


def _refit_crowded(d: NDArray[np.float64], theta: NDArray[np.float64],
                   fisher: NDArray[np.float64], ok: NDArray[np.bool_], sign: float,
                   r0: NDArray[np.intp], c0: NDArray[np.intp], nb: NDArray[np.intp],
                   crowded: NDArray[np.intp]) -> None:
    """Refit crowded spots on all window pixels with their fitted neighbours as fixed light.

    The first pass fitted each crowded spot on its Voronoi cell only, which
    keeps a neighbour from merging into a wide Gaussian between the two, but
    still leaves the neighbour's PSF tail in the cell and ignores the
    spot's own light beyond it. Here the neighbours' fitted models (first
    pass) are added to the model, a one-step version of DAOPHOT's neighbour
    subtraction, and every window pixel counts. Updates the arrays in place.
    """
    w = round(math.sqrt(d.shape[1]))
    n = nb[crowded]  # (C, m)
    use = (n >= 0) & ok[np.maximum(n, 0)]  # only neighbours with a trusted fit
    nn = np.maximum(n, 0)
    # Neighbour positions in the window coordinates of the crowded spot.
    xn = theta[nn, 0] + c0[nn] - c0[crowded, None]
    yn = theta[nn, 1] + r0[nn] - r0[crowded, None]
    sg = theta[nn, 4]
    e, _, _ = _pixel_profiles(np.concatenate([xn.ravel(), yn.ravel()]),
                              np.concatenate([sg.ravel(), sg.ravel()]), w, False)
    cm = n.size
    ex = e[:cm].reshape(*n.shape, 1, w)
    ey = e[cm:].reshape(*n.shape, w, 1)
    amp = np.where(use, sign * theta[nn, 2], 0.0)[:, :, None, None]
    extra = (amp * ey * ex).sum(axis=1).reshape(crowded.size, w * w)
    start = theta[crowded]
    t2, f2, ok2 = _fit_windows(d[crowded], start, sign, None, extra)
    theta[crowded], fisher[crowded], ok[crowded] = t2, f2, ok2


def detect(frame: Any, config: DetectorConfig) -> Spots:
    """Detect and localize the spots of one frame.

    Parameters
    ----------
    frame : array_like, shape (H, W)
        Camera frame in ADU, any integer or float dtype (uint8, uint16, float32,
        ...), at least 3 x 3 pixels, no NaN or infinite values.
    config : DetectorConfig
        Detector settings.

    Returns
    -------
    Spots
        One entry per local maximum of the LoG quality above the threshold
        (at most ``config.max_spots``), in raster order of the maxima.

    Raises
    ------
    ValueError
        Message starting with ``frame`` for a frame of the wrong dimension,
        dtype or size or with NaN/inf values; with ``config`` for a wrong config.
    """
    img = _prepare(frame, config)
    h, w = img.shape
    sigma = config.sigma_px
    q = _log_response(img, sigma)
    thr = _auto_threshold(q) if config.threshold is None else float(config.threshold)
    rows, cols = _local_maxima(q, thr, config.neighbourhood_px)
    n_dropped = 0
    qv = q[rows, cols].astype(np.float64)
    if rows.size > config.max_spots:
        n_dropped = int(rows.size - config.max_spots)
        keep = np.sort(np.argpartition(-qv, config.max_spots - 1)[: config.max_spots])
        rows, cols, qv = rows[keep], cols[keep], qv[keep]
    k = rows.size
    if k == 0:
        return Spots.empty(thr)

    # Sub-pixel start: TrackMate's parabola through the quality map.
    rm, rp = np.maximum(rows - 1, 0), np.minimum(rows + 1, h - 1)
    cm, cp = np.maximum(cols - 1, 0), np.minimum(cols + 1, w - 1)
    dx = _parabola_offset(q[rows, cm].astype(np.float64), qv, q[rows, cp].astype(np.float64))
    dy = _parabola_offset(q[rm, cols].astype(np.float64), qv, q[rp, cols].astype(np.float64))

    # Fit windows: w x w around the maximum, shifted inside the frame.
    win = min(config.fit_window_px or 3, (min(h, w) - 1) // 2 * 2 + 1)
    half = win // 2
    r0 = np.clip(rows - half, 0, h - win)
    c0 = np.clip(cols - half, 0, w - win)
    ar = np.arange(win)
    # With ``invert`` the image was negated for detection; the fit models the
    # frame itself (light background minus a dip), whose noise is Poisson.
    patches = img[(r0[:, None] + ar)[:, :, None], (c0[:, None] + ar)[:, None, :]]
    if config.invert:
        patches = -patches
    # Photons; plus the read-noise variance r^2 (Huang et al. 2013): the shifted
    # counts have mean mu + r^2 and variance ~ mu + r^2, as a Poisson variable,
    # so the Poisson likelihood and its Fisher information stay right. The
    # shift is absorbed by the fitted background and removed when reported.
    rn2 = config.read_noise_e ** 2
    d = (patches.reshape(k, win * win).astype(np.float64) - config.offset_adu) \
        / config.gain_adu_per_e + rn2
    sign = -1.0 if config.invert else 1.0
    pw = d.reshape(k, win, win)
    border = np.concatenate([pw[:, 0, :], pw[:, -1, :], pw[:, 1:-1, 0], pw[:, 1:-1, -1]], axis=1)
    b0 = np.median(border, axis=1)

    xf, yf = cols + dx, rows + dy  # start positions, frame pixels
    nb = _neighbours(xf, yf, float(win))
    crowded = np.flatnonzero((nb >= 0).any(axis=1))
    wts = _voronoi_weights(xf, yf, r0, c0, win, nb, crowded) if crowded.size else None
    xc, yc, cprec, cphot = _centroids(d, b0, sign, win, wts)
    if config.fit:
        theta0 = np.column_stack([xf - c0, yf - r0, np.maximum(cphot, 1.0), b0,
                                  np.full(k, sigma)])
        theta, fisher, ok = _fit_windows(d, theta0, sign, wts)
        if crowded.size:
            # The refit pays only for close neighbours (static SNR-20 pairs: RMSE
            # 0.034 -> 0.024 px at 4 px apart, 0.0228 -> 0.0221 px at 5 px); a
            # farther neighbour's light in the Voronoi cell is negligible.
            nn = np.maximum(nb, 0)
            near = (nb >= 0) & (np.hypot(xf[nn] - xf[:, None], yf[nn] - yf[:, None])
                                < _REFIT_REACH_SIGMAS * sigma)
            close = np.flatnonzero(near.any(axis=1))
            if close.size:
                _refit_crowded(d, theta, fisher, ok, sign, r0, c0, nb, close)
        prec = _crlb_precision(fisher)
        ok &= np.isfinite(prec)
        # Model mismatch (module docstring): scale the bounds by the frame's dispersion.
        dispersion = _dispersion(d, theta, ok, sign, win)
        if dispersion > 1.0:
            prec = prec * math.sqrt(dispersion)
        xs = np.where(ok, theta[:, 0], xc)
        ys = np.where(ok, theta[:, 1], yc)
        precision = np.where(ok, prec, cprec)
        photons = np.where(ok, theta[:, 2], cphot)
        background = np.where(ok, theta[:, 3], b0) - rn2
        width = np.where(ok, theta[:, 4], np.nan)
    else:
        ok = np.zeros(k, dtype=bool)
        dispersion = math.nan
        xs, ys, precision = xf - c0, yf - r0, cprec
        photons, background, width = cphot, b0 - rn2, np.full(k, np.nan)
    return Spots(
        x_px=xs + c0,
        y_px=ys + r0,
        precision_px=precision,
        photons=photons,
        background=background,
        sigma_px=width,
        quality=qv,
        converged=ok,
        n_dropped=n_dropped,
        threshold=thr,
        dispersion=dispersion,
    )
