"""Localization with uncertainty of whole frames: settings, checks, and the outputs' units.

The one home of what ``livespt localize`` (in this process) and the ``Localize`` RPC (on a
server) share: the settings and their allowed ranges, the check of the frames, and the
conversion of the localizer's samples (:mod:`livespt.models.ddpm`) to what users get:

* the mean and the per-pixel variance of the KDE samples, on the localizer's grid
  (``upsample`` fine pixels per camera pixel; fine pixel ``k`` centred at
  ``((k + 1/2) / upsample - 1/2)`` camera pixels);
* emitters, one row each (:data:`EMITTER_COLUMNS`), found on phi's estimate of the mean
  KDE (:data:`~livespt.models.ddpm.localizer.EMITTERS_FROM`): frame, position and its
  standard deviation over the samples in micrometres (pixel ``(i, j)`` centred at
  ``(j, i) * pixel_size_um``), photons above the background in a 5 x 5 px box
  (:func:`~livespt.models.localize.photometry.box_photons`; only with the camera's offset
  and gain, else empty and a warning), and the estimated mean KDE value at the peak.

How the samples are drawn is given as a function, so the same code runs on a model held
in this process or on the server's resident, batched one.

**What the model was trained on is checked, not assumed** (:class:`TrainedOn`, from the
weights' card): the frames' PSF width (``PSF_WIDTH``) and, with a calibrated camera, the
emitters' photons (``OUTSIDE_TRAINING``) are compared with the training ranges, and a
call whose data lie outside them is warned of, naming what to change. The PSF width is
the median fitted Gaussian SD (:func:`psf_sd_px`) of the spots the classical detector
finds, at two LoG scales (1 and 2 px, the one with more converged fits), so a PSF twice
the training width is measured rather than missed; on our simulator it reads 0.61, 0.94,
1.18 and 1.46 px for PSFs of 0.6, 0.92, 1.2 and 1.5 px (16 frames of 1-5 emitters of 200
photons; tests/test_localize_serving.py). With fewer than :data:`PSF_MIN_SPOTS` converged fits in
a call there is no verdict and no warning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from livespt.models.ddpm.emitters import locate_emitters
from livespt.models.localize.photometry import box_photons
from livespt.server.pipeline.detect import DetectorConfig, detect

MAX_SAMPLES = 256
"""Most samples per frame."""
MAX_STEPS = 100
"""Most steps of the fast sampler (the schedule's ``T``)."""
MIN_FRAME_PX = 8
"""Smallest frame side, pixels."""
SAMPLERS = ("fast", "ancestral")
"""``fast``: DDIM steps evenly spaced in log SNR; ``ancestral``: the seed's 100 steps."""

PSF_MIN_SPOTS = 10
"""Converged spot fits a call needs for a verdict on the PSF width."""
PSF_TOLERANCE = 1.1
"""A median PSF SD outside the training range by more than this factor is warned of (in
the tests the median of 20-40 fits reads within 2-4 % of the true width: module
docstring)."""
PSF_SCALES_PX = (1.0, 2.0)
"""LoG scales (PSF SD, camera px) at which spots are detected for the width check."""

EMITTER_COLUMNS = ("frame", "x_um", "y_um", "x_sd_um", "y_sd_um", "photons", "peak")
"""Columns of ``emitters.csv`` and of :attr:`Localization.emitters`."""


@dataclass(frozen=True)
class LocalizeSettings:
    """How frames are localized.

    Attributes
    ----------
    pixel_size_um : float
        Camera pixel in the sample, micrometres, in (0, 100].
    samples : int
        KDE samples per frame, 2 to :data:`MAX_SAMPLES` (their spread is the uncertainty).
    sampler : str
        One of :data:`SAMPLERS`.
    steps : int
        Steps of the fast sampler, 1 to :data:`MAX_STEPS` (ignored by ``ancestral``).
    seed : int
        Seed of the samples, >= 0 (frame ``k`` of the movie draws from ``(seed, k)``).
    threshold : float
        Smallest mean KDE value of an emitter, in (0, 1].
    offset_adu, gain_adu_per_e : float or None
        Camera offset (ADU) and gain (ADU per photo-electron, > 0); both are needed for
        photons, neither for positions (the networks normalise each frame).
    """

    pixel_size_um: float
    samples: int = 32
    sampler: str = "fast"
    steps: int = 20
    seed: int = 0
    threshold: float = 0.3
    offset_adu: float | None = None
    gain_adu_per_e: float | None = None
    names: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    """How each field is called where it came from (a flag on the command line)."""

    def __post_init__(self) -> None:
        def name(f: str) -> str:
            return self.names.get(f, f)

        def number(f: str, v: Any, lo: float, hi: float, unit: str = "") -> None:
            if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"{name(f)} must be in [{lo:g}, {hi:g}]{unit}, got {v!r}")

        if not (isinstance(self.pixel_size_um, (int, float)) and math.isfinite(
                self.pixel_size_um) and 0 < self.pixel_size_um <= 100):
            raise ValueError(f"{name('pixel_size_um')} must be in (0, 100] um, "
                             f"got {self.pixel_size_um!r}")
        number("samples", self.samples, 2, MAX_SAMPLES)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"{name('sampler')} must be one of {', '.join(SAMPLERS)}, "
                             f"got {self.sampler!r}")
        number("steps", self.steps, 1, MAX_STEPS)
        number("seed", self.seed, 0, 2 ** 63 - 1)
        if not (isinstance(self.threshold, (int, float)) and 0 < self.threshold <= 1):
            raise ValueError(f"{name('threshold')} must be in (0, 1] (mean KDE value), "
                             f"got {self.threshold!r}")
        if self.offset_adu is not None:
            number("offset_adu", self.offset_adu, -1e9, 1e9, " ADU")
        if self.gain_adu_per_e is not None and not (
                math.isfinite(self.gain_adu_per_e) and 0 < self.gain_adu_per_e <= 1e4):
            raise ValueError(f"{name('gain_adu_per_e')} must be in (0, 10000] ADU per "
                             f"electron, got {self.gain_adu_per_e!r}")


