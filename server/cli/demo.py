"""``livespt demo``: the main job, live, on a simulated acquisition with known truth.

Starts an embedded server, simulates a movie in which some particles diffuse
slowly, some fast, and some switch from slow to fast (a 5x change of D) half way,
streams it frame by frame, prints updates as they arrive, and ends with a table
comparing the estimates with the truth. Writes the same files as ``livespt
stream`` plus the movie and its ground truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.cli.stream import save_result, server_info_dict
from livespt.server.client import LiveSptClient, StreamSettings
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.io import strict_json
from livespt.server.io.csv_records import RecordWriter
from livespt.server.io.tiff import write_movie
from livespt.server.service.app import EmbeddedServer, ServerOptions
from livespt.server.service.wire import records_from_proto


@dataclass(frozen=True)
class DemoSettings:
    """The simulated acquisition, in physical units."""

    shape_px: tuple[int, int] = (256, 256)
    n_frames: int = 160
    pixel_size_um: float = 0.1
    frame_interval_s: float = 0.05
    snr: float = 12.0
    d_slow_um2_s: float = 0.04
    d_fast_um2_s: float = 0.2
    change_frame: int = 80
    per_group: int = 10


GROUPS = ("slow", "fast", "slow->fast")


def _movie_config(s: DemoSettings) -> MovieConfig:
    slow, fast = s.d_slow_um2_s, s.d_fast_um2_s
    d = np.array([[slow, slow]] * s.per_group + [[fast, fast]] * s.per_group
                 + [[slow, fast]] * s.per_group)
    return MovieConfig(shape_px=s.shape_px, n_frames=s.n_frames, n_particles=len(d),
                       pixel_size_um=s.pixel_size_um, frame_interval_s=s.frame_interval_s,
                       d_um2_s=d, change_frames=(s.change_frame,), snr=s.snr)


def _owner_of_tracks(points: pd.DataFrame, truth: pd.DataFrame, px: float) -> pd.Series:
    """The true particle behind each track: majority of per-frame nearest matches."""
    owners = []
    for frame, det in points.groupby("frame"):
        gt = truth[truth["frame"] == frame]
        if gt.empty:
            continue
        cost = np.hypot(det["x_um"].to_numpy()[:, None] - gt["x_um"].to_numpy()[None],
                        det["y_um"].to_numpy()[:, None] - gt["y_um"].to_numpy()[None]) / px
        r, c = linear_sum_assignment(np.where(cost < 2, cost, 1e6))
        ok = cost[r, c] < 2
        owners.append(pd.DataFrame({"track_id": det["track_id"].to_numpy()[r[ok]],
                                    "particle_id": gt["particle_id"].to_numpy()[c[ok]]}))
    both = pd.concat(owners)
    return both.groupby("track_id")["particle_id"].agg(lambda v: v.value_counts().index[0])


def _coverage(e: pd.DataFrame, d: tuple[float, float], change_frame: int) -> float:
    """Fraction of windows whose 90 % interval holds the true D of their regime."""
    if e.empty:
        return float("nan")
    truth = np.where(e["frame_end"] < change_frame, d[0], d[1])
    return float(np.mean((e["d_low_um2_s"] <= truth) & (truth <= e["d_high_um2_s"])))


def _table(s: DemoSettings, points: pd.DataFrame, est: pd.DataFrame, changes: pd.DataFrame,
           truth: pd.DataFrame) -> pd.DataFrame:
    owner = _owner_of_tracks(points, truth, s.pixel_size_um)
    group_of = {p: GROUPS[p // s.per_group] for p in range(3 * s.per_group)}
    est = est[est["track_id"].isin(owner.index)].copy()
    est["group"] = [group_of[int(owner[t])] for t in est["track_id"]]
    truth_d = {"slow": (s.d_slow_um2_s,) * 2, "fast": (s.d_fast_um2_s,) * 2,
               "slow->fast": (s.d_slow_um2_s, s.d_fast_um2_s)}
    rows = []
    for g in GROUPS:
        e = est[est["group"] == g]
        before = e["frame_end"] < s.change_frame  # windows straddling the change are left out
        after = e["frame_start"] >= s.change_frame
        tracks = [t for t in owner.index if group_of[int(owner[t])] == g]
        ch = changes[changes["track_id"].isin(tracks)] if len(changes) else changes
        near = ch[(ch["frame"] - s.change_frame).abs() <= 10] if len(ch) else ch
        lat = (near["detected_at_frame"] - s.change_frame) if len(near) else pd.Series([])
        rows.append({
            "particles": g,
            "tracks": len(tracks),
            "true D before": truth_d[g][0],
            "median window D before": float(e.loc[before, "d_um2_s"].median()),
            "true D after": truth_d[g][1],
            "median window D after": float(e.loc[after, "d_um2_s"].median()),
            "90% coverage": _coverage(e[before | after], truth_d[g], s.change_frame),
            "change events": len(ch),
            "near true change": len(near),
            "median latency (frames)": float(lat.median()) if len(lat) else float("nan"),
        })
    return pd.DataFrame(rows)


def run_demo(out_dir: str | Path, seed: int = 0) -> pd.DataFrame:
    """Run the live demo and write its outputs.

    Parameters
    ----------
    out_dir : str or Path
        Directory for ``tracks.csv``, ``estimates.csv``, ``changes.csv``,
        ``summary.json``, ``d_vs_time.png``, ``movie.tif``, ``ground_truth.csv``
        and ``server_sessions/`` (the server's own copy).
    seed : int
        Seed of the simulation.

    Returns
    -------
    pandas.DataFrame
        The final comparison with the truth, as printed.
    """
    t0 = time.perf_counter()
    s = DemoSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _movie_config(s)
    print(f"Simulating {s.n_frames} frames of {s.shape_px[0]}x{s.shape_px[1]} px: "
          f"{s.per_group} particles each at D = {s.d_slow_um2_s}, D = {s.d_fast_um2_s}, and "
          f"switching {s.d_slow_um2_s} -> {s.d_fast_um2_s} um^2/s at frame {s.change_frame} "
          f"(SNR {s.snr}) ...")
    movie = simulate_movie(cfg, seed=seed)
    write_movie(out / "movie.tif", movie.frames, s.pixel_size_um, s.frame_interval_s)
    movie.ground_truth.to_csv(out / "ground_truth.csv", index=False)
    options = StreamSettings(pixel_size_um=s.pixel_size_um, frame_interval_s=s.frame_interval_s,
                             name="livespt demo")
    seen_tracks: set[int] = set()
    n_estimates = 0

    def on_update(upd: pb.AnalysisUpdate) -> None:
        nonlocal n_estimates
        kind = upd.WhichOneof("update")
        if kind == "started":
            print(f"session {upd.started.session_id} started on the embedded server")
        elif kind == "frame":
            fr = upd.frame
            p, e, c = records_from_proto(fr)
            writer.write([*p, *e, *c])  # the files fill as results arrive
            seen_tracks.update(p.track_id for p in fr.points)
            n_estimates += len(fr.estimates)
            for c in fr.changes:
                print(f"  frame {fr.index:4d}: track {c.track_id} changed D "
                      f"{c.d_before_um2_s:.3f} -> {c.d_after_um2_s:.3f} um^2/s at frame "
                      f"{c.frame} (score {c.score:.1f})")
            if (fr.index + 1) % 40 == 0:
                print(f"  frame {fr.index + 1:4d}: {fr.n_spots} spots, "
                      f"{len(seen_tracks)} tracks so far, {n_estimates} window "
                      f"estimates, latency {fr.latency_ms:.1f} ms")

    writer = RecordWriter(out)
    with EmbeddedServer(ServerOptions(port=0, out_root=out / "server_sessions",
                                      device="cpu")) as srv, LiveSptClient(srv.target) as client:
        info = server_info_dict(client.info())
        result = client.stream(iter(movie.frames), options, on_update=on_update)
    elapsed = time.perf_counter() - t0
    summary = save_result(result, out, options, {"demo": True, "seed": seed,
                                                  "server_info": info,
                                                  "elapsed_s": round(elapsed, 2)}, writer)
    points = pd.read_csv(out / "tracks.csv")
    est = pd.read_csv(out / "estimates.csv")
    changes = pd.read_csv(out / "changes.csv")
    table = _table(s, points, est, changes, movie.ground_truth)
    summary["truth_table"] = table.to_dict(orient="records")
    (out / "summary.json").write_text(strict_json.dumps(summary, indent=2))
    with pd.option_context("display.width", 160, "display.float_format", "{:.3f}".format):
        methods = ", ".join(sorted(est["method"].astype(str).unique())) or "none"
        print(f"\nEstimates against the truth (10-point window estimates by {methods}; "
              "changes: matched within 10 frames of the true change):")
        print(table.to_string(index=False))
    lat = np.asarray(result.server_latency_ms)
    print(f"\n{result.frames_acked} frames in {elapsed:.1f} s, server latency p50 "
          f"{np.percentile(lat, 50):.1f} ms / p99 {np.percentile(lat, 99):.1f} ms. Wrote "
          f"{out}/tracks.csv, estimates.csv, changes.csv, summary.json, d_vs_time.png, "
          "movie.tif, ground_truth.csv")
    return table
