"""The 25 trajectory features of the ViT seed paper, batched and vectorised in torch.

The EPFL ViT report (seed ``000``) fuses "25 trajectory features following a subset of the
features presented by" DeepSPT (Kaestel-Hansen et al. 2023) into the regression token, without
listing them. DeepSPT's diffusional fingerprint (Pinholt et al. 2021, extended) has 31 entries;
removing its five HMM-state entries (four occupation fractions and the state lifetime, which
need a fitted HMM) and the model-specific ``extra`` parameter (0 for free diffusion) leaves
exactly 25, so that is the list followed here. Four entries are replaced because they are
redundant, ill-defined or not unit-invariant (see ``docs/features.md`` for the reasons):
the chi2 p-value of the MSD fit by the fit's r^2; the step-length range (max - min) by the
step-length standard deviation; path length / number of positions (a copy of the mean step)
by the straightness; and the fractions of steps shorter than 0.1 and longer than 0.4 (absolute
lengths) by the fractions shorter than 0.5 and longer than 1.5 mean steps. Definitions follow
Wagner et al. (2017), Kowalek et al. (2019) and Pinholt et al. (2021) where DeepSPT's code
departs from them (gaussianity, MSD ratio); every choice is documented in ``docs/features.md``
and at the constants below.

Notation: a window holds positions ``r_0 .. r_N`` (``N`` steps, ``T = N + 1`` positions), steps
``s_n = r_n - r_{n-1}`` of length ``|s_n|``, frame interval ``dt``. ``MSD(n)`` is the
time-averaged squared displacement at lag ``n`` over the window, and the fits use lags
``1..L`` with ``L = max(min(3, N), (N + 1) // 2)`` (3 lags for 5 positions, 5 for 10, 15 for 30).

Physical units in, physical units out; nothing is normalised here (the model does it, see
:data:`FEATURE_TRANSFORMS`). Robustness: every feature is computed on coordinates divided by the
window's extent ``max_n |r_n - r_0|`` (so ratios are formed between numbers of order one), and
every quotient whose denominator can vanish (identical positions, zero-length steps, collinear
points, periodic back-and-forth) has a documented fallback, so no NaN or inf is ever returned
for finite positions. The only non-finite case left, a unit conversion overflowing float32
(spread^2 / dt above ~1e38 um^2/s), raises ``ValueError`` instead.

References
----------
Katz & George, "Fractals and the analysis of growth paths", Bull. Math. Biol. 47, 273 (1985).
Saxton, "Lateral diffusion in an archipelago", Biophys. J. 64, 1766 (1993).
Helmuth et al., "A novel supervised trajectory segmentation algorithm...", J. Struct. Biol.
159, 347 (2007).
Wagner et al., "Classification and segmentation of nanoparticle diffusion trajectories in
cellular micro environments", PLoS ONE 12, e0170165 (2017).
Kowalek, Loch-Olszewska & Szwabinski, "Classification of diffusion modes in single-particle
tracking data: feature-based versus deep-learning approach", Phys. Rev. E 100, 032410 (2019).
Pinholt et al., "Single-particle diffusional fingerprinting", PNAS 118, e2104624118 (2021).
Kaestel-Hansen et al., "Deep learning assisted single particle tracking for automated
correlation between diffusion and function", bioRxiv 2023.11.16.567393 (2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from livespt.models import _validate

Transform = Literal["identity", "log1p", "asinh"]


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: its column name, unit, suggested transform and definition.

    Attributes
    ----------
    name : str
        Column name; dimensional features end with their unit (``_um``, ``_um2``, ``_um2_s``).
    unit : str
        ``"1"`` (dimensionless), ``"um"``, ``"um2"`` or ``"um2_s"``.
    transform : {"identity", "log1p", "asinh"}
        Natural scale for the model's normalisation: ``identity`` for bounded dimensionless
        features (then standardise), ``log1p`` for counts, ``asinh`` for dimensional or
        heavy-tailed ones, applied as ``asinh(x / ref)`` with ``ref`` a reference scale of the
        feature's unit (e.g. ``D_ref`` for um^2/s, ``4 D_ref dt`` for um^2, its square root for
        um): log-like for large values, linear and sign-preserving near zero.
    definition : str
        One-line definition (the full table is in ``docs/features.md``).
    """

    name: str
    unit: str
    transform: Transform
    definition: str


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("alpha", "1", "identity", "slope of log MSD(n) vs log n, lags 1..L"),
    FeatureSpec(
        "d_msd_um2_s",
        "um2_s",
        "asinh",
        "slope / 4 of the least-squares line MSD(n dt) = 4 D n dt + b, lags 1..L",
    ),
    FeatureSpec("msd_fit_r2", "1", "identity", "coefficient of determination of that line"),
    FeatureSpec("efficiency", "1", "identity", "|r_N - r_0|^2 / (N sum |s_n|^2)"),
    FeatureSpec("log_efficiency", "1", "identity", "log(max(efficiency, 1e-6))"),
    FeatureSpec(
        "fractal_dimension",
        "1",
        "identity",
        "log N / log(N d / sum |s_n|), d the largest pairwise distance, in [1, 10]",
    ),
    FeatureSpec(
        "gaussianity",
        "1",
        "identity",
        "mean over lags 1..min(3, L) of <|dr_n|^4> / (2 <|dr_n|^2>^2) - 1",
    ),
    FeatureSpec(
        "kurtosis",
        "1",
        "identity",
        "m4 / m2^2 of the positions projected on the gyration tensor's main axis",
    ),
    FeatureSpec(
        "msd_ratio",
        "1",
        "asinh",
        "mean over n = 1..L-1 of MSD(n) / MSD(n+1) - n / (n+1) (0 for Brownian)",
    ),
    FeatureSpec(
        "trappedness", "1", "identity", "1 - exp(0.2048 - 0.25117 D12 N dt / r0^2), r0 = d / 2"
    ),
    FeatureSpec("n_steps", "1", "log1p", "number of steps N (positions - 1)"),
    FeatureSpec("mean_step_um", "um", "asinh", "mean |s_n|"),
    FeatureSpec("max_step_um", "um", "asinh", "max |s_n|"),
    FeatureSpec("min_step_um", "um", "asinh", "min |s_n|"),
    FeatureSpec("std_step_um", "um", "asinh", "standard deviation of |s_n| (ddof = 1)"),
    FeatureSpec("step_cv", "1", "identity", "std_step / mean_step"),
    FeatureSpec("path_length_um", "um", "asinh", "sum |s_n|"),
    FeatureSpec("straightness", "1", "identity", "|r_N - r_0| / sum |s_n|"),
    FeatureSpec("mean_msd_um2", "um2", "asinh", "mean of MSD(n) over lags 1..L"),
    FeatureSpec(
        "mean_step_dot_um2",
        "um2",
        "asinh",
        "mean of s_n . s_{n+1} (the lag-1 step autocovariance of the CVE)",
    ),
    FeatureSpec(
        "frac_forward", "1", "identity", "fraction of consecutive step pairs with s_n . s_{n+1} > 0"
    ),
    FeatureSpec(
        "frac_same_turn", "1", "identity", "fraction of consecutive dot products with the same sign"
    ),
    FeatureSpec(
        "frac_short_steps", "1", "identity", "fraction of steps shorter than 0.5 mean_step"
    ),
    FeatureSpec("frac_long_steps", "1", "identity", "fraction of steps longer than 1.5 mean_step"),
    FeatureSpec("hull_area_um2", "um2", "asinh", "area of the convex hull of the positions"),
)
"""The features in output order, each with unit, transform and definition."""

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
"""Column names of :func:`trajectory_features`' output, in order."""

