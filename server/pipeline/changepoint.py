"""Online detection of changes of the diffusion coefficient D along a track.

One :class:`TrackChangeDetector` per track is fed one localized position at a time
(:meth:`TrackChangeDetector.update`) and returns a :class:`ChangePoint` as soon as
the track's step history since its last accepted change supports a single change of
D strongly enough. This module holds the statistics (step model, segment
likelihoods, dispersion factor, calibrated thresholds, :class:`ChangeConfig`) and
that per-track detector, the reference implementation;
:class:`~livespt.server.pipeline.changepoint_bank.ChangeDetectorBank`
(:mod:`livespt.server.pipeline.changepoint_bank`) runs the same detector for every
track of a session, with the tracks' histories stored together in arrays, and gives
identical results.

Why not thresholds on window estimates: a 10-frame window estimates D to 50-60 % at
best (DESIGN.md, "Classical limits"), so a 2x change between two adjacent windows is
within the noise. The detector instead scans *every* split of the whole history
(up to ``max_history_steps`` steps) with a generalized likelihood-ratio (GLR) test.

Step model
----------
Per dimension, a step between observations ``k`` frames apart is Gaussian with
variance ``2 D dt (k - 2R) + sigma_a^2 + sigma_b^2`` (``docs/estimators.md``;
``sigma_a``, ``sigma_b`` the localization precisions of its two ends, R the blur
coefficient). With ``a = 2 dt (k - 2R)`` (s) and ``s = sigma_a^2 + sigma_b^2`` (um^2)
the normalized squared step (both dimensions)

    y = |step|^2 / (2 a)        (um^2/s),    E[y] = D + c,    c = s / a,

is ``(D + c)`` times a unit exponential, and gaps (``k > 1``) are accounted for
exactly. Adjacent steps are correlated (``Cov = 2 R D dt - sigma^2`` per dimension);
the likelihood below ignores that correlation and corrects for it afterwards (see
"Dispersion").

Statistic
---------
For a segment of ``n`` steps with sums ``Y = sum y`` and ``C = sum c``, the profile
log-likelihood maximized over ``D >= 0`` is (constants dropped)

    l(n, Y, C) = -n log(u) - Y / u,    u = max(Y / n, C / n) = D_hat + C / n,

the exact maximum when ``c`` is constant within the segment (constant sigma, no
gaps) and, otherwise, the likelihood at the moment estimate with ``c`` replaced by
its segment mean. The log-likelihood ratio of "one change, the new regime starting
at step j" against "no change" over the history window ``[lo, hi)`` is

    LLR(j) = l(left) + l(right) - l(all),   lo + m <= j <= hi - m,

with ``m = min_segment_steps``; all ``j`` are evaluated at once from running
prefix sums, O(history) per update. The reported ``score`` is
``max_j LLR(j) / f``, in natural-log units.

Dispersion
----------
Ignoring the step correlation ``rho`` makes the LLR too large under "no change" by
the long-run variance factor of the squared steps, ``f = 1 + 2 rho^2`` (lag-one
correlation of squared Gaussian steps is ``rho^2``). ``rho = (2 R D dt - sigma^2) /
Var(step)`` is evaluated at the no-change estimate of D and the mean sigma^2 of the
window: ``f`` ranges from 1 (``sigma^2 = 2 R D dt``) through 1.125 (no noise,
continuous exposure) to 1.5 (noise-dominated steps). Dividing by ``f`` makes the
statistic (approximately) pivotal, so one threshold table serves every D, sigma
and R.

Threshold calibration
---------------------
With ``y`` i.i.d. exponential (the model the statistic assumes after the dispersion
correction) the score is pivotal: its law does not depend on D. The thresholds in
:data:`CALIBRATION_THRESHOLDS` were obtained by running this exact detector (same
window, same restarts after an alarm) on i.i.d. exponential steps, in steady state
(the first ``max_history_steps`` frames discarded), for each ``min_segment_steps``
of :data:`CALIBRATION_MIN_SEGMENT_STEPS` and a grid of thresholds, and
interpolating the measured false alarms per 1000 track-frames to the rates of
:data:`CALIBRATION_RATES_PER_1000`. Script: ``benchmarks/calibrate_changepoint.py``.
Short tracks, whose history has not filled the window, alarm less often; so do
noisy tracks (the constraint ``D >= 0`` lowers the LLR). The calibration is done at
``max_history_steps`` = :data:`CALIBRATION_MAX_HISTORY_STEPS`, the largest accepted;
shorter windows change the rate little (false alarms come mostly from the last few
steps: 4.8 instead of 5.1 per 1000 at a 50-step window).

Confirmation by medians
-----------------------
An alarm of the GLR stands only when the medians of ``y`` on the two sides of the
best split also differ by :data:`MEDIAN_CONFIRM_Z` standard errors
(:func:`confirmed_by_medians`): a few steps the model does not describe (a mislink
to a neighbour and back, localization outliers, noise heavier-tailed than
Gaussian) move means, not medians. Measured (200 tracks x 500 frames, D = 0.2
um^2/s, sigma 0.03 um, configured 0.5 per 1000): Student-t (3 d.o.f.) noise 1.9
-> 0.43-0.68 per 1000; 1 % of positions displaced by 0.5 um 11.0 -> 1.5 (still 3x
the configured rate: mislinks are the linker's to avoid); Gaussian steps 0.22 ->
0.17; a sigma given 10x too small 0.12 -> 0.11. Cost: 5x changes are found as
often (0.98-1.00 within 10 frames), 2 frames later (median delay 6 -> 8 frames); 2x
changes 31 -> 45 frames. The threshold table was calibrated without the
confirmation, so under the model the configured rate is now an upper bound
(measured 0.41-0.45x at 5 per 1000), not the rate itself.

Confirmation by dispersion
--------------------------
Steps heavier-tailed than Gaussian also inflate the GLR itself, by about their
over-dispersion ``phi = Var(y) / E(y)^2`` (1 under the model). The alarm also needs
``score / max(phi, 1)`` above the threshold, ``phi`` estimated over the window from
pairs of steps two apart (:func:`step_dispersion`, :func:`confirmed_by_dispersion`).
Measured by ``benchmarks/changepoint_robustness.py`` (medians -> medians + dispersion,
per 1000): Gaussian 0.17 -> 0.14, Student-t noise 0.20 -> 0.14, 1 % mislinks 1.53 ->
1.34, an irregular frame timing (40 %) 0.53 -> 0.19; 5x and 2x changes found as often
and as early.

Limits: one change per test (several changes are found one after the other, each
restarting the history), free Brownian motion within each regime (confinement or
directed motion look like changes of D), sigma given by the caller and right.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaincinv

from livespt.models import _validate
from livespt.models.units import blur_coefficient as _uniform_blur

# ---------------------------------------------------------------------------
# Threshold table (generated by benchmarks/calibrate_changepoint.py; do not edit
# by hand). Rows: min_segment_steps; columns: false alarms per 1000 track-frames.
# ---------------------------------------------------------------------------
CALIBRATION_MAX_HISTORY_STEPS = 400
CALIBRATION_RATES_PER_1000: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
CALIBRATION_MIN_SEGMENT_STEPS: tuple[int, ...] = (5, 6, 8, 10, 12, 15, 20)
CALIBRATION_THRESHOLDS: tuple[tuple[float, ...], ...] = (
    (11.04, 10.23, 9.40, 8.28, 7.40, 6.50, 5.27, 4.31),
    (10.68, 9.94, 9.16, 8.10, 7.25, 6.37, 5.13, 4.13),
    (10.63, 9.87, 9.08, 7.99, 7.12, 6.19, 4.88, 3.80),
    (10.40, 9.65, 8.88, 7.80, 6.95, 6.05, 4.78, 3.75),
    (10.24, 9.47, 8.67, 7.57, 6.69, 5.76, 4.46, 3.40),
    (9.90, 9.14, 8.34, 7.24, 6.36, 5.44, 4.15, 3.11),
    (9.82, 9.04, 8.22, 7.09, 6.19, 5.24, 3.89, 2.80),
)

# Largest history window accepted: the thresholds are calibrated there, and a
# longer window would only add candidates (and false alarms) far in the past.
MAX_HISTORY_STEPS_LIMIT = CALIBRATION_MAX_HISTORY_STEPS
# Standard errors by which the log ratio of the step medians across a candidate split
# must differ from 0 for the alarm to stand (confirmed_by_medians).
MEDIAN_CONFIRM_Z = 3.0
# Floor on the fitted E[y] so that a segment of identical positions (zero steps,
# zero sigma) gives a finite likelihood instead of log(0).
TINY_UM2_S = 1e-300
# Steps a new track's buffers hold before they first grow.
INITIAL_CAPACITY_STEPS = 64


def calibrated_threshold(false_alarm_per_1000: float, min_segment_steps: int) -> float:
    """Score threshold giving a target false-alarm rate on stationary tracks.

    Interpolates :data:`CALIBRATION_THRESHOLDS` linearly in ``log(rate)`` and in
    ``min_segment_steps``; a ``min_segment_steps`` beyond the table uses the last
    row, which is conservative (longer minimal segments have fewer extreme
    candidates).

    Parameters
    ----------
    false_alarm_per_1000 : float
        Target false alarms per 1000 track-frames, within the calibrated range
        ``[CALIBRATION_RATES_PER_1000[0], CALIBRATION_RATES_PER_1000[-1]]``.
    min_segment_steps : int
        Smallest number of steps on either side of a change, >=
        ``CALIBRATION_MIN_SEGMENT_STEPS[0]``.

    Returns
    -------
    float
        Threshold on the dispersion-corrected log-likelihood ratio (natural log).
    """
    rates = np.asarray(CALIBRATION_RATES_PER_1000)
    rate = _validate.in_range(
        "false_alarm_per_1000", false_alarm_per_1000, float(rates[0]), float(rates[-1])
    )
    segs = np.asarray(CALIBRATION_MIN_SEGMENT_STEPS, dtype=np.float64)
    m = _validate.positive_int(
        "min_segment_steps", min_segment_steps, minimum=int(CALIBRATION_MIN_SEGMENT_STEPS[0])
    )
    table = np.asarray(CALIBRATION_THRESHOLDS, dtype=np.float64)
    per_row = np.array([np.interp(math.log(rate), np.log(rates), row) for row in table])
    return float(np.interp(min(float(m), float(segs[-1])), segs, per_row))


@dataclass(frozen=True)
class ChangeConfig:
    """Settings of the online change detector, shared by all tracks of a session.

    Parameters
    ----------
    frame_interval_s : float
        Time between frame starts in seconds, > 0.
    exposure_s : float, optional
        Exposure in seconds, ``0 <= exposure_s <= frame_interval_s``; default: the
        frame interval (continuous illumination). Sets the blur coefficient
        ``R = exposure_s / (6 frame_interval_s)``.
    false_alarm_per_1000 : float
        Target false alarms per 1000 track-frames on tracks without change; sets
        :attr:`threshold` through the calibration table.
    min_segment_steps : int
        Fewest steps on either side of a change, >= 5 (the smallest calibrated).
        A change is reported no earlier than this many steps after it happened.
    max_history_steps : int
        Most recent steps kept and scanned per track (memory and time per update
        are proportional), in ``[2 min_segment_steps, 400]``.
    blur_coefficient : float, optional
        Overrides R when it is known exactly (e.g. the simulator's finite
        sub-steps, :func:`livespt.models.simulate.effective_blur_coefficient`), in
        ``[0, 0.25)``.
    score_threshold : float, optional
        Overrides the calibrated threshold (e.g. to trace an ROC curve); then
        ``false_alarm_per_1000`` is not used.
    confidence : float
        Level of the intervals reported with the D before and after, in (0, 1).
    """

    frame_interval_s: float
    exposure_s: float | None = None
    false_alarm_per_1000: float = 0.5
    min_segment_steps: int = 5
    max_history_steps: int = 400
    blur_coefficient: float | None = None
    score_threshold: float | None = None
    confidence: float = 0.9

    def __post_init__(self) -> None:
        dt = _validate.positive("frame_interval_s", self.frame_interval_s)
        te = dt if self.exposure_s is None else self.exposure_s
        te, dt = _validate.exposure_and_interval(te, dt)
        m = _validate.positive_int(
            "min_segment_steps", self.min_segment_steps,
            minimum=int(CALIBRATION_MIN_SEGMENT_STEPS[0]),
        )
        w = _validate.positive_int("max_history_steps", self.max_history_steps, minimum=2 * m)
        if w > MAX_HISTORY_STEPS_LIMIT:
            raise ValueError(
                f"max_history_steps must be <= {MAX_HISTORY_STEPS_LIMIT} (the calibrated "
                f"window), got {w}"
            )
        if self.blur_coefficient is not None:
            r = _validate.in_range("blur_coefficient", self.blur_coefficient, 0.0, 0.25)
            if r >= 0.25:
                raise ValueError(f"blur_coefficient must be < 0.25, got {r}")
            object.__setattr__(self, "blur_coefficient", r)
        conf = _validate.in_range("confidence", self.confidence, 0.0, 1.0)
        if not 0.0 < conf < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {conf}")
        if self.score_threshold is None:
            calibrated_threshold(self.false_alarm_per_1000, m)  # validates the rate
            rate = float(self.false_alarm_per_1000)
        else:
            _validate.positive("score_threshold", self.score_threshold)
            rate = _validate.positive("false_alarm_per_1000", self.false_alarm_per_1000)
        # Store the normalized values so that equal settings compare equal.
        object.__setattr__(self, "frame_interval_s", dt)
        object.__setattr__(self, "exposure_s", te)
        object.__setattr__(self, "false_alarm_per_1000", rate)
        object.__setattr__(self, "min_segment_steps", m)
        object.__setattr__(self, "max_history_steps", w)
        object.__setattr__(self, "confidence", conf)

    @property
    def blur(self) -> float:
        """Blur coefficient R in force: the override, else ``exposure_s / (6 dt)``."""
        if self.blur_coefficient is not None:
            return float(self.blur_coefficient)
        assert self.exposure_s is not None  # set by __post_init__
        return _uniform_blur(self.exposure_s, self.frame_interval_s)

    @property
    def threshold(self) -> float:
        """Threshold on :attr:`ChangePoint.score`: the override, else the calibrated one."""
        if self.score_threshold is not None:
            return float(self.score_threshold)
        return calibrated_threshold(self.false_alarm_per_1000, self.min_segment_steps)


@dataclass(frozen=True)
class ChangePoint:
    """A change of D found on one track, as the detector reports it.

    The detector's full result: the D before and after with their intervals and
    the steps behind them. The record the rest of the system keeps (``changes.csv``,
    the wire) is :class:`livespt.server.pipeline.records.ChangeEvent`, made from
    this one with ``ChangeEvent.from_detector(track_id, change_point)``.

    Attributes
    ----------
    frame : int
        First frame of the new regime: the start frame of the first step assigned
        to the new D (the frame from which the new D is in force).
    detected_at_frame : int
        Frame of the position whose arrival triggered the event.
    d_before_um2_s, d_after_um2_s : float
        Maximum-likelihood D (constrained >= 0) in um^2/s of the steps before and
        after the change, within the history window.
    score : float
        Dispersion-corrected log-likelihood ratio (natural log) of one change at
        ``frame`` against no change; the event fires when it exceeds the threshold.
    d_before_low_um2_s, d_before_high_um2_s, d_after_low_um2_s, d_after_high_um2_s : float
        Intervals at level ``confidence`` for the two D's (um^2/s), from the gamma
        law of the segment sums given the change position (the selection of the
        change position is not accounted for).
    steps_before, steps_after : int
        Number of steps in each segment.
    track_id : object
        The caller's track identifier, or ``None``.
    """

    frame: int
    detected_at_frame: int
    d_before_um2_s: float
    d_after_um2_s: float
    score: float
    d_before_low_um2_s: float
    d_before_high_um2_s: float
    d_after_low_um2_s: float
    d_after_high_um2_s: float
    steps_before: int
    steps_after: int
    track_id: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict (column names as in DESIGN.md's changes.csv)."""
        return dataclasses.asdict(self)