def check_frames(frames: Any, name: str = "frames") -> NDArray[np.float32]:
    """Frames as float32 ``(T, H, W)``: a 2-D frame becomes one; every value finite.

    Parameters
    ----------
    frames : array_like, shape (T, H, W) or (H, W)
        Camera frames (ADU), any real dtype.
    name : str
        What the caller calls them, for the error message.

    Returns
    -------
    ndarray of float32, shape (T, H, W)

    Raises
    ------
    ValueError
        A wrong rank, a side below :data:`MIN_FRAME_PX`, no frame, or a NaN or infinity
        (with the first frame that holds one).
    """
    arr = np.asarray(frames)
    if arr.dtype.kind not in "uif":
        raise ValueError(f"{name}: pixel type must be integer or floating point, got "
                         f"{arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must be (frames, height, width), got shape {arr.shape}")
    t, h, w = arr.shape
    if t == 0:
        raise ValueError(f"{name}: no frame")
    if h < MIN_FRAME_PX or w < MIN_FRAME_PX:
        raise ValueError(f"{name}: frames must be at least {MIN_FRAME_PX} x {MIN_FRAME_PX} "
                         f"pixels, got {h} x {w}")
    out = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(out).reshape(t, -1).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: frame {int(np.argmax(bad))} holds NaN or infinite values")
    return out


def output_bytes(n_frames: int, height: int, width: int, upsample: int) -> int:
    """Bytes of the two float32 maps of ``n_frames`` frames (mean and variance)."""
    return 2 * 4 * n_frames * height * width * upsample * upsample


Drawn = tuple[NDArray[np.float32], NDArray[np.float32]]
"""KDE samples ``(T, samples, uH, uW)`` and phi's estimate of their mean ``(T, uH, uW)``."""
Draw = Callable[[NDArray[np.float32], LocalizeSettings, int], Drawn]
"""``draw(frames, settings, first_frame)`` -> :data:`Drawn`."""