N_FEATURES = len(FEATURES)

FEATURE_UNITS: dict[str, str] = {f.name: f.unit for f in FEATURES}
"""Unit of each feature: ``"1"``, ``"um"``, ``"um2"`` or ``"um2_s"``."""

FEATURE_TRANSFORMS: dict[str, Transform] = {f.name: f.transform for f in FEATURES}
"""Suggested transform before standardisation (see :class:`FeatureSpec`)."""

FIT_MIN_LAGS = 3
"""Fits use at least this many lags when the window has them (``L = max(min(3, N), T // 2)``)."""

GAUSSIANITY_MAX_LAG = 3
"""The gaussianity averages lags 1..min(3, L) only: at lag n a window holds about N / n
independent displacements, and the ratio of sample moments is biased towards -1/2 when they
are few. Averaged over lags up to N / 2 it is -0.14 even for 1000-position Brownian tracks;
over lags 1..3 it is -0.05 for 30 positions, -0.01 for 200 and tends to 0 (its Gaussian
value) as N grows."""

LOG_EFFICIENCY_FLOOR = 1e-6
"""``log_efficiency = log(max(efficiency, LOG_EFFICIENCY_FLOOR))``: a window that returns
exactly to its start has efficiency 0."""

MSD_FLOOR_RELATIVE = 1e-6
"""MSD values below this fraction of the window's largest fitted MSD are raised to it before
logs and ratios (alpha, msd_ratio), and such a lag contributes 0 (its Gaussian value) to the
gaussianity: a lag-n MSD of zero happens for periodic paths (back and forth: MSD(2) = 0). It
bounds msd_ratio by 1e6."""