def segment_log_likelihood(
    n: NDArray[np.float64] | float, y_sum: NDArray[np.float64] | float,
    c_sum: NDArray[np.float64] | float,
) -> NDArray[np.float64]:
    """Profile log-likelihood of segments of normalized squared steps, maximized over D >= 0.

    Parameters
    ----------
    n : array_like
        Number of steps per segment, > 0.
    y_sum : array_like
        Sum of the normalized squared steps ``y = |step|^2 / (2 a)`` (um^2/s).
    c_sum : array_like
        Sum of the noise terms ``c = s / a`` (um^2/s).

    Returns
    -------
    ndarray
        ``-n log(u) - y_sum / u`` with ``u = max(y_sum, c_sum) / n`` (u in um^2/s;
        constants common to every segmentation dropped), broadcast over the inputs.
    """
    return _profile_ll(
        np.asarray(n, dtype=np.float64), np.asarray(y_sum, dtype=np.float64),
        np.asarray(c_sum, dtype=np.float64),
    )


def _profile_ll(n: Any, y: Any, c: Any) -> Any:
    # u = D_hat + C/n, the fitted E[y]; the floor keeps log finite for a segment of
    # identical positions with sigma = 0.
    u = np.maximum(np.maximum(y, c) / n, TINY_UM2_S)
    return -n * np.log(u) - y / u


