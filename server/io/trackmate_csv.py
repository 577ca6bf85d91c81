"""TrackMate CSV exports: the spots table (and its edges table), read into tracks in um and s.

TrackMate ("Spots" table, *Export to CSV*) writes one row of feature keys
(``LABEL, ID, TRACK_ID, QUALITY, POSITION_X, POSITION_Y, ..., FRAME, ...``),
then up to three more header rows (feature names, short names, units such as
``(micron)`` and ``(sec)``), then one row per spot; spots that belong to no
track have an empty (or ``None``) ``TRACK_ID`` and are skipped. Tracks are the
spots of one ``TRACK_ID`` in frame order; the spots table does not record splits
or merges, the edges table does (``TRACK_ID, SPOT_SOURCE_ID, SPOT_TARGET_ID``):
given with it, tracks are cut at splits and merges as from an XML file. The
tracks table (one row of features per track) holds no positions.

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
    linear_segments,
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


def _table(path: Path, required: tuple[str, ...], numeric: tuple[str, ...],
           expected: str) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    """Read a TrackMate CSV table.

    Returns the ``numeric`` columns (NaN where a ``TRACK_ID`` is empty or ``None``),
    the units row by column key (empty when the table has none) and the line number
    of the first data row.
    """
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        raise TrackMateFileError(
            f"{path}: not a text file (UTF-8): expected a TrackMate XML or CSV file (a movie "
            "goes with --movie)") from None
    reader = csv.reader(io.StringIO(text))
    try:
        keys = [k.strip() for k in next(reader)]
    except StopIteration:
        raise TrackMateFileError(f"{path}: the file is empty") from None
    missing = [k for k in required if k not in keys]
    if missing:
        what = ("a TrackMate tracks or edges table (no positions): export the spots table"
                if "POSITION_X" in required and ("TRACK_ID" in keys or "SPOT_SOURCE_ID" in keys)
                else f"not {expected}")
        raise TrackMateFileError(f"{path}: line 1 lacks column(s) {', '.join(missing)}: {what}")
    col = {k: i for i, k in enumerate(keys)}
    header: list[list[str]] = []
    rows: list[list[str]] = []
    first_line = 2
    probe = col[required[-1]]
    for row in reader:
        if not rows and len(header) < MAX_HEADER_ROWS - 1 and not _is_number(
                row[probe] if len(row) > probe else ""):
            header.append(row)
            first_line += 1
            continue
        rows.append(row)
    units: dict[str, str] = {}
    if header and any(c.strip().startswith("(") for c in header[-1]):
        units = {k: _unit(header[-1][j]) for k, j in col.items() if j < len(header[-1])}
    data = {k: np.full(len(rows), math.nan) for k in numeric}
    for i, row in enumerate(rows):
        for k in numeric:
            j = col.get(k)
            if j is None:
                continue
            cell = row[j].strip() if j < len(row) else ""
            if k == "TRACK_ID" and cell in ("", "None", "NaN"):
                continue  # a spot outside every track
            try:
                data[k][i] = float(cell)
            except ValueError:
                raise TrackMateFileError(f"{path}: line {first_line + i}, column {k}: "
                                         f"{cell!r} is not a number") from None
    return data, units, first_line


def read_trackmate_csv(
    path: str | Path, *, pixel_size_um: float | None = None,
    frame_interval_s: float | None = None, edges: str | Path | None = None,
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
    edges : str or Path, optional
        TrackMate's edges table of the same tracks: tracks are then cut into linear
        segments at splits and merges (column ``segment``), as from an XML file.

    Returns
    -------
    TrackMateTracks
        ``spot_id`` from the ``ID`` column (-1 when absent), ``segment`` 0 without
        ``edges``.

    Raises
    ------
    TrackMateFileError
        A missing column, a non-numeric value (naming the line and column),
        unknown units or missing calibration.
    """
    path = Path(path)
    data, units, first = _table(path, REQUIRED, ("TRACK_ID", "POSITION_X", "POSITION_Y",
                                                 "FRAME", "POSITION_T", "ID"),
                                "a TrackMate spots table")
    space = units.get("POSITION_X") if units else None
    time_unit = units.get("POSITION_T") if units else None
    keep = np.isfinite(data["TRACK_ID"])
    bad = keep & ~(np.isfinite(data["POSITION_X"]) & np.isfinite(data["POSITION_Y"])
                   & np.isfinite(data["FRAME"]))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise TrackMateFileError(f"{path}: line {first + i}: POSITION_X, POSITION_Y and "
                                 "FRAME must be finite for a spot of a track")

    # Length scale.
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
    warnings: list[tuple[str, str]] = []
    if edges is not None:
        if not np.all(np.isfinite(data["ID"])):
            raise TrackMateFileError(f"{path}: the spots need their ID column to be joined "
                                     "with the edges table")
        e, _, _ = _table(Path(edges), ("TRACK_ID", "SPOT_SOURCE_ID", "SPOT_TARGET_ID"),
                         ("TRACK_ID", "SPOT_SOURCE_ID", "SPOT_TARGET_ID"),
                         "a TrackMate edges table")
        et = e["TRACK_ID"].astype(np.int64)
        pts, n_cut = linear_segments(
            data["ID"].astype(np.int64), data["FRAME"].astype(np.int64), data["POSITION_X"],
            data["POSITION_Y"], et, e["SPOT_SOURCE_ID"].astype(np.int64),
            e["SPOT_TARGET_ID"].astype(np.int64), set(et.tolist()), scale, str(edges))
        if n_cut:
            warnings.append(("TRACK_SPLIT", f"{n_cut} track(s) had splits or merges and were "
                             "cut into linear segments (column 'segment'); each segment is "
                             "analysed on its own"))
    else:
        pts = pd.DataFrame({
            "track_id": data["TRACK_ID"][keep].astype(np.int64),
            "segment": np.zeros(int(keep.sum()), np.int64),
            "spot_id": np.where(np.isfinite(data["ID"][keep]), data["ID"][keep],
                                -1).astype(np.int64),
            "frame": data["FRAME"][keep].astype(np.int64),
            "x_um": data["POSITION_X"][keep] * scale,
            "y_um": data["POSITION_Y"][keep] * scale,
        }).sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)
    return TrackMateTracks(points=pts, pixel_size_um=pixel_size_um, frame_interval_s=dt,
                           spatial_unit=space or "", time_unit=time_unit or "",
                           n_tracks_in_file=int(pts["track_id"].nunique()), warnings=warnings)