FRACTAL_DIMENSION_MAX = 10.0
"""Cap of the fractal dimension: ``N d / L`` reaches 1 (log 0) for a back-and-forth path."""

SHORT_STEP_RATIO = 0.5
LONG_STEP_RATIO = 1.5
"""Thresholds of frac_short_steps / frac_long_steps in units of the window's mean step. For
2D Brownian steps (Rayleigh) the expected fractions are 1 - exp(-pi/16) = 0.178 and
exp(-9 pi/16) = 0.171."""

TRAP_OFFSET = 0.2048
TRAP_SLOPE = 0.25117
"""Trappedness ``1 - exp(TRAP_OFFSET - TRAP_SLOPE * D t / r0^2)`` as in Wagner et al. (2017)
and Pinholt et al. (2021) (after Saxton 1993, whose fit is base 10 with slope 2.5117)."""

HULL_GRID_BITS = 24
"""For the convex hull's orientation tests, positions are snapped to a grid of ``2^-24``
window extents, so every test is exact integer arithmetic in float64 (products < 2^50): no
tolerance, no inconsistent decisions on collinear or duplicated points. The area itself is
summed from the unsnapped positions, so it is exact (to rounding) unless the grid merges two
points or flattens a turn finer than ~6e-8 extents, which changes it by less than ~1e-7
extent^2."""


def trajectory_features(
    xy_um: Tensor, frame_interval_s: float, valid: Tensor | None = None
) -> Tensor:
    """Compute the 25 trajectory features of a batch of windows.

    Parameters
    ----------
    xy_um : torch.Tensor, shape (B, T, 2), float32 or float64
        Localized positions in um, on any device. Positions past a window's length (see
        ``valid``) are padding and may hold anything, NaN included.
    frame_interval_s : float
        Time between consecutive positions, s (> 0).
    valid : torch.Tensor of bool, shape (B, T), optional
        ``valid[b, t]`` is True for the ``T_b`` real positions of window ``b``, which must come
        first (a prefix: ``valid[b] == (arange(T) < T_b)``). Default: all positions real.

    Returns
    -------
    torch.Tensor, shape (B, 25)
        Features in the order of :data:`FEATURE_NAMES`, with the units of
        :data:`FEATURE_UNITS` (um, um^2, um^2/s or dimensionless); same dtype and device as
        ``xy_um``. Always finite. Windows shorter than 5 positions get values too (see
        ``docs/features.md``), down to empty windows.

    Raises
    ------
    ValueError
        If ``xy_um`` is not a (B, T, 2) float32/float64 tensor, a real position is not finite,
        ``valid`` is not a boolean prefix mask of shape (B, T), or ``frame_interval_s`` is not
        a finite number > 0; or, instead of returning inf, if a dimensional feature overflows
        the dtype (float32: spread^2 / ``dt`` above ~1e38 um^2/s).

    Notes
    -----
    O(B T^2) time and O(B T) memory; 2 T Python-level steps (one per lag, one per point of
    the convex hull's monotone chain), so batch many windows per call. Computed under
    ``torch.no_grad()``: the features are inputs, not differentiable functions (the hull and
    the thresholds are piecewise). About 2.5e5 windows of 10 positions per second on 2 CPU
    cores (float32 or float64), 7e4 for 30 positions.
    """
    dt = _validate.positive("frame_interval_s", frame_interval_s)
    xy, lengths = _check_inputs(xy_um, valid)
    b, t_max, _ = xy.shape
    if b == 0:
        return xy.new_zeros((0, N_FEATURES))
    if t_max < 4:
        # pad so that every per-step tensor below has at least one column
        xy = torch.cat([xy, xy.new_zeros((b, 4 - t_max, 2))], dim=1)
        t_max = 4
    with torch.no_grad():
        out = _features(xy, lengths, dt)
    if not bool(torch.isfinite(out).all()):
        # only reachable when a unit conversion overflows (e.g. float32 positions ~1e20 um)
        raise ValueError(
            "xy_um / frame_interval_s: features overflow the range of "
            f"{xy.dtype} (positions or their spread too large, or frame interval too small)"
        )
    return out