def dispersion_factor(
    d_um2_s: float, a_mean_s: float, s_mean_um2: float, blur: float, frame_interval_s: float
) -> float:
    """Long-run variance factor ``1 + 2 rho^2`` of squared steps with lag-one correlation rho.

    Parameters
    ----------
    d_um2_s : float
        D in um^2/s (>= 0).
    a_mean_s : float
        Mean ``2 dt (k - 2R)`` of the steps, in s.
    s_mean_um2 : float
        Mean noise variance of a step per dimension, ``sigma_a^2 + sigma_b^2``, in um^2.
    blur : float
        Blur coefficient R.
    frame_interval_s : float
        Frame interval in s.

    Returns
    -------
    float
        ``f`` in [1, 1.5].
    """
    var = a_mean_s * d_um2_s + s_mean_um2
    if not var > 0:
        return 1.0
    # The shared end of two adjacent steps carries half the step's noise variance.
    cov = 2.0 * blur * d_um2_s * frame_interval_s - 0.5 * s_mean_um2
    rho = min(max(cov / var, -0.5), 0.5)
    return 1.0 + 2.0 * rho * rho


def _rate_interval(
    n: int, y_sum: float, c_sum: float, f: float, confidence: float
) -> tuple[float, float]:
    """Interval for D from ``y_sum / (D + c_mean) ~ f Gamma(n / f)`` (um^2/s, clipped at 0)."""
    shape = n / f
    alpha = 1.0 - confidence
    g_lo = float(gammaincinv(shape, alpha / 2)) * f
    g_hi = float(gammaincinv(shape, 1 - alpha / 2)) * f
    c_mean = c_sum / n
    low = max(0.0, y_sum / g_hi - c_mean) if g_hi > 0 else 0.0
    high = max(0.0, y_sum / g_lo - c_mean) if g_lo > 0 else math.inf
    return low, high


