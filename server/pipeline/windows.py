"""Per-track ring buffers and sliding-window D estimates.

Each track keeps only its last ``length`` points (bounded memory however long
the stream). When a window is due (every ``stride`` points once ``length`` are
there), it is queued; :meth:`WindowEstimator.flush` estimates all windows queued
during one frame in as few vectorized calls as there are distinct frame patterns
(windows without gaps all share one), with the CVE and, per window, the mean
fitted localization precision as the known sigma.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

from models import _validate
from models.estimators import cve_batch
from server.records import WindowEstimate


@dataclass(frozen=True)
class WindowConfig:
    """Sliding-window settings.

    Attributes
    ----------
    length : int
        Points per window (>= 3), default 10.
    stride : int
        New points between two estimates of a track (>= 1), default 1.
    frame_interval_s : float
        Frame interval in s.
    exposure_s : float
        Exposure in s (sets the blur coefficient R = exposure / (6 interval)).
    use_fitted_sigma : bool
        True: sigma-known CVE with each window's mean fitted precision; False: the
        sigma-unknown CVE, which is unbiased whatever the precision estimates are.
    """

    length: int = 10
    stride: int = 1
    frame_interval_s: float = 0.05
    exposure_s: float = 0.05
    use_fitted_sigma: bool = True

    def __post_init__(self) -> None:
        _validate.positive_int("window.length", self.length, 3)
        _validate.positive_int("window.stride", self.stride, 1)
        _validate.exposure_and_interval(self.exposure_s, self.frame_interval_s)


class WindowEstimator:
    """Sliding-window CVE estimates for many tracks, fed one point at a time.

    Parameters
    ----------
    config : WindowConfig
        Window length, stride and timing.
    """

    def __init__(self, config: WindowConfig) -> None:
        self.config = config
        self._buffers: dict[int, deque[tuple[int, float, float, float]]] = {}
        self._since_last: dict[int, int] = {}
        self._due: list[tuple[int, tuple[tuple[int, float, float, float], ...]]] = []

    @property
    def n_tracks(self) -> int:
        """Tracks currently buffered."""
        return len(self._buffers)

    def add(self, track_id: int, frame: int, x_um: float, y_um: float, sigma_um: float) -> None:
        """Append a point to a track's buffer and queue a window if one is due."""
        buf = self._buffers.get(track_id)
        if buf is None:
            buf = self._buffers[track_id] = deque(maxlen=self.config.length)
            self._since_last[track_id] = self.config.stride - 1  # first full window is due
        buf.append((frame, x_um, y_um, sigma_um))
        if len(buf) < self.config.length:
            return
        self._since_last[track_id] += 1
        if self._since_last[track_id] >= self.config.stride:
            self._since_last[track_id] = 0
            self._due.append((track_id, tuple(buf)))

    def drop(self, track_id: int) -> None:
        """Forget a track that ended (its queued windows are still estimated)."""
        self._buffers.pop(track_id, None)
        self._since_last.pop(track_id, None)

    def flush(self) -> list[WindowEstimate]:
        """Estimate every queued window; return them in queue order."""
        if not self._due:
            return []
        due, self._due = self._due, []
        # Windows whose frames have the same shape (relative to their first frame)
        # share the CVE's variance coefficients: estimate each group in one call.
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for k, (_, pts) in enumerate(due):
            f0 = pts[0][0]
            groups[tuple(p[0] - f0 for p in pts)].append(k)
        out: list[WindowEstimate | None] = [None] * len(due)
        c = self.config
        for pattern, members in groups.items():
            arr = np.array([[p[1:] for p in due[k][1]] for k in members])  # (M, L, 3)
            sigma = arr[:, :, 2].mean(axis=1) if c.use_fitted_sigma else None
            if sigma is not None and not np.all(np.isfinite(sigma)):
                sigma = None  # a point without a fitted precision: fall back to sigma unknown
            est = cve_batch(
                arr[:, :, :2],
                c.frame_interval_s,
                np.asarray(pattern),
                exposure_s=c.exposure_s,
                sigma_um=sigma,
            )
            for j, k in enumerate(members):
                track_id, pts = due[k]
                out[k] = WindowEstimate(
                    track_id=track_id,
                    frame_start=pts[0][0],
                    frame_end=pts[-1][0],
                    d_um2_s=float(est.d_um2_s[j]),
                    d_low_um2_s=float(est.d_low_um2_s[j]),
                    d_high_um2_s=float(est.d_high_um2_s[j]),
                    method=est.method,
                )
        return [w for w in out if w is not None]