def features_numpy(
    xy_um: ArrayLike, frame_interval_s: float, lengths: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Compute the 25 features of one window or a batch of windows given as numpy arrays.

    Parameters
    ----------
    xy_um : array_like, shape (T, 2) or (B, T, 2)
        Positions in um (computed in float64).
    frame_interval_s : float
        Time between consecutive positions, s.
    lengths : array_like of int, shape () or (B,), optional
        Number of real positions of each window; the rest is padding. Default: all ``T``.

    Returns
    -------
    ndarray, shape (25,) or (B, 25)
        Features in the order of :data:`FEATURE_NAMES`.
    """
    try:
        arr = np.ascontiguousarray(xy_um, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"xy_um must be numeric: {exc}") from None
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 2:
        raise ValueError(f"xy_um must have shape (T, 2) or (B, T, 2), got {arr.shape}")
    valid = None
    if lengths is not None:
        n = np.asarray(lengths)
        if not np.issubdtype(n.dtype, np.integer):
            raise ValueError(f"lengths must be integers, got dtype {n.dtype}")
        if n.ndim > 1 or (n.ndim == 1 and n.shape[0] != arr.shape[0]):
            raise ValueError(f"lengths must have shape () or ({arr.shape[0]},), got {n.shape}")
        n = np.broadcast_to(n, (arr.shape[0],))
        if np.any(n < 0) or np.any(n > arr.shape[1]):
            raise ValueError(f"lengths must be in [0, {arr.shape[1]}], got {n.tolist()}")
        valid = torch.from_numpy(np.arange(arr.shape[1])[None, :] < n[:, None])
    out = trajectory_features(torch.from_numpy(arr), frame_interval_s, valid).numpy()
    return out[0] if single else out


def _check_inputs(xy_um: Tensor, valid: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validate the shapes and the mask; return positions and the window lengths (B,)."""
    if not isinstance(xy_um, Tensor):
        raise ValueError(f"xy_um must be a torch.Tensor, got {type(xy_um).__name__}")
    if xy_um.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"xy_um must be float32 or float64, got {xy_um.dtype}")
    if xy_um.ndim != 3 or xy_um.shape[-1] != 2:
        raise ValueError(f"xy_um must have shape (B, T, 2), got {tuple(xy_um.shape)}")
    b, t_max, _ = xy_um.shape
    if valid is None:
        lengths = torch.full((b,), t_max, dtype=torch.long, device=xy_um.device)
    else:
        if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
            raise ValueError("valid must be a boolean torch.Tensor")
        if tuple(valid.shape) != (b, t_max):
            raise ValueError(f"valid must have shape {(b, t_max)}, got {tuple(valid.shape)}")
        valid = valid.to(xy_um.device)
        lengths = valid.sum(dim=1)
        prefix = torch.arange(t_max, device=xy_um.device)[None, :] < lengths[:, None]
        if not bool(torch.equal(prefix, valid)):
            raise ValueError("valid must be True on a prefix of each window (padding at the end)")
    if b and t_max:
        real = torch.arange(t_max, device=xy_um.device)[None, :] < lengths[:, None]
        if not bool((torch.isfinite(xy_um).all(dim=-1) | ~real).all()):
            raise ValueError("xy_um contains NaN or infinite values in real positions")
    return xy_um, lengths


