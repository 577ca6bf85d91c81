"""Emitters from KDE maps: peaks of the mean, and each position's spread over posterior samples.

The localizer returns many KDE samples of one frame. Emitters are found on an estimate of
the posterior mean KDE (seed 004: a Laplacian-of-Gaussian on the mean KDE): the samples'
mean, or, given as ``estimate``, phi's direct estimate of it (trained on the squared error,
it estimates the same mean without sampling noise; the localizer's default, see
:data:`~livespt.models.ddpm.localizer.EMITTERS_FROM`). A LoG of 0.4 times the KDE's kernel
width, local maxima whose KDE value passes ``threshold`` (one per group of tied pixels),
refined to sub-pixel by a parabola through the log of the 3 x 3 neighbourhood (exact for a
sampled Gaussian).

**The ceiling of this read-out.** On the exact KDE targets at the seed's settings (20 x 20,
1-5 emitters on a disc of radius 7 px), i.e. with a perfect network, it depends on the
KDE's kernel: emitters closer than about 2 kernel SDs make one peak. With a kernel of
3 fine px (0.75 camera px) it finds 98.4 % of its peaks at emitters (precision) and
94.1 % of the emitters (recall); with 2 fine px, 100 % and 98.3 %; with 1.5, 100 % and
99.1 % (300 frames; tests/test_ddpm_emitters.py). A LoG at the kernel's own width (the
obvious choice) gives 96 % / 88 % at 3 fine px. So precision 0.99 and recall 0.95 need a
kernel under 3 fine px: a network trained on such targets (``--kde-sigma``).
Each emitter's position is then found again in every sample, near its mean position, by
a mean shift: the centroid of the sample weighted by a Gaussian of the kernel's width,
re-centred until it settles (:data:`MEAN_SHIFT_ITERATIONS`). For a symmetric peak it is
unbiased and moves continuously with the sample; the standard deviation over samples is
the position uncertainty. The first read-out, the arg-max pixel refined by a parabola,
jumps by whole fine pixels on a noisy sample: on the first shipped model's isolated
emitters it reported SDs 1.66 times the exact MCMC posterior's (10 frames), the mean
shift 1.32, with z-scores ``error / SD`` of SD 0.88 and 1.01 (40 frames): the spread it
reports is the model's real error (1.31 times the CRLB there), not read-out noise.

KDE maps are on the fine grid: fine pixel ``k`` subdivides low-resolution pixel
``k // upsample``, so a fine position ``u`` is at ``(u + 1/2) / upsample - 1/2`` low-resolution
pixels (the convention of :func:`~livespt.models.simulate.simulate_smlm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from livespt.models import _validate


@dataclass(frozen=True)
class Emitters:
    """Emitters of one frame, in low-resolution pixels.

    Attributes
    ----------
    x_px, y_px : ndarray, shape (K,)
        Positions from the map read (the samples' mean, or the estimate given).
    x_sd_px, y_sd_px : ndarray, shape (K,)
        Standard deviation of each position over the samples (NaN with fewer than 2).
    peak : ndarray, shape (K,)
        The read map's value at the peak (the KDE's units, 0 to 1).
    """

    x_px: NDArray[np.float64]
    y_px: NDArray[np.float64]
    x_sd_px: NDArray[np.float64]
    y_sd_px: NDArray[np.float64]
    peak: NDArray[np.float64]


def _refine(img: NDArray[np.float64], i: int, j: int) -> tuple[float, float]:
    """Sub-pixel (row, column) of a peak: a parabola through the log of its neighbours."""
    h, w = img.shape
    i = min(max(i, 1), h - 2)
    j = min(max(j, 1), w - 2)
    patch = np.log(np.maximum(img[i - 1:i + 2, j - 1:j + 2], 1e-12))

    def offset(left: float, centre: float, right: float) -> float:
        den = left - 2 * centre + right
        return 0.0 if den >= 0 else float(np.clip(0.5 * (left - right) / den, -0.5, 0.5))

    return (i + offset(patch[0, 1], patch[1, 1], patch[2, 1]),
            j + offset(patch[1, 0], patch[1, 1], patch[1, 2]))


MEAN_SHIFT_ITERATIONS = 12
"""Re-centrings of the mean shift; each at least halves the distance left for a peak of the
kernel's width (a Gaussian weight on a Gaussian), so 12 leave under 1/4000 of it."""


def _mean_shift(samples: NDArray[np.float64], x: float, y: float, sigma: float
                ) -> NDArray[np.float64]:
    """Each sample's peak near fine position ``(x, y)``: ``(S, 2)`` of ``(x, y)``, fine px."""
    s, h, w = samples.shape
    reach = math.ceil(3 * sigma)
    i0, j0 = round(y), round(x)
    r0, r1 = max(i0 - reach, 0), min(i0 + reach + 1, h)
    c0, c1 = max(j0 - reach, 0), min(j0 + reach + 1, w)
    win = np.clip(samples[:, r0:r1, c0:c1], 0.0, None)
    yy = np.arange(r0, r1, dtype=np.float64)[None, :, None]
    xx = np.arange(c0, c1, dtype=np.float64)[None, None, :]
    px, py = np.full(s, float(x)), np.full(s, float(y))
    for _ in range(MEAN_SHIFT_ITERATIONS):
        wt = win * np.exp(-((xx - px[:, None, None]) ** 2 + (yy - py[:, None, None]) ** 2)
                          / (2 * sigma * sigma))
        total = wt.sum(axis=(1, 2))
        ok = total > 0
        px = np.where(ok, (wt * xx).sum(axis=(1, 2)) / np.where(ok, total, 1.0), px)
        py = np.where(ok, (wt * yy).sum(axis=(1, 2)) / np.where(ok, total, 1.0), py)
    return np.stack([px, py], axis=1)


