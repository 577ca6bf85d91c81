"""The window estimator: D with a 90 % interval, and the method that made it, for every window.

This is the one place that decides how a window is estimated, for every caller
(the live stream, ``AnalyzeTracks``, and later track files and batch runs):

* the resident transformer when one is given, the window length is one it takes
  (:data:`MIN_MODEL_WINDOW` .. its ``max_frames`` points) and, for a model that
  reads images, the windows carry their patches; its estimates say
  ``method = vit:<model name>``;
* otherwise the covariance-based estimator (CVE), vectorized over windows that
  share a pattern of frames: sigma known from the track's own step history once
  the track has enough of it (``method = cve:track-sigma``,
  :mod:`livespt.server.pipeline.track_noise`), before that sigma unknown (or the
  fitted precision, for callers that trust it) with ``method = cve``;
* a window the model would take but whose inputs look unlike the model's
  training windows (the out-of-distribution guard of :mod:`livespt.models.vit.ood`,
  stored with the weights) gets the CVE path above, its ``method`` suffixed
  with ``:ood`` (``cve:ood``, ``cve:track-sigma:ood``), and is counted in
  :attr:`WindowEstimator.n_ood`;
* a window of a track on which the model's answers have disagreed with the
  sigma-unknown CVE on the same windows, beyond the CVE's noise and by more than
  25 % (:mod:`livespt.server.pipeline.model_check`), gets the CVE path too, its
  ``method`` suffixed with ``:model-bias``, and is counted in
  :attr:`WindowEstimator.n_model_bias`;
* a track-sigma window of a session in which the track-sigma CVE has been found to
  vary more than the sigma-unknown CVE on the same windows
  (:class:`~livespt.server.pipeline.model_check.TrackSigmaCheck`) gets the
  sigma-unknown CVE, ``method = cve:sigma-check``, counted in
  :attr:`WindowEstimator.n_sigma_check`; track-sigma windows' intervals are widened by
  the track's step over-dispersion (``DueWindows.dispersion_track``).

The caller reports ended tracks with :meth:`WindowEstimator.drop`.

Why a model is not used is said once, in :attr:`WindowEstimator.warnings`. All
px/um conversions of the model's inputs go through :mod:`livespt.models.units`
(here for the patch centres, in :func:`livespt.models.vit.inputs.prepare` for the
rest).

Costs: the CVE path is a few numpy calls per distinct frame pattern (windows
without gaps share one); the model path is one batched forward pass, shared with
other sessions through the model's dynamic batcher.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray

from livespt.models import _validate
from livespt.models.estimators import cve_batch, cve_d_windows, noise_spread_samples
from livespt.models.units import pixel_centre_um, px_to_um
from livespt.models.vit.inputs import prepare
from livespt.server.pipeline.model_check import METHOD_SUFFIX as MODEL_BIAS_SUFFIX
from livespt.server.pipeline.model_check import (
    TRACK_SIGMA_SUFFIX,
    ModelCheck,
    NoiseSpread,
    TrackSigmaCheck,
)
from livespt.server.pipeline.records import WindowEstimate
from livespt.server.pipeline.windows import DueWindows, WindowConfig

if TYPE_CHECKING:
    from livespt.server.inference.resident import ResidentModel

MIN_MODEL_WINDOW = 5
"""Shortest window (points) given to a model; shorter ones use the CVE."""

TRACK_SIGMA_METHOD = "cve:track-sigma"
"""``method`` of CVE windows that used their track's own noise estimate."""

OOD_SUFFIX = ":ood"
"""Appended to the CVE ``method`` of windows the model's out-of-distribution guard rejected."""

NOMINAL_PIXEL_UM = 0.1
NOMINAL_PSF_SIGMA_PX = 1.15
"""Units a features-only model works in when the caller knows no pixel size.

Tracks sent without images (``AnalyzeTracks``, track files) may come without a
pixel size. The features model is dimensionless apart from the localization
precision and PSF width it is told in pixels; these nominal values are the
centre of its training distribution, so it sees inputs of the kind it was
trained on. Image models always need the true pixel size.
"""


@dataclass(frozen=True)
class Acquisition:
    """What the estimator needs to know about the acquisition, in physical units.

    Attributes
    ----------
    frame_interval_s : float
        Time between frames, s (> 0).
    exposure_s : float
        Exposure per frame, s (0 < exposure <= interval; sets the blur coefficient).
    pixel_size_um : float or None
        Pixel size, um; None when unknown (tracks without images).
    psf_sigma_um : float or None
        PSF standard deviation, um; None: the nominal value for the pixel size.
    """

    frame_interval_s: float
    exposure_s: float
    pixel_size_um: float | None = None
    psf_sigma_um: float | None = None

    def __post_init__(self) -> None:
        _validate.exposure_and_interval(self.exposure_s, self.frame_interval_s)
        if self.pixel_size_um is not None:
            _validate.positive("pixel_size_um", self.pixel_size_um)
        if self.psf_sigma_um is not None:
            _validate.positive("psf_sigma_um", self.psf_sigma_um)