def _features(xy: Tensor, lengths: Tensor, dt: float) -> Tensor:
    """All features of (B, T >= 4) windows; see the module docstring for the definitions."""
    b, t_max, _ = xy.shape
    dev, dtype = xy.device, xy.dtype
    idx = torch.arange(t_max, device=dev)
    mask = idx[None, :] < lengths[:, None]  # (B, T) real positions
    n_steps = (lengths - 1).clamp(min=0)
    n_f = n_steps.to(dtype)
    n_safe = n_f.clamp(min=1.0)

    # Coordinates relative to the first position, divided by the window's extent: every
    # ratio below is then formed between numbers of order one, in float32 too.
    # x and y are kept as separate (B, T) planes: reductions over a last axis of size 2 are
    # slow in torch.
    rx = torch.where(mask, xy[..., 0] - xy[:, :1, 0], 0.0)
    ry = torch.where(mask, xy[..., 1] - xy[:, :1, 1], 0.0)
    ext = torch.hypot(rx, ry).amax(dim=1)
    moving = ext > 0  # False: all real positions identical (or fewer than 2)
    ext = torch.where(moving, ext, 1.0)
    ext2 = ext * ext
    ux = rx / ext[:, None]
    uy = ry / ext[:, None]

    # --- steps ----------------------------------------------------------------------
    smask = mask[:, 1:]  # step k joins positions k and k + 1
    sx = torch.where(smask, ux[:, 1:] - ux[:, :-1], 0.0)
    sy = torch.where(smask, uy[:, 1:] - uy[:, :-1], 0.0)
    s = torch.hypot(sx, sy)
    path = s.sum(dim=1)
    mean_s = path / n_safe
    max_s = s.amax(dim=1)
    min_s = torch.where(smask, s, math.inf).amin(dim=1)
    min_s = torch.where(n_steps > 0, min_s, 0.0)
    dev_s = torch.where(smask, s - mean_s[:, None], 0.0)
    var_s = (dev_s * dev_s).sum(dim=1) / (n_f - 1.0).clamp(min=1.0)
    std_s = torch.where(n_steps > 1, var_s.sqrt(), 0.0)
    cv = torch.where(mean_s > 0, std_s / torch.where(mean_s > 0, mean_s, 1.0), 0.0)
    frac_short = ((s < SHORT_STEP_RATIO * mean_s[:, None]) & smask).sum(dim=1) / n_safe
    frac_long = ((s > LONG_STEP_RATIO * mean_s[:, None]) & smask).sum(dim=1) / n_safe

    # --- end to end -------------------------------------------------------------------
    last = n_steps[:, None]
    ex, ey = ux.gather(1, last).squeeze(1), uy.gather(1, last).squeeze(1)
    e2e2 = ex * ex + ey * ey
    sum_s2 = (s * s).sum(dim=1)
    # sum_s2 >= 1 / N once the window moves (extent 1), so the quotients are well conditioned
    efficiency = torch.where(
        sum_s2 > 0, e2e2 / (n_safe * torch.where(sum_s2 > 0, sum_s2, 1.0)), 0.0
    ).clamp(0.0, 1.0)
    log_eff = torch.log(efficiency.clamp(min=LOG_EFFICIENCY_FLOOR))
    path_safe = torch.where(path > 0, path, 1.0)
    straightness = torch.where(path > 0, e2e2.sqrt() / path_safe, 0.0).clamp(0.0, 1.0)

    # --- consecutive steps: dot products and turning ------------------------------------
    dots = sx[:, :-1] * sx[:, 1:] + sy[:, :-1] * sy[:, 1:]  # (B, T - 2), 0 past the window
    dmask = mask[:, 2:]
    n_dots = (n_steps - 1).clamp(min=0).to(dtype)
    mean_dot = dots.sum(dim=1) / n_dots.clamp(min=1.0)
    frac_forward = ((dots > 0) & dmask).sum(dim=1) / n_dots.clamp(min=1.0)
    sign = torch.sign(dots)
    same = (sign[:, :-1] == sign[:, 1:]) & mask[:, 3:]
    n_pairs = (n_steps - 2).clamp(min=0).to(dtype)
    frac_same = same.sum(dim=1) / n_pairs.clamp(min=1.0)

    # --- lags: MSD curve, fourth moments, largest distance -------------------------------
    # one lag at a time keeps memory at O(B T) for long tracks; pair (i, i + n) is real
    # when i + n < length. The MSD is needed up to the largest L of the batch only.
    l_cap = max(min(FIT_MIN_LAGS, t_max - 1), t_max // 2)
    msd_sum = xy.new_zeros((b, l_cap))
    r4_sum = xy.new_zeros((b, l_cap))
    dmax2 = xy.new_zeros(b)
    for n in range(1, t_max):
        dx, dy = ux[:, n:] - ux[:, :-n], uy[:, n:] - uy[:, :-n]
        d2 = torch.where(mask[:, n:], dx * dx + dy * dy, 0.0)
        dmax2 = torch.maximum(dmax2, d2.amax(dim=1))
        if n <= l_cap:
            msd_sum[:, n - 1] = d2.sum(dim=1)
            r4_sum[:, n - 1] = (d2 * d2).sum(dim=1)
    lags = idx[1 : l_cap + 1]
    counts = (lengths[:, None] - lags[None, :]).clamp(min=1).to(dtype)
    msd = msd_sum / counts
    r4 = r4_sum / counts
    dmax = dmax2.sqrt()  # >= 1 once the window moves

    n_lags = torch.maximum(n_steps.clamp(max=FIT_MIN_LAGS), lengths // 2)
    lmask = lags[None, :] <= n_lags[:, None]
    w = lmask.to(dtype)
    n_lags_f = n_lags.to(dtype).clamp(min=1.0)
    mean_msd = (msd * w).sum(dim=1) / n_lags_f
    # >= 1/N^3 once the window moves: msd(1) = sum|s|^2/N and max|s| >= extent/N
    msd_top = (msd * w).amax(dim=1)
    floor = torch.where(msd_top > 0, MSD_FLOOR_RELATIVE * msd_top, 1.0)
    msd_f = torch.maximum(msd, floor[:, None])

    # D and r^2: least-squares line through (n, MSD(n)), which is unbiased for Brownian
    # motion with localization noise and blur (E MSD(n) is exactly linear in n).
    lag_f = lags.to(dtype)
    slope, ss_tot, ss_res, ok = _line_fit(lag_f, msd, w)
    slope = torch.where(ok, slope, torch.where(n_steps > 0, msd[:, 0], 0.0))
    d_msd = slope * ext2 / (4.0 * dt)
    r2 = torch.where(
        ok & (ss_tot > 0), 1.0 - ss_res / torch.where(ss_tot > 0, ss_tot, 1.0), 0.0
    ).clamp(0.0, 1.0)
    # alpha: line through (log n, log MSD(n)); dt drops out of the slope.
    alpha, _, _, ok_a = _line_fit(torch.log(lag_f), torch.log(msd_f), w)
    alpha = torch.where(ok_a, alpha, 0.0)

    # Gaussianity (Wagner et al. with |dr|^4 = (dx^2 + dy^2)^2): 0 for Gaussian displacements.
    g_lags = n_lags.clamp(max=GAUSSIANITY_MAX_LAG)
    g_ok = (lags[None, :] <= g_lags[:, None]) & (msd >= floor[:, None])
    g_terms = torch.where(g_ok, r4 / (2.0 * msd_f * msd_f) - 1.0, 0.0)
    gaussianity = g_terms.sum(dim=1) / g_lags.to(dtype).clamp(min=1.0)

    # MSD ratio: consecutive lags n, n+1 with n + 1 <= L.
    kappa = msd_f[:, :-1] / msd_f[:, 1:] - lag_f[:-1] / lag_f[1:]
    kmask = lmask[:, 1:]
    n_kappa = (n_lags - 1).clamp(min=0).to(dtype)
    msd_ratio = torch.where(kmask, kappa, 0.0).sum(dim=1) / n_kappa.clamp(min=1.0)

    # Trappedness: D12 from MSD(2) - MSD(1), t = N dt, r0 = dmax / 2, so
    # D12 t / r0^2 = N (MSD(2) - MSD(1)) / dmax^2 (dimensionless; dt cancels).
    dmsd12 = torch.where(n_steps >= 2, (msd[:, 1] - msd[:, 0]).clamp(min=0.0), 0.0)
    dmax_safe = torch.where(dmax > 0, dmax, 1.0)
    x_trap = n_f * dmsd12 / (dmax_safe * dmax_safe)
    trappedness = 1.0 - torch.exp(TRAP_OFFSET - TRAP_SLOPE * x_trap)

    # Fractal dimension (Katz & George): log N / log(N d / L), N d / L >= 1.
    ratio = n_f * dmax / path_safe
    log_n = torch.log(n_safe)
    denom = torch.maximum(torch.log(ratio.clamp(min=1.0)), log_n / FRACTAL_DIMENSION_MAX)
    fractal = torch.where(
        (n_steps >= 2) & (path > 0), log_n / torch.where(denom > 0, denom, 1.0), 1.0
    ).clamp(1.0, FRACTAL_DIMENSION_MAX)

    # Kurtosis of the positions projected on the main axis of the gyration tensor.
    cnt = lengths.to(dtype).clamp(min=1.0)
    cx = torch.where(mask, ux - (ux.sum(dim=1) / cnt)[:, None], 0.0)
    cy = torch.where(mask, uy - (uy.sum(dim=1) / cnt)[:, None], 0.0)
    gxx, gyy, gxy = (cx * cx).sum(dim=1), (cy * cy).sum(dim=1), (cx * cy).sum(dim=1)
    theta = 0.5 * torch.atan2(2.0 * gxy, gxx - gyy)
    proj = cx * torch.cos(theta)[:, None] + cy * torch.sin(theta)[:, None]
    m2 = (proj * proj).sum(dim=1) / cnt
    m4 = (proj**4).sum(dim=1) / cnt
    kurtosis = torch.where(m2 > 0, m4 / torch.where(m2 > 0, m2 * m2, 1.0), 3.0)

    hull = _hull_area_unit(ux, uy).to(dtype) * ext2

    # fallbacks for windows whose real positions are all identical (see docs/features.md)
    alpha = torch.where(moving, alpha, 0.0)
    msd_ratio = torch.where(moving, msd_ratio, 0.0)
    fractal = torch.where(moving, fractal, 1.0)
    kurtosis = torch.where(moving, kurtosis, 3.0)

    cols = [
        alpha,
        d_msd,
        r2,
        efficiency,
        log_eff,
        fractal,
        gaussianity,
        kurtosis,
        msd_ratio,
        trappedness,
        n_f,
        mean_s * ext,
        max_s * ext,
        min_s * ext,
        std_s * ext,
        cv,
        path * ext,
        straightness,
        mean_msd * ext2,
        mean_dot * ext2,
        frac_forward,
        frac_same,
        frac_short,
        frac_long,
        hull,
    ]
    return torch.stack([col.to(dtype) for col in cols], dim=1)


def _line_fit(x: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Least-squares line through the points with weight 1 (``w``) of each row.

    Parameters
    ----------
    x : Tensor, shape (K,)
    y, w : Tensor, shape (B, K)

    Returns
    -------
    slope, ss_tot, ss_res, ok : Tensor, shape (B,)
        Slope, total and residual sums of squares of y; ``ok`` where the row has two
        distinct x (elsewhere slope is 0).
    """
    s0 = w.sum(dim=1).clamp(min=1.0)
    xm = (w * x[None, :]).sum(dim=1) / s0
    ym = (w * y).sum(dim=1) / s0
    dx = (x[None, :] - xm[:, None]) * w
    dy = (y - ym[:, None]) * w
    sxx = (dx * dx).sum(dim=1)
    ok = sxx > 0
    slope = torch.where(ok, (dx * dy).sum(dim=1) / torch.where(ok, sxx, 1.0), 0.0)
    ss_tot = (dy * dy).sum(dim=1)
    res = dy - slope[:, None] * dx
    ss_res = (res * res).sum(dim=1)
    return slope, ss_tot, ss_res, ok


def _hull_area_unit(ux: Tensor, uy: Tensor) -> Tensor:
    """Convex hull area of each row of points (x and y of shape (B, T)), float64.

    Andrew's monotone chain, vectorised over the batch: points sorted by (x, y), the lower
    chain built over them in ascending order and the upper chain in descending order (both
    as one batch of 2B rows), the area the shoelace sum over the two chains. Each new point
    p pops the top of the stack while the last turn is not strictly to the left; as the
    stack is a convex chain, the kept part is a prefix (the turns at stack positions
    1..m-1 towards p are left turns up to some m and not after), so all pops of one point
    are found at once: T steps of O(B T) work. Repeated points (padding repeats the first
    position) take part once. The turn tests use the positions snapped to an integer grid
    (:data:`HULL_GRID_BITS`), so they are exact; the area is summed from the unsnapped ones.
    """
    b, t_max = ux.shape
    dev = ux.device
    vx, vy = ux.to(torch.float64), uy.to(torch.float64)
    half = float(1 << HULL_GRID_BITS)
    qx, qy = torch.round(vx * half) + half, torch.round(vy * half) + half  # in [0, 2^25]
    key = qx * (4.0 * half) + qy  # lexicographic (x, y), exact below 2^52
    ks, order = key.sort(dim=1)
    first = torch.ones_like(ks, dtype=torch.bool)
    first[:, 1:] = ks[:, 1:] != ks[:, :-1]  # one point of each group of repeats
    pts = torch.stack([c.gather(1, order) for c in (qx, qy, vx, vy)])  # (4, B, T)
    pts = torch.cat([pts, pts.flip(2)], dim=1)  # (4, 2B, T): lower chain rows, then upper
    active = torch.cat([first, first.flip(1)])
    n = 2 * b
    # stack of chain vertices, one plane per coordinate; column t_max is scratch, written by
    # rows whose point repeats an earlier one
    stack = pts.new_zeros((4, n, t_max + 1))
    flat = stack.view(4, n * (t_max + 1))
    row_start = torch.arange(n, device=dev) * (t_max + 1)
    size = torch.zeros(n, dtype=torch.long, device=dev)
    column = torch.arange(1, t_max, device=dev)
    scratch = torch.full_like(size, t_max)
    for i in range(t_max):
        p = pts[:, :, i]
        width = min(i, int(size.max())) if i >= 2 else i  # chains are short: slice them
        if width >= 2:  # else the stack holds at most one point: nothing to pop
            sx, sy = stack[0, :, :width], stack[1, :, :width]
            ax, ay = sx[:, 1:] - sx[:, :-1], sy[:, 1:] - sy[:, :-1]
            bx, by = p[0, :, None] - sx[:, :-1], p[1, :, None] - sy[:, :-1]
            left = ((ax * by - ay * bx) > 0) & (column[None, : width - 1] < size[:, None])
            keep = torch.minimum(1 + left.sum(dim=1), size)
        else:
            keep = size.clamp(max=1)
        slot = torch.where(active[:, i], keep, scratch)
        flat.index_copy_(1, row_start + slot, p)
        size = torch.where(active[:, i], keep + 1, size)
    hx, hy = stack[2, :, :t_max], stack[3, :, :t_max]
    edge = hx[:, :-1] * hy[:, 1:] - hy[:, :-1] * hx[:, 1:]
    inside = column[None, :] < size[:, None]  # edge m joins vertices m - 1 and m
    area2 = torch.where(inside, edge, 0.0).sum(dim=1)
    return ((area2[:b] + area2[b:]) / 2.0).clamp(min=0.0)
