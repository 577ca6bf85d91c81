"""The records the analysis produces: track points, window estimates, track estimates, changes.

One definition serves the server, the client and the files
(:mod:`livespt.server.io.csv_records` writes them as CSV). Field names are the
column names of DESIGN.md and carry their unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class TrackPoint:
    """One localized position of a track (``tracks.csv``)."""

    track_id: int
    frame: int
    x_um: float
    y_um: float
    precision_um: float

    FILE: ClassVar[str] = "tracks.csv"


@dataclass(frozen=True)
class WindowEstimate:
    """D over one sliding window of a track (``estimates.csv``); 90 % interval."""

    track_id: int
    frame_start: int
    frame_end: int
    d_um2_s: float
    d_low_um2_s: float
    d_high_um2_s: float
    method: str

    FILE: ClassVar[str] = "estimates.csv"


@dataclass(frozen=True)
class ChangeEvent:
    """A change of D on a track (``changes.csv``).

    ``frame`` is the first frame of the new regime; ``detected_at_frame`` the last
    frame received when the event was emitted.
    """

    track_id: int
    frame: int
    detected_at_frame: int
    d_before_um2_s: float
    d_after_um2_s: float
    score: float

    FILE: ClassVar[str] = "changes.csv"

    @classmethod
    def from_detector(cls, track_id: int, ev: Any) -> ChangeEvent:
        """The record of a change detector's event (``server.pipeline.changepoint``)."""
        return cls(track_id, ev.frame, ev.detected_at_frame, ev.d_before_um2_s,
                   ev.d_after_um2_s, ev.score)


@dataclass(frozen=True)
class TrackEstimate:
    """D of one whole track (``track_estimates.csv``); 90 % interval."""

    track_id: int
    n_spots: int
    d_um2_s: float
    d_low_um2_s: float
    d_high_um2_s: float
    method: str

    FILE: ClassVar[str] = "track_estimates.csv"


Record = TrackPoint | WindowEstimate | ChangeEvent
RECORD_TYPES: tuple[type[TrackPoint] | type[WindowEstimate] | type[ChangeEvent], ...] = (
    TrackPoint, WindowEstimate, ChangeEvent)
