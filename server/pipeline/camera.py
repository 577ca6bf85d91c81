"""The camera model a stream is analysed with: values, where each came from, and checks.

The detector converts counts to photo-electrons, ``(ADU - offset) / gain``, and
its per-spot precision follows from that photon count; so every number the
server reports depends on the camera's offset, gain and read noise. A value the
user did not give is a default, and a default may be plainly wrong for the
data (an 8-bit camera, a camera read with the offset already removed). This
module records, for each of the three, whether it was ``given``, ``estimated``
from the frames or is the ``default``, checks a frame against the model (when
most of the background lies below the offset in use, the photon counts are
meaningless and a warning names the field to set), and estimates the camera
from the movie itself.

Estimating the camera from the frames (photon transfer)
-------------------------------------------------------
A pixel with expected signal ``S`` photo-electrons reads, on average,
``mu = o + g S`` ADU with variance ``g^2 (S + r^2) + q``: gain ``g`` (ADU/e-),
offset ``o`` (ADU), read noise ``r`` (e-), and ``q = 1/12`` ADU^2 of rounding
for integer data. Eliminating ``S``::

    var = g (mu - o) + g^2 r^2 + q                      (the photon transfer line)

:func:`estimate_camera` measures that line on the movie's own background. The
frames are cut into tiles (8 x 8 px). For each tile and pair of consecutive
frames ``(t, t+1)`` the temporal variance is half the spatial variance of the
frame difference (static structure, the background's shape and a fixed-pattern
offset cancel; a change common to the tile, such as bleaching, is removed with
the difference's mean), and the tile's level is read from the two neighbouring
frames ``t-1`` and ``t+2``: their mean follows a linear drift exactly and its
noise is independent of the variance it is paired with (the level of the pair
itself would correlate with its variance through the third moment of Poisson
noise and give a slope even on a flat background); the level's remaining
noise, known from the model, is corrected for (errors in variables) instead of
flattening the slope. Left out, iteratively: points where a spot passes (the
variance or the pair's own level more than 4 standard deviations from the
line), with the neighbouring tiles and pairs (a spot's tails); tiles that lose
most of their pairs; and tiles whose mean image comes within 4 noise SDs (as
the line predicts them, not as the tile's noise happened to be) of the ADC
limits (0, the type's maximum, or a saturation level many pixels share), so
that clipping does not bias the variance. The line is fitted by weighted least
squares (weights from the model's variance of each point); standard errors
come from a bootstrap over tiles (200 replicates, seeded), which carries both
the correlation of a tile's pairs and any tile-to-tile heterogeneity (sCMOS
pixel maps).

What the frames identify, and what they cannot:

- **Gain**, the slope, only with a lever arm: tile levels that differ by more
  than their noise (a structured background, an illumination profile, bleaching
  over the frames). A flat background gives no slope; the gain is then reported
  as not identifiable (reliability of the levels below 0.5, or a relative
  standard error above 10 %) instead of a number. Bright-field images and dark
  particles on a flat bright background are the usual cases.
- **Offset and read noise** are not separately identifiable: the line's value
  at zero signal is ``g^2 r^2 - g o + q``, one number for two unknowns. Given
  the read noise (or assuming the one in use, 0 e- by default, and saying so)
  the offset follows; given the offset, the read noise follows. With 0 e-
  assumed the offset is a lower bound: the true one is ``g r^2`` ADU higher
  (one background photon per pixel per e-^2), which the photon counts of spots,
  measured above the local background, hardly feel. With a declared gain the
  offset needs no lever arm (a flat background gives it too). A dark movie
  (shutter closed) would separate offset and read noise; it is not used here.
- Data whose noise is below half an ADU (few counts per level, a low gain on
  8-bit data) are dominated by rounding and give no estimate; the reason says so.
- A variance that grows faster than linearly with the level (an over-dispersed
  background: flicker, blinking autofluorescence; or a non-linear camera)
  biases the slope up, by about ``2 cv^2 S`` for a background of ``S`` photons
  fluctuating by a fraction ``cv`` per pixel and frame. The gain is reported as
  not identifiable when the curvature is significant (> 3 standard errors) and
  changes the slope by more than 5 % across the levels; milder over-dispersion
  passes (cv 0.05 on 20 photons: +10 %, flagged in 1 of 6 simulated movies).
- With an EMCCD the slope is ``F^2 g`` (excess noise factor ``F^2`` near 2 at
  high EM gain): the photon-transfer gain, which describes the noise correctly
  but counts photons ``F^2`` times too low.
- A strongly curved drift (exponential bleaching over the frames read) is only
  followed to first order: -0.7 % on the gain for a background halving every
  10 frames.

Accuracy, measured (tests/test_camera.py and the same generators, 20 movies per
case, 128 x 128 px, 30 frames, background 8-50 photons per pixel, 10 moving
spots, read noise 1.5 e-): at gains 0.5, 2 and 10 ADU/e- and offsets 100 and
1000 ADU the gain's standard error is 0.9-1.0 % and its bias under 0.2 %; at
offset 0 the tiles near the ADC floor are left out, the standard error is
3.3-3.9 % and the bias +0.3 to +1.0 %. ``(estimate - truth) / se`` has mean
within 0.3 and SD 0.8-1.25 for the gain and for the offset (against the true
offset minus ``g r^2``); no movie of these 360 was flagged as not identifiable.

:func:`check_gain` compares a declared gain with the slope and warns, naming
the field, when they disagree by more than a factor 1.5 and more than 3
standard errors.

Costs: one percentile of one frame per :func:`check_frame` (a few ms for
512 x 512). :func:`estimate_camera` reads each frame once (up to 50 frames) and
keeps per-tile sums and one frame sum: about 0.5 s for 50 frames of 512 x 512
on one core (reading included, not the file's decoding), memory of a few
frames.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import binary_dilation

DEFAULT_OFFSET_ADU = 100.0
DEFAULT_GAIN_ADU_PER_E = 1.0
DEFAULT_READ_NOISE_E = 0.0

CAMERA_FIELDS = ("offset_adu", "gain_adu_per_e", "read_noise_e")
"""The camera model's quantities, as named in :attr:`CameraModel.source`."""

