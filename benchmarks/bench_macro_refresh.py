"""The Fiji macro's refresh cost: one rebuild of its Results table and overlay.

While a stream runs, ``fiji_macro/LiveSPT.ijm`` rereads ``tracks.csv``, ``estimates.csv``
and ``changes.csv`` once a second and rebuilds the table (a row per track) and the overlay
(a polyline per track). This times that rebuild (the macro's own ``refresh`` function, run
by real ImageJ under ``xvfb-run``) on result files of growing size: 50 tracks (a 512 x 512
field with 50 particles), 10 to 2,000 frames, an estimate per point as at stride 1.

The peer is the wall time the results cover at a camera's pace (``--fps``, 20 frames/s by
default): while the refresh takes less than that, the table keeps up; the ratio is reported.

Writes JSON (default ``benchmarks/results/macro_refresh.json``) and prints it. Needs Java,
``xvfb-run`` and Debian's ImageJ (``/usr/share/java/ij.jar``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MACRO = ROOT / "fiji_macro" / "LiveSPT.ijm"
IJ_JAR = Path("/usr/share/java/ij.jar")


def write_results(folder: Path, n_tracks: int, n_frames: int, seed: int = 0) -> int:
    """Result files as ``livespt stream`` writes them; returns the number of track points."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 0.05, (n_tracks, n_frames, 2))
    xy = rng.uniform(2, 49, (n_tracks, 1, 2)) + steps.cumsum(1)
    with open(folder / "tracks.csv", "w") as t, open(folder / "estimates.csv", "w") as e:
        t.write("track_id,frame,x_um,y_um,precision_um\n")
        e.write("track_id,frame_start,frame_end,d_um2_s,d_low_um2_s,d_high_um2_s,method\n")
        for k in range(n_tracks):
            for f in range(n_frames):
                t.write(f"{k},{f},{xy[k, f, 0]:.6f},{xy[k, f, 1]:.6f},0.02\n")
                if f >= 9:
                    e.write(f"{k},{f - 9},{f},0.05,0.03,0.09,cve\n")
    with open(folder / "changes.csv", "w") as c:
        c.write("track_id,frame,detected_at_frame,d_before_um2_s,d_after_um2_s,score\n")
        for k in range(0, n_tracks, 5):
            f = n_frames // 2
            c.write(f"{k},{f},{f + 5},0.05,0.5,12.0\n")
    return n_tracks * n_frames


def harness(macro: str, folder: Path, n_tracks: int, n_frames: int) -> str:
    """The macro's globals and functions, and a main that times ``refresh``: once on the
    files as written (all points new), then three times after one more frame's lines are
    appended (the steady state of a running acquisition)."""
    head = macro[:macro.index("args = getArgument();")]
    functions = macro[macro.index("// ======"):]
    main = f"""
pixel = "0.1"; batch = true;
setBatchMode(true);
newImage("LiveSPT overlay", "16-bit black", 512, 512, 1);
background = getImageID();
t0 = getTime();
seen = refresh("{folder}", background, 0);
print("FULL_MS " + (getTime() - t0));
for (rep = 0; rep < 3; rep++) {{
    frame = {n_frames} + rep;
    t = ""; e = "";
    for (k = 0; k < {n_tracks}; k++) {{
        t = t + k + "," + frame + "," + (5 + k * 0.5) + "," + (5 + rep * 0.1) + ",0.02\\n";
        e = e + k + "," + (frame - 9) + "," + frame + ",0.05,0.03,0.09,cve\\n";
    }}
    File.append(substring(t, 0, lengthOf(t) - 1), "{folder}/tracks.csv");
    File.append(substring(e, 0, lengthOf(e) - 1), "{folder}/estimates.csv");
    t0 = getTime();
    seen = refresh("{folder}", background, seen);
    print("FRAME_MS " + (getTime() - t0));
}}
print("ROWS " + nResults);
print("OVERLAY " + Overlay.size);
"""
    return head + main + functions


def measure(macro: str, n_tracks: int, n_frames: int, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        points = write_results(folder, n_tracks, n_frames)
        script = folder / "refresh.ijm"
        script.write_text(harness(macro, folder, n_tracks, n_frames))
        out = subprocess.run(["xvfb-run", "-a", "timeout", str(int(timeout)), "java", "-jar",
                              str(IJ_JAR), "-batch", str(script)],
                             capture_output=True, text=True, timeout=timeout + 30)
        n_points = sum(1 for _ in open(folder / "tracks.csv")) - 1
    full = [float(v) for v in re.findall(r"FULL_MS (\S+)", out.stdout)]
    frame = [float(v) for v in re.findall(r"FRAME_MS (\S+)", out.stdout)]
    rows = re.findall(r"ROWS (\d+)", out.stdout)
    if len(full) != 1 or len(frame) != 3 or not rows or int(rows[0]) != n_tracks:
        raise RuntimeError(f"the harness did not finish: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    assert n_points == points + 3 * n_tracks
    return {"tracks": n_tracks, "frames": n_frames, "points": points, "full_ms": full[0],
            "new_frame_ms": min(frame), "new_frame_ms_max": max(frame)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=50)
    ap.add_argument("--frames", default="10,100,500,1000,2000",
                    help="frames per track, comma-separated")
    ap.add_argument("--baseline", default="60e9631",
                    help="git revision of the macro run as the peer (default: the last one "
                         "that reparsed every line at each refresh)")
    ap.add_argument("--fps", type=float, default=20.0,
                    help="the camera's frame rate the refresh is compared with")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/macro_refresh.json")
    args = ap.parse_args(argv)
    macros = {"current": MACRO.read_text(),
              "baseline": subprocess.run(["git", "show", f"{args.baseline}:fiji_macro/LiveSPT.ijm"],
                                         cwd=ROOT, check=True, capture_output=True,
                                         text=True).stdout}
    rows = []
    for n in (int(v) for v in args.frames.split(",")):
        row: dict = {"tracks": args.tracks, "frames": n}
        for name, text in macros.items():
            r = measure(text, args.tracks, n, args.timeout)
            row["points"] = r["points"]
            row[name] = {k: r[k] for k in ("full_ms", "new_frame_ms", "new_frame_ms_max")}
            # Polled once a second: the table is at most 1 s + one refresh behind.
            row[name]["frames_behind_at_fps"] = (1 + r["new_frame_ms"] / 1000) * args.fps
        row["new_frame_speedup"] = row["baseline"]["new_frame_ms"] / max(
            row["current"]["new_frame_ms"], 1.0)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "benchmark": "macro_refresh",
        "command": "python benchmarks/bench_macro_refresh.py",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "imagej": str(IJ_JAR),
        "baseline": args.baseline,
        "fps": args.fps,
        "rows": rows,
        "note": "full_ms: refresh on the files as written (every point new); new_frame_ms: "
                "refresh after one more frame's lines are appended (min of 3; the baseline "
                "reparses everything); frames_behind_at_fps: (1 s poll + new_frame) x fps.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
