"""TrackMate XML and CSV files: reading, writing D back, and ``livespt tracks`` end to end.

Files are written by ``tests/trackmate_files.py`` in the layouts of TrackMate 6, 7 and 8;
files written by TrackMate itself, and TrackMate reading ``annotated.xml`` back, are
tested in ``tests/test_trackmate.py`` (the module that runs a Fiji in-process).
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from trackmate_files import write_trackmate_csv, write_trackmate_edges_csv, write_trackmate_xml
from tracksim import coverage_band, simulate_tracks

from livespt.server.cli.main import main
from livespt.server.io.trackmate_csv import read_trackmate_csv
from livespt.server.io.trackmate_xml import (
    SPOT_FEATURES,
    TRACK_FEATURES,
    TrackMateFileError,
    read_trackmate_xml,
    write_annotated_xml,
)
from livespt.server.service.app import EmbeddedServer, ServerOptions

RNG = np.random.default_rng(5)


def _walk(n: int, f0: int = 0, x0: float = 2.0, gaps: tuple[int, ...] = ()) -> list:
    pts, x, y = [], x0, 3.0
    for k in range(n):
        if k in gaps:
            continue
        pts.append((f0 + k, x, y))
        x += float(RNG.normal(0, 0.1))
        y += float(RNG.normal(0, 0.1))
    return pts


TRACKS = [_walk(20), _walk(15, f0=3, x0=5.0, gaps=(4, 5)), _walk(12, f0=1, x0=8.0)]


def _points_of(tracks: list, scale: float = 1.0) -> pd.DataFrame:
    rows = [(t, f, x * scale, y * scale) for t, tr in enumerate(tracks) for f, x, y in tr]
    return pd.DataFrame(rows, columns=["track_id", "frame", "x_um", "y_um"])


# ------------------------------------------------------------------------- reading XML
@pytest.mark.parametrize("version", ["6", "7", "8"])
def test_reads_each_versions_layout(tmp_path: Path, version: str) -> None:
    path = tmp_path / f"v{version}.xml"
    ids = write_trackmate_xml(path, TRACKS, version=version, untracked=[(2, 1.0, 1.0)],
                              spot_name="spöt ✓ {}")
    data = read_trackmate_xml(path)
    assert data.version == f"{version}.0.1"
    assert data.frame_interval_s == pytest.approx(0.05)
    assert data.pixel_size_um == pytest.approx(0.1)
    got = data.points
    want = _points_of(TRACKS)
    assert len(got) == len(want)  # the untracked spot is not part of a track
    pd.testing.assert_frame_equal(got[["track_id", "frame", "x_um", "y_um"]], want,
                                  check_dtype=False)
    assert set(got["segment"]) == {0}
    assert got["spot_id"].tolist() == [ids[(t, i)] for t, tr in enumerate(TRACKS)
                                       for i in range(len(tr))]
    assert data.warnings == []


def test_only_filtered_tracks_unless_all_tracks(tmp_path: Path) -> None:
    path = tmp_path / "f.xml"
    write_trackmate_xml(path, TRACKS, filtered=[0, 2])
    assert set(read_trackmate_xml(path).points["track_id"]) == {0, 2}
    assert set(read_trackmate_xml(path, all_tracks=True).points["track_id"]) == {0, 1, 2}


@pytest.mark.parametrize(("unit", "scale"), [("nm", 1e-3), ("micron", 1.0), ("mm", 1e3),
                                             ("µm", 1.0)])
def test_length_units_are_converted_to_um(tmp_path: Path, unit: str, scale: float) -> None:
    path = tmp_path / "u.xml"
    write_trackmate_xml(path, TRACKS, spatial_unit=unit, pixel_width=100.0)
    data = read_trackmate_xml(path)
    np.testing.assert_allclose(data.points["x_um"], _points_of(TRACKS, scale)["x_um"])
    assert data.pixel_size_um == pytest.approx(100.0 * scale)


def test_time_units_and_missing_interval(tmp_path: Path) -> None:
    path = tmp_path / "t.xml"
    write_trackmate_xml(path, TRACKS, time_unit="ms", time_interval=20.0)
    assert read_trackmate_xml(path).frame_interval_s == pytest.approx(0.02)
    write_trackmate_xml(path, TRACKS, time_unit="frames", time_interval=1.0)
    with pytest.raises(TrackMateFileError, match="--frame-interval"):
        read_trackmate_xml(path)
    assert read_trackmate_xml(path, frame_interval_s=0.1).frame_interval_s == 0.1
    write_trackmate_xml(path, TRACKS, time_interval=None)
    with pytest.raises(TrackMateFileError, match=r"no frame interval.*--frame-interval"):
        read_trackmate_xml(path)


def test_pixel_positions_need_the_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "px.xml"
    px_tracks = [[(f, x * 10, y * 10) for f, x, y in tr] for tr in TRACKS]  # in pixels
    write_trackmate_xml(path, px_tracks, spatial_unit="pixels", pixel_width=1.0)
    with pytest.raises(TrackMateFileError, match="--pixel-size"):
        read_trackmate_xml(path)
    data = read_trackmate_xml(path, pixel_size_um=0.1)
    np.testing.assert_allclose(data.points["x_um"], _points_of(TRACKS)["x_um"])
    # A script that calibrated the image but not the model's unit: positions are in the
    # image's calibrated units, pixelwidth of them per pixel.
    write_trackmate_xml(path, TRACKS, spatial_unit="pixels", pixel_width=0.1)
    data = read_trackmate_xml(path, pixel_size_um=0.1)
    np.testing.assert_allclose(data.points["x_um"], _points_of(TRACKS)["x_um"])


def test_flags_override_the_files_calibration_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "o.xml"
    write_trackmate_xml(path, TRACKS, pixel_width=0.1, time_interval=0.05)
    data = read_trackmate_xml(path, pixel_size_um=0.2, frame_interval_s=0.1)
    np.testing.assert_allclose(data.points["x_um"], _points_of(TRACKS, 2.0)["x_um"])
    assert data.frame_interval_s == 0.1 and data.pixel_size_um == 0.2
    assert [c for c, _ in data.warnings] == ["CALIBRATION_OVERRIDDEN"] * 2
    with pytest.raises(TrackMateFileError, match="unknown spatial unit 'furlong'"):
        write_trackmate_xml(path, TRACKS, spatial_unit="furlong")
        read_trackmate_xml(path)


def test_splits_and_merges_are_cut_into_linear_segments(tmp_path: Path) -> None:
    a = _walk(10)                       # frames 0..9
    b = _walk(6, f0=5, x0=3.0)          # frames 5..10, split off a's frame 4
    c = _walk(4, f0=20, x0=9.0)
    d = _walk(5, f0=30, x0=12.0)        # frames 30..34, then c2 ...
    c2 = _walk(5, f0=35, x0=12.5)       # ... which d's frame 31 also joins: split and merge
    path = tmp_path / "split.xml"
    write_trackmate_xml(path, [a, b, c, d, c2],
                        extra_edges=[(0, 4, 1, 0), (3, 4, 4, 0), (3, 1, 4, 0)],
                        filtered=[0, 2, 3])
    data = read_trackmate_xml(path)
    segs = data.points.groupby(["track_id", "segment"])["frame"].agg(["min", "max", "size"])
    assert segs.loc[(0, 0)].tolist() == [0, 4, 5]     # a up to the split
    assert sorted(segs.loc[0][["min", "max"]].itertuples(index=False)) == [
        (0, 4), (5, 9), (5, 10)]                      # a after the split, and b
    assert segs.loc[(2, 0)].tolist() == [20, 23, 4]   # c: linear, one segment
    assert sorted(segs.loc[3][["min", "max"]].itertuples(index=False)) == [
        (30, 31), (32, 34), (35, 39)]                 # cut at the split and at the merge
    codes = dict(data.warnings)
    assert "2 track(s) had splits or merges" in codes["TRACK_SPLIT"]


# ---------------------------------------------------------------- hostile or malformed XML
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<TrackMate version="7.0.0"><Log>&lol3;</Log></TrackMate>
"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE TrackMate [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<TrackMate version="7.0.0"><Log>&xxe;</Log></TrackMate>
"""


