"""TrackMate XML files: read their tracks, write D back into them.

:func:`read_trackmate_xml` reads the tracks of a TrackMate XML file (the layout
TrackMate 6, 7 and 8 write: ``Model`` with ``FeatureDeclarations``, ``AllSpots``
(spots by frame), ``AllTracks`` (tracks as edges between spot IDs) and
``FilteredTracks``; ``Settings/ImageData`` with the calibration), in um and s.
:func:`write_annotated_xml` copies such a file and adds LiveSPT's results as
spot and track features (:data:`SPOT_FEATURES`, :data:`TRACK_FEATURES`),
declared in ``FeatureDeclarations``; every other byte of the file is kept.

Both stream the file through expat: memory grows with the number of spots and
edges (about 60 bytes each), not with the file's size (attribute text, ROI
polygons, the log are never kept). Documents with a DTD, entity declarations or
external entities are refused (billion-laughs and external-entity attacks), as
are malformed ones; every error names the line and column, or the element.

Units: positions are converted from the model's ``spatialunits`` (um, nm, mm, m;
``pixel``/``pixels`` with ``ImageData pixelwidth`` or an explicit pixel size),
times from ``timeunits`` (s, ms, min, ...; ``frame``/``frames`` with ``ImageData
timeinterval`` or an explicit frame interval). Frames come from each spot's
``FRAME``; the frame interval from the calibration.

Tracks are graphs in TrackMate (a spot may have two successors: a split, or two
predecessors: a merge). Each track is cut into linear segments at such spots;
each segment keeps the original ``TRACK_ID`` and gets a segment index (0 for a
linear track), and :attr:`TrackMateTracks.warnings` says how many tracks were cut.
"""

from __future__ import annotations

import json
import math
import re
import xml.parsers.expat
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

__all__ = [
    "SPOT_FEATURES",
    "TRACK_FEATURES",
    "TrackMateFileError",
    "TrackMateTracks",
    "read_trackmate_xml",
    "write_annotated_xml",
]

CHUNK_BYTES = 1 << 20
"""Bytes read from the file per expat call."""

# Length units TrackMate writes (ImageJ's calibration names) -> um per unit.
LENGTH_UM = {
    "um": 1.0, "micron": 1.0, "microns": 1.0, "µm": 1.0, "μm": 1.0, "micrometer": 1.0,
    "micrometers": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometers": 1e-3, "mm": 1e3,
    "millimeter": 1e3, "m": 1e6, "meter": 1e6, "cm": 1e4, "angstrom": 1e-4, "å": 1e-4,
}
PIXEL_UNITS = {"pixel", "pixels", "px", ""}
# Time units -> s per unit.
TIME_S = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
    "millisecond": 1e-3, "milliseconds": 1e-3, "us": 1e-6, "µs": 1e-6, "min": 60.0,
    "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
}
FRAME_UNITS = {"frame", "frames", "timepoint", "timepoints", ""}

# Features written back. TrackMate has no um^2/s dimension: they are declared with
# dimension NONE and the unit in their name (its readers accept any NONE feature).
# (key, name, short name, isint)
SPOT_FEATURES: tuple[tuple[str, str, str, bool], ...] = (
    ("LIVESPT_D", "LiveSPT window D (um^2/s)", "D (um2/s)", False),
    ("LIVESPT_D_LOW", "LiveSPT window D 90% low (um^2/s)", "D low", False),
    ("LIVESPT_D_HIGH", "LiveSPT window D 90% high (um^2/s)", "D high", False),
    ("LIVESPT_METHOD", "LiveSPT window method code", "D method", True),
    ("LIVESPT_CHANGE", "LiveSPT change of D at this spot (0/1)", "D change", True),
)
TRACK_FEATURES: tuple[tuple[str, str, str, bool], ...] = (
    ("LIVESPT_TRACK_D", "LiveSPT track D (um^2/s)", "Track D (um2/s)", False),
    ("LIVESPT_TRACK_D_LOW", "LiveSPT track D 90% low (um^2/s)", "Track D low", False),
    ("LIVESPT_TRACK_D_HIGH", "LiveSPT track D 90% high (um^2/s)", "Track D high", False),
    ("LIVESPT_N_CHANGES", "LiveSPT changes of D", "N changes", True),
)


class TrackMateFileError(ValueError):
    """A TrackMate file that cannot be read; the message names the line or element."""


