"""The records a session produces, and the CSV files they are persisted to.

One definition serves the server (which persists every session to its output
directory as records are produced, so a client that disconnects loses nothing)
and the client (which writes the same files from the updates it receives).
Column names follow DESIGN.md and carry their unit.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path
from typing import IO, Any, ClassVar


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


Record = TrackPoint | WindowEstimate | ChangeEvent
RECORD_TYPES: tuple[type[TrackPoint] | type[WindowEstimate] | type[ChangeEvent], ...] = (
    TrackPoint, WindowEstimate, ChangeEvent)


def columns(record_type: type) -> list[str]:
    """Column names of a record type, in file order."""
    return [f.name for f in fields(record_type)]


class RecordWriter:
    """Appends records to ``tracks.csv``, ``estimates.csv`` and ``changes.csv`` in a folder.

    Each file is created with its header at once (so an empty session still has
    well-formed files) and flushed after every :meth:`write` call, so whatever was
    computed is on disk even if the process is killed.

    Parameters
    ----------
    out_dir : str or Path
        The session's output directory (created if needed).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[type, IO[str]] = {}
        self._writers: dict[type, Any] = {}
        self._getters: dict[type, Any] = {}
        self.counts: dict[str, int] = {}
        for rt in RECORD_TYPES:
            f = open(self.out_dir / rt.FILE, "w", newline="")  # kept open: appended per frame
            w = csv.writer(f)
            w.writerow(columns(rt))
            f.flush()
            self._files[rt] = f
            self._writers[rt] = w
            self._getters[rt] = attrgetter(*columns(rt))
            self.counts[rt.FILE] = 0

    def write(self, records: Sequence[Record]) -> None:
        """Append records of any of the three types, then flush the touched files."""
        by_type: dict[type, list[Record]] = {}
        for r in records:
            by_type.setdefault(type(r), []).append(r)
        for rt, rs in by_type.items():
            # attrgetter, not dataclasses.astuple (which deep-copies every value);
            # csv writes floats with repr: infinite bounds appear as "inf".
            self._writers[rt].writerows(map(self._getters[rt], rs))
            self.counts[rs[0].FILE] += len(rs)
            self._files[rt].flush()

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` (atomically: a reader never sees half a file)."""
        path = self.out_dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(path)
        return path

    def close(self) -> None:
        """Close the CSV files (idempotent)."""
        for f in self._files.values():
            if not f.closed:
                f.close()
