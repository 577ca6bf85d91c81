"""Test-only writer of TrackMate XML and CSV files in the layouts TrackMate 6, 7 and 8 write.

Written from the file format (what TrackMate's ``TmXmlWriter`` and its CSV export put in
a file), not from TrackMate's code. The layouts differ as TrackMate's versions do:

* ``"6"``: edges carry ``VELOCITY``; spots are empty elements; no ``DisplaySettings``.
* ``"7"``: edges carry ``SPEED``; spots hold their ROI polygon as text
  (``ROI_N_POINTS``); per-channel features (``MEAN_INTENSITY_CH1``); a
  ``DisplaySettings`` JSON element.
* ``"8"``: as 7, with the unit written ``µm`` and a time unit ``s``.

Tracks are given as lists of (frame, x, y) in the file's units, plus optional extra
edges (splits and merges) between spots of different tracks' lists.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

Point = tuple[int, float, float]


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return repr(float(v))


def write_trackmate_xml(
    path: Path, tracks: Sequence[Sequence[Point]], *, version: str = "7",
    spatial_unit: str | None = None, time_unit: str | None = None,
    pixel_width: float | None = 0.1, time_interval: float | None = 0.05,
    filtered: Sequence[int] | None = None, untracked: Sequence[Point] = (),
    extra_edges: Sequence[tuple[int, int, int, int]] = (),
    spot_name: str = "ID{}", display_settings: bool | None = None,
) -> dict[tuple[int, int], int]:
    """Write a TrackMate XML file; return (track index, point index) -> spot ID.

    ``extra_edges`` are (track a, point i, track b, point j): an edge from spot (a, i)
    to spot (b, j), a split or merge; the points of b are then stored in TrackMate
    track a (TRACK_ID a), and b is not a track of its own.
    """
    spatial_unit = spatial_unit or {"6": "micron", "7": "micron", "8": "µm"}[version]
    time_unit = time_unit or {"6": "sec", "7": "sec", "8": "s"}[version]
    ids: dict[tuple[int, int], int] = {}
    by_frame: dict[int, list[str]] = {}
    sid = 0
    all_pts = [(t, i, p) for t, tr in enumerate(tracks) for i, p in enumerate(tr)]
    all_pts += [(-1, i, p) for i, p in enumerate(untracked)]
    for t, i, (f, x, y) in all_pts:
        ids[(t, i)] = sid
        attrs = (f'ID="{sid}" name="{spot_name.format(sid)}" QUALITY="12.5" '
                 f'POSITION_X="{_fmt(x)}" POSITION_Y="{_fmt(y)}" POSITION_Z="0.0" '
                 f'POSITION_T="{_fmt(f * (time_interval or 1.0))}" FRAME="{f}" RADIUS="0.2" '
                 'VISIBILITY="1"')
        if version == "6":
            by_frame.setdefault(f, []).append(f"<Spot {attrs} />")
        else:
            attrs += ' MEAN_INTENSITY_CH1="NaN" SNR_CH1="Infinity" ROI_N_POINTS="4"'
            by_frame.setdefault(f, []).append(
                f"<Spot {attrs}>-0.2 -0.2 0.2 -0.2 0.2 0.2 -0.2 0.2</Spot>")
        sid += 1
    speed = "VELOCITY" if version == "6" else "SPEED"
    edge_feats = (f'<Feature feature="{speed}" name="Speed" shortname="Speed" '
                  'dimension="VELOCITY" isint="false" />')
    spot_feats = "\n".join(
        f'        <Feature feature="{k}" name="{k.title()}" shortname="{k[:4]}" dimension="{d}" '
        f'isint="{i}" />' for k, d, i in (
            ("QUALITY", "QUALITY", "false"), ("POSITION_X", "POSITION", "false"),
            ("POSITION_Y", "POSITION", "false"), ("POSITION_Z", "POSITION", "false"),
            ("POSITION_T", "TIME", "false"), ("FRAME", "NONE", "true"),
            ("RADIUS", "LENGTH", "false"), ("VISIBILITY", "NONE", "true")))
    if version != "6":
        spot_feats += ('\n        <Feature feature="MEAN_INTENSITY_CH1" name="Mean intensity ch1" '
                       'shortname="Mean ch1" dimension="INTENSITY" isint="false" />')
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<TrackMate version="{version}.0.1">',
        "  <Log>Tracks by a test; naïve ünïcode ✓</Log>",
        f'  <Model spatialunits="{spatial_unit}" timeunits="{time_unit}">',
        "    <FeatureDeclarations>",
        "      <SpotFeatures>", spot_feats, "      </SpotFeatures>",
        "      <EdgeFeatures>",
        '        <Feature feature="SPOT_SOURCE_ID" name="Source spot ID" shortname="Source ID" '
        'dimension="NONE" isint="true" />',
        '        <Feature feature="SPOT_TARGET_ID" name="Target spot ID" shortname="Target ID" '
        'dimension="NONE" isint="true" />',
        f"        {edge_feats}",
        "      </EdgeFeatures>",
        "      <TrackFeatures>",
        '        <Feature feature="TRACK_ID" name="Track ID" shortname="ID" dimension="NONE" '
        'isint="true" />',
        "      </TrackFeatures>",
        "    </FeatureDeclarations>",
        f'    <AllSpots nspots="{sid}">',
    ]
    for f in sorted(by_frame):
        lines.append(f'      <SpotsInFrame frame="{f}">')
        lines += [f"        {s}" for s in by_frame[f]]
        lines.append("      </SpotsInFrame>")
    lines += ["    </AllSpots>", "    <AllTracks>"]
    merged = {e[2] for e in extra_edges}
    for t, tr in enumerate(tracks):
        if t in merged:
            continue
        edges = [(ids[(t, i)], ids[(t, i + 1)]) for i in range(len(tr) - 1)]
        joined: set[int] = set()
        for a, i, b, j in extra_edges:
            if a == t:
                edges.append((ids[(a, i)], ids[(b, j)]))
                if b not in joined:
                    joined.add(b)
                    edges += [(ids[(b, k)], ids[(b, k + 1)]) for k in range(len(tracks[b]) - 1)]
        lines.append(f'      <Track name="Track_{t}" TRACK_ID="{t}" NUMBER_SPOTS="{len(tr)}">')
        # TrackMate does not store edges in time order.
        for a, b in reversed(edges):
            lines.append(f'        <Edge SPOT_SOURCE_ID="{a}" SPOT_TARGET_ID="{b}" '
                         f'{speed}="1.5" />')
        lines.append("      </Track>")
    lines += ["    </AllTracks>", "    <FilteredTracks>"]
    keep = range(len(tracks)) if filtered is None else filtered
    lines += [f'      <TrackID TRACK_ID="{t}" />' for t in keep if t not in merged]
    lines += ["    </FilteredTracks>", "  </Model>", "  <Settings>"]
    image = ['filename="movie ä.tif" folder="/data/ü/"', 'width="128" height="128"',
             'nslices="1"', 'nframes="100"']
    if pixel_width is not None:
        image.append(f'pixelwidth="{pixel_width}" pixelheight="{pixel_width}" '
                     'voxeldepth="1.0"')
    if time_interval is not None:
        image.append(f'timeinterval="{time_interval}"')
    lines += [f"    <ImageData {' '.join(image)} />",
              '    <BasicSettings xstart="0" xend="127" ystart="0" yend="127" zstart="0" '
              'zend="0" tstart="0" tend="99" />',
              "    <InitialSpotFilter feature=\"QUALITY\" value=\"0.0\" isabove=\"true\" />",
              "    <SpotFilterCollection />", "    <TrackFilterCollection />",
              "    <AnalyzerCollection>", "      <SpotAnalyzers />", "    </AnalyzerCollection>",
              "  </Settings>", '  <GUIState state="ConfigureViews" />']
    if display_settings if display_settings is not None else version != "6":
        lines.append('  <DisplaySettings>{\n  "name": "CurrentDisplaySettings",\n'
                     '  "trackColorByFeature": "TRACK_INDEX"\n}</DisplaySettings>')
    lines.append("</TrackMate>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ids


def write_trackmate_csv(
    path: Path, tracks: Sequence[Sequence[Point]], *, header_rows: int = 4,
    space_unit: str = "micron", time_unit: str = "sec", time_interval: float = 0.05,
    untracked: Sequence[Point] = (), track_ids: Sequence[int] | None = None,
) -> None:
    """Write a TrackMate spots-table CSV with 1-4 header rows (keys, names, short names, units).

    Spot IDs count up from 0 in the order of ``tracks``; ``track_ids`` gives each list its
    TRACK_ID (default its index).
    """
    keys = ["LABEL", "ID", "TRACK_ID", "QUALITY", "POSITION_X", "POSITION_Y", "POSITION_Z",
            "POSITION_T", "FRAME", "RADIUS", "VISIBILITY", "MEAN_INTENSITY_CH1"]
    names = ["Label", "Spot ID", "Track ID", "Quality", "X", "Y", "Z", "T", "Frame", "Radius",
             "Visibility", "Mean intensity ch1"]
    shorts = ["Label", "Spot ID", "Track ID", "Quality", "X", "Y", "Z", "T", "Frame", "R",
              "Visibility", "Mean ch1"]
    units = ["", "", "", "(quality)", f"({space_unit})", f"({space_unit})", f"({space_unit})",
             f"({time_unit})", "", f"({space_unit})", "", "(counts)"]
    rows = [keys, names, shorts, units][:header_rows]
    sid = 0
    body = []
    for t, tr in enumerate(tracks):
        tid = t if track_ids is None else track_ids[t]
        for f, x, y in tr:
            body.append([f"ID{sid}", sid, tid, 10.0, x, y, 0.0, f * time_interval, f, 0.2, 1,
                         100.0])
            sid += 1
    for f, x, y in untracked:
        body.append([f"ID{sid}", sid, "", 10.0, x, y, 0.0, f * time_interval, f, 0.2, 1, 100.0])
        sid += 1
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerows(rows)
        w.writerows(body)


def write_trackmate_edges_csv(path: Path, edges: Sequence[tuple[int, int, int]],
                              header_rows: int = 4) -> None:
    """Write a TrackMate edges-table CSV: (TRACK_ID, SPOT_SOURCE_ID, SPOT_TARGET_ID) rows."""
    keys = ["LABEL", "TRACK_ID", "SPOT_SOURCE_ID", "SPOT_TARGET_ID", "LINK_COST", "SPEED"]
    names = ["Label", "Track ID", "Source spot ID", "Target spot ID", "Edge cost", "Speed"]
    units = ["", "", "", "", "(cost)", "(micron/sec)"]
    rows = [keys, names, names, units][:header_rows]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerows(rows)
        w.writerows([f"ID{a}\u2192ID{b}", t, a, b, 0.1, 1.5] for t, a, b in edges)