@dataclass
class TrackMateTracks:
    """The tracks of a TrackMate file, in um and s.

    Attributes
    ----------
    points : pandas.DataFrame
        One row per spot of a track: ``track_id`` (TrackMate's ``TRACK_ID``),
        ``segment`` (0 .. for the linear pieces of a track with splits or merges),
        ``spot_id`` (TrackMate's spot ``ID``; -1 where the file has none, e.g. a
        CSV without IDs), ``frame``, ``x_um``, ``y_um``; sorted by track, segment,
        frame.
    pixel_size_um : float or None
        The image's pixel size in um, when known.
    frame_interval_s : float
        Time between frames in s.
    spatial_unit, time_unit : str
        The units the file states.
    version : str
        TrackMate version that wrote the file ("" when not stated).
    n_tracks_in_file : int
        Tracks in the file (all, filtered or not).
    warnings : list of (code, message)
        E.g. ``TRACK_SPLIT`` when tracks with splits or merges were cut.
    """

    points: pd.DataFrame
    pixel_size_um: float | None
    frame_interval_s: float
    spatial_unit: str
    time_unit: str
    version: str = ""
    n_tracks_in_file: int = 0
    warnings: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Safe streaming parse
# ---------------------------------------------------------------------------
def _safe_parser() -> Any:
    """An expat parser that refuses DTDs, entity declarations and external entities."""
    p = xml.parsers.expat.ParserCreate()
    p.buffer_text = True

    def no_dtd(name: str, *_: Any) -> None:
        raise TrackMateFileError(
            f"line {p.CurrentLineNumber}: the document declares a DTD (<!DOCTYPE {name}>); "
            "TrackMate files have none, and DTDs are refused (entity expansion attacks)")

    def no_entity(name: str, *_: Any) -> None:
        raise TrackMateFileError(
            f"line {p.CurrentLineNumber}: the document declares the entity {name!r}; "
            "entity declarations are refused")

    def no_external(*_: Any) -> int:
        raise TrackMateFileError(
            f"line {p.CurrentLineNumber}: the document refers to an external entity; refused")

    p.StartDoctypeDeclHandler = no_dtd
    p.EntityDeclHandler = no_entity
    p.UnparsedEntityDeclHandler = no_entity
    p.ExternalEntityRefHandler = no_external
    p.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return p


def _feed(p: Any, stream: BinaryIO, path: Path) -> None:
    try:
        while True:
            chunk = stream.read(CHUNK_BYTES)
            p.Parse(chunk, not chunk)
            if not chunk:
                return
    except xml.parsers.expat.ExpatError as exc:
        raise TrackMateFileError(
            f"{path}: not well-formed XML at line {exc.lineno}, column {exc.offset}: "
            f"{xml.parsers.expat.ErrorString(exc.code)}") from None


def _number(value: str | None, what: str, p: Any, *, required: bool = True) -> float:
    """A numeric attribute: TrackMate writes Java doubles (NaN, Infinity, -Infinity)."""
    if value is None:
        if required:
            raise TrackMateFileError(f"line {p.CurrentLineNumber}: {what} is missing")
        return math.nan
    try:
        return float(value)  # float() also takes "NaN", "Infinity", "-Infinity"
    except ValueError:
        raise TrackMateFileError(
            f"line {p.CurrentLineNumber}: {what} = {value!r} is not a number") from None


def _int(value: str | None, what: str, p: Any) -> int:
    v = _number(value, what, p)
    if not math.isfinite(v) or v != int(v):
        raise TrackMateFileError(f"line {p.CurrentLineNumber}: {what} = {value!r} is not an "
                                 "integer")
    return int(v)


