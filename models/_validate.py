"""Input checks shared by every public function of :mod:`models`.

Each check raises :class:`ValueError` whose message starts with the name of the
offending parameter, so a user (or the gRPC layer, which forwards the message)
can tell at once which field to fix.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray


def positive(name: str, value: Any) -> float:
    """Return ``value`` as float, or raise if it is not a finite number > 0."""
    v = _as_float(name, value)
    if not v > 0:
        raise ValueError(f"{name} must be > 0, got {v!r}")
    return v


def non_negative(name: str, value: Any) -> float:
    """Return ``value`` as float, or raise if it is not a finite number >= 0."""
    v = _as_float(name, value)
    if not v >= 0:
        raise ValueError(f"{name} must be >= 0, got {v!r}")
    return v


def in_range(name: str, value: Any, low: float, high: float) -> float:
    """Return ``value`` as float, or raise if it lies outside ``[low, high]``."""
    v = _as_float(name, value)
    if not low <= v <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {v!r}")
    return v


def positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def exposure_and_interval(exposure_s: Any, frame_interval_s: Any) -> tuple[float, float]:
    """Validate an exposure time against the frame interval (0 <= exposure <= interval)."""
    dt = positive("frame_interval_s", frame_interval_s)
    te = non_negative("exposure_s", exposure_s)
    if te > dt * (1 + 1e-12):
        raise ValueError(f"exposure_s ({te}) must not exceed frame_interval_s ({dt})")
    return min(te, dt), dt


def finite_array(name: str, values: Any, ndim: int | None = None) -> NDArray[np.float64]:
    """Return ``values`` as a float64 array, or raise on NaN/inf, bad shape or emptiness."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_float(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return v
