"""Classical estimators of the diffusion coefficient and their Cramer-Rao bounds.

All functions take positions in um, times in s and return D in um^2/s, each estimate
with an interval and a standard error (:class:`Estimate`). See ``docs/estimators.md``
for the equations, assumptions and references.

- :func:`cve`, :func:`cve_batch`: covariance-based estimator (Vestergaard et al. 2014).
- :func:`msd_curve`, :func:`msd_fit`, :func:`msd_fit_batch`: MSD and its line fits.
- :func:`crlb_d_exact`, :func:`crlb_d_large_n`: Cramer-Rao bounds on Var(D).
"""

from livespt.models.estimators.bounds import (
    crlb_d_exact,
    crlb_d_large_n,
    fisher_information_exact,
    fisher_information_large_n,
)
from livespt.models.estimators.cve import (
    cve,
    cve_batch,
    cve_d_windows,
    cve_relative_variance,
    cve_variance,
    noise_spread_samples,
)
from livespt.models.estimators.msd import msd_curve, msd_fit, msd_fit_batch, msd_fit_variance
from livespt.models.estimators.result import Estimate, EstimateBatch

__all__ = [
    "Estimate",
    "EstimateBatch",
    "crlb_d_exact",
    "crlb_d_large_n",
    "cve",
    "cve_batch",
    "cve_d_windows",
    "cve_relative_variance",
    "cve_variance",
    "fisher_information_exact",
    "fisher_information_large_n",
    "msd_curve",
    "msd_fit",
    "msd_fit_batch",
    "msd_fit_variance",
    "noise_spread_samples",
]