class _Reader:
    """expat handlers collecting spots, edges, filtered track IDs and calibration."""

    def __init__(self, p: Any) -> None:
        self.p = p
        self.version = ""
        self.spatial: str | None = None
        self.time: str | None = None
        self.image: dict[str, str] = {}
        self.spot_id = array("q")
        self.spot_frame = array("q")
        self.spot_x = array("d")
        self.spot_y = array("d")
        self.edge_track = array("q")
        self.edge_src = array("q")
        self.edge_tgt = array("q")
        self.track_ids: list[int] = []
        self.filtered: list[int] | None = None
        self.track: int | None = None
        self.in_model = self.in_filtered = False
        self.saw_root = False

    def start(self, name: str, attrs: dict[str, str]) -> None:
        p = self.p
        if not self.saw_root:
            self.saw_root = True
            if name != "TrackMate":
                raise TrackMateFileError(
                    f"line {p.CurrentLineNumber}: the root element is <{name}>, not "
                    "<TrackMate>: not a TrackMate XML file")
            self.version = attrs.get("version", "")
            return
        if name == "Spot":
            self.spot_id.append(_int(attrs.get("ID"), "Spot ID", p))
            self.spot_frame.append(_int(attrs.get("FRAME"), "Spot FRAME", p))
            self.spot_x.append(_number(attrs.get("POSITION_X"), "Spot POSITION_X", p))
            self.spot_y.append(_number(attrs.get("POSITION_Y"), "Spot POSITION_Y", p))
        elif name == "Edge":
            if self.track is None:
                raise TrackMateFileError(
                    f"line {p.CurrentLineNumber}: <Edge> outside a <Track>")
            self.edge_track.append(self.track)
            self.edge_src.append(_int(attrs.get("SPOT_SOURCE_ID"), "Edge SPOT_SOURCE_ID", p))
            self.edge_tgt.append(_int(attrs.get("SPOT_TARGET_ID"), "Edge SPOT_TARGET_ID", p))
        elif name == "Track":
            self.track = _int(attrs.get("TRACK_ID"), "Track TRACK_ID", p)
            self.track_ids.append(self.track)
        elif name == "Model":
            self.spatial = attrs.get("spatialunits")
            self.time = attrs.get("timeunits")
        elif name == "ImageData":
            self.image = dict(attrs)
        elif name == "FilteredTracks":
            self.filtered = []
            self.in_filtered = True
        elif name == "TrackID" and self.in_filtered:
            assert self.filtered is not None
            self.filtered.append(_int(attrs.get("TRACK_ID"), "TrackID TRACK_ID", p))

    def end(self, name: str) -> None:
        if name == "Track":
            self.track = None
        elif name == "FilteredTracks":
            self.in_filtered = False


def _positive_or_none(value: str | None) -> float | None:
    try:
        v = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return v if math.isfinite(v) and v > 0 else None


def _calibrate_length(r: _Reader, pixel_size_um: float | None,
                      warnings: list[tuple[str, str]], what: str) -> tuple[float, float | None]:
    """Micrometres per unit of the file's positions, and the pixel size in um (None: unknown).

    A given pixel size overrides the file's: positions are taken back to pixels with
    the file's ``pixelwidth`` and scaled by the given size.
    """
    unit = (r.spatial or "").strip()
    u = unit.lower()
    file_px = _positive_or_none(r.image.get("pixelwidth"))
    if u in PIXEL_UNITS:
        if pixel_size_um is None:
            raise TrackMateFileError(
                f"{what}: the file's spatial unit is {unit or 'pixels'!r}, so its length scale "
                "is unknown; give --pixel-size (um per pixel in the sample, e.g. 0.1)")
        # TrackMate stores positions in the image's calibrated units whatever the model's
        # unit says: pixelwidth of them make one pixel (1 for an uncalibrated image).
        return pixel_size_um / (file_px or 1.0), pixel_size_um
    if u not in LENGTH_UM:
        raise TrackMateFileError(
            f"{what}: unknown spatial unit {unit!r} (known: um, micron, nm, mm, m, pixel)")
    factor = LENGTH_UM[u]
    if pixel_size_um is None:
        return factor, (file_px * factor if file_px is not None else None)
    if file_px is None:
        raise TrackMateFileError(
            f"{what}: --pixel-size cannot override the calibration: the file has positions in "
            f"{unit} but no Settings/ImageData pixelwidth to take them back to pixels")
    if not math.isclose(file_px * factor, pixel_size_um, rel_tol=1e-9):
        warnings.append(("CALIBRATION_OVERRIDDEN", f"pixel size {pixel_size_um:g} um given; "
                         f"the file says {file_px * factor:g} um: positions rescaled by "
                         f"{pixel_size_um / (file_px * factor):.6g}"))
    return pixel_size_um / file_px, pixel_size_um


