"""Emitters from KDE maps: peaks of the mean, and each position's spread over posterior samples.

The localizer returns many KDE samples of one frame. Emitters are found on their mean
(seed 004: a Laplacian-of-Gaussian on the mean KDE): a LoG of 0.4 times the KDE's kernel
width, local maxima whose mean KDE value passes ``threshold``, refined to sub-pixel by a
parabola through the log of the 3 x 3 neighbourhood (exact for a sampled Gaussian).

**The ceiling of this read-out.** On the exact KDE targets at the seed's settings (20 x 20,
1-5 emitters on a disc of radius 7 px), i.e. with a perfect network, it depends on the
KDE's kernel: emitters closer than about 2 kernel SDs make one peak. With a kernel of
3 fine px (0.75 camera px) it finds 98.4 % of its peaks at emitters (precision) and
94.1 % of the emitters (recall); with 2 fine px, 100 % and 98.3 %; with 1.5, 100 % and
99.1 % (300 frames; tests/test_ddpm_emitters.py). A LoG at the kernel's own width (the
obvious choice) gives 96 % / 88 % at 3 fine px. So precision 0.99 and recall 0.95 need a
kernel under 3 fine px: a network trained on such targets (``--kde-sigma``).
Each emitter's position is then found again in every sample, near its mean position;
the standard deviation over samples is its position uncertainty.

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
        Positions from the mean KDE.
    x_sd_px, y_sd_px : ndarray, shape (K,)
        Standard deviation of each position over the samples (NaN with fewer than 2).
    peak : ndarray, shape (K,)
        Mean KDE value at the peak (the KDE's units, 0 to 1).
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
    ii, jj = np.nonzero(peaks)
    order = np.argsort(-kde[ii, jj])
    out = [(_refine(kde, int(ii[k]), int(jj[k]))[::-1]) for k in order]
    return np.asarray(out, np.float64).reshape(-1, 2)


def locate_emitters(samples: Any, upsample: int = 4, sigma_y_px: float = 3.0,
                    threshold: float = 0.3) -> Emitters:
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

    Returns
    -------
    Emitters
    """
    arr = _validate.finite_array("samples", samples, ndim=3)
    up = _validate.positive_int("upsample", upsample)
    mean = arr.mean(axis=0)
    peaks = find_peaks(mean, sigma_y_px, threshold)
    reach = max(1, math.ceil(sigma_y_px))
    h, w = mean.shape
    per_sample = np.full((arr.shape[0], len(peaks), 2), np.nan)
    for k, (x, y) in enumerate(peaks):
        i0, j0 = round(float(y)), round(float(x))
        rows = slice(max(i0 - reach, 0), min(i0 + reach + 1, h))
        cols = slice(max(j0 - reach, 0), min(j0 + reach + 1, w))
        for s_idx, img in enumerate(arr):
            win = img[rows, cols]
            di, dj = np.unravel_index(int(np.argmax(win)), win.shape)
            yi, xj = _refine(img, rows.start + int(di), cols.start + int(dj))
            per_sample[s_idx, k] = (xj, yi)
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
