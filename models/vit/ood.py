"""Out-of-distribution guard: does a window look like the windows the model was trained on.

A network answers anything it is given, also for inputs unlike its training
data, where its answer and its interval mean little. The guard is a cheap
per-window statistic compared with the training distribution:

* the **Mahalanobis distance** of the window's summary vector from the mean of
  training windows, with their covariance: the standardised trajectory features
  and classical anchors (as the model standardises them, then ``asinh``), the
  acquisition inputs (exposure / interval, PSF sigma, log precision) and, for
  models that read images, five patch statistics (log peak over noise, spot
  width, saturation, background structure, log noise in ADU; see
  :func:`livespt.models.vit.inputs.normalise_patches_per_frame`);
* the model's own **prediction of log D*** against the range it produced on
  training windows, and the classical one-step anchor ``log D1`` (an input)
  against its largest training values: a D* far outside the trained range
  (the network's prediction saturates there, the anchor does not); and
* for image models, each patch statistic against its own training range (a
  window of clipped, flat 8-bit frames or a background edge is unlike any
  training window in one statistic, which the 35-dimensional distance dilutes).

All thresholds are quantiles (default 99.9 % for the distance, 0.05 % and
99.95 % for the prediction, 99.95 % for the anchor, 0.02 % and 99.98 % for each
patch statistic, widened by 10 % for those set per acquisition) of fresh
windows drawn from the training distribution, fitted once after training
(:func:`fit_guard`) and stored as buffers of the model (``ood_mean``,
``ood_whiten``, ``ood_threshold``, ``ood_log_d_range``, ``ood_anchor_high``,
``ood_stats_range``), so they travel with the weights and their sha256. At
most about 0.45 % of in-distribution windows are flagged by construction; the
thresholds are never tuned on a test set. Weights without a fitted guard flag
nothing.

Cost: one (B, k) x (k, k) product, k = 35, per batch of windows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from livespt.models.vit.inputs import WindowInputs
from livespt.models.vit.model import DiffusionViT

DISTANCE_QUANTILE = 0.999
"""Training windows whose Mahalanobis distance lies below the threshold."""

PREDICTION_TAIL = 0.0005
"""Training windows whose predicted log D* lies below (and above) the fitted range, each;
also those whose anchor lies above its fitted bound."""

STATS_TAIL = 0.0002
"""Training windows below (and above) the fitted range of each patch statistic, each."""

STATS_MARGIN = (0.0, 0.1, 0.0, 0.1, 0.1)
"""Fraction of its width by which each patch statistic's range is widened on both sides:
spot width, background structure and log noise in ADU are largely set by the
acquisition (PSF, background, gain, read noise), which takes few independent values
in a fit (one per simulated batch), so their extreme quantiles sit near the fit
sample's extremes; the peak over noise varies window by window (its SNR)."""

FIT_BATCH = 16
"""Windows per simulated batch (one acquisition each) when fitting: many acquisitions."""

ANCHOR = -2
"""Column of ``log max(D1, 1e-3)`` in the features (:func:`livespt.models.vit.inputs.prepare`)."""


@dataclass(frozen=True)
class Guard:
    """The guard's parameters, detached from the model (e.g. a CPU copy beside a GPU model).

    Attributes
    ----------
    uses_images : bool
        Whether the summary includes the patch statistics.
    feat_mean, feat_std, ood_mean, ood_whiten, ood_threshold, ood_log_d_range : Tensor
        The model's buffers of the same names.
    """

    uses_images: bool
    feat_mean: Tensor
    feat_std: Tensor
    ood_mean: Tensor
    ood_whiten: Tensor
    ood_threshold: Tensor
    ood_log_d_range: Tensor
    ood_anchor_high: Tensor
    ood_stats_range: Tensor

    @classmethod
    def of(cls, model: DiffusionViT, device: str | torch.device = "cpu") -> Guard:
        """Copies of ``model``'s guard buffers on ``device``."""
        return cls(model.config.variant != "features",
                   *(getattr(model, k).detach().to(device).clone() for k in
                     ("feat_mean", "feat_std", "ood_mean", "ood_whiten", "ood_threshold",
                      "ood_log_d_range", "ood_anchor_high", "ood_stats_range")))

    @property
    def fitted(self) -> bool:
        """False for weights written before the guard (it then flags nothing)."""
        return bool(torch.isfinite(self.ood_threshold))


def uses_images(model: DiffusionViT | Guard) -> bool:
    """Whether the guard of ``model`` reads the patch statistics."""
    return model.uses_images if isinstance(model, Guard) else model.config.variant != "features"


def summary_vector(model: DiffusionViT | Guard, inputs: WindowInputs) -> Tensor:
    """The (B, k) vector the guard compares: features, acquisition, patch statistics."""
    feats = ((inputs.features.to(model.feat_mean) - model.feat_mean) / model.feat_std)
    # asinh: heavy-tailed features (ratios, kurtosis) would otherwise dominate the
    # covariance; in the core (|z| < 1) it is the identity.
    parts = [torch.asinh(feats), inputs.acquisition.to(model.feat_mean)]
    if uses_images(model):
        stats = inputs.stats
        if stats is None:
            raise ValueError("inputs carry no patch statistics: make them with prepare()")
        parts.append(stats.to(model.feat_mean))
    return torch.nan_to_num(torch.cat(parts, dim=1), nan=0.0, posinf=50.0, neginf=-50.0)


@torch.no_grad()
def distance(model: DiffusionViT | Guard, inputs: WindowInputs) -> Tensor:
    """Mahalanobis distance (B,) of each window from the training windows."""
    v = summary_vector(model, inputs) - model.ood_mean
    return (v @ model.ood_whiten).norm(dim=1)