def _calibrate_time(r: _Reader, frame_interval_s: float | None,
                    warnings: list[tuple[str, str]], what: str) -> float:
    """Frame interval in s: the given one, else the file's ``timeinterval``."""
    unit = (r.time or "").strip()
    u = unit.lower()
    file_dt = _positive_or_none(r.image.get("timeinterval"))
    seconds = None
    if u in TIME_S and file_dt is not None:
        seconds = file_dt * TIME_S[u]
    elif u not in TIME_S and u not in FRAME_UNITS:
        raise TrackMateFileError(f"{what}: unknown time unit {unit!r} (known: s, sec, ms, "
                                 "min, frame); give --frame-interval")
    if frame_interval_s is not None:
        if seconds is not None and not math.isclose(seconds, frame_interval_s, rel_tol=1e-9):
            warnings.append(("CALIBRATION_OVERRIDDEN", f"frame interval {frame_interval_s:g} s "
                             f"given; the file says {seconds:g} s"))
        return frame_interval_s
    if seconds is None:
        raise TrackMateFileError(
            f"{what}: the file has no frame interval (times in {unit or 'frames'!s}, no "
            "Settings/ImageData timeinterval); give --frame-interval (s between frames, "
            "e.g. 0.05)")
    return seconds


def read_trackmate_xml(
    path: str | Path, *, all_tracks: bool = False, pixel_size_um: float | None = None,
    frame_interval_s: float | None = None,
) -> TrackMateTracks:
    """Read the tracks of a TrackMate XML file.

    Parameters
    ----------
    path : str or Path
        The XML file.
    all_tracks : bool
        Read every track; default: only those listed in ``FilteredTracks`` (what
        TrackMate shows), or all when the file has no such list.
    pixel_size_um : float, optional
        Pixel size in um; needed when the positions are in pixels and the file has
        no ``ImageData pixelwidth``; overrides the file's pixel size when given
        (positions in pixels are then scaled by it).
    frame_interval_s : float, optional
        Frame interval in s; overrides the file's ``ImageData timeinterval``.

    Returns
    -------
    TrackMateTracks

    Raises
    ------
    TrackMateFileError
        Malformed or hostile XML, missing attributes, unknown units or missing
        calibration, edges between unknown spots; the message names the line,
        element or flag.
    FileNotFoundError
        When the file does not exist.
    """
    path = Path(path)
    p = _safe_parser()
    r = _Reader(p)
    p.StartElementHandler = r.start
    p.EndElementHandler = r.end
    with open(path, "rb") as f:
        _feed(p, f, path)
    if r.spatial is None:
        raise TrackMateFileError(f"{path}: no <Model spatialunits=...>: not a TrackMate model")
    warnings: list[tuple[str, str]] = []
    um_per_unit, pixel_out = _calibrate_length(r, pixel_size_um, warnings, str(path))
    dt = _calibrate_time(r, frame_interval_s, warnings, str(path))
    points, n_cut = _segments(r, all_tracks, um_per_unit, str(path))
    if n_cut:
        warnings.append(("TRACK_SPLIT", f"{n_cut} track(s) had splits or merges and were cut "
                         "into linear segments (column 'segment'); each segment is analysed "
                         "on its own"))
    return TrackMateTracks(points=points, pixel_size_um=pixel_out, frame_interval_s=dt,
                           spatial_unit=r.spatial, time_unit=r.time or "", version=r.version,
                           n_tracks_in_file=len(r.track_ids), warnings=warnings)


def _segments(r: _Reader, all_tracks: bool, um_per_unit: float,
              what: str) -> tuple[pd.DataFrame, int]:
    """The XML's spots and edges as linear segments (:func:`linear_segments`)."""
    keep_tracks = (set(r.filtered) if (r.filtered is not None and not all_tracks)
                   else set(r.track_ids))
    return linear_segments(
        np.frombuffer(r.spot_id, dtype=np.int64), np.frombuffer(r.spot_frame, dtype=np.int64),
        np.frombuffer(r.spot_x, dtype=np.float64), np.frombuffer(r.spot_y, dtype=np.float64),
        np.frombuffer(r.edge_track, dtype=np.int64), np.frombuffer(r.edge_src, dtype=np.int64),
        np.frombuffer(r.edge_tgt, dtype=np.int64), keep_tracks, um_per_unit, what)