BELOW_OFFSET_LIMIT = 0.25
"""Largest fraction of a frame's pixels that may lie below the offset before it is flagged.

Background pixels scatter around ``offset + gain * background``; with shot and
read noise a few fall below the offset, but when a quarter of the frame does,
the offset in use is above the camera's baseline.
"""

QUANTIZATION_ADU2 = 1.0 / 12.0
"""Variance added by rounding to integer ADU (uniform over one ADU)."""

MIN_NOISE_ADU2 = 0.25
"""Smallest pixel variance (beyond rounding) the photon transfer line is measured at.

Below half an ADU RMS, rounding is no longer independent, uniform noise and
the variance stops following the mean.
"""

GAIN_MISMATCH_FACTOR = 1.5
GAIN_MISMATCH_SE = 3.0
"""A declared gain is flagged when it differs from the frames' by both this factor and this
many standard errors."""

CURVATURE_Z = 3.0
CURVATURE_SLOPE_CHANGE = 0.05
"""The gain is not identifiable when the variance's curvature in the level exceeds this many
standard errors and changes the slope by more than this fraction across the levels (+-1 SD)."""

_OUTLIER_Z = 4.0
_MIN_TILE_KEPT = 0.5


@dataclass(frozen=True)
class CameraModel:
    """Offset, gain and read noise in use, and where each came from.

    Attributes
    ----------
    offset_adu : float
        Baseline subtracted from every pixel, ADU.
    gain_adu_per_e : float
        ADU per photo-electron (> 0).
    read_noise_e : float
        Read noise, electrons RMS (>= 0).
    source : dict of str to str
        ``given``, ``estimated`` or ``default`` for ``offset_adu``,
        ``gain_adu_per_e`` and ``read_noise_e``.
    """

    offset_adu: float
    gain_adu_per_e: float
    read_noise_e: float
    source: dict[str, str] = field(default_factory=dict)

    @classmethod
    def resolve(cls, offset_adu: float | None, gain_adu_per_e: float | None,
                read_noise_e: float | None, estimated: Collection[str] = ()) -> CameraModel:
        """The model from the values sent (None: not sent, the default is used).

        Parameters
        ----------
        offset_adu, gain_adu_per_e, read_noise_e : float or None
            Offset (ADU), gain (ADU/e-) and read noise (e-); None: the default.
        estimated : collection of str
            Names (of :data:`CAMERA_FIELDS`) of the values sent that were
            estimated from the frames rather than given by the user; their
            source is ``estimated``.

        Raises
        ------
        ValueError
            An unknown name in ``estimated``, or a name whose value is None.
        """
        values = {"offset_adu": offset_adu, "gain_adu_per_e": gain_adu_per_e,
                  "read_noise_e": read_noise_e}
        for name in estimated:
            if name not in values:
                raise ValueError(f"estimated: unknown camera field {name!r} "
                                 f"(one of {', '.join(CAMERA_FIELDS)})")
            if values[name] is None:
                raise ValueError(f"estimated: {name} is marked estimated but has no value")

        def pick(name: str, default: float) -> tuple[float, str]:
            value = values[name]
            if value is None:
                return default, "default"
            return float(value), ("estimated" if name in estimated else "given")

        off, s_off = pick("offset_adu", DEFAULT_OFFSET_ADU)
        gain, s_gain = pick("gain_adu_per_e", DEFAULT_GAIN_ADU_PER_E)
        rn, s_rn = pick("read_noise_e", DEFAULT_READ_NOISE_E)
        return cls(off, gain, rn, {"offset_adu": s_off, "gain_adu_per_e": s_gain,
                                   "read_noise_e": s_rn})

    def to_dict(self) -> dict[str, object]:
        """Values and sources, for session summaries."""
        return {"offset_adu": self.offset_adu, "gain_adu_per_e": self.gain_adu_per_e,
                "read_noise_e": self.read_noise_e, "source": dict(self.source)}


def camera_record(camera: CameraModel, estimate: CameraEstimate | None) -> dict[str, Any]:
    """The record of the camera for ``summary.json`` (the server's and ``livespt stream``'s).

    Each value with its source, the standard errors of the estimated values
    (None for the others), a note per value (what an estimate assumes, or why
    the frames did not replace a default) and the whole estimate (None when
    estimation was off).
    """
    notes: dict[str, str] = {}
    for name in CAMERA_FIELDS:
        src = camera.source[name]
        if estimate is None or src == "given":
            notes[name] = "estimation off" if estimate is None and src == "default" else ""
        else:
            notes[name] = estimate.quantity(name).note
    return {
        **camera.to_dict(),
        "standard_error": (estimate.standard_errors() if estimate is not None
                           else dict.fromkeys(CAMERA_FIELDS)),
        "note": notes,
        "estimate": estimate.to_dict() if estimate is not None else None,
    }


def check_frame(camera: CameraModel, frame: NDArray[np.generic], field_prefix: str = "",
                ) -> list[str]:
    """Warnings about a frame the camera model cannot describe (empty when it can).

    Parameters
    ----------
    camera : CameraModel
        The model in use.
    frame : ndarray, shape (H, W)
        Raw counts, ADU.
    field_prefix : str
        Prefix of the field names in messages (e.g. ``config.detector.``).

    Returns
    -------
    list of str
        One message per problem, naming the field, the value, where it came from
        and what the data show.
    """
    out: list[str] = []
    img = np.asarray(frame)
    below = float(np.mean(img < camera.offset_adu))
    if below > BELOW_OFFSET_LIMIT:
        med = float(np.median(img))
        out.append(
            f"{field_prefix}camera_offset_adu = {camera.offset_adu:g} "
            f"({camera.source.get('offset_adu', 'given')}) is above {below:.0%} of the pixels "
            f"(median {med:g} ADU): photon counts and localization precisions are not "
            f"meaningful; give the camera's offset (livespt stream --camera-offset)")
    if img.dtype == np.uint8 and camera.source.get("offset_adu") == "default":
        out.append(
            f"{field_prefix}camera_offset_adu: 8-bit frames with the default offset "
            f"({camera.offset_adu:g} ADU, a 16-bit camera's): give the camera's offset, gain "
            "and read noise (--camera-offset, --camera-gain, --read-noise)")
    return out