@torch.no_grad()
def flag(model: DiffusionViT | Guard, inputs: WindowInputs, mu: Tensor) -> Tensor:
    """True (B,) for windows unlike training, by their inputs or their predicted log D* ``mu``."""
    d = distance(model, inputs).to(mu.device)
    lo, hi = model.ood_log_d_range.tolist()
    anchor = inputs.features[:, ANCHOR].to(mu.device)
    out = (d > float(model.ood_threshold)) | (anchor > float(model.ood_anchor_high))
    if uses_images(model) and inputs.stats is not None:
        st = inputs.stats.to(mu.device)
        rng = model.ood_stats_range.to(mu.device)
        enough = inputs.valid.to(mu.device).sum(1) >= 2  # else no statistics (0)
        out = out | (((st < rng[0]) | (st > rng[1])).any(dim=1) & enough)
    return out | (mu < lo) | (mu > hi) | ~torch.isfinite(mu)


@torch.no_grad()
def fit_guard(
    model: DiffusionViT,
    sample: Callable[[], WindowInputs],
    n_windows: int = 16384,
    quantile: float = DISTANCE_QUANTILE,
    tail: float = PREDICTION_TAIL,
) -> dict[str, Any]:
    """Fit the guard's buffers on fresh training windows; return what the card records.

    Parameters
    ----------
    model : DiffusionViT
        The trained model (its feature standardisation is used), in eval mode.
    sample : callable
        Returns one batch of inputs from the training distribution (small batches,
        e.g. :data:`FIT_BATCH` windows: each batch is one acquisition).
    n_windows : int
        Windows for the mean and covariance, and as many again, fresh, for the
        thresholds (so the quantiles are not those of the fitted sample).
    quantile : float
        Quantile of the Mahalanobis distance used as the threshold.
    tail : float
        Fraction of predictions below the low and above the high end of the range.

    Returns
    -------
    dict
        ``threshold``, ``quantile``, ``log_d_star_low``/``high``, ``windows``, and the
        fraction of the threshold windows flagged.
    """
    model.eval()

    model.ood_anchor_high.fill_(math.inf)
    model.ood_stats_range[0].fill_(-math.inf)
    model.ood_stats_range[1].fill_(math.inf)

    def collect(n: int) -> tuple[Tensor, Tensor, list[WindowInputs]]:
        vs, mus, kept = [], [], []
        got = 0
        while got < n:
            x = sample()
            x = x.to(model.feat_mean.device)
            mu, _ = model(x.images, x.geometry, x.valid, x.features, x.acquisition)
            vs.append(summary_vector(model, x).double())
            mus.append(mu.double())
            kept.append(x)
            got += len(x)
        return torch.cat(vs), torch.cat(mus), kept

    v, _, _ = collect(n_windows)
    mean = v.mean(0)
    cov = torch.cov((v - mean).T)
    k = cov.shape[0]
    cov = cov + torch.diag(1e-3 * cov.diagonal().clamp_min(0.0) + 1e-6)
    chol = torch.linalg.cholesky(cov)
    whiten = torch.linalg.solve_triangular(chol, torch.eye(k, dtype=cov.dtype,
                                                           device=cov.device), upper=False).T
    model.ood_mean.copy_(mean.to(model.ood_mean))
    model.ood_whiten.copy_(whiten.to(model.ood_whiten))
    v2, mu2, batches = collect(n_windows)
    d2 = ((v2 - mean) @ whiten).norm(dim=1)
    thr = float(torch.quantile(d2, quantile))
    lo = float(torch.quantile(mu2, tail))
    hi = float(torch.quantile(mu2, 1.0 - tail))
    model.ood_threshold.fill_(thr)
    model.ood_log_d_range.copy_(torch.tensor([lo, hi], dtype=model.ood_log_d_range.dtype))
    anchors = torch.cat([x.features[:, ANCHOR] for x in batches]).double()
    anchor_hi = float(torch.quantile(anchors, 1.0 - tail))
    model.ood_anchor_high.fill_(anchor_hi)
    stats_lo: list[float] = []
    stats_hi: list[float] = []
    if uses_images(model):
        # Windows with fewer than 2 points (a particle bleached at once) are no windows
        # a tracker would send; their statistics are undefined (0).
        st = torch.cat([x.stats[x.valid.sum(1) >= 2] for x in batches
                        if x.stats is not None]).double()
        q_lo = torch.quantile(st, STATS_TAIL, dim=0)
        q_hi = torch.quantile(st, 1.0 - STATS_TAIL, dim=0)
        pad = torch.tensor(STATS_MARGIN, dtype=st.dtype) * (q_hi - q_lo)
        stats_lo = (q_lo - pad).tolist()
        stats_hi = (q_hi + pad).tolist()
        model.ood_stats_range.copy_(torch.tensor([stats_lo, stats_hi],
                                                 dtype=model.ood_stats_range.dtype))
    flagged = torch.cat([flag(model, x, model(x.images, x.geometry, x.valid, x.features,
                                                x.acquisition)[0]) for x in batches])
    return {"threshold": thr, "quantile": quantile, "prediction_tail": tail,
            "log_d_star_low": lo, "log_d_star_high": hi,
            "d_star_low": math.exp(lo), "d_star_high": math.exp(hi),
            "log_anchor_high": anchor_hi,
            "stats_tail": STATS_TAIL, "stats_margin": list(STATS_MARGIN),
            "stats_low": stats_lo, "stats_high": stats_hi,
            "windows": int(v.shape[0]), "summary_dims": int(k),
            "flagged_fraction_on_training_windows": float(flagged.float().mean())}