def linear_segments(
    ids: np.ndarray, frames: np.ndarray, x: np.ndarray, y: np.ndarray, et: np.ndarray,
    es: np.ndarray, eg: np.ndarray, keep_tracks: set[int], um_per_unit: float, what: str,
) -> tuple[pd.DataFrame, int]:
    """Cut each track's edge graph into linear segments of spots, in frame order.

    Parameters
    ----------
    ids, frames, x, y : ndarray, shape (S,)
        Spots: ID, frame and position (file units).
    et, es, eg : ndarray, shape (E,)
        Edges: track ID, source spot ID, target spot ID.
    keep_tracks : set of int
        The track IDs to return.
    um_per_unit : float
        Micrometres per position unit.
    what : str
        The file, for error messages.

    Returns
    -------
    points : pandas.DataFrame
        ``track_id, segment, spot_id, frame, x_um, y_um``.
    n_cut : int
        Tracks cut at a split or merge.
    """
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if sorted_ids.size > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        dup = int(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0])
        raise TrackMateFileError(f"{what}: two spots share ID {dup}")
    mask = np.isin(et, np.fromiter(keep_tracks, dtype=np.int64, count=len(keep_tracks)))
    et, es, eg = et[mask], es[mask], eg[mask]

    def index_of(spot: np.ndarray, side: str) -> np.ndarray:
        pos = np.searchsorted(sorted_ids, spot)
        bad = (pos >= sorted_ids.size) | (sorted_ids[np.minimum(pos, sorted_ids.size - 1)]
                                          != spot)
        if np.any(bad):
            raise TrackMateFileError(f"{what}: an edge's {side} is spot {int(spot[bad][0])}, "
                                     "which is not among the spots")
        return order[pos]

    si, ti = index_of(es, "SPOT_SOURCE_ID"), index_of(eg, "SPOT_TARGET_ID")
    # Orient every edge forward in time (TrackMate stores source before target, but
    # do not rely on it).
    swap = frames[si] > frames[ti]
    si, ti = np.where(swap, ti, si), np.where(swap, si, ti)
    rows: list[tuple[int, int, np.ndarray]] = []
    n_cut = 0
    by_track: dict[int, list[int]] = {}
    for k, t in enumerate(et.tolist()):
        by_track.setdefault(t, []).append(k)
    for t in sorted(by_track):
        ks = np.asarray(by_track[t])
        src, tgt = si[ks], ti[ks]
        out_deg: dict[int, int] = {}
        in_deg: dict[int, int] = {}
        for a, b in zip(src.tolist(), tgt.tolist(), strict=True):
            out_deg[a] = out_deg.get(a, 0) + 1
            in_deg[b] = in_deg.get(b, 0) + 1
        nxt: dict[int, int] = {}
        cut = False
        for a, b in zip(src.tolist(), tgt.tolist(), strict=True):
            if out_deg[a] == 1 and in_deg[b] == 1:
                nxt[a] = b
            else:
                cut = True
        n_cut += cut
        has_prev = set(nxt.values())
        nodes = set(src.tolist()) | set(tgt.tolist())
        starts = sorted((n for n in nodes if n not in has_prev), key=lambda n: frames[n])
        for seg, s0 in enumerate(starts):
            chain = [s0]
            while chain[-1] in nxt:
                chain.append(nxt[chain[-1]])
            rows.append((t, seg, np.asarray(chain)))
    if not rows:
        return pd.DataFrame({"track_id": np.zeros(0, np.int64), "segment": np.zeros(0, np.int64),
                             "spot_id": np.zeros(0, np.int64),
                             "frame": np.zeros(0, np.int64), "x_um": np.zeros(0),
                             "y_um": np.zeros(0)}), n_cut
    idx = np.concatenate([c for _, _, c in rows])
    tid = np.concatenate([np.full(c.size, t, np.int64) for t, _, c in rows])
    segment = np.concatenate([np.full(c.size, s, np.int64) for _, s, c in rows])
    pts = pd.DataFrame({"track_id": tid, "segment": segment, "spot_id": ids[idx],
                        "frame": frames[idx], "x_um": x[idx] * um_per_unit,
                        "y_um": y[idx] * um_per_unit})
    return pts, n_cut


# ---------------------------------------------------------------------------
# Writing back
# ---------------------------------------------------------------------------
def _fmt(v: float | int, isint: bool) -> str:
    if isint:
        return str(int(v))
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(v)


def _declarations(features: tuple[tuple[str, str, str, bool], ...], indent: str) -> bytes:
    """``<Feature>`` lines to insert just before an indented end tag."""
    out = ""
    for key, name, short, isint in features:
        out += (f'  <Feature feature="{key}" name="{_xml_attr(name)}" '
                f'shortname="{_xml_attr(short)}" dimension="NONE" '
                f'isint="{"true" if isint else "false"}" />\n{indent}')
    return out.encode("utf-8")