@dataclass(frozen=True)
class TrainedOn:
    """Ranges of the localizer's training data that users' data are checked against.

    Attributes
    ----------
    photons : (float, float) or None
        Photons per emitter (None: unknown, not checked).
    psf_sd_px : (float, float) or None
        Gaussian PSF standard deviation, camera pixels (None: unknown, not checked).
    """

    photons: tuple[float, float] | None = None
    psf_sd_px: tuple[float, float] | None = None

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> TrainedOn:
        """The ranges a weights card records (``training.data``), where it records them."""
        data = card.get("training", {}).get("data", {})

        def pair(key: str) -> tuple[float, float] | None:
            v = data.get(key)
            return (float(v[0]), float(v[1])) if v else None

        return cls(photons=pair("i0_range"), psf_sd_px=pair("sigma_x_range"))


def psf_sd_px(frames: Any, offset_adu: float | None = None,
              gain_adu_per_e: float | None = None) -> tuple[float, int]:
    """Median fitted Gaussian SD of the spots in ``frames``, camera pixels.

    Spots are found and fitted by :func:`~livespt.server.pipeline.detect.detect` at each
    LoG scale of :data:`PSF_SCALES_PX` (fit window 4 scales either side); the scale with
    more converged fits is used.

    Parameters
    ----------
    frames : array_like, shape (T, H, W)
        Camera frames, ADU.
    offset_adu, gain_adu_per_e : float, optional
        Camera offset and gain; unknown, the frame's 1st percentile is taken as the
        offset and a gain of 1 (the width does not depend on them; the fit's weights do,
        a little).

    Returns
    -------
    (float, int)
        The median SD (NaN without a converged fit) and the number of fits it is from.
    """
    x = check_frames(frames)
    best: list[float] = []
    for scale in PSF_SCALES_PX:
        widths: list[float] = []
        for frame in x:
            off = (float(np.percentile(frame, 1)) if offset_adu is None
                   else float(offset_adu))
            cfg = DetectorConfig(radius_px=math.sqrt(2) * scale,
                                 fit_window_px=2 * math.ceil(4 * scale) + 1,
                                 offset_adu=off, gain_adu_per_e=gain_adu_per_e or 1.0)
            spots = detect(frame, cfg)
            widths += spots.sigma_px[spots.converged].tolist()
        if len(widths) > len(best):
            best = widths
    return (float(np.median(best)) if best else math.nan), len(best)


def _psf_warning(frames: NDArray[np.float32], settings: LocalizeSettings,
                 trained: tuple[float, float], span: str) -> tuple[str, str] | None:
    """``PSF_WIDTH`` when the frames' PSF lies outside the training range (else None)."""
    sd, n = psf_sd_px(frames, settings.offset_adu, settings.gain_adu_per_e)
    lo, hi = trained
    if n < PSF_MIN_SPOTS or lo / PSF_TOLERANCE <= sd <= hi * PSF_TOLERANCE:
        return None
    b = round(sd / (0.5 * (lo + hi)))
    if sd < lo:
        fix = "to use it, acquire at a smaller pixel size (more magnification)"
    elif b >= 2 and lo / PSF_TOLERANCE <= sd / b <= hi * PSF_TOLERANCE:
        fix = f"to use it, bin the camera pixels {b} x {b} (and the pixel size by {b})"
    else:
        fix = "it needs training on frames of this PSF width (no binning brings it in range)"
    return ("PSF_WIDTH", f"in {span}, the spots' median PSF SD is {sd:.2f} px ({n} fits); "
            f"the localizer was trained on {lo:g} to {hi:g} px: its emitters, positions and "
            f"uncertainties are not validated here; {fix}")


@dataclass
class Localization:
    """Maps and emitters of consecutive frames.

    Attributes
    ----------
    mean, variance : ndarray of float32, shape (T, upsample H, upsample W)
        Mean and variance of the KDE samples.
    emitters : DataFrame
        Columns :data:`EMITTER_COLUMNS`; ``frame`` counts from the movie's first frame.
    upsample : int
        Fine pixels per camera pixel.
    warnings : list of (str, str)
        ``(code, message)``.
    """

    mean: NDArray[np.float32]
    variance: NDArray[np.float32]
    emitters: pd.DataFrame
    upsample: int
    warnings: list[tuple[str, str]] = field(default_factory=list)