# ---------------------------------------------------------------------------
# Step kernels: one track's history as a start frame and four prefix sums per step.
# Shared with livespt.server.pipeline.changepoint_bank, whose vectorized passes
# repeat them with the same floating-point operations.
# ---------------------------------------------------------------------------
def append_step_at(
    start: NDArray[np.int64], py: NDArray[np.float64], pc: NDArray[np.float64],
    pa: NDArray[np.float64], ps: NDArray[np.float64], i: int, start_frame: int, k: int,
    q: float, s: float, dt: float, blur: float,
) -> None:
    """Store step ``i`` of a history: its start frame and the prefix sums through it.

    ``k`` is the step's length in frames, ``q`` its squared length (um^2), ``s`` the
    sum of the sigma^2 of its ends (um^2); the prefix sums are of ``y = q / (2 a)``,
    ``c = s / a`` (um^2/s), ``a = 2 dt (k - 2R)`` (s) and ``s``.
    """
    a = 2.0 * dt * (k - 2.0 * blur)
    start[i] = start_frame
    py[i + 1] = py[i] + q / (2.0 * a)
    pc[i + 1] = pc[i] + s / a
    pa[i + 1] = pa[i] + a
    ps[i + 1] = ps[i] + s


def compact_at(
    start: NDArray[np.int64], prefixes: tuple[NDArray[np.float64], ...], lo: int, hi: int
) -> None:
    """Move steps ``lo .. hi-1`` of a history to ``0 .. hi-lo-1``.

    Rebuilding the prefix sums from their differences also stops rounding errors
    from accumulating along long tracks.
    """
    n = hi - lo
    start[:n] = start[lo:hi]
    for p in prefixes:
        steps = np.diff(p[lo : hi + 1])
        p[0] = 0.0
        np.cumsum(steps, out=p[1 : n + 1])


