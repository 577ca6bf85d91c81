"""Point-spread functions other than one isotropic Gaussian, as sums of pixel-integrated Gaussians.

Training an image model on one PSF shape teaches it that shape. Real
microscopes give an Airy pattern (a core with faint rings), defocus (a wider
core with a ring) and astigmatism (an elliptical spot). Each is written here as
a small mixture of axis-aligned Gaussians, so rendering stays the separable,
pixel-integrated product of :mod:`livespt.models.psf` (one matrix product per
frame), only with ``C`` components per emitter instead of one:

* ``gaussian``: one component of standard deviation ``sigma``;
* ``airy``: a core (``1 - ring_weight`` of the photons, ``sigma``) and a ring of
  ``n_ring`` components at radius ``3.9 sigma`` (the Airy pattern's first bright
  ring, 0.82 lambda / NA, with ``sigma = 0.21 lambda / NA``), about 7-10 % of the
  photons; a mixture, not the Bessel function, but with its energy where the
  Airy pattern has it;
* ``defocus``: a core widened by ``core_scale`` holding ``1 - ring_weight`` and a
  ring at radius ``ring_radius * sigma``: the doughnut of a defocused spot;
* ``astigmatic``: one component with ``sigma_x = sigma * (1 + a)`` and
  ``sigma_y = sigma / (1 + a)``.

These shapes are for domain randomisation of training data; the estimators and
the Cramer-Rao bounds keep the Gaussian PSF of :mod:`livespt.models.psf`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from livespt.models import _validate
from livespt.models.psf import _integrated_gaussian_1d

KINDS = ("gaussian", "airy", "defocus", "astigmatic")

AIRY_RING_RADIUS = 3.9
"""Radius of the Airy pattern's first bright ring in units of the Gaussian-equivalent sigma."""


@dataclass(frozen=True)
class PsfShape:
    """A PSF as a mixture of axis-aligned Gaussians (see the module docstring).

    Attributes
    ----------
    kind : str
        ``gaussian``, ``airy``, ``defocus`` or ``astigmatic``.
    ring_weight : float
        Fraction of photons in the ring (``airy``, ``defocus``), in [0, 1).
    ring_radius : float
        Ring radius in units of sigma (``defocus``; ``airy`` uses 3.9).
    core_scale : float
        Width of the core relative to sigma (``defocus``), > 0.
    astigmatism : float
        ``a`` of ``sigma_x = sigma (1 + a)``, ``sigma_y = sigma / (1 + a)``
        (``astigmatic``; negative values elongate along y).
    n_ring : int
        Components on the ring, >= 3.
    """

    kind: str = "gaussian"
    ring_weight: float = 0.0
    ring_radius: float = AIRY_RING_RADIUS
    core_scale: float = 1.0
    astigmatism: float = 0.0
    n_ring: int = 6

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not 0.0 <= self.ring_weight < 1.0:
            raise ValueError(f"ring_weight must be in [0, 1), got {self.ring_weight}")
        _validate.positive("ring_radius", self.ring_radius)
        _validate.positive("core_scale", self.core_scale)
        if not -0.9 < self.astigmatism < 9.0:
            raise ValueError(f"astigmatism must be in (-0.9, 9), got {self.astigmatism}")
        _validate.positive_int("n_ring", self.n_ring, 3)

    def components(self, sigma_px: float) -> tuple[list[float], list[float], list[float],
                                                      list[float], list[float]]:
        """Offsets ``dx, dy`` (px), weights (sum 1), ``sigma_x, sigma_y`` (px) of the components."""
        s = _validate.positive("sigma_px", sigma_px)
        if self.kind == "gaussian" or (self.kind in ("airy", "defocus") and self.ring_weight == 0):
            scale = self.core_scale if self.kind == "defocus" else 1.0
            return [0.0], [0.0], [1.0], [s * scale], [s * scale]
        if self.kind == "astigmatic":
            f = 1.0 + self.astigmatism
            return [0.0], [0.0], [1.0], [s * f], [s / f]
        core = self.core_scale * s if self.kind == "defocus" else s
        radius = (self.ring_radius if self.kind == "defocus" else AIRY_RING_RADIUS) * s
        # Ring components overlap into a ring when their width is ~ the spacing.
        ring_sigma = max(0.6 * s, math.pi * radius / self.n_ring / 1.5)
        dx, dy, w, sx, sy = [0.0], [0.0], [1.0 - self.ring_weight], [core], [core]
        for k in range(self.n_ring):
            a = 2.0 * math.pi * k / self.n_ring
            dx.append(radius * math.cos(a))
            dy.append(radius * math.sin(a))
            w.append(self.ring_weight / self.n_ring)
            sx.append(ring_sigma)
            sy.append(ring_sigma)
        return dx, dy, w, sx, sy

    def gaussian_sigma_px(self, sigma_px: float) -> float:
        """The width a Gaussian fit would roughly report: geometric mean of the core's axes."""
        _, _, _, sx, sy = self.components(sigma_px)
        return math.sqrt(sx[0] * sy[0])


def render_mixture_spots(
    x_px: Tensor,
    y_px: Tensor,
    photons: Tensor,
    shape_px: tuple[int, int],
    sigma_px: float,
    psf: PsfShape,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Expected photon images of spots with the PSF ``psf`` (unchecked inputs, like the renderer).

    Parameters
    ----------
    x_px, y_px, photons : Tensor, shape (N, K)
        Spot centres (pixels of each of ``N`` images) and expected photons.
    shape_px : tuple of int
        ``(height, width)``.
    sigma_px : float
        PSF sigma in pixels (the Gaussian-equivalent width of the shape).
    psf : PsfShape
        The shape.
    dtype : torch.dtype
        Dtype of the result.

    Returns
    -------
    Tensor, shape (N, height, width)
    """
    dx, dy, w, sx, sy = psf.components(sigma_px)
    dev = x_px.device
    c = len(w)

    def t(v: list[float], like: Tensor) -> Tensor:
        return torch.tensor(v, dtype=like.dtype, device=dev)

    n, k = x_px.shape
    xs = (x_px[..., None] + t(dx, x_px)).reshape(n, k * c)
    ys = (y_px[..., None] + t(dy, y_px)).reshape(n, k * c)
    ph = (photons[..., None] * t(w, photons)).reshape(n, k * c)
    if len(set(sx)) == 1 and len(set(sy)) == 1:
        ex = _integrated_gaussian_1d(xs, shape_px[1], sx[0], dtype)
        ey = _integrated_gaussian_1d(ys, shape_px[0], sy[0], dtype)
    else:
        sxt = t(sx, xs).repeat(k).expand(n, k * c)
        syt = t(sy, ys).repeat(k).expand(n, k * c)
        ex = _integrated_gaussian_1d(xs, shape_px[1], sxt, dtype)
        ey = _integrated_gaussian_1d(ys, shape_px[0], syt, dtype)
    weighted = ey * ph.to(dtype)[..., None]
    return torch.bmm(weighted.transpose(1, 2), ex)