def _xml_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xml_attr(s: str) -> str:
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
            .replace(">", "&gt;"))


def display_settings_json(d_min: float, d_max: float) -> str:
    """TrackMate 7 display settings colouring tracks and spots by LiveSPT's D.

    Parameters
    ----------
    d_min, d_max : float
        Ends of the colour scale, um^2/s (e.g. the 5th and 95th percentiles of the
        tracks' D).
    """
    settings = {
        "name": "LiveSPT D", "spotUniformColor": "204, 51, 204, 255",
        "spotColorByType": "SPOTS", "spotColorByFeature": "LIVESPT_D",
        "spotDisplayRadius": 1.0, "spotDisplayedAsRoi": True, "spotMin": d_min,
        "spotMax": d_max, "spotShowName": False, "trackMin": d_min, "trackMax": d_max,
        "trackColorByType": "TRACKS", "trackColorByFeature": "LIVESPT_TRACK_D",
        "trackUniformColor": "204, 204, 51, 255", "undefinedValueColor": "0, 0, 0, 255",
        "missingValueColor": "89, 89, 89, 255", "highlightColor": "51, 230, 51, 255",
        "trackDisplayMode": "FULL", "colormap": "Jet", "limitZDrawingDepth": False,
        "drawingZDepth": 10.0, "fadeTracks": True, "fadeTrackRange": 30,
        "useAntialiasing": True, "spotVisible": True, "trackVisible": True,
        "font": {"name": "Arial", "style": 1, "size": 12, "pointSize": 12.0,
                 "fontSerializedDataVersion": 1},
        "lineThickness": 1.0, "selectionLineThickness": 4.0,
        "trackschemeBackgroundColor1": "128, 128, 128, 255",
        "trackschemeBackgroundColor2": "192, 192, 192, 255",
        "trackschemeForegroundColor": "0, 0, 0, 255",
        "trackschemeDecorationColor": "0, 0, 0, 255", "trackschemeFillBox": False,
        "spotFilled": False, "spotTransparencyAlpha": 1.0,
    }
    return json.dumps(settings, indent=2)