def scan_window(
    py: NDArray[np.float64], pc: NDArray[np.float64], pa: NDArray[np.float64],
    ps: NDArray[np.float64], counts: NDArray[np.float64], lo: int, hi: int, m: int,
    blur: float, dt: float,
) -> tuple[int, float, float]:
    """Best change step, score and dispersion factor of the window ``[lo, hi)`` (>= 2 m steps)."""
    n = hi - lo
    # Left-segment sums for every candidate j = lo + m .. hi - m, from slices of
    # the prefix sums (views, no gathers); right sums are the totals minus them.
    y_all, c_all = py[hi] - py[lo], pc[hi] - pc[lo]
    y_left = py[lo + m : hi - m + 1] - py[lo]
    c_left = pc[lo + m : hi - m + 1] - pc[lo]
    n_left = counts[m : n - m + 1]
    llr = (
        _profile_ll(n_left, y_left, c_left)
        + _profile_ll(n - n_left, y_all - y_left, c_all - c_left)
        - _profile_ll(float(n), y_all, c_all)
    )
    best = int(np.argmax(llr))
    d0 = max(0.0, (y_all - c_all) / n)
    f = dispersion_factor(d0, (pa[hi] - pa[lo]) / n, (ps[hi] - ps[lo]) / n, blur, dt)
    return lo + m + best, float(llr[best]) / f, f


