"""TrackMate CSV exports: the spots table, read into tracks in um and s.

TrackMate ("Spots" table, *Export to CSV*) writes one row of feature keys
(``LABEL, ID, TRACK_ID, QUALITY, POSITION_X, POSITION_Y, ..., FRAME, ...``),
then up to three more header rows (feature names, short names, units such as
``(micron)`` and ``(sec)``), then one row per spot; spots that belong to no
track have an empty (or ``None``) ``TRACK_ID`` and are skipped. Tracks are the
spots of one ``TRACK_ID`` in frame order (the spots table does not record
splits or merges: analyse the XML file for those).

Units: the units row names the position and time units. Without one, positions
are read as pixels (``--pixel-size`` needed) and the frame interval must be given.
The frame interval comes from ``POSITION_T / FRAME`` (TrackMate's
``POSITION_T`` is the frame times the interval) unless given.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from livespt.server.io.trackmate_xml import (
    FRAME_UNITS,
    LENGTH_UM,
    PIXEL_UNITS,
    TIME_S,
    TrackMateFileError,
    TrackMateTracks,
)

__all__ = ["read_trackmate_csv"]

REQUIRED = ("TRACK_ID", "POSITION_X", "POSITION_Y", "FRAME")
MAX_HEADER_ROWS = 4


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _unit(cell: str) -> str:
    return cell.strip().strip("()").strip().lower()


def read_trackmate_csv(
    path: str | Path, *, pixel_size_um: float | None = None,
    frame_interval_s: float | None = None,
) -> TrackMateTracks:
    """Read the tracks of a TrackMate spots-table CSV export.

    Parameters
    ----------
    path : str or Path
        The CSV file (TrackMate's spots table; UTF-8, comma-separated).
    pixel_size_um : float, optional
        Pixel size in um: needed when the positions are in pixels (units row
        ``pixel`` or no units row); the positions are then scaled by it.
    frame_interval_s : float, optional
        Frame interval in s; default: from ``POSITION_T / FRAME`` with the units
        row's time unit.

    Returns
    -------
    TrackMateTracks
        ``spot_id`` from the ``ID`` column (-1 when absent), ``segment`` 0.

    Raises
    ------
    TrackMateFileError
        A missing column, a non-numeric value (naming the line and column),
        unknown units or missing calibration.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig", errors="strict")
    reader = csv.reader(io.StringIO(text))
    try:
        keys = [k.strip() for k in next(reader)]
    except StopIteration:
        raise TrackMateFileError(f"{path}: the file is empty") from None
    missing = [k for k in REQUIRED if k not in keys]
    if missing:
        what = ("a TrackMate tracks or edges table (no positions): export the spots table"
                if "TRACK_ID" in keys or "SPOT_SOURCE_ID" in keys
                else "not a TrackMate spots table")
        raise TrackMateFileError(f"{path}: line 1 lacks column(s) {', '.join(missing)}: {what}")
    col = {k: i for i, k in enumerate(keys)}
    header: list[list[str]] = []
    rows: list[list[str]] = []
    line_of_first = 2
    for row in reader:
        if not rows and len(header) < MAX_HEADER_ROWS - 1 and not _is_number(
                row[col["FRAME"]] if len(row) > col["FRAME"] else ""):
            header.append(row)
            line_of_first += 1
            continue
        rows.append(row)
    units = header[-1] if header and any(c.strip().startswith("(") for c in header[-1]) else None
    space = _unit(units[col["POSITION_X"]]) if units else None
    time_unit = (_unit(units[col["POSITION_T"]]) if units and "POSITION_T" in col else None)

    n = len(rows)
    data = {k: np.full(n, math.nan) for k in ("TRACK_ID", "POSITION_X", "POSITION_Y", "FRAME",
                                              "POSITION_T", "ID")}
    for i, row in enumerate(rows):
        for k in data:
            j = col.get(k)
            if j is None:
                continue
            cell = row[j].strip() if j < len(row) else ""
            if k == "TRACK_ID" and cell in ("", "None", "NaN"):
                continue  # a spot outside every track
            try:
                data[k][i] = float(cell)
            except ValueError:
                raise TrackMateFileError(f"{path}: line {line_of_first + i}, column {k}: "
                                         f"{cell!r} is not a number") from None
    keep = np.isfinite(data["TRACK_ID"])
    bad = keep & ~(np.isfinite(data["POSITION_X"]) & np.isfinite(data["POSITION_Y"])
                   & np.isfinite(data["FRAME"]))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise TrackMateFileError(f"{path}: line {line_of_first + i}: POSITION_X, POSITION_Y and "
                                 "FRAME must be finite for a spot of a track")

    # Length scale.
    warnings: list[tuple[str, str]] = []
    if space is None or space in PIXEL_UNITS:
        if pixel_size_um is None:
            why = "no units row" if space is None else f"unit {space!r}"
            raise TrackMateFileError(f"{path}: positions are in pixels ({why}); give "
                                     "--pixel-size (um per pixel in the sample, e.g. 0.1)")
        scale = pixel_size_um
    elif space in LENGTH_UM:
        scale = LENGTH_UM[space]
    else:
        raise TrackMateFileError(f"{path}: unknown position unit {space!r} (known: um, micron, "
                                 "nm, mm, pixel)")
    # Frame interval.
    if frame_interval_s is not None:
        dt = frame_interval_s
    else:
        f, t = data["FRAME"], data["POSITION_T"]
        ok = np.isfinite(t) & (f > 0)
        if time_unit is None or time_unit in FRAME_UNITS or time_unit not in TIME_S \
                or not np.any(ok):
            raise TrackMateFileError(
                f"{path}: the frame interval cannot be read from the file (time unit "
                f"{time_unit or 'not given'!s}); give --frame-interval (s, e.g. 0.05)")
        dt = float(np.median(t[ok] / f[ok])) * TIME_S[time_unit]
        if not dt > 0:
            raise TrackMateFileError(f"{path}: POSITION_T / FRAME gives a frame interval of "
                                     f"{dt:g} s; give --frame-interval")
    pts = pd.DataFrame({
        "track_id": data["TRACK_ID"][keep].astype(np.int64),
        "segment": np.zeros(int(keep.sum()), np.int64),
        "spot_id": np.where(np.isfinite(data["ID"][keep]), data["ID"][keep], -1).astype(np.int64),
        "frame": data["FRAME"][keep].astype(np.int64),
        "x_um": data["POSITION_X"][keep] * scale,
        "y_um": data["POSITION_Y"][keep] * scale,
    }).sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    return TrackMateTracks(points=pts, pixel_size_um=pixel_size_um, frame_interval_s=dt,
                           spatial_unit=space or "", time_unit=time_unit or "",
                           n_tracks_in_file=int(pts["track_id"].nunique()), warnings=warnings)
