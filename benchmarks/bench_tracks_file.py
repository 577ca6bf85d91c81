"""TrackMate XML files: read speed and memory, and ``livespt tracks`` throughput.

A TrackMate 7 layout XML file of ``--spots`` spots (tracks of 100 spots, every spot
with the feature attributes TrackMate writes and its ROI polygon) is generated, then,
each in a fresh process (peak RSS from ``getrusage``, minus the interpreter's after
imports):

* ``read_trackmate_xml`` (expat, streamed: memory grows with spots, not bytes);
* the peer, ``xml.etree.ElementTree.parse`` of the whole file, then the same spot
  table from the tree (what a script that reads TrackMate files usually does);
* ``write_annotated_xml`` (two streamed passes);
* ``livespt tracks`` in-process on a smaller file (``--analysis-spots``), end to end.

Writes JSON (default ``benchmarks/results/tracks_file.json``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPOT = ('        <Spot ID="{i}" name="ID{i}" STD_INTENSITY_CH1="17.69" QUALITY="79.38" '
        'POSITION_T="{t}" MIN_INTENSITY_CH1="159.0" TOTAL_INTENSITY_CH1="910.0" '
        'CONTRAST_CH1="0.216" SNR_CH1="3.65" FRAME="{f}" MEDIAN_INTENSITY_CH1="193.0" '
        'VISIBILITY="1" RADIUS="0.15" POSITION_X="{x}" POSITION_Y="{y}" '
        'MEAN_INTENSITY_CH1="182.0" POSITION_Z="0.0" MAX_INTENSITY_CH1="240.0" '
        'ROI_N_POINTS="4">-0.15 -0.15 0.15 -0.15 0.15 0.15 -0.15 0.15</Spot>\n')
EDGE = ('        <Edge SPOT_SOURCE_ID="{a}" SPOT_TARGET_ID="{b}" LINK_COST="0.0108" '
        'DIRECTIONAL_CHANGE_RATE="23.0" SPEED="0.659" DISPLACEMENT="0.0329" '
        'EDGE_TIME="0.975" EDGE_X_LOCATION="2.799" EDGE_Y_LOCATION="0.653" '
        'EDGE_Z_LOCATION="0.0" />\n')


def make_file(path: Path, n_spots: int, length: int = 100, seed: int = 0) -> None:
    """A TrackMate-7-layout file: n_spots / length tracks of ``length`` spots."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_tracks = n_spots // length
    start = rng.uniform(0, 200, (n_tracks, 2))
    steps = rng.normal(0, 0.1, (n_tracks, length, 2)).cumsum(axis=1) + start[:, None]
    with open(path, "w", encoding="utf-8") as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n<TrackMate version="7.5.1">\n'
                '  <Log>benchmark</Log>\n  <Model spatialunits="micron" timeunits="s">\n'
                '    <FeatureDeclarations>\n      <SpotFeatures>\n'
                '        <Feature feature="QUALITY" name="Quality" shortname="Quality" '
                'dimension="QUALITY" isint="false" />\n      </SpotFeatures>\n'
                '      <EdgeFeatures>\n      </EdgeFeatures>\n      <TrackFeatures>\n'
                '      </TrackFeatures>\n    </FeatureDeclarations>\n'
                f'    <AllSpots nspots="{n_tracks * length}">\n')
        for fr in range(length):
            f.write(f'      <SpotsInFrame frame="{fr}">\n')
            f.writelines(SPOT.format(i=t * length + fr, t=fr * 0.05, f=fr,
                                     x=steps[t, fr, 0], y=steps[t, fr, 1])
                         for t in range(n_tracks))
            f.write("      </SpotsInFrame>\n")
        f.write("    </AllSpots>\n    <AllTracks>\n")
        for t in range(n_tracks):
            f.write(f'      <Track name="Track_{t}" TRACK_ID="{t}" NUMBER_SPOTS="{length}">\n')
            f.writelines(EDGE.format(a=t * length + k, b=t * length + k + 1)
                         for k in range(length - 1))
            f.write("      </Track>\n")
        f.write("    </AllTracks>\n    <FilteredTracks>\n")
        f.writelines(f'      <TrackID TRACK_ID="{t}" />\n' for t in range(n_tracks))
        f.write('    </FilteredTracks>\n  </Model>\n  <Settings>\n    <ImageData filename="m" '
                'folder="" width="2048" height="2048" nslices="1" nframes="100" '
                'pixelwidth="0.1" pixelheight="0.1" voxeldepth="1.0" timeinterval="0.05" />\n'
                '  </Settings>\n</TrackMate>\n')