def confirmed_by_medians(py: NDArray[np.float64], lo: int, hi: int, jb: int) -> bool:
    """Whether the medians of the normalized squared steps also differ across the split.

    The calibrated GLR compares *means* of ``y`` (each a unit exponential times
    ``D + c`` under the model). Real tracks have a few steps the model does not
    describe: a mislinked step to a neighbour and back, a localization outlier,
    noise heavier-tailed than Gaussian; two such steps at the end of a window look
    like a short segment of higher D to a comparison of means. Medians ignore them.
    For ``n`` unit exponentials, ``log`` of the sample median has variance about
    ``1 / (n ln(2)^2)`` (asymptotic variance of a median, ``1 / (4 n f(m)^2)`` with
    density ``f(m) = 1/2`` at the median ``m = ln 2``); the alarm stands only when
    ``|log(med_after / med_before)|`` exceeds :data:`MEDIAN_CONFIRM_Z` standard
    errors. A true 5x change with 10 steps after it gives z = 3.5; smaller changes
    are confirmed a few steps later. Under the model the confirmation only removes
    alarms, so the false-alarm rate stays at or below the calibrated one. Called
    only for windows whose score crossed the threshold: one O(window) pass per
    candidate event.
    """
    y = np.diff(py[lo : hi + 1])
    k = jb - lo
    n1, n2 = k, (hi - lo) - k
    m1 = max(float(np.median(y[:k])), TINY_UM2_S)
    m2 = max(float(np.median(y[k:])), TINY_UM2_S)
    se = math.sqrt(1.0 / n1 + 1.0 / n2) / math.log(2.0)
    return abs(math.log(m2 / m1)) > MEDIAN_CONFIRM_Z * se


def step_dispersion(py: NDArray[np.float64], lo: int, hi: int) -> float:
    """Over-dispersion ``phi`` of the normalized squared steps of the window ``[lo, hi)``.

    Under the step model each ``y`` is ``(D + c)`` times a unit exponential:
    ``Var(y) / E(y)^2 = 1``. Real steps can be heavier-tailed (non-Gaussian
    localization errors, an irregular frame timing, occasional mislinks); a GLR of
    means then exceeds its calibrated threshold more often, by about the factor
    ``phi = Var(y) / E(y)^2`` (quasi-likelihood: the deviance scales with the
    dispersion). ``phi`` is estimated from pairs of steps two apart (independent
    under the model even with blur and noise, whose correlation reaches one step),
    ``u = (y_t - y_{t-2}) / (y_t + y_{t-2})``: for Gamma-distributed ``y`` of
    shape ``k`` (``phi = 1 / k``), ``E[u^2] = 1 / (2k + 1)``, so
    ``phi = 2 E[u^2] / (1 - E[u^2])`` (1 for exponential steps). The ratio does not
    depend on ``D + c``, so a change of D inside the window moves only the pairs that
    straddle it. NaN when fewer than 10 pairs.
    """
    y = np.diff(py[lo : hi + 1])
    a, b = y[2:], y[:-2]
    tot = a + b
    ok = tot > 0
    if int(ok.sum()) < 10:
        return math.nan
    m = float(np.mean(((a[ok] - b[ok]) / tot[ok]) ** 2))
    return 2.0 * m / max(1.0 - m, 1e-12)