def localize_frames(draw: Draw, frames: Any, settings: LocalizeSettings, upsample: int,
                    sigma_y_px: float, first_frame: int = 0,
                    trained_on: TrainedOn | None = None) -> Localization:
    """Localize frames: samples drawn by ``draw``, read out into maps and emitters.

    Parameters
    ----------
    draw : callable
        See :data:`Draw`.
    frames : array_like, shape (T, H, W) or (H, W)
        Camera frames, ADU.
    settings : LocalizeSettings
        Samples, sampler, threshold, pixel size and camera.
    upsample : int
        The localizer's fine pixels per camera pixel.
    sigma_y_px : float
        The localizer's KDE kernel, fine pixels.
    first_frame : int
        Number of the first frame in the movie (names rows and seeds the samples).
    trained_on : TrainedOn, optional
        The localizer's training ranges: the frames' PSF width and the emitters' median
        photons outside them are warned of (module docstring).

    Returns
    -------
    Localization
    """
    x = check_frames(frames)
    samples, estimate = draw(x, settings, first_frame)
    px = settings.pixel_size_um
    rows: list[dict[str, float]] = []
    calibrated = settings.gain_adu_per_e is not None and settings.offset_adu is not None
    for k, smp in enumerate(samples):
        em = locate_emitters(smp, upsample, sigma_y_px, settings.threshold, estimate[k])
        if calibrated and len(em.x_px):
            assert settings.gain_adu_per_e is not None and settings.offset_adu is not None
            frame_e = (x[k].astype(np.float64) - settings.offset_adu) / settings.gain_adu_per_e
            photons = box_photons(frame_e, em.x_px, em.y_px)
        else:
            photons = np.full(len(em.x_px), np.nan)
        for e in range(len(em.x_px)):
            rows.append({"frame": first_frame + k, "x_um": em.x_px[e] * px,
                         "y_um": em.y_px[e] * px, "x_sd_um": em.x_sd_px[e] * px,
                         "y_sd_um": em.y_sd_px[e] * px, "photons": photons[e],
                         "peak": em.peak[e]})
    table = pd.DataFrame(rows, columns=list(EMITTER_COLUMNS))
    table["frame"] = table["frame"].astype(np.int64)
    warnings: list[tuple[str, str]] = []
    n = settings.names
    trained = trained_on or TrainedOn()
    span = f"frames {first_frame}-{first_frame + len(x) - 1}"
    if trained.psf_sd_px is not None:
        psf = _psf_warning(x, settings, trained.psf_sd_px, span)
        if psf is not None:
            warnings.append(psf)
    if not calibrated:
        warnings.append(("PHOTONS", "photons are not reported: they need the camera's "
                         f"{n.get('offset_adu', 'offset_adu')} (ADU) and "
                         f"{n.get('gain_adu_per_e', 'gain_adu_per_e')} (ADU per electron)"))
    elif trained.photons is not None and len(table):
        med = float(np.nanmedian(table["photons"]))
        lo, hi = trained.photons
        if not lo / 2 <= med <= hi * 2:
            warnings.append(("OUTSIDE_TRAINING", f"in {span}, the emitters' median is "
                             f"{med:.0f} photons; "
                             f"the localizer was trained on {lo:g} to {hi:g}: its positions "
                             "and uncertainties are not validated here (check the camera "
                             "offset and gain)"))
    return Localization(mean=samples.mean(axis=1, dtype=np.float64).astype(np.float32),
                        variance=samples.var(axis=1, dtype=np.float64).astype(np.float32),
                        emitters=table, upsample=upsample, warnings=warnings)


def join_localizations(parts: list[Localization]) -> Localization:
    """Consecutive parts of one movie as one :class:`Localization` (each warning code once)."""
    if not parts:
        raise ValueError("join_localizations: no part")
    warnings: list[tuple[str, str]] = []
    for p in parts:  # the first of each code (later parts repeat it for their frames)
        warnings += [w for w in p.warnings if w[0] not in {c for c, _ in warnings}]
    return Localization(mean=np.concatenate([p.mean for p in parts]),
                        variance=np.concatenate([p.variance for p in parts]),
                        emitters=pd.concat([p.emitters for p in parts if len(p.emitters)]
                                           or [parts[0].emitters], ignore_index=True),
                        upsample=parts[0].upsample, warnings=warnings)