REPEAT_FRAMES = 20
"""Consecutive frame pairs :class:`RepeatedPixels` compares (the first ones of a stream)."""

REPEAT_EXCESS = 3.0
"""How many times the predicted fraction of repeated pixels the observed one must exceed."""

REPEAT_MIN_FRACTION = 0.05
"""Smallest observed fraction of repeated pixels that is reported (a floor for low-noise data)."""


class RepeatedPixels:
    """Whether consecutive frames carry independent camera noise, as every estimate assumes.

    Two readings of a pixel in consecutive frames differ by shot and read noise; the
    chance that they are equal follows from the camera model: for integer counts with
    noise variance ``v = g (mu - o) + g^2 r^2 + 1/12`` ADU^2 (photon transfer line, module
    docstring; ``mu`` the pixel's level) it is about ``1 / sqrt(4 pi v)`` (the difference
    of two such readings, variance ``2 v``, lands on 0), capped at 1. Lossy video
    compression, denoising or duplicated frames repeat values far more often: the real
    movie of ``docs/accuracy.md`` (8-bit video, gain 1) repeats 60 % of its pixels from one
    frame to the next where the model predicts 2.5 %. Localization errors are then
    correlated between frames, which D, its intervals and the change detector do not
    model. The first :data:`REPEAT_FRAMES` pairs are compared on every 4th pixel in each
    direction; a warning is given once when the observed fraction exceeds
    :data:`REPEAT_EXCESS` times the predicted one and :data:`REPEAT_MIN_FRACTION`.
    Integer frames only (float frames are reported as not checked).

    Parameters
    ----------
    camera : CameraModel
        The model in use.
    max_frames : int
        Frame pairs compared.
    """

    def __init__(self, camera: CameraModel, max_frames: int = REPEAT_FRAMES) -> None:
        self.camera = camera
        self.max_frames = int(max_frames)
        self._prev: NDArray[np.generic] | None = None
        self.pairs = 0
        self._equal = 0.0
        self._expected = 0.0
        self._pixels = 0
        self.checked = True
        self.warned = False

    @property
    def done(self) -> bool:
        """Whether no more frames are needed."""
        return self.pairs >= self.max_frames or not self.checked

    def add(self, frame: NDArray[np.generic]) -> str | None:
        """Compare ``frame`` with the previous one; the warning, once, when it is due."""
        if self.done:
            return None
        cur = np.asarray(frame)[::4, ::4]
        if not np.issubdtype(cur.dtype, np.integer):
            self.checked = False
            return None
        prev, self._prev = self._prev, cur
        if prev is None or prev.shape != cur.shape:
            return None
        cam = self.camera
        level = (cur.astype(np.float64) + prev.astype(np.float64)) / 2.0
        var = (cam.gain_adu_per_e * np.maximum(level - cam.offset_adu, 0.0)
               + (cam.gain_adu_per_e * cam.read_noise_e) ** 2 + 1.0 / 12.0)
        self.pairs += 1
        self._equal += float(np.count_nonzero(cur == prev))
        self._expected += float(np.sum(np.minimum(1.0, 1.0 / np.sqrt(4.0 * np.pi * var))))
        self._pixels += cur.size
        obs, exp = self.fractions()
        if (self.warned or self.pairs < min(5, self.max_frames) or obs <= REPEAT_MIN_FRACTION
                or obs <= REPEAT_EXCESS * exp):
            return None
        self.warned = True
        src = cam.source
        return (f"{obs:.0%} of the pixels repeat the previous frame's value exactly (first "
                f"{self.pairs + 1} frames), where the camera model (gain "
                f"{cam.gain_adu_per_e:g} ADU/e- ({src.get('gain_adu_per_e', 'given')}), offset "
                f"{cam.offset_adu:g} ADU ({src.get('offset_adu', 'given')}), read noise "
                f"{cam.read_noise_e:g} e- ({src.get('read_noise_e', 'given')})) predicts "
                f"{exp:.1%}: the frames were compressed, denoised or duplicated, so "
                "localization errors are correlated between frames, which D, its intervals and "
                "the change detector do not model (or the gain given is far too high)")

    def fractions(self) -> tuple[float, float]:
        """Observed and predicted fractions of repeated pixels (NaN before a pair)."""
        if not self._pixels:
            return math.nan, math.nan
        return self._equal / self._pixels, self._expected / self._pixels

    def summary(self) -> dict[str, Any]:
        """For ``summary.json``: pairs compared, observed and predicted fractions, warned."""
        obs, exp = self.fractions()
        return {"checked": self.checked, "frame_pairs": self.pairs,
                "repeated_fraction": round(obs, 4) if math.isfinite(obs) else None,
                "predicted_fraction": round(exp, 4) if math.isfinite(exp) else None,
                "warned": self.warned}


# --------------------------------------------------------------- estimation
@dataclass(frozen=True)
class Estimated:
    """One camera quantity as the frames give it, or why they cannot.

    Attributes
    ----------
    value : float or None
        The estimate (the quantity's unit); None when not identifiable.
    se : float or None
        Its standard error (bootstrap over tiles); None when not identifiable.
    identifiable : bool
        Whether these frames (and the values declared) determine it.
    note : str
        The assumption the value rests on, or why it is not identifiable.
    """

    value: float | None
    se: float | None
    identifiable: bool
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        """Plain data (strict JSON: no NaN or infinity)."""
        return {"value": _finite(self.value), "se": _finite(self.se),
                "identifiable": self.identifiable, "note": self.note}


def _not(reason: str) -> Estimated:
    return Estimated(None, None, False, reason)