LOG_SCALE = 0.4
"""Width of the LoG relative to the KDE kernel (0.4 separates close emitters best)."""


def find_peaks(mean_kde: Any, sigma_y_px: float = 3.0, threshold: float = 0.3
               ) -> NDArray[np.float64]:
    """Peaks of a mean KDE map, on the fine grid.

    Parameters
    ----------
    mean_kde : array_like, shape (H, W)
        Mean KDE (values 0 to 1).
    sigma_y_px : float
        The KDE kernel's standard deviation in fine pixels (the training targets').
    threshold : float
        Smallest mean KDE value at a peak, in (0, 1].

    Returns
    -------
    ndarray, shape (K, 2)
        ``(x, y)`` in fine pixels, brightest first.
    """
    kde = _validate.finite_array("mean_kde", mean_kde, ndim=2)
    s = _validate.positive("sigma_y_px", sigma_y_px)
    thr = _validate.in_range("threshold", threshold, 1e-6, 1.0)
    scale = LOG_SCALE * s
    response = -ndimage.gaussian_laplace(kde, scale) * scale * scale
    size = 2 * math.ceil(scale) + 1
    peaks = (response == ndimage.maximum_filter(response, size=size)) & (kde >= thr)
    # A peak centred between pixels ties on 2 or 4 of them: one per touching group.
    labels, n = ndimage.label(peaks, structure=np.ones((3, 3)))
    first = ndimage.minimum_position(-kde, labels, np.arange(1, n + 1)) if n else []
    ii = np.array([p[0] for p in first], dtype=np.intp)
    jj = np.array([p[1] for p in first], dtype=np.intp)
    order = np.argsort(-kde[ii, jj])
    out = [(_refine(kde, int(ii[k]), int(jj[k]))[::-1]) for k in order]
    return np.asarray(out, np.float64).reshape(-1, 2)


def locate_emitters(samples: Any, upsample: int = 4, sigma_y_px: float = 3.0,
                    threshold: float = 0.3, estimate: Any = None) -> Emitters:
    """Emitters of one frame from its KDE samples (module docstring).

    Parameters
    ----------
    samples : array_like, shape (S, H, W)
        KDE samples of one frame (S >= 1).
    upsample : int
        Fine pixels per low-resolution pixel.
    sigma_y_px : float
        KDE kernel width in fine pixels.
    threshold : float
        Smallest mean KDE value at a peak.
    estimate : array_like, shape (H, W), optional
        A direct estimate of the posterior mean KDE (phi's) to find the emitters on instead
        of the samples' mean; the samples still give each position's SD.

    Returns
    -------
    Emitters
    """
    arr = _validate.finite_array("samples", samples, ndim=3)
    up = _validate.positive_int("upsample", upsample)
    if estimate is None:
        mean = arr.mean(axis=0)
    else:
        mean = _validate.finite_array("estimate", estimate, ndim=2)
        if mean.shape != arr.shape[1:]:
            raise ValueError(f"estimate: shape {mean.shape} is not the samples' "
                             f"{arr.shape[1:]}")
    peaks = find_peaks(mean, sigma_y_px, threshold)
    per_sample = np.full((arr.shape[0], len(peaks), 2), np.nan)
    for k, (x, y) in enumerate(peaks):
        per_sample[:, k] = _mean_shift(arr, float(x), float(y), float(sigma_y_px))
    to_low = lambda u: (u + 0.5) / up - 0.5  # noqa: E731 - fine -> low-resolution pixels
    sd = (per_sample.std(axis=0, ddof=1) / up if arr.shape[0] > 1
          else np.full((len(peaks), 2), np.nan))
    return Emitters(x_px=to_low(peaks[:, 0]), y_px=to_low(peaks[:, 1]),
                    x_sd_px=sd[:, 0], y_sd_px=sd[:, 1],
                    peak=np.array([mean[round(float(y)), round(float(x))] for x, y in peaks]))


def match_positions(truth: Any, found: Any, radius_px: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one pairs of true and found positions within ``radius_px``, closest first.

    Parameters
    ----------
    truth, found : array_like, shape (N, 2) and (M, 2)
        Positions in pixels.
    radius_px : float
        Largest distance of a pair.

    Returns
    -------
    list of (int, int)
        ``(index in truth, index in found)``; unpaired ones are misses / false finds.
    """
    t = np.asarray(truth, np.float64).reshape(-1, 2)
    f = np.asarray(found, np.float64).reshape(-1, 2)
    if len(t) == 0 or len(f) == 0:
        return []
    d = np.linalg.norm(t[:, None] - f[None], axis=2)
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for i in np.argsort(d.min(axis=1)):
        for j in np.argsort(d[i]):
            if d[i, j] < radius_px and int(j) not in used:
                used.add(int(j))
                pairs.append((int(i), int(j)))
                break
    return pairs