class WindowEstimator:
    """Estimates D over sliding windows with the resident model or the CVE.

    Parameters
    ----------
    window : WindowConfig
        Window length (points) and stride.
    acquisition : Acquisition
        Frame interval, exposure, pixel size and PSF width.
    model : ResidentModel, optional
        A resident transformer; None: every window is estimated with the CVE.
    use_fitted_sigma : bool
        CVE only, for windows whose track has no noise estimate of its own
        (``DueWindows.sigma_track_um`` NaN or absent). True: sigma-known CVE with
        the window's mean fitted precision (sigma unknown when a point has none);
        False: the sigma-unknown CVE, unbiased whatever the precision estimates
        are. Windows with a track noise estimate always use the sigma-known CVE
        with it, its variance added to the interval; their ``method`` is
        ``cve:track-sigma`` (see :mod:`livespt.server.pipeline.track_noise`).
    model_check : bool
        Compare the model's answers with the sigma-unknown CVE per track and per
        session and let the CVE answer where they disagree
        (:mod:`livespt.server.pipeline.model_check`); False only to study a model alone.

    Attributes
    ----------
    model : ResidentModel or None
        The model actually used (None when it cannot take these windows).
    warnings : list of str
        Why a given model is not used, for the session summary and the client.
    n_ood : int
        Windows the model's out-of-distribution guard sent to the CVE so far
        (their ``method`` ends in ``:ood``).
    n_model : int
        Windows given to the model so far (those answered by it plus ``n_ood`` and
        ``n_model_bias``).
    n_model_bias : int
        Windows the model check (:mod:`.model_check`, per track or per session) sent to
        the CVE (their ``method`` ends in ``:model-bias``).
    check : ModelCheck
        The per-track and per-session comparison of the model with the CVE.
    sigma_check : TrackSigmaCheck
        The per-session comparison of the track-sigma with the sigma-unknown CVE.
    n_sigma_check : int
        Track-sigma windows given the sigma-unknown CVE after that check switched
        (``method = cve:sigma-check``).
    noise_spread : NoiseSpread
        The session's spread of the windows' noise around their track's, added to
        the track-sigma windows' sigma^2 variance.
    """

    def __init__(self, window: WindowConfig, acquisition: Acquisition,
                 model: ResidentModel | None = None, use_fitted_sigma: bool = True,
                 model_check: bool = True) -> None:
        self.window = window
        self.acquisition = acquisition
        self.use_fitted_sigma = use_fitted_sigma
        self.warnings: list[str] = []
        self.n_ood = 0
        self.n_model = 0
        self.n_model_bias = 0
        self.check = ModelCheck(window.length)
        self.model_check = model_check
        self.sigma_check = TrackSigmaCheck(window.length)
        self.n_sigma_check = 0
        self.noise_spread = NoiseSpread(window.length)
        if model is not None and not (MIN_MODEL_WINDOW <= window.length <= model.max_frames):
            self.warnings.append(
                f"window.length {window.length} is outside the {MIN_MODEL_WINDOW}.."
                f"{model.max_frames} points model {model.name} takes: "
                "windows are estimated with the CVE")
            model = None
        if (model is not None and model.variant != "features"
                and acquisition.pixel_size_um is None):
            self.warnings.append(
                f"model {model.name} reads images and needs pixel_size_um: "
                "windows are estimated with the CVE")
            model = None
        self.model = model

    def drop(self, track_id: int) -> None:
        """Forget a track that ended (its model and track-sigma checks)."""
        self.check.drop(track_id)
        self.sigma_check.drop(track_id)
        self.noise_spread.drop(track_id)

    @property
    def method(self) -> str:
        """The ``method`` of the estimates (``vit:<name>`` or ``cve``)."""
        return self.model.method if self.model is not None else "cve"

    @property
    def patch_px(self) -> int | None:
        """Side of the image patch each point needs (pixels); None when no images are read."""
        if self.model is None or self.model.variant == "features":
            return None
        return self.model.patch_px

    def estimate(self, due: DueWindows) -> list[WindowEstimate]:
        """D with a 90 % interval for every window, in input order.

        Parameters
        ----------
        due : DueWindows
            M windows of ``window.length`` points: frames, x/y/precision in um,
            and, for an image model, one patch per point.

        Returns
        -------
        list of WindowEstimate
            One per window; ``method`` names the model or ``cve``.
        """
        if len(due) == 0:
            return []
        if self.model is None or (self.patch_px is not None and due.patches is None):
            return self._cve(due)
        return self._model(due)

    # ------------------------------------------------------------- the model
    def _model(self, due: DueWindows) -> list[WindowEstimate]:
        model = self.model
        assert model is not None
        acq = self.acquisition
        px = acq.pixel_size_um if acq.pixel_size_um is not None else NOMINAL_PIXEL_UM
        psf = (acq.psf_sigma_um if acq.psf_sigma_um is not None
               else px_to_um(NOMINAL_PSF_SIGMA_PX, px))
        m, length = due.frames.shape
        loc = due.values[:, :, :2]
        if self.patch_px is None:
            images = torch.zeros((m, length, 3, 3))  # a features model reads no images
        else:
            assert due.patches is not None
            images = torch.from_numpy(np.asarray(due.patches, dtype=np.float32))
        inputs = prepare(
            images, torch.from_numpy(pixel_centre_um(loc, px)), torch.from_numpy(loc),
            torch.from_numpy(np.ascontiguousarray(due.values[:, :, 2])),
            torch.from_numpy(due.frames), torch.ones((m, length), dtype=torch.bool),
            pixel_size_um=px, frame_interval_s=acq.frame_interval_s,
            exposure_s=acq.exposure_s, psf_sigma_um=psf, patch_norm=model.patch_norm)
        pred, ood = model.estimate_guarded(inputs, px, acq.frame_interval_s)
        records = window_records(due.track_ids, due.frames, pred.d_um2_s, pred.d_low_um2_s,
                                 pred.d_high_um2_s, model.method)
        self.n_model += m
        # The track-level check: the model's answers against the sigma-unknown CVE on
        # the same windows (model_check.py); guarded windows are not the model's.
        ok = ~np.asarray(ood, dtype=bool)
        if ok.any() and self.model_check:
            idx = np.flatnonzero(ok)
            idx = idx[self.check.counted(due.track_ids[idx], due.frames[idx, 0])]
            self.check.update(due.track_ids[idx], due.frames[idx, 0],
                              np.asarray(pred.d_um2_s, dtype=np.float64)[idx],
                              cve_d_windows(due.values[idx, :, :2], due.frames[idx],
                                            self.acquisition.frame_interval_s))
        biased = ok & self.check.flagged(due.track_ids)
        for mask, suffix in ((np.asarray(ood, dtype=bool), OOD_SUFFIX),
                             (biased, MODEL_BIAS_SUFFIX)):
            if not mask.any():
                continue
            # The CVE answers, as it would without a model.
            idx = np.flatnonzero(mask)
            for i, rec in zip(idx.tolist(), self._cve(due.subset(idx)), strict=True):
                records[i] = dataclasses.replace(rec, method=rec.method + suffix)
            if suffix == OOD_SUFFIX:
                self.n_ood += int(idx.size)
            else:
                self.n_model_bias += int(idx.size)
        return records

    # --------------------------------------------------------------- the CVE
    def _cve(self, due: DueWindows) -> list[WindowEstimate]:
        """CVE estimates, grouped by frame pattern for vectorized calls."""
        frames, values = due.frames, due.values
        m = len(due)
        d, lo, hi = np.empty(m), np.empty(m), np.empty(m)
        methods = np.full(m, "cve", dtype=object)
        tsig = (due.sigma_track_um if due.sigma_track_um is not None else np.full(m, np.nan))
        tvar = (due.sigma2_track_var_um4 if due.sigma2_track_var_um4 is not None
                else np.full(m, np.nan))
        has_track = np.isfinite(tsig) & np.isfinite(tvar)
        # Heavier-tailed steps than Gaussian: the track's own over-dispersion widens its
        # windows' intervals (never narrows them).
        tphi = (np.fmax(due.dispersion_track, 1.0) if due.dispersion_track is not None
                else np.ones(m))
        tphi = np.where(np.isfinite(tphi), tphi, 1.0)
        # The track's whole-history D: where the sigma-known CVE weighs its two moments
        # (track_noise.py); None (no D known): squared steps only.
        td = due.d_track_um2_s
        if td is not None:
            td = np.where(np.isfinite(td), np.maximum(td, 0.0), np.nan)
        acq = self.acquisition
        for pattern, in_group in _frame_patterns(frames):
            # Windows whose track knows its own noise: sigma-known CVE with it.
            members = np.flatnonzero(in_group & has_track)
            if members.size and not self.sigma_check.flagged:
                xy = values[members][:, :, :2]
                dref = None
                if td is not None and np.all(np.isfinite(td[members])):
                    dref = td[members]
                    # How far do windows' noise levels stray from their track's? (the
                    # two moments disagree by that much; model_check.NoiseSpread)
                    sel = self.noise_spread.counted(due.track_ids[members], frames[members, 0])
                    if sel.any():
                        self.noise_spread.update(
                            due.track_ids[members[sel]], frames[members[sel], 0],
                            noise_spread_samples(
                                xy[sel], acq.frame_interval_s, pattern,
                                exposure_s=acq.exposure_s, sigma_um=tsig[members[sel]],
                                weight_at_d_um2_s=dref[sel],
                                sigma2_var_um4=tvar[members[sel]]))
                est = cve_batch(xy, acq.frame_interval_s, pattern,
                                exposure_s=acq.exposure_s, sigma_um=tsig[members],
                                sigma2_var_um4=tvar[members] + self.noise_spread.variance_um4(),
                                dispersion=tphi[members], weight_at_d_um2_s=dref)
                # Does the track sigma help on this data? (model_check.TrackSigmaCheck;
                # the sigma-unknown CVE only for the windows it counts)
                sel = self.sigma_check.counted(due.track_ids[members], frames[members, 0])
                if sel.any():
                    self.sigma_check.update(
                        due.track_ids[members[sel]], frames[members[sel], 0],
                        est.d_um2_s[sel],
                        cve_d_windows(xy[sel], frames[members[sel]], acq.frame_interval_s))
            if members.size and self.sigma_check.flagged:
                # The session found the track sigma varies more: the sigma-unknown CVE.
                est = cve_batch(values[members][:, :, :2], acq.frame_interval_s, pattern,
                                exposure_s=acq.exposure_s, sigma_um=None)
                methods[members] = "cve" + TRACK_SIGMA_SUFFIX
                self.n_sigma_check += int(members.size)
            elif members.size:
                methods[members] = TRACK_SIGMA_METHOD
            if members.size:
                d[members], lo[members], hi[members] = (est.d_um2_s, est.d_low_um2_s,
                                                        est.d_high_um2_s)
            members = np.flatnonzero(in_group & ~has_track)
            if members.size == 0:
                continue
            arr = values[members]
            sigma = arr[:, :, 2].mean(axis=1) if self.use_fitted_sigma else None
            if sigma is not None and not np.all(np.isfinite(sigma)):
                sigma = None  # a point without a fitted precision: sigma unknown
            est = cve_batch(arr[:, :, :2], acq.frame_interval_s, pattern,
                            exposure_s=acq.exposure_s, sigma_um=sigma)
            d[members], lo[members], hi[members] = est.d_um2_s, est.d_low_um2_s, est.d_high_um2_s
        return window_records(due.track_ids, frames, d, lo, hi, methods.tolist())


