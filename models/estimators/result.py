"""The one result type of every classical D estimator: a point estimate with its interval.

Every estimate carries its uncertainty and the method that produced it (DESIGN.md), so a
fallback CVE can be told from a network's answer. :class:`Estimate` describes one track;
:class:`EstimateBatch` holds the same columns as arrays for many tracks that share their
frames, which is what the vectorized ``*_batch`` entry points return.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class Estimate:
    """Diffusion coefficient of one track with its uncertainty.

    Attributes
    ----------
    d_um2_s : float
        Point estimate of D in um^2/s. Unbiased under the model, hence it can be <= 0
        for short noisy tracks; it is never clipped.
    d_low_um2_s, d_high_um2_s : float
        Two-sided interval for D in um^2/s at level ``confidence``, built by test
        inversion; always >= 0, ``d_high_um2_s`` is ``inf`` when the data cannot
        bound D from above.
    se_um2_s : float
        Standard error of ``d_um2_s`` in um^2/s, the exact standard deviation of the
        estimator evaluated at the (zero-clipped) estimated parameters.
    sigma2_um2 : float
        Localization variance per dimension in um^2: estimated (may be negative, as
        the estimator is unbiased) or, for the sigma-known variants, the given one.
    n_positions, n_steps : int
        Observed positions and steps between consecutive observed positions.
    method : str
        ``"cve"`` or ``"msd"``, the names the rest of the product reports.
    variant : str
        ``"sigma-unknown"``, ``"sigma-known"``, ``"sigma-known, both moments"``,
        ``"full"``, ``"optimal"`` or ``"weighted"``.
    track_id : object
        The caller's track identifier, or ``None``.
    confidence : float
        Level of the interval, e.g. 0.9.
    max_lag : int or None
        Largest MSD lag (frames) used by an MSD fit; ``None`` for CVE.
    """

    d_um2_s: float
    d_low_um2_s: float
    d_high_um2_s: float
    se_um2_s: float
    sigma2_um2: float
    n_positions: int
    n_steps: int
    method: str
    variant: str
    track_id: Any = None
    confidence: float = 0.9
    max_lag: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (column names as in DESIGN.md)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EstimateBatch:
    """The columns of :class:`Estimate` for M tracks, as arrays of shape (M,).

    Produced by the vectorized entry points (``cve_batch``, ``msd_fit_batch``), whose
    tracks share one frame pattern, hence one ``n_positions`` and ``n_steps``.
    ``max_lag`` is an integer array for MSD fits (the optimal fit picks it per track)
    and ``None`` for CVE.
    """

    d_um2_s: NDArray[np.float64]
    d_low_um2_s: NDArray[np.float64]
    d_high_um2_s: NDArray[np.float64]
    se_um2_s: NDArray[np.float64]
    sigma2_um2: NDArray[np.float64]
    n_positions: int
    n_steps: int
    method: str
    variant: str
    confidence: float = 0.9
    max_lag: NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self.d_um2_s.shape[0])

    def estimate(self, index: int, track_id: Any = None) -> Estimate:
        """Return track ``index`` as an :class:`Estimate`."""
        return Estimate(
            d_um2_s=float(self.d_um2_s[index]),
            d_low_um2_s=float(self.d_low_um2_s[index]),
            d_high_um2_s=float(self.d_high_um2_s[index]),
            se_um2_s=float(self.se_um2_s[index]),
            sigma2_um2=float(self.sigma2_um2[index]),
            n_positions=self.n_positions,
            n_steps=self.n_steps,
            method=self.method,
            variant=self.variant,
            track_id=track_id,
            confidence=self.confidence,
            max_lag=None if self.max_lag is None else int(self.max_lag[index]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the columns as a dict of arrays (scalars broadcast), ready for pandas."""
        n = len(self)
        out: dict[str, Any] = {
            "d_um2_s": self.d_um2_s,
            "d_low_um2_s": self.d_low_um2_s,
            "d_high_um2_s": self.d_high_um2_s,
            "se_um2_s": self.se_um2_s,
            "sigma2_um2": self.sigma2_um2,
            "n_positions": np.full(n, self.n_positions),
            "n_steps": np.full(n, self.n_steps),
            "method": np.full(n, self.method, dtype=object),
            "variant": np.full(n, self.variant, dtype=object),
            "confidence": np.full(n, self.confidence),
        }
        if self.max_lag is not None:
            out["max_lag"] = self.max_lag
        return out