@dataclass(frozen=True)
class CameraEstimate:
    """Gain, offset and read noise estimated from a movie's frames (photon transfer).

    Attributes
    ----------
    gain_adu_per_e : Estimated
        Slope of the photon transfer line, ADU/e-: the frames' own gain, also when
        a gain was declared (:func:`check_gain` compares the two).
    offset_adu : Estimated
        Offset, ADU, from the line's value at zero signal with the read noise
        declared (or the default assumed) and the gain declared (or estimated).
    read_noise_e : Estimated
        Read noise, e- RMS; identifiable only when the offset was declared.
    declared : dict of str to float or None
        The values the estimate was made with (None: not declared), by
        :data:`CAMERA_FIELDS` name.
    n_frames : int
        Frames read.
    n_tiles : int
        Tiles whose pairs entered the fit.
    n_points : int
        (tile, frame pair) points in the fit.
    rejected_fraction : float
        Fraction of the points left out (spots crossing, ADC limits, outliers).
    reliability : float or None
        Fraction of the spread of tile levels that is not noise (0: a flat
        background, no lever arm for the slope; 1: noise-free levels).
    level_spread_adu : float or None
        Standard deviation of the tile levels beyond their noise, ADU: the lever arm.
    quantization_adu2 : float
        Rounding variance taken out of the line (1/12 ADU^2 for integer data, else 0).
    tile_px : int
        Tile side, pixels.
    method : str
        ``photon_transfer``.
    source : str
        ``estimated``: the source recorded for a value taken from here.
    """

    gain_adu_per_e: Estimated
    offset_adu: Estimated
    read_noise_e: Estimated
    declared: dict[str, float | None]
    n_frames: int = 0
    n_tiles: int = 0
    n_points: int = 0
    rejected_fraction: float = 0.0
    reliability: float | None = None
    level_spread_adu: float | None = None
    quantization_adu2: float = 0.0
    slope_change: float | None = None
    curvature_z: float | None = None
    tile_px: int = 8
    method: str = "photon_transfer"
    source: str = "estimated"

    def quantity(self, name: str) -> Estimated:
        """The estimate of one of :data:`CAMERA_FIELDS`."""
        if name not in CAMERA_FIELDS:
            raise ValueError(f"name must be one of {', '.join(CAMERA_FIELDS)}, got {name!r}")
        out: Estimated = getattr(self, name)
        return out

    def camera(self) -> CameraModel:
        """The camera model: declared values, then identifiable estimates, then defaults."""
        values: dict[str, float | None] = {}
        estimated = []
        for name in CAMERA_FIELDS:
            given = self.declared.get(name)
            est = self.quantity(name)
            if given is not None:
                values[name] = given
            elif est.identifiable and est.value is not None:
                values[name] = est.value
                estimated.append(name)
            else:
                values[name] = None
        return CameraModel.resolve(values["offset_adu"], values["gain_adu_per_e"],
                                   values["read_noise_e"], estimated)

    def standard_errors(self) -> dict[str, float | None]:
        """Standard error of each value :meth:`camera` takes from here (None for the others)."""
        src = self.camera().source
        return {n: (_finite(self.quantity(n).se) if src[n] == "estimated" else None)
                for n in CAMERA_FIELDS}

    def describe(self) -> str:
        """One line: what was estimated (value +- se) or why not, and what was given."""
        units = {"offset_adu": "ADU", "gain_adu_per_e": "ADU/e-", "read_noise_e": "e-"}
        names = {"offset_adu": "offset", "gain_adu_per_e": "gain", "read_noise_e": "read noise"}
        cam = self.camera()
        parts = []
        for n in ("gain_adu_per_e", "offset_adu", "read_noise_e"):
            e = self.quantity(n)
            src = cam.source[n]
            if src == "estimated":
                txt = f"{names[n]} {_pm(e)} {units[n]} (estimated"
                parts.append(txt + (f"; {e.note})" if e.note else ")"))
            elif src == "given" and n == "gain_adu_per_e":
                frames = _pm(e) if e.identifiable else f"not identifiable: {e.note}"
                parts.append(f"{names[n]} {getattr(cam, n):g} {units[n]} (given; the frames' "
                             f"photon transfer slope: {frames})")
            elif src == "given":
                parts.append(f"{names[n]} {getattr(cam, n):g} {units[n]} (given)")
            else:
                parts.append(f"{names[n]} {getattr(cam, n):g} {units[n]} (default: {e.note})")
        return (f"camera from {self.n_frames} frames (photon transfer, {self.n_tiles} tiles): "
                + "; ".join(parts))

    def to_dict(self) -> dict[str, object]:
        """Plain data for summaries (strict JSON)."""
        return {
            "method": self.method,
            "source": self.source,
            "gain_adu_per_e": self.gain_adu_per_e.to_dict(),
            "offset_adu": self.offset_adu.to_dict(),
            "read_noise_e": self.read_noise_e.to_dict(),
            "declared": dict(self.declared),
            "n_frames": self.n_frames,
            "n_tiles": self.n_tiles,
            "n_points": self.n_points,
            "rejected_fraction": round(self.rejected_fraction, 4),
            "reliability": _finite(self.reliability),
            "level_spread_adu": _finite(self.level_spread_adu),
            "quantization_adu2": self.quantization_adu2,
            "slope_change": _finite(self.slope_change),
            "curvature_z": _finite(self.curvature_z),
            "tile_px": self.tile_px,
        }


def _pm(e: Estimated) -> str:
    se = "?" if e.se is None else f"{e.se:.2g}"
    return f"{e.value:.4g} ± {se}"


