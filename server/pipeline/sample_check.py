"""Whether the settings that describe the sample hold for the data: spot size and search radius.

Two stream settings describe the sample, not the instrument, and their defaults
(``detector.radius_um`` 0.15 um, ``linker.max_distance_um`` 1.0 um) suit a typical
fluorescence acquisition at 0.1 um pixels only. A session checks both against its
own data and warns once, naming the field, the value in use and the value the
data suggest; it corrects nothing (a setting the user chose stays theirs).

Spot size (``SPOT_SIZE``)
-------------------------
``radius_um`` sets the LoG scale (sigma = radius / sqrt 2), the fit's start and
window, and the PSF width the window estimator's model is given. The detector
fits each spot's width (:attr:`~livespt.server.pipeline.detect.Spots.sigma_px`,
pixel-integrated Gaussian, so unbiased for a Gaussian PSF whatever the LoG scale:
measured 0.71, 0.91, 1.41 and 2.00 px for PSFs of 0.7, 0.9, 1.4 and 2.0 px with
the LoG set for 0.9 px). Motion blur widens moving spots, so only spots whose
one-frame step into their frame is shorter than the assumed PSF SD enter. Once
:data:`SPOT_MIN_SPOTS` have, their median fitted SD is compared with
``radius_um / sqrt 2``; outside a factor :data:`SPOT_FACTOR` either way, the
warning suggests ``radius_um = sqrt 2 x`` the median.

Search radius (``LINK_DISTANCE``)
---------------------------------
A track's gate is ``max_distance_um`` until it has 3 steps (then it widens to 3
of its own RMS steps, up to 4 times; ``link.py``), so a particle whose steps often
exceed ``max_distance_um`` loses links early and its track breaks. Each track's
RMS one-frame step (2-D, localization noise included) is taken over its steps
once it has :data:`TRACK_MIN_STEPS`; once :data:`MIN_TRACKS` tracks have one:

* *too small*: more than :data:`TOO_SMALL_SHARE` of them have
  :data:`TOO_SMALL_STEPS` (2) RMS steps above ``max_distance_um``: a 2-D Brownian
  step exceeds 2 RMS steps with probability exp(-4) = 1.8 %, so such a track loses
  a link every few dozen frames (at 3 RMS steps, exp(-9): one in 8000; the margin
  also absorbs the noise of an RMS step from a few steps);
* *too large*: ``max_distance_um`` exceeds both the median distance from a spot
  to its nearest neighbour in the same frame (links may jump between particles)
  and twice 3 RMS steps of the fastest tracks (95th percentile of the tracks'
  RMS steps).

The suggestion is 3 RMS steps of the 95th-percentile track. The RMS steps are
those the linker accepted, so a radius far too small shows up as truncated steps
near the radius; the too-small share still grows with it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

SPOT_MIN_SPOTS = 200
"""Slow spots (step < assumed PSF SD) whose fitted widths decide the spot-size check."""

SPOT_FACTOR = 1.5
"""Median fitted SD over (or under) the assumed PSF SD by this factor is flagged."""

TRACK_MIN_STEPS = 5
"""Steps a track needs before its RMS step counts."""

MIN_TRACKS = 30
"""Tracks with an RMS step that decide the search-radius check."""

TOO_SMALL_SHARE = 0.1
"""Share of tracks with :data:`TOO_SMALL_STEPS` RMS steps beyond ``max_distance_um``
that is flagged."""

TOO_SMALL_STEPS = 2.0
"""RMS steps below which a search radius loses links (see the module docstring)."""

GATE_STEPS = 3.0
"""RMS steps a search radius should span (a 2-D Brownian step exceeds 3 of them with
probability exp(-9))."""

NEIGHBOUR_FRAMES = 50
"""Frames whose nearest-neighbour distances between spots are measured (the first ones)."""


class SampleCheck:
    """Checks ``detector.radius_um`` and ``linker.max_distance_um`` against the data.

    Parameters
    ----------
    radius_um : float
        The detector's spot radius, um (the assumed PSF SD is ``radius_um / sqrt 2``).
    max_distance_um : float
        The linker's frame-to-frame search radius, um.
    """

    def __init__(self, radius_um: float, max_distance_um: float) -> None:
        self.radius_um = float(radius_um)
        self.max_distance_um = float(max_distance_um)
        self.psf_sd_um = self.radius_um / math.sqrt(2.0)
        self._widths: list[float] = []
        self.spot_decided = False
        self.spot_flagged = False
        # per live track: sum of squared one-frame steps (um^2) and their count
        self._s2: dict[int, float] = {}
        self._n: dict[int, int] = {}
        self._rms_ended: list[float] = []
        self._neighbour: list[float] = []
        self._frames = 0
        self.link_decided = False
        self.link_flagged: str | None = None
        self._link_numbers: dict[str, Any] = {}

    def add(self, track_ids: ArrayLike, xy_um: ArrayLike, steps_um: ArrayLike,
            width_um: ArrayLike) -> list[tuple[str, str]]:
        """Take one frame's points; return the warnings this frame decided (at most once each).

        Parameters
        ----------
        track_ids : array_like of int, shape (K,)
            Track of each point.
        xy_um : array_like, shape (K, 2)
            Positions, um.
        steps_um : array_like, shape (K, 2)
            One-frame step into this frame, um; NaN where the track has none.
        width_um : array_like, shape (K,)
            Fitted spot SD, um; NaN where the fit failed.

        Returns
        -------
        list of (code, message)
            ``SPOT_SIZE`` and ``LINK_DISTANCE`` warnings, each at most once per session.
        """
        ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
        xy = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
        st = np.asarray(steps_um, dtype=np.float64).reshape(-1, 2)
        wd = np.asarray(width_um, dtype=np.float64).reshape(-1)
        out: list[tuple[str, str]] = []
        step = np.hypot(st[:, 0], st[:, 1])
        known = np.isfinite(step)
        if not self.spot_decided:
            slow = known & (step < self.psf_sd_um) & np.isfinite(wd)
            self._widths.extend(wd[slow].tolist())
            if len(self._widths) >= SPOT_MIN_SPOTS:
                self.spot_decided = True
                msg = self._spot_message()
                if msg is not None:
                    self.spot_flagged = True
                    out.append(("SPOT_SIZE", msg))
        if self._frames < NEIGHBOUR_FRAMES and xy.shape[0] >= 2:
            d, _ = cKDTree(xy).query(xy, k=2)
            self._neighbour.extend(d[:, 1].tolist())
        self._frames += 1
        if self.link_decided:
            return out
        for t, s2 in zip(ids[known].tolist(), (step[known] ** 2).tolist(), strict=True):
            self._s2[t] = self._s2.get(t, 0.0) + s2
            self._n[t] = self._n.get(t, 0) + 1
        if self._frames % 10 == 0:
            rms = self._track_rms()
            if rms.size >= MIN_TRACKS:
                self.link_decided = True
                msg = self._link_message(rms)
                if msg is not None:
                    out.append(("LINK_DISTANCE", msg))
        return out

    def drop(self, track_id: int) -> None:
        """A track ended: keep its RMS step (if it has enough steps), forget the rest."""
        if not self._n:
            return
        n = self._n.pop(track_id, 0)
        s2 = self._s2.pop(track_id, 0.0)
        if n >= TRACK_MIN_STEPS and not self.link_decided:
            self._rms_ended.append(math.sqrt(s2 / n))

    def _track_rms(self) -> NDArray[np.float64]:
        live = [math.sqrt(self._s2[t] / n) for t, n in self._n.items() if n >= TRACK_MIN_STEPS]
        return np.asarray(self._rms_ended + live, dtype=np.float64)

    def _spot_message(self) -> str | None:
        med = float(np.median(self._widths))
        ratio = med / self.psf_sd_um
        if 1.0 / SPOT_FACTOR <= ratio <= SPOT_FACTOR:
            return None
        side = "wider" if ratio > 1 else "narrower"
        return (f"detector.radius_um = {self.radius_um:.3g} um assumes spots of SD "
                f"{self.psf_sd_um:.3g} um, but the {len(self._widths)} spots that moved less "
                f"than that between frames have a fitted SD of {med:.3g} um (median): "
                f"{ratio:.1f}x {side}; detection, the fit window and the model's PSF width "
                f"follow the radius; give radius_um = {math.sqrt(2.0) * med:.3g} um "
                f"(livespt stream --radius)")

    def _link_message(self, rms: NDArray[np.float64]) -> str | None:
        g = self.max_distance_um
        p95 = float(np.quantile(rms, 0.95))
        need = GATE_STEPS * p95
        short = float(np.mean(TOO_SMALL_STEPS * rms > g))
        nn = float(np.median(self._neighbour)) if self._neighbour else math.inf
        self._link_numbers = {"tracks": int(rms.size), "rms_step_p50_um": float(np.median(rms)),
                              "rms_step_p95_um": p95, "suggested_um": need,
                              "share_beyond": short,
                              "median_neighbour_um": nn if math.isfinite(nn) else None}
        if short > TOO_SMALL_SHARE:
            self.link_flagged = "too small"
            return (f"linker.max_distance_um = {g:.3g} um is less than 2 RMS steps for "
                    f"{short:.0%} of {rms.size} tracks (RMS step up to {float(rms.max()):.3g} "
                    f"um, 95th percentile {p95:.3g} um): their steps beyond {g:.3g} um (more "
                    f"than 2 % of them) are not linked until a track has 3 steps, so fast "
                    f"tracks break; give max_distance_um = {need:.3g} um, 3 RMS steps "
                    f"(livespt stream --max-distance)")
        if g > nn and g > 2.0 * need:
            self.link_flagged = "too large"
            return (f"linker.max_distance_um = {g:.3g} um is more than the median distance "
                    f"between neighbouring spots ({nn:.3g} um) and more than twice 3 RMS "
                    f"steps of the fastest tracks ({need:.3g} um, {rms.size} tracks): links "
                    f"may jump between particles; give max_distance_um = {need:.3g} um "
                    f"(livespt stream --max-distance)")
        return None

    def summary(self) -> dict[str, Any]:
        """What was checked and found, for the session summary."""
        widths = np.asarray(self._widths)
        spot: dict[str, Any] = {
            "radius_um": self.radius_um, "assumed_sd_um": self.psf_sd_um,
            "slow_spots": int(widths.size),
            "fitted_sd_um": float(np.median(widths)) if widths.size else None,
            "decided": self.spot_decided, "flagged": self.spot_flagged}
        link: dict[str, Any] = {"max_distance_um": self.max_distance_um,
                                "decided": self.link_decided, "flagged": self.link_flagged}
        if not self.link_decided:
            rms = self._track_rms()
            link["tracks"] = int(rms.size)
        link.update(self._link_numbers)
        return {"spot_size": spot, "search_radius": link}