def _frame_patterns(frames: NDArray[np.int64]) -> list[tuple[NDArray[np.int64], NDArray[np.bool_]]]:
    """Windows grouped by the shape of their frames (relative to their first frame).

    Windows of one shape share the CVE's variance coefficients, so each group is
    estimated in one vectorized call. Returns ``(pattern, mask)`` per group.
    """
    patterns, group = np.unique(frames - frames[:, :1], axis=0, return_inverse=True)
    group = group.reshape(-1)
    return [(pattern, group == g) for g, pattern in enumerate(patterns)]


def window_records(
    track_ids: NDArray[np.int64],
    frames: NDArray[np.int64],
    d_um2_s: NDArray[np.float64],
    d_low_um2_s: NDArray[np.float64],
    d_high_um2_s: NDArray[np.float64],
    method: str | list[str],
) -> list[WindowEstimate]:
    """One :class:`WindowEstimate` per window from arrays of shape (M,) (frames: (M, L)).

    ``method`` is one for all windows or one per window.
    """
    n = len(np.asarray(track_ids))
    methods = [method] * n if isinstance(method, str) else method
    return [
        WindowEstimate(track_id=t, frame_start=a, frame_end=b, d_um2_s=x, d_low_um2_s=y,
                       d_high_um2_s=z, method=mth)
        for t, a, b, x, y, z, mth in zip(
            np.asarray(track_ids).tolist(), frames[:, 0].tolist(), frames[:, -1].tolist(),
            np.asarray(d_um2_s).tolist(), np.asarray(d_low_um2_s).tolist(),
            np.asarray(d_high_um2_s).tolist(), methods, strict=True)
    ]