def confirmed_by_dispersion(py: NDArray[np.float64], lo: int, hi: int, score: float,
                            threshold: float) -> bool:
    """Whether the score exceeds the threshold also when divided by the steps' dispersion.

    The dispersion is :func:`step_dispersion`, never taken below 1: under the model
    the confirmation only removes alarms.
    """
    phi = step_dispersion(py, lo, hi)
    return not (math.isfinite(phi) and score / max(phi, 1.0) <= threshold)


def change_point_at(
    py: NDArray[np.float64], pc: NDArray[np.float64], start: NDArray[np.int64], lo: int,
    hi: int, jb: int, score: float, f: float, frame: int, confidence: float, track_id: Any,
) -> ChangePoint:
    """The event of a change at step ``jb`` of the window ``[lo, hi)`` found at ``frame``."""
    n1, n2 = jb - lo, hi - jb
    y1, c1 = py[jb] - py[lo], pc[jb] - pc[lo]
    y2, c2 = py[hi] - py[jb], pc[hi] - pc[jb]
    b_lo, b_hi = _rate_interval(n1, y1, c1, f, confidence)
    a_lo, a_hi = _rate_interval(n2, y2, c2, f, confidence)
    return ChangePoint(
        frame=int(start[jb]),
        detected_at_frame=frame,
        d_before_um2_s=max(0.0, (y1 - c1) / n1),
        d_after_um2_s=max(0.0, (y2 - c2) / n2),
        score=score,
        d_before_low_um2_s=b_lo,
        d_before_high_um2_s=b_hi,
        d_after_low_um2_s=a_lo,
        d_after_high_um2_s=a_hi,
        steps_before=n1,
        steps_after=n2,
        track_id=track_id,
    )