CHILD = r'''
import json, resource, sys, time
from pathlib import Path
import numpy as np, pandas as pd
from livespt.server.io.trackmate_xml import read_trackmate_xml, write_annotated_xml
import xml.etree.ElementTree as ET
what, path = sys.argv[1], Path(sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if what == "livespt":
    n = len(read_trackmate_xml(path).points)
elif what == "etree":
    root = ET.parse(path).getroot()
    spots = {int(s.get("ID")): (int(s.get("FRAME")), float(s.get("POSITION_X")),
                                float(s.get("POSITION_Y"))) for s in root.iter("Spot")}
    rows = [(int(t.get("TRACK_ID")), spots[int(e.get("SPOT_SOURCE_ID"))])
            for t in root.iter("Track") for e in t.iter("Edge")]
    n = len(spots)
elif what == "annotate":
    vals = {i: (0.1, 0.05, 0.2, 2, 0) for i in range(2_000_000)}
    write_annotated_xml(path, path.with_name("annotated.xml"), vals, {})
    n = len(vals)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "items": n, "peak_rss_mb": peak / 1024,
                  "rss_over_imports_mb": (peak - base) / 1024}))
'''


def child(what: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(path)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spots", type=int, default=500_000, help="spots in the large file")
    ap.add_argument("--analysis-spots", type=int, default=20_000,
                    help="spots in the file analysed end to end by livespt tracks")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/tracks_file.json"))
    args = ap.parse_args()
    res: dict = {"machine": platform.platform(), "python": platform.python_version(),
                 "cpus": __import__("os").cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        big = Path(d) / "big.xml"
        make_file(big, args.spots)
        res["file_mb"] = big.stat().st_size / 1e6
        res["spots"] = args.spots
        runs: dict[str, list[dict]] = {"livespt": [], "etree": [], "annotate": []}
        for _ in range(args.repeats):  # alternated, so drift hits both
            for what in runs:
                runs[what].append(child(what, big))
        for what, rs in runs.items():
            best = min(rs, key=lambda r: r["seconds"])
            res[what] = {**best, "spots_per_s": args.spots / best["seconds"],
                         "mb_per_s": res["file_mb"] / best["seconds"],
                         "all_seconds": [r["seconds"] for r in rs]}
        res["ratios"] = {
            "read_time_etree_over_livespt": res["etree"]["seconds"] / res["livespt"]["seconds"],
            "read_memory_etree_over_livespt":
                res["etree"]["rss_over_imports_mb"] / res["livespt"]["rss_over_imports_mb"],
            "livespt_read_bytes_of_rss_per_spot":
                res["livespt"]["rss_over_imports_mb"] * 1e6 / args.spots,
        }
        small = Path(d) / "small.xml"
        make_file(small, args.analysis_spots)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "livespt.server.cli.main", "tracks", str(small),
                        "--out", str(Path(d) / "out"), "--exposure", "0.05"], cwd=ROOT,
                       check=True, capture_output=True)
        wall = time.perf_counter() - t0
        res["livespt_tracks"] = {"spots": args.analysis_spots, "wall_s": wall,
                                 "spots_per_s": args.analysis_spots / wall,
                                 "note": "whole command in a fresh process: imports, model "
                                         "load, whole-track and window D, change detection, "
                                         "annotated.xml"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