def write_annotated_xml(
    src: str | Path, dst: str | Path,
    spot_values: Mapping[int, tuple[float, ...]],
    track_values: Mapping[int, tuple[float, ...]],
) -> Path:
    """Copy a TrackMate XML file, adding LiveSPT's features to its spots and tracks.

    Everything in ``src`` is kept byte for byte; the only additions are the
    attributes of :data:`SPOT_FEATURES` on the spots in ``spot_values``, those of
    :data:`TRACK_FEATURES` on the tracks in ``track_values``, and their
    ``<Feature>`` declarations at the end of ``SpotFeatures`` and
    ``TrackFeatures``, and, where the file has no ``DisplaySettings``, display
    settings colouring tracks and spots by D (:func:`display_settings_json`, scale
    from the 5th to the 95th percentile of the tracks' D). A file already annotated
    by LiveSPT is refused (analyse the original).

    Parameters
    ----------
    src, dst : str or Path
        The original file and the file to write (must differ).
    spot_values : mapping of int to tuple
        Spot ID -> values in the order of :data:`SPOT_FEATURES` (NaN where none).
    track_values : mapping of int to tuple
        TRACK_ID -> values in the order of :data:`TRACK_FEATURES`.

    Returns
    -------
    Path
        ``dst``.

    Raises
    ------
    TrackMateFileError
        On a malformed or hostile file, or one without ``FeatureDeclarations``.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise TrackMateFileError(f"{dst}: the annotated file must not overwrite its source")
    # Pass 1: byte offsets of the insertions (expat, streamed).
    p = _safe_parser()
    inserts: list[tuple[int, int, bytes]] = []  # (offset, kind, payload); kind 0 = into tag
    spot_flags = [f[3] for f in SPOT_FEATURES]
    track_flags = [f[3] for f in TRACK_FEATURES]
    seen_decl = {"SpotFeatures": False, "TrackFeatures": False}
    text_before = [""]  # character data just before the current tag (its indentation)
    has_display = [False]
    seen_root = [False]

    def chars(data: str) -> None:
        text_before[0] = data

    def start(name: str, attrs: dict[str, str]) -> None:
        text_before[0] = ""
        if not seen_root[0]:
            seen_root[0] = True
            if name != "TrackMate":
                raise TrackMateFileError(
                    f"line {p.CurrentLineNumber}: the root element is <{name}>, not "
                    "<TrackMate>: not a TrackMate XML file")
        vals: tuple[float, ...] | None = None
        if name == "Spot":
            if any(k.startswith("LIVESPT_") for k in attrs):
                raise TrackMateFileError(f"{src}: line {p.CurrentLineNumber}: the file already "
                                         "holds LiveSPT features; annotate the original file")
            sid = attrs.get("ID")
            vals = spot_values.get(int(sid)) if sid is not None and sid.isdigit() else None
            keys, flags = [f[0] for f in SPOT_FEATURES], spot_flags
        elif name == "Track":
            tid = attrs.get("TRACK_ID")
            vals = track_values.get(int(tid)) if tid is not None and tid.lstrip("-").isdigit() \
                else None
            keys, flags = [f[0] for f in TRACK_FEATURES], track_flags
        if vals is not None:
            text = "".join(f' {k}="{_fmt(v, isint)}"'
                           for k, v, isint in zip(keys, vals, flags, strict=True))
            inserts.append((p.CurrentByteIndex, 0, text.encode()))

    def end(name: str) -> None:
        if name in seen_decl:
            seen_decl[name] = True
            feats = SPOT_FEATURES if name == "SpotFeatures" else TRACK_FEATURES
            # The end tag's indentation is already written: each new line is indented
            # two more and followed by that indentation again.
            tail = text_before[0].rsplit("\n", 1)
            indent = tail[1] if len(tail) == 2 and not tail[1].strip() else ""
            inserts.append((p.CurrentByteIndex, 1, _declarations(feats, indent)))
        elif name == "DisplaySettings":
            has_display[0] = True
        elif name == "TrackMate" and not has_display[0]:
            d = np.asarray([v[0] for v in track_values.values()], dtype=np.float64)
            d = d[np.isfinite(d) & (d > 0)]
            lo, hi = (np.percentile(d, [5, 95]).tolist() if d.size else (0.0, 1.0))
            body = display_settings_json(float(lo), float(hi) if hi > lo else float(lo) + 1.0)
            indent = text_before[0].rsplit("\n", 1)[-1] if text_before[0] else ""
            inserts.append((p.CurrentByteIndex, 1, (
                f"  <DisplaySettings>{_xml_text(body)}</DisplaySettings>\n{indent}")
                .encode()))
        text_before[0] = ""

    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    with open(src, "rb") as f:
        _feed(p, f, src)
    missing = [k for k, v in seen_decl.items() if not v]
    if missing:
        raise TrackMateFileError(f"{src}: no FeatureDeclarations/{missing[0]}: cannot declare "
                                 "the new features (is this a TrackMate model file?)")
    # Pass 2: copy, inserting at the recorded offsets (in file order).
    inserts.sort(key=lambda t: t[0])
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        pos = 0
        for off, kind, payload in inserts:
            _copy(fin, fout, off - pos)
            pos = off
            if kind == 1:
                fout.write(payload)
                continue
            tag, consumed = _read_start_tag(fin)
            pos += consumed
            close = 2 if tag.endswith(b"/>") else 1
            fout.write(tag[:-close].rstrip(b" \t\r\n") + payload
                       + (b" " if close == 2 else b"") + tag[-close:])
        _copy(fin, fout, -1)
    tmp.replace(dst)
    return dst


def _copy(fin: Any, fout: Any, n: int) -> None:
    if n < 0:
        while chunk := fin.read(CHUNK_BYTES):
            fout.write(chunk)
        return
    while n > 0:
        chunk = fin.read(min(n, CHUNK_BYTES))
        if not chunk:
            raise TrackMateFileError("the file changed while it was being annotated")
        fout.write(chunk)
        n -= len(chunk)


_START_TAG = re.compile(rb"""<[^\s/>]+(?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*\s*/?>""")


def _read_start_tag(fin: Any) -> tuple[bytes, int]:
    """Read one start tag (``<Name ...>`` or ``<Name .../>``), honouring quoted values."""
    size = 4096
    pos = fin.tell()
    while True:
        head = fin.read(size)
        m = _START_TAG.match(head)
        if m is not None:
            fin.seek(pos + m.end())
            return head[:m.end()], m.end()
        if len(head) < size:  # the rest of the file holds no whole start tag
            raise TrackMateFileError("unexpected end of file inside a start tag")
        fin.seek(pos)
        size *= 4