class TrackChangeDetector:
    """Online GLR detector of a change of D on one track, fed one position at a time.

    Parameters
    ----------
    config : ChangeConfig
        Shared settings.
    track_id : object, optional
        Copied into every :class:`ChangePoint`.

    Attributes
    ----------
    last_score : float
        Score (dispersion-corrected max LLR) of the last update; 0 while the window
        holds fewer than ``2 min_segment_steps`` steps. Useful to monitor how close a
        track is to an event.

    Notes
    -----
    Memory is O(``max_history_steps``): steps are kept in arrays that grow by
    doubling up to twice that length and are then compacted when full (amortized
    O(1) per step); 32 kB per track at the default window, 2.6 kB for tracks under
    64 steps. Each update appends one step to running prefix sums and evaluates the
    LLR of every admissible split of the window at once (O(window) numpy work,
    30-50 us per update at 400 steps on one core).
    """

    def __init__(self, config: ChangeConfig, track_id: Any = None) -> None:
        if not isinstance(config, ChangeConfig):
            raise ValueError(f"config must be a ChangeConfig, got {type(config).__name__}")
        self.config = config
        self.track_id = track_id
        self._dt = config.frame_interval_s
        self._blur = config.blur
        self._threshold = config.threshold
        self._m = config.min_segment_steps
        self._w = config.max_history_steps
        # Buffers start small and double up to twice the window (most tracks are
        # short: ~2 kB each instead of ~32 kB at the full 400-step window).
        self._max_cap = 2 * self._w + 2
        self._counts = np.arange(self._w + 1, dtype=np.float64)  # segment lengths
        self.reset()

    def reset(self) -> None:
        """Forget the track: the next position starts a new history."""
        cap = min(INITIAL_CAPACITY_STEPS, self._max_cap)
        self._cap = cap
        # Per step: start frame; prefix sums (index 0 = 0) of y, c, a, s.
        self._start = np.zeros(cap, dtype=np.int64)
        self._py = np.zeros(cap + 1)
        self._pc = np.zeros(cap + 1)
        self._pa = np.zeros(cap + 1)
        self._ps = np.zeros(cap + 1)
        self._hi = 0  # steps stored
        self._restart = 0  # first step of the current regime
        self._last_frame: int | None = None
        self._last_xy = np.zeros(2)
        self._last_s2 = 0.0
        self.last_score = 0.0

    @property
    def n_steps(self) -> int:
        """Steps of the current regime inside the history window."""
        return self._hi - self._lo()

    @property
    def last_frame(self) -> int | None:
        """Frame of the last position received, or None."""
        return self._last_frame

    def _lo(self) -> int:
        return max(self._restart, self._hi - self._w)

    def update(self, frame: int, xy_um: Any, sigma_um: float, *,
               interval_known: bool = True) -> ChangePoint | None:
        """Add the position of ``frame`` and test for a change of D.

        Parameters
        ----------
        frame : int
            Frame index, >= 0 and greater than the previous one (gaps allowed).
        xy_um : array_like, shape (2,)
            Localized position (x, y) in um.
        sigma_um : float
            Localization precision per dimension in um, >= 0.
        interval_known : bool
            False when the time since the previous position is not what the frame
            numbers say (a frame the timing check flagged as late or early,
            ``frame_timing.py``): the position starts the next step, no step is
            added across the unknown interval and nothing is tested.

        Returns
        -------
        ChangePoint or None
            The change found with this position, if any. After an event the history
            restarts at the change: the steps of the new regime are kept.

        Raises
        ------
        ValueError
            On a non-integer or non-increasing ``frame``, a non-finite or
            wrongly-shaped ``xy_um``, or a negative or non-finite ``sigma_um``.
        """
        f = _validate.positive_int("frame", frame, minimum=0)
        xy = _validate.finite_array("xy_um", xy_um, ndim=1)
        if xy.shape != (2,):
            raise ValueError(f"xy_um must have shape (2,), got {xy.shape}")
        s2 = _validate.non_negative("sigma_um", sigma_um) ** 2
        prev = self._last_frame
        if prev is not None and f <= prev:
            raise ValueError(f"frame must increase along a track: got {f} after {prev}")
        self._last_frame, last_xy, last_s2 = f, self._last_xy, self._last_s2
        self._last_xy, self._last_s2 = xy, s2
        if prev is None or not interval_known:
            return None
        self._append_step(prev, f - prev, float(np.sum((xy - last_xy) ** 2)), last_s2 + s2)
        return self._test(f)

    def _append_step(self, start: int, k: int, q: float, s: float) -> None:
        if self._hi == self._cap:
            if self._cap < self._max_cap:
                self._grow()
            else:
                self._compact()
        append_step_at(self._start, self._py, self._pc, self._pa, self._ps, self._hi, start,
                        k, q, s, self._dt, self._blur)
        self._hi += 1

    def _grow(self) -> None:
        cap = min(2 * self._cap, self._max_cap)
        self._start = np.concatenate([self._start, np.zeros(cap - self._cap, dtype=np.int64)])
        self._py, self._pc, self._pa, self._ps = (
            np.concatenate([p, np.zeros(cap - self._cap)])
            for p in (self._py, self._pc, self._pa, self._ps)
        )
        self._cap = cap

    def _compact(self) -> None:
        lo = self._lo()
        compact_at(self._start, (self._py, self._pc, self._pa, self._ps), lo, self._hi)
        self._restart -= lo
        self._hi -= lo

    def _test(self, frame: int) -> ChangePoint | None:
        lo, hi, m = self._lo(), self._hi, self._m
        self.last_score = 0.0
        if hi - lo < 2 * m:
            return None
        jb, score, f = scan_window(self._py, self._pc, self._pa, self._ps, self._counts,
                                    lo, hi, m, self._blur, self._dt)
        self.last_score = score
        if not score > self._threshold:
            return None
        if not confirmed_by_medians(self._py, lo, hi, jb):
            return None  # a few steps the model does not describe, not a change of D
        if not confirmed_by_dispersion(self._py, lo, hi, score, self._threshold):
            return None  # steps heavier-tailed than the model: the score is inflated
        event = change_point_at(self._py, self._pc, self._start, lo, hi, jb, score, f, frame,
                              self.config.confidence, self.track_id)
        self._restart = jb
        return event