def _finite(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


@dataclass
class _Tiles:
    """Per-tile sums of a movie, read one frame at a time."""

    mean: NDArray[np.float64]        # (T, ny, nx) tile means, ADU
    half_var: NDArray[np.float64]    # (T-1, ny, nx) var(f[t+1] - f[t]) / 2 per tile, ADU^2
    tmin: NDArray[np.float64]        # (T, ny, nx) smallest pixel per tile
    tmax: NDArray[np.float64]        # (T, ny, nx) largest pixel per tile
    mean_min: NDArray[np.float64]    # (ny, nx) darkest pixel of the tile's mean over frames
    mean_max: NDArray[np.float64]    # (ny, nx) brightest pixel of that mean
    integer: bool                    # every value an integer
    low: float                       # ADC floor (values at or below are clipped)
    high: float                      # ADC ceiling


def _read_tiles(frames: Any, tile_px: int, max_frames: int) -> _Tiles | None:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 3:
            raise ValueError(f"frames must have shape (T, H, W), got {frames.shape}")
        it: Iterable[Any] = frames[:max_frames]
    elif hasattr(frames, "__len__") and hasattr(frames, "__getitem__"):
        it = (frames[i] for i in range(min(len(frames), max_frames)))
    else:
        it = itertools.islice(frames, max_frames)
    s = tile_px
    means, halves, mins, maxs = [], [], [], []
    integer = True
    dtype: np.dtype[Any] | None = None
    prev: NDArray[np.float64] | None = None
    shape: tuple[int, int] | None = None
    top, top_count = -math.inf, 0
    total: NDArray[np.float64] | None = None
    for raw in it:
        a = np.asarray(raw)
        if a.ndim != 2:
            raise ValueError(f"frames must be 2D (H, W), got a frame of shape {a.shape}")
        if shape is None:
            shape, dtype = a.shape, a.dtype
        elif a.shape != shape:
            raise ValueError(f"frames must share one shape, got {shape} and {a.shape}")
        ny, nx = a.shape[0] // s, a.shape[1] // s
        if ny == 0 or nx == 0:
            return None
        f = a[: ny * s, : nx * s].astype(np.float64)
        if not np.all(np.isfinite(f)):
            raise ValueError("frames must be finite (no NaN or infinity)")
        if integer and a.dtype.kind == "f":
            integer = bool(np.all(f == np.round(f)))
        fmax = float(f.max())
        if fmax > top:
            top, top_count = fmax, 0
        if fmax == top:
            top_count += int(np.count_nonzero(f == fmax))
        total = f.copy() if total is None else total + f
        t = f.reshape(ny, s, nx, s)
        means.append(t.mean(axis=(1, 3)))
        mins.append(t.min(axis=(1, 3)))
        maxs.append(t.max(axis=(1, 3)))
        if prev is not None:
            d = (f - prev).reshape(ny, s, nx, s)
            halves.append(d.var(axis=(1, 3), ddof=1) / 2.0)
        prev = f
    if not means or dtype is None or shape is None or total is None:
        raise ValueError("frames is empty")
    low, high = -math.inf, math.inf
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        low, high = float(info.min), float(info.max)
    n_pixels = len(means) * means[0].size * s * s
    if integer and top_count >= max(4, 1e-5 * n_pixels):
        # Many pixels share the largest value: a saturation level below the
        # type's maximum (a 12-bit camera stored in 16 bits).
        high = min(high, top)
    avg = (total / len(means)).reshape(ny, s, nx, s)
    return _Tiles(np.stack(means), np.stack(halves) if halves else np.empty((0, *means[0].shape)),
                  np.stack(mins), np.stack(maxs), avg.min(axis=(1, 3)), avg.max(axis=(1, 3)),
                  integer, low, high)


def _line(stats: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
    """Slope (corrected for the levels' noise), centroid and reliability from summed stats.

    ``stats[..., :]`` = sums of w, w x, w y, w x^2, w x y, w s2 (``s2``: noise
    variance of ``x``).
    """
    w, wx, wy, wxx, wxy, ws2 = np.moveaxis(stats, -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm, ym = wx / w, wy / w
        sxx = wxx - wx * xm
        sxy = wxy - wx * ym
        denom = sxx - ws2
        slope = np.where(denom > 0, sxy / denom, np.nan)
        reliability = denom / sxx
    return slope, xm, ym, reliability, sxx, w, ws2


def estimate_camera(
    frames: Any,
    *,
    offset_adu: float | None = None,
    gain_adu_per_e: float | None = None,
    read_noise_e: float | None = None,
    tile_px: int = 8,
    max_frames: int = 50,
    max_relative_se: float = 0.1,
    min_reliability: float = 0.5,
    min_tiles: int = 8,
    n_boot: int = 200,
    seed: int = 0,
) -> CameraEstimate:
    """Estimate gain, offset and read noise from a movie's frames (photon transfer).

    The method, what it can and cannot identify, and its costs are in the
    module docstring of :mod:`livespt.server.pipeline.camera`.

    Parameters
    ----------
    frames : array, shape (T, H, W), or sequence / iterable of (H, W) arrays
        Raw counts, ADU, in acquisition order (a pims sequence is read lazily).
    offset_adu : float, optional
        Declared offset, ADU: makes the read noise identifiable.
    gain_adu_per_e : float, optional
        Declared gain, ADU/e-: used for the offset and read noise (the slope of
        the frames is still estimated and reported, to check it).
    read_noise_e : float, optional
        Declared read noise, e-: the offset is derived with it; when None, with
        the default (0 e-) the server then uses, and the offset's note says so.
    tile_px : int
        Tile side, pixels (>= 2).
    max_frames : int
        Frames read from the start of the movie (>= 4).
    max_relative_se : float
        Largest standard error of the gain, relative to it, for the gain to count
        as identifiable.
    min_reliability : float
        Smallest fraction of the spread of tile levels that must be signal, not
        noise, for the gain to count as identifiable (the lever arm).
    min_tiles : int
        Fewest tiles the fit must keep.
    n_boot : int
        Bootstrap replicates (resampling tiles) for the standard errors.
    seed : int
        Seed of the bootstrap (the estimate is deterministic for given frames).

    Returns
    -------
    CameraEstimate
        Each quantity with its standard error, or the reason it is not identifiable.

    Raises
    ------
    ValueError
        Frames of the wrong shape, non-finite values, or bad parameters.
    """
    for name, v in (("offset_adu", offset_adu), ("gain_adu_per_e", gain_adu_per_e),
                    ("read_noise_e", read_noise_e)):
        if v is not None and not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v!r}")
    if gain_adu_per_e is not None and gain_adu_per_e <= 0:
        raise ValueError(f"gain_adu_per_e must be > 0, got {gain_adu_per_e!r}")
    if read_noise_e is not None and read_noise_e < 0:
        raise ValueError(f"read_noise_e must be >= 0, got {read_noise_e!r}")
    if not (isinstance(tile_px, int) and tile_px >= 2):
        raise ValueError(f"tile_px must be an integer >= 2, got {tile_px!r}")
    if not (isinstance(max_frames, int) and max_frames >= 4):
        raise ValueError(f"max_frames must be an integer >= 4, got {max_frames!r}")
    if not (isinstance(n_boot, int) and n_boot >= 20):
        raise ValueError(f"n_boot must be an integer >= 20, got {n_boot!r}")
    declared: dict[str, float | None] = {
        "offset_adu": None if offset_adu is None else float(offset_adu),
        "gain_adu_per_e": None if gain_adu_per_e is None else float(gain_adu_per_e),
        "read_noise_e": None if read_noise_e is None else float(read_noise_e)}

    def nothing(reason: str, **kw: Any) -> CameraEstimate:
        return CameraEstimate(_not(reason), _not(reason), _not(reason), declared,
                              tile_px=tile_px, **kw)

    tiles = _read_tiles(frames, tile_px, max_frames)
    if tiles is None:
        return nothing(f"the frames are smaller than one {tile_px} x {tile_px} px tile")
    n_frames = tiles.mean.shape[0]
    if n_frames < 4:
        return nothing(f"needs at least 4 frames, got {n_frames}", n_frames=n_frames)
    q = QUANTIZATION_ADU2 if tiles.integer else 0.0
    n_px = tile_px * tile_px

    # Point (t, tile): variance from frames t, t+1; level from t-1, t+2.
    m = tiles.mean
    x = (m[:-3] + m[3:]) / 2.0                          # (P, ny, nx)
    y = tiles.half_var[1:-1]
    level_pair = (m[1:-2] + m[2:-1]) / 2.0
    clip = (tiles.tmin <= tiles.low) | (tiles.tmax >= tiles.high)
    clipped = clip[:-3] | clip[1:-2] | clip[2:-1] | clip[3:]
    n_pairs, ny, nx = x.shape
    n_tiles_all = ny * nx
    x, y, level_pair = (a.reshape(n_pairs, -1) for a in (x, y, level_pair))
    good = ~clipped.reshape(n_pairs, -1)
    if not good.any():
        return nothing("every tile touches the ADC limits "
                       f"({tiles.low:g} or {tiles.high:g} ADU): clipped values carry no "
                       "noise to measure", n_frames=n_frames, quantization_adu2=q)
    x0 = float(np.median(x[good]))
    xc = x - x0
    keep, yhat, slope, xm_f, ym_f = _robust_fit(xc, y, level_pair - x0, good, n_px, (ny, nx))
    # ADC limits: leaving out the pairs that touched a limit keeps the ones whose
    # noise happened to stay inside, which biases the variance near the limit
    # low. So a tile whose mean image comes within 4 noise SDs of a limit (the
    # SD the line predicts there, not the tile's own) is left out whole, and
    # the line fitted again.
    def sd_at(level: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.sqrt(np.maximum(ym_f + slope * (level - x0 - xm_f), 0.0))

    near = ((tiles.mean_min - _OUTLIER_Z * sd_at(tiles.mean_min) <= tiles.low)
            | (tiles.mean_max + _OUTLIER_Z * sd_at(tiles.mean_max) >= tiles.high)).reshape(-1)
    if near.any() and (good & ~near[None, :]).any():
        good &= ~near[None, :]
        keep, yhat, slope, xm_f, ym_f = _robust_fit(xc, y, level_pair - x0, good, n_px,
                                                     (ny, nx))
    n_points = int(keep.sum())
    rejected = 1.0 - n_points / max(int(good.size), 1)
    kept_tiles: NDArray[np.bool_] = np.asarray(keep.any(axis=0), dtype=bool)
    n_tiles = int(kept_tiles.sum())
    base = {"n_frames": n_frames, "n_tiles": n_tiles, "n_points": n_points,
            "rejected_fraction": rejected, "quantization_adu2": q}
    if n_tiles < min_tiles:
        why = (f"only {n_tiles} of {n_tiles_all} tiles ({tile_px} x {tile_px} px) are "
               f"usable (needs {min_tiles}): spots, ADC limits or too small frames")
        return nothing(why, **base)

    # Final fit with the final weights; bootstrap over tiles.
    s2 = yhat / (2.0 * n_px)
    var_r = 2.0 * yhat**2 / (n_px - 1) + slope**2 * s2
    w = np.where(keep, 1.0 / var_r, 0.0)
    per_tile = _tile_stats(w, xc, y, s2)[kept_tiles]
    g_all, xm_all, ym_all, rel_all, sxx_all, w_all, ws2_all = _line(per_tile.sum(axis=0))
    g, xm, ym, rel = float(g_all), float(xm_all), float(ym_all), float(rel_all)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_tiles, np.full(n_tiles, 1.0 / n_tiles), size=n_boot)
    boot = counts.astype(np.float64) @ per_tile
    g_b, xm_b, ym_b, *_ = _line(boot)
    spread2 = (float(sxx_all) - float(ws2_all)) / float(w_all)
    base["reliability"] = rel
    base["level_spread_adu"] = math.sqrt(spread2) if spread2 > 0 else 0.0
    noise_adu2 = ym - q  # pixel variance at the mean level, rounding removed
    level_noise = math.sqrt(float(ws2_all) / float(w_all))
    # Curvature: does the variance grow faster than the level (over-dispersion)?
    curv, curv_b = _curvature(w, xc - xm, y, s2, kept_tiles, counts)
    se_curv = _se(curv_b)
    # Change of the slope across the levels (+-1 SD of them), relative to the slope.
    slope_change = 4.0 * curv * base["level_spread_adu"] / g if g > 0 else math.nan
    base["slope_change"] = slope_change
    base["curvature_z"] = curv / se_curv if se_curv else math.nan

    # ---- gain
    gain_est: Estimated
    g_ok = np.isfinite(g_b)
    se_g = float(np.std(g_b[g_ok], ddof=1)) if g_ok.mean() > 0.95 else math.inf
    if noise_adu2 < MIN_NOISE_ADU2:
        gain_est = _not(
            f"the pixel noise ({math.sqrt(max(noise_adu2, 0.0)):.2g} ADU RMS) is below half an "
            "ADU: too few counts per level, rounding dominates the variance")
    elif rel < min_reliability or not math.isfinite(g):
        gain_est = _not(
            f"the background is too flat for the gain: tile levels spread "
            f"{base['level_spread_adu']:.3g} ADU beyond their noise ({level_noise:.2g} ADU), "
            f"reliability {rel:.2f} < {min_reliability}; no lever arm for the slope "
            "(give the gain, or use a movie with a structured background)")
    elif (abs(base["curvature_z"]) > CURVATURE_Z
          and abs(slope_change) > CURVATURE_SLOPE_CHANGE):
        gain_est = _not(
            f"the variance grows {'faster' if slope_change > 0 else 'slower'} than linearly "
            f"with the level (curvature {base['curvature_z']:.1f} standard errors; the slope "
            f"changes by {abs(slope_change):.0%} across the levels): an over-dispersed "
            "background (flicker, blinking autofluorescence) or a non-linear camera; the "
            f"line's slope ({g:.3g} ADU/e-) would be biased")
    elif g <= 0:
        gain_est = _not(
            f"the variance does not grow with the level (slope {g:.3g} ± {se_g:.2g}): "
            "no photon noise to measure (processed data, or bright-field)")
    elif not se_g / g <= max_relative_se:
        gain_est = _not(
            f"the slope is too uncertain: {g:.3g} ± {se_g:.2g} ADU/e- "
            f"({se_g / g:.0%} > {max_relative_se:.0%}); the tile levels spread only "
            f"{base['level_spread_adu']:.3g} ADU")
    else:
        gain_est = Estimated(g, se_g, True)

    # ---- offset and read noise, on the line through the centroid with slope gs
    mismatch = (None if gain_adu_per_e is None
                else _gain_mismatch(float(gain_adu_per_e), gain_est))
    if gain_adu_per_e is not None:
        gs, gs_b, g_note = (float(gain_adu_per_e), np.full(n_boot, float(gain_adu_per_e)),
                            "the declared gain")
    elif gain_est.identifiable:
        gs, gs_b, g_note = g, g_b, "the estimated gain"
    else:
        gs, gs_b, g_note = math.nan, g_b, ""
    off_est: Estimated
    rn_est: Estimated
    if noise_adu2 < MIN_NOISE_ADU2:
        off_est = rn_est = _not(gain_est.note)
    elif mismatch is not None:
        off_est = rn_est = _not(
            f"the declared gain ({gain_adu_per_e:g} ADU/e-) disagrees with the frames' "
            f"({gain_est.value:.3g} ± {gain_est.se:.2g}): an offset or read noise derived "
            "with it would be as wrong; check the gain")
    elif not math.isfinite(gs):
        off_est = rn_est = _not("needs the gain, which these frames do not identify")
    else:
        level = x0 + xm
        level_b = x0 + xm_b
        # ---- offset, with the read noise declared or the default assumed
        if offset_adu is None:
            r = DEFAULT_READ_NOISE_E if read_noise_e is None else float(read_noise_e)
            o = level - (ym - q - gs**2 * r**2) / gs
            o_b = level_b - (ym_b - q - gs_b**2 * r**2) / gs_b
            which = "the declared" if read_noise_e is not None else "the default"
            off_est = Estimated(
                o, _se(o_b), True,
                f"assumes {which} read noise {r:g} e- and {g_note}: the frames fix only "
                f"g^2 r^2 - g o, so each e-^2 more read noise puts the offset {gs:.3g} ADU "
                "higher")
        else:
            off_est = _not("declared, not estimated")
        # ---- read noise, only with the offset declared
        if read_noise_e is not None:
            rn_est = _not("declared, not estimated")
        elif offset_adu is None:
            rn_est = _not("needs the offset: the variance at zero signal, g^2 r^2 - g o, "
                          "mixes the two (give --camera-offset)")
        else:
            r2 = (ym - q - gs * (level - offset_adu)) / gs**2
            r2_b = (ym_b - q - gs_b * (level_b - offset_adu)) / gs_b**2
            se_r2 = _se(r2_b)
            if r2 + GAIN_MISMATCH_SE * (se_r2 or 0.0) < 0:
                rn_est = _not(
                    f"the declared offset ({offset_adu:g} ADU) and {g_note} predict more "
                    f"shot noise than the frames show (r^2 = {r2:.3g} ± {se_r2 or 0:.2g} e-^2 "
                    "< 0): the offset is too low or the gain wrong")
            else:
                rn_b = np.sqrt(np.maximum(r2_b, 0.0))
                rn_est = Estimated(math.sqrt(max(r2, 0.0)), _se(rn_b), True,
                                   f"with the declared offset and {g_note}"
                                   + ("; r^2 < 0 within its error, 0 reported" if r2 < 0
                                      else ""))
    return CameraEstimate(gain_est, off_est, rn_est, declared, tile_px=tile_px, **base)


def _robust_fit(xc: NDArray[np.float64], y: NDArray[np.float64], lc: NDArray[np.float64],
                good: NDArray[np.bool_], n_px: int, grid: tuple[int, int],
                ) -> tuple[NDArray[np.bool_], NDArray[np.float64], float, float, float]:
    """Fit the photon transfer line, leaving out the points spots or changes disturb.

    Parameters
    ----------
    xc, y, lc : ndarray, shape (P, C)
        Level from the neighbouring frames, half the variance of the pair's
        difference, and the pair's own level (levels centred on one constant).
    good : ndarray of bool, shape (P, C)
        Points that may enter the fit.
    n_px : int
        Pixels per tile.
    grid : tuple of int
        Tiles in y and x (``C = ny * nx``).

    Returns
    -------
    keep : points in the fit; yhat : the line at each point (floored > 0);
    slope, xm, ym : the line's slope and centroid.
    """
    n_pairs = y.shape[0]
    # Start: each tile's median variance (robust to a spot crossing a few pairs).
    with warnings.catch_warnings():  # tiles with no usable pair: all-NaN columns
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(np.where(good, y, np.nan), axis=0)
    yhat = np.broadcast_to(np.where(np.isfinite(med), med, np.median(y[good])), y.shape)
    slope, xm, ym = 0.0, 0.0, float(np.median(y[good]))
    keep = good
    for it in range(30):
        floor = max(1e-9, 0.02 * float(np.median(yhat[good])))
        yhat = np.maximum(yhat, floor)
        s2 = yhat / (2.0 * n_px)                        # noise variance of the level x
        var_r = 2.0 * yhat**2 / (n_px - 1) + slope**2 * s2
        z_y = (y - yhat) / np.sqrt(var_r)
        z_m = (lc - xc) / np.sqrt(yhat / n_px)
        bad = good & ~((np.abs(z_y) <= _OUTLIER_Z) & (np.abs(z_m) <= _OUTLIER_Z))
        # A spot's tails reach the neighbouring tiles, and the pairs before and
        # after: leave those out too.
        bad = binary_dilation(bad.reshape(n_pairs, *grid), structure=np.ones((3, 3, 3), bool))
        new = good & ~bad.reshape(n_pairs, -1)
        frac = new.sum(axis=0) / np.maximum(good.sum(axis=0), 1)
        new &= (frac >= _MIN_TILE_KEPT)[None, :]
        if it > 0 and np.array_equal(new, keep):
            break
        keep = new
        if not keep.any():
            break
        w = np.where(keep, 1.0 / var_r, 0.0)
        st = _tile_stats(w, xc, y, s2).sum(axis=0)
        b_i, xm_i, ym_i, rel_i, sxx_i, *_ = _line(st)
        b_f, xm, ym = float(b_i), float(xm_i), float(ym_i)
        # While the lever arm is short the corrected slope is unstable: the
        # plain one (flattened towards 0) serves to find outliers.
        slope = b_f if (math.isfinite(b_f) and float(rel_i) >= 0.2) else (
            float(st[4] - st[1] * st[2] / st[0]) / float(sxx_i) if float(sxx_i) > 0 else 0.0)
        yhat = ym + slope * (xc - xm)
    floor = max(1e-9, 0.02 * float(np.median(yhat[good])))
    return keep, np.maximum(yhat, floor), slope, xm, ym


def _curvature(w: NDArray[np.float64], u: NDArray[np.float64], y: NDArray[np.float64],
               s2: NDArray[np.float64], kept_tiles: NDArray[np.bool_],
               counts: NDArray[np.int64]) -> tuple[float, NDArray[np.float64]]:
    """Quadratic coefficient of the variance in the level (ADU^-1), and bootstrap replicates.

    Weighted least squares of ``y`` on ``1, u, u^2 - s2`` (``u``: centred level;
    subtracting its noise variance ``s2`` keeps the square unbiased), with the
    same tiles resampled as for the line.
    """
    v = u * u - s2
    cols = (np.ones_like(u), u, v)
    m = np.stack([np.stack([(w * a * b).sum(axis=0) for b in cols], axis=-1) for a in cols],
                 axis=-2)[kept_tiles]                      # (C, 3, 3)
    r = np.stack([(w * a * y).sum(axis=0) for a in cols], axis=-1)[kept_tiles]  # (C, 3)
    c = counts.astype(np.float64)
    mb = np.einsum("bc,cij->bij", c, m)
    rb = c @ r
    with np.errstate(all="ignore"):
        full = np.linalg.lstsq(m.sum(axis=0), r.sum(axis=0), rcond=None)[0]
        ok = np.abs(np.linalg.det(mb)) > 0
        boot = np.full(len(c), np.nan)
        boot[ok] = np.linalg.solve(mb[ok], rb[ok][..., None])[:, 2, 0]
    return float(full[2]), boot


def _gain_mismatch(declared: float, est: Estimated) -> float | None:
    """The factor between a declared gain and the frames' when they disagree, else None.

    They disagree when the factor exceeds :data:`GAIN_MISMATCH_FACTOR` and the
    difference :data:`GAIN_MISMATCH_SE` standard errors.
    """
    if not est.identifiable or est.value is None or not est.se:
        return None
    ratio = max(declared / est.value, est.value / declared)
    if ratio <= GAIN_MISMATCH_FACTOR or abs(declared - est.value) <= GAIN_MISMATCH_SE * est.se:
        return None
    return ratio


def _se(replicates: NDArray[np.float64]) -> float | None:
    ok = np.isfinite(replicates)
    if ok.mean() < 0.95:
        return None
    return float(np.std(replicates[ok], ddof=1))


def _tile_stats(w: NDArray[np.float64], x: NDArray[np.float64], y: NDArray[np.float64],
                s2: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-tile sums (tiles along axis 1 of the (P, C) inputs): shape (C, 6)."""
    return np.stack([w.sum(axis=0), (w * x).sum(axis=0), (w * y).sum(axis=0),
                     (w * x * x).sum(axis=0), (w * x * y).sum(axis=0),
                     (w * s2).sum(axis=0)], axis=-1)


def check_gain(camera: CameraModel, frames: Any, field_prefix: str = "") -> list[str]:
    """A warning when the gain in use disagrees with the frames' photon transfer slope.

    Parameters
    ----------
    camera : CameraModel
        The model in use; a gain whose source is ``estimated`` is not checked.
    frames : CameraEstimate, or frames as :func:`estimate_camera` takes them
        The estimate to compare with (made here from frames when frames are given).
    field_prefix : str
        Prefix of the field names in messages (e.g. ``config.detector.``).

    Returns
    -------
    list of str
        Empty, or one message naming ``camera_gain_adu_per_e``, the value in use,
        where it came from, and the frames' estimate, when the two differ by more
        than a factor 1.5 and more than 3 standard errors.
    """
    if camera.source.get("gain_adu_per_e") == "estimated":
        return []
    est = frames if isinstance(frames, CameraEstimate) else estimate_camera(frames)
    e = est.gain_adu_per_e
    used = camera.gain_adu_per_e
    found = _gain_mismatch(used, e)
    if found is None or e.value is None or e.se is None:
        return []
    ratio = found
    return [
        f"{field_prefix}camera_gain_adu_per_e = {used:g} "
        f"({camera.source.get('gain_adu_per_e', 'given')}) disagrees with the frames: their "
        f"variance grows as a gain of {e.value:.3g} ± {e.se:.2g} ADU/e- (photon transfer, "
        f"{est.n_frames} frames), {ratio:.1f}x {'higher' if e.value > used else 'lower'}; "
        f"photon counts and localization precisions are off by that factor; check the "
        f"camera's gain (livespt stream --camera-gain, or leave it out to use the estimate)"]