@pytest.mark.parametrize(("text", "pattern"), [
    (BILLION_LAUGHS, r"line 2: the document declares a DTD"),
    (EXTERNAL_ENTITY, r"line 2: the document declares a DTD"),
    ('<?xml version="1.0"?>\n<TrackMate version="7">\n  <Model spatialunits="micron">\n'
     '    <AllSpots>\n', r"not well-formed XML at line 5, column 0: no element found"),
    ('<?xml version="1.0"?>\n<Tracks><Track/></Tracks>\n', r"line 2: the root element is "
     r"<Tracks>, not <TrackMate>"),
    ('<TrackMate><Model spatialunits="micron" timeunits="sec"><AllSpots><SpotsInFrame>\n'
     '<Spot ID="0" FRAME="0" POSITION_X="abc" POSITION_Y="1"/>',
     r"line 2: Spot POSITION_X = 'abc' is not a number"),
    ('<TrackMate><Model spatialunits="micron" timeunits="sec"><AllSpots><SpotsInFrame>\n'
     '<Spot ID="0" FRAME="0" POSITION_Y="1"/>', r"line 2: Spot POSITION_X is missing"),
])
def test_hostile_or_malformed_xml_is_refused_naming_the_line(tmp_path: Path, text: str,
                                                              pattern: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(TrackMateFileError, match=pattern):
        read_trackmate_xml(path)
    if "Spot" not in pattern:  # the writer does not read positions
        with pytest.raises(TrackMateFileError, match=pattern):
            write_annotated_xml(path, tmp_path / "out.xml", {}, {})
        assert not (tmp_path / "out.xml").exists()


def test_edge_to_an_unknown_spot_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "e.xml"
    write_trackmate_xml(path, TRACKS)
    text = path.read_text().replace('SPOT_TARGET_ID="1"', 'SPOT_TARGET_ID="999"', 1)
    path.write_text(text)
    with pytest.raises(TrackMateFileError, match="SPOT_TARGET_ID is spot 999, which is not "
                                                 "among the spots"):
        read_trackmate_xml(path)


# ------------------------------------------------------------------------------- CSV
@pytest.mark.parametrize("header_rows", [1, 2, 3, 4])
def test_csv_spots_table_with_1_to_4_header_rows(tmp_path: Path, header_rows: int) -> None:
    path = tmp_path / "spots.csv"
    write_trackmate_csv(path, TRACKS, header_rows=header_rows, untracked=[(3, 1.0, 1.0)])
    if header_rows < 4:  # no units row: positions in pixels, frame interval unknown
        with pytest.raises(TrackMateFileError, match="--pixel-size"):
            read_trackmate_csv(path)
        with pytest.raises(TrackMateFileError, match="--frame-interval"):
            read_trackmate_csv(path, pixel_size_um=0.1)
        data = read_trackmate_csv(path, pixel_size_um=0.1, frame_interval_s=0.05)
        scale = 0.1
    else:
        data = read_trackmate_csv(path)
        scale = 1.0
    assert data.frame_interval_s == pytest.approx(0.05)
    pd.testing.assert_frame_equal(data.points[["track_id", "frame", "x_um", "y_um"]],
                                  _points_of(TRACKS, scale), check_dtype=False)


def test_csv_errors_name_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "spots.csv"
    write_trackmate_csv(path, TRACKS, space_unit="nm")
    text = path.read_text().splitlines()
    data = read_trackmate_csv(path)
    assert data.points["x_um"].iloc[0] == pytest.approx(TRACKS[0][0][1] * 1e-3)
    cells = text[6].split(",")
    cells[4] = "oops"  # POSITION_X
    text[6] = ",".join(cells)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(TrackMateFileError, match=r"line 7, column POSITION_X: 'oops' is not a "):
        read_trackmate_csv(path)
    path.write_text("LABEL,TRACK_ID,NUMBER_SPOTS,TRACK_DURATION\nTrack_0,0,20,1.0\n")
    with pytest.raises(TrackMateFileError, match=r"tracks or edges table.*spots table"):
        read_trackmate_csv(path)


def test_csv_with_its_edges_table_cuts_splits(tmp_path: Path) -> None:
    a = _walk(10)                 # spots 0..9, frames 0..9
    b = _walk(6, f0=5, x0=3.0)    # spots 10..15, frames 5..10: split off a's spot 4
    spots, edges = tmp_path / "spots.csv", tmp_path / "edges.csv"
    write_trackmate_csv(spots, [a, b], track_ids=[7, 7])
    links = [(7, k, k + 1) for k in range(9)] + [(7, 4, 10)]
    links += [(7, 10 + k, 11 + k) for k in range(5)]
    write_trackmate_edges_csv(edges, links)
    linear = read_trackmate_csv(spots)
    assert set(linear.points.segment) == {0} and len(linear.points) == 16
    data = read_trackmate_csv(spots, edges=edges)
    segs = data.points.groupby("segment")["frame"].agg(["min", "max"])
    assert sorted(segs.itertuples(index=False)) == [(0, 4), (5, 9), (5, 10)]
    assert set(data.points.track_id) == {7} and dict(data.warnings)["TRACK_SPLIT"]
    write_trackmate_edges_csv(edges, [(7, 4, 99)])
    with pytest.raises(TrackMateFileError, match="spot 99, which is not among the spots"):
        read_trackmate_csv(spots, edges=edges)


# ------------------------------------------------------------------------- writing back
def _strip_additions(data: bytes) -> bytes:
    data = re.sub(rb' LIVESPT_[A-Z_]+="[^"]*"', b"", data)
    data = re.sub(rb'  <Feature feature="LIVESPT_[^\n]*\n      ', b"", data)  # + end tag indent
    return re.sub(rb"  <DisplaySettings>\{\n  \"name\": \"LiveSPT D\".*?</DisplaySettings>\n",
                  b"", data, flags=re.S)


@pytest.mark.parametrize("version", ["6", "7", "8"])
def test_annotated_xml_keeps_every_original_byte(tmp_path: Path, version: str) -> None:
    src = tmp_path / "in.xml"
    ids = write_trackmate_xml(src, TRACKS, version=version, untracked=[(2, 1.0, 1.0)])
    spot_values = {ids[(t, i)]: (0.1 * t, 0.05, 0.2, 2, i == 3)
                   for t, tr in enumerate(TRACKS) for i in range(len(tr))}
    spot_values[ids[(0, 0)]] = (math.nan, math.nan, math.inf, 0, 0)
    track_values = {t: (0.1 + t, 0.05, 0.3, t) for t in range(len(TRACKS))}
    dst = write_annotated_xml(src, tmp_path / "annotated.xml", spot_values, track_values)
    raw = dst.read_bytes()
    assert _strip_additions(raw) == src.read_bytes()
    assert (b"<DisplaySettings>" in raw) and (raw.count(b"<DisplaySettings>") == 1)
    assert (b'"trackColorByFeature": "LIVESPT_TRACK_D"' in raw) == (version == "6")

    # Read back: every spot, edge, track, filter and calibration value as before.
    before, after = read_trackmate_xml(src), read_trackmate_xml(dst)
    pd.testing.assert_frame_equal(before.points, after.points)
    assert (before.pixel_size_um, before.frame_interval_s, before.version) == (
        after.pixel_size_um, after.frame_interval_s, after.version)
    root = ET.parse(dst).getroot()
    declared = {f.get("feature"): f.get("dimension")
                for f in root.iter("Feature") if f.get("feature", "").startswith("LIVESPT")}
    assert declared == {k: "NONE" for k, *_ in SPOT_FEATURES + TRACK_FEATURES}
    spots = {int(s.get("ID")): s for s in root.iter("Spot")}
    for sid, vals in spot_values.items():
        got = tuple(float(spots[sid].get(k)) for k, *_ in SPOT_FEATURES)
        np.testing.assert_array_equal(got, np.asarray(vals, dtype=float))
    untracked = ids[(-1, 0)]
    assert spots[untracked].get("LIVESPT_D") is None
    for tr in root.iter("Track"):
        assert float(tr.get("LIVESPT_TRACK_D")) == track_values[int(tr.get("TRACK_ID"))][0]
    if version != "6":  # ROI polygons (element text) are kept
        assert spots[0].text == "-0.2 -0.2 0.2 -0.2 0.2 0.2 -0.2 0.2"

    with pytest.raises(TrackMateFileError, match="already holds LiveSPT features"):
        write_annotated_xml(dst, tmp_path / "again.xml", spot_values, track_values)
    with pytest.raises(TrackMateFileError, match="must not overwrite its source"):
        write_annotated_xml(src, src, spot_values, track_values)


# ------------------------------------------------------------------- livespt tracks
def _sim_file(tmp_path: Path, n_tracks: int = 60, n_frames: int = 80, d: float = 0.2,
              sigma: float = 0.03) -> tuple[Path, list]:
    sim = simulate_tracks(n_tracks, n_frames, d, 0.05, sigma_um=sigma, seed=11)
    tracks = [[(int(f), float(p[0]) + 20.0, float(p[1]) + 20.0)
               for f, p in zip(sim.frames, sim.positions_um[m], strict=True)]
              for m in range(n_tracks)]
    path = tmp_path / "sim.xml"
    write_trackmate_xml(path, tracks)
    return path, tracks


def test_livespt_tracks_writes_every_output_and_its_intervals_cover(tmp_path: Path) -> None:
    src, tracks = _sim_file(tmp_path)
    out = tmp_path / "out"
    rc = main(["tracks", str(src), "--out", str(out), "--exposure", "0.05", "--no-models"])
    assert rc == 0
    te = pd.read_csv(out / "track_estimates.csv")
    assert list(te.columns) == ["track_id", "n_spots", "d_um2_s", "d_low_um2_s",
                                "d_high_um2_s", "method", "segment"]
    assert len(te) == len(tracks) and set(te["method"]) == {"cve"}
    # The whole-track 90 % intervals cover the true D as often as they claim.
    covered = int(((te.d_low_um2_s <= 0.2) & (0.2 <= te.d_high_um2_s)).sum())
    assert abs(covered / len(te) - 0.9) <= coverage_band(len(te), 0.9)
    est = pd.read_csv(out / "estimates.csv")
    assert set(est["track_id"]) == set(range(len(tracks)))
    assert list(pd.read_csv(out / "changes.csv").columns) == [
        "track_id", "frame", "detected_at_frame", "d_before_um2_s", "d_after_um2_s", "score",
        "segment"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"]["format"] == "trackmate-xml"
    assert summary["calibration"] == {"pixel_size_um": 0.1, "frame_interval_s": 0.05,
                                      "exposure_s": 0.05, "exposure_assumed": False}
    assert summary["counts"]["track_estimates"] == len(tracks)
    assert (out / "d_per_track.png").stat().st_size > 1000

    # The annotated file holds the same numbers as the CSVs.
    root = ET.parse(out / "annotated.xml").getroot()
    for tr in root.iter("Track"):
        row = te[te.track_id == int(tr.get("TRACK_ID"))].iloc[0]
        assert float(tr.get("LIVESPT_TRACK_D")) == pytest.approx(row.d_um2_s, rel=1e-12)
    spot = next(s for s in root.iter("Spot") if s.get("FRAME") == "40")
    track0 = est[est.track_id == 0]
    centre = (track0.frame_start + track0.frame_end) / 2
    nearest = track0.iloc[int(np.argmin(np.abs(centre.to_numpy() - 40)))]
    assert float(spot.get("LIVESPT_D")) == pytest.approx(nearest.d_um2_s, rel=1e-12)
    assert spot.get("LIVESPT_METHOD") == "2"  # cve


def test_livespt_tracks_through_a_server_gives_the_in_process_result(tmp_path: Path) -> None:
    src, _ = _sim_file(tmp_path, n_tracks=12, n_frames=60)
    srv = EmbeddedServer(ServerOptions(port=0, out_root=tmp_path / "sessions", device="cpu",
                                       models=()))
    srv.start()
    target = srv.target
    try:
        assert main(["tracks", str(src), "--out", str(tmp_path / "remote"), "--server",
                     target]) == 0
    finally:
        srv.stop()
    assert main(["tracks", str(src), "--out", str(tmp_path / "local"), "--no-models"]) == 0
    for name in ("track_estimates.csv", "estimates.csv", "changes.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "remote" / name),
                                      pd.read_csv(tmp_path / "local" / name))
    assert (tmp_path / "remote" / "annotated.xml").read_bytes() == (
        tmp_path / "local" / "annotated.xml").read_bytes()
    remote = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert remote["analysis"] == f"server {target}"
    assert "EXPOSURE" in [w["code"] for w in remote["warnings"]]


@pytest.mark.parametrize(("args", "message"), [
    (["missing.xml"], "FILE: missing.xml does not exist"),
    (["px.xml"], "spatial unit is 'pixels'.*give --pixel-size"),
    (["bad.xml"], "line 2: the document declares a DTD"),
    (["px.xml", "--pixel-size", "0.1", "--movie", "m.tif"], "--movie: no such file: m.tif"),
    (["px.xml", "--pixel-size", "0.1", "--movie", "m.tif", "--server", "h:1"],
     "--movie: .* drop --server"),
    (["px.xml", "--pixel-size", "-1"], "--pixel-size must be a positive number"),
    (["movie.tif"], "movie.tif: not a text file .*a movie goes with --movie"),
    (["px.xml", "--pixel-size", "0.1", "--server", "127.0.0.1:1"],
     "--server: no LiveSPT server answered at 127.0.0.1:1 .*drop --server"),
    (["px.xml", "--pixel-size", "0.1", "--exposure", "0.2"],
     "--exposure: 0.2 s is longer than the frame interval 0.05 s"),
])
def test_livespt_tracks_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], args: list,
                                            message: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_trackmate_xml(tmp_path / "px.xml", TRACKS, spatial_unit="pixels", pixel_width=1.0)
    (tmp_path / "bad.xml").write_text(BILLION_LAUGHS)
    (tmp_path / "movie.tif").write_bytes(b"II*\x00\x08\x00\x00\x00\xb6\xff\x00")
    # A bad value is the user's (status 2); an unreachable server is not (1).
    assert main(["tracks", *args, "--out", "o"]) == (1 if "127.0.0.1:1" in args else 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("livespt tracks: error: ")
    assert re.search(message, err), err


def test_a_server_asked_for_trackmate_without_fiji_fails_at_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Runs without a Fiji: the check happens before any JVM would start.
    rc = main(["serve", "--port", "0", "--tracker", "trackmate", "--fiji-dir",
               str(tmp_path / "nofiji"), "--no-models", "--sessions-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "nofiji is not a Fiji.app with jars/TrackMate-*.jar" in err
    assert "scripts/install-fiji" in err


def test_livespt_tracks_with_the_movie_uses_the_image_transformer(tmp_path: Path) -> None:
    """Tracks of a simulated movie (its true positions, as a TrackMate file) with --movie."""
    from livespt.models.simulate import MovieConfig, simulate_movie
    from livespt.server.io.tiff import write_movie

    d = 0.2
    movie = simulate_movie(MovieConfig(shape_px=(128, 128), n_frames=80, n_particles=14,
                                       d_um2_s=d, snr=10.0), seed=3)
    write_movie(tmp_path / "movie.tif", movie.frames, pixel_size_um=0.1, frame_interval_s=0.05)
    gt = movie.ground_truth
    tracks = []
    for _, g in gt.groupby("particle_id"):
        f = g.frame.to_numpy()
        run = g[f - f[0] == np.arange(len(f))]  # the first stay in the field of view
        if len(run) >= 20:
            tracks.append(list(zip(run.frame.tolist(), run.x_um.tolist(), run.y_um.tolist(),
                                   strict=True)))
    write_trackmate_xml(tmp_path / "t.xml", tracks)
    out = tmp_path / "out"
    assert main(["tracks", str(tmp_path / "t.xml"), "--movie", str(tmp_path / "movie.tif"),
                 "--exposure", "0.05", "--out", str(out)]) == 0
    est = pd.read_csv(out / "estimates.csv")
    summary = json.loads((out / "summary.json").read_text())
    image_model = [m for m in summary["models"] if m != "vit-cpu-features"]
    assert image_model and set(est.method) == {f"vit:{image_model[0]}"}
    # Non-overlapping windows: their 90 % intervals cover the true D as often as they claim.
    independent = est.groupby(["track_id", "segment"]).nth(slice(None, None, 10))
    hit = (independent.d_low_um2_s <= d) & (d <= independent.d_high_um2_s)
    print(f"\nimage transformer on the track file: coverage {hit.mean():.3f} of {len(hit)} "
          "independent windows")
    assert abs(hit.mean() - 0.9) <= coverage_band(len(hit), 0.9), (hit.mean(), len(hit))
    # Frames beyond the movie and a missing movie are one-line errors naming --movie.
    write_trackmate_xml(tmp_path / "late.xml", [[(f + 100, x, y) for f, x, y in tracks[0]]])
    with pytest.raises(ValueError, match=r"--movie: the tracks reach frame 1\d\d, the movie "
                                         r"has 80 frames"):
        main(["tracks", str(tmp_path / "late.xml"), "--movie", str(tmp_path / "movie.tif"),
              "--out", str(out), "--debug"])
    assert main(["tracks", str(tmp_path / "t.xml"), "--movie", "nothere.tif",
                 "--out", str(out)]) == 2
