"""Accuracy report: LiveSPT's live path on data we made, data we did not make, and a real movie.

    make accuracy
    # = .venv/bin/python -m benchmarks.accuracy.report --out docs/accuracy.md \
    #       --json benchmarks/results/accuracy.json

Sources, side by side (one table row per data set):

1. our simulator (``livespt.models.simulate``): movies streamed through ``livespt stream``;
2. DeepTrack2 (``deeptrack``, from PyPI, as published): the same movie specifications
   rendered by its optics and noise features (:mod:`.deeptrack_movies`), streamed the same
   way;
3. andi-datasets (the AnDi challenge's generator, from PyPI, in ``.venv-thirdparty``):
   constant-D and two-state trajectories plus localization noise, through the track
   analysis path (:mod:`.andi_tracks`);
4. a real movie (:mod:`.real_data`, ``bulk_water``) when its local cache exists; the report
   says so when it does not.

Writes the Markdown report, PNG plots in ``<out without .md>/`` (``docs/accuracy/``) and the
raw numbers as JSON. ``--quick`` shrinks everything (tests, smoke runs); ``--in-process``
streams through one embedded server inside this process instead of one ``livespt stream
--embedded`` process per movie (same pipeline, without ~8 s of start-up per movie).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.accuracy import metrics as M
from benchmarks.accuracy.live import (
    LiveResult,
    StreamSettings,
    max_distance_for,
    run_live,
    write_tiff,
)
from benchmarks.accuracy.movies import ImageMovie, MovieSpec, simulator_movie

REPO = Path(__file__).resolve().parents[2]
COMMAND = ("make accuracy  (= .venv/bin/python -m benchmarks.accuracy.report "
           "--out docs/accuracy.md --json benchmarks/results/accuracy.json)")
FA_TARGET_PER_1000 = 0.5
LIVE_MAX_GAP_FRAMES = 2  # the stream's default linker memory (not set by the report)


# ------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    """How big each data set is."""

    shape_px: tuple[int, int] = (160, 160)
    n_frames: int = 150
    n_particles: int = 30
    andi_n: int = 200
    andi_frames: int = 200
    real_frames: int | None = None
    real_crop: tuple[int, int] | None = None


DEFAULT = Sizes(real_crop=(424, 320))  # real: all 300 frames, the left half (~270 spots/frame)
QUICK = Sizes(shape_px=(64, 64), n_frames=60, n_particles=8, andi_n=30, andi_frames=100,
              real_frames=40, real_crop=(128, 128))


def movie_specs(sizes: Sizes, seed: int) -> list[MovieSpec]:
    """The two movie specifications every image source renders: constant and changing D."""
    base = MovieSpec(shape_px=sizes.shape_px, n_frames=sizes.n_frames,
                     n_particles=sizes.n_particles)
    return [replace(base, name="constant D", change_fraction=0.0, seed=seed + 11),
            replace(base, name="changing D (half the particles, 5x)", change_fraction=0.5,
                    seed=seed + 12)]


def settings_for(spec: MovieSpec) -> StreamSettings:
    """The ``livespt stream`` flags a user would give for this acquisition."""
    return StreamSettings(
        pixel_size_um=spec.pixel_size_um, frame_interval_s=spec.frame_interval_s,
        exposure_s=spec.exposure_s, camera_offset_adu=spec.offset_adu,
        camera_gain_adu_per_e=spec.gain_adu_per_e, read_noise_e=spec.read_noise_e,
        radius_um=round(math.sqrt(2.0) * spec.psf_sigma_um, 4),
        max_distance_um=max_distance_for(spec.d_max_um2_s, spec.frame_interval_s))


# ------------------------------------------------------------------------ running
class Runner:
    """Streams movies: one ``livespt stream --embedded`` process each, or one shared server."""

    def __init__(self, in_process: bool) -> None:
        self.in_process = in_process
        self._server: Any = None
        self._root: tempfile.TemporaryDirectory[str] | None = None

    def run(self, movie: Path, out: Path, settings: StreamSettings) -> LiveResult:
        """Stream one movie and read its outputs."""
        if not self.in_process:
            return run_live(movie, out, settings)
        if self._server is None:
            from livespt.server.service.app import EmbeddedServer, ServerOptions

            self._root = tempfile.TemporaryDirectory(prefix="livespt-accuracy-server-")
            self._server = EmbeddedServer(ServerOptions(port=0, out_root=Path(self._root.name),
                                                        device="cpu")).start()
        return run_live(movie, out, settings, server=self._server.target, in_process=True)

    def close(self) -> None:
        """Stop the shared server, if one was started."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._root is not None:
            self._root.cleanup()
            self._root = None


def _checks(live: LiveResult) -> dict[str, Any]:
    """The server's own checks of the session: model check and frame timing."""
    ss = live.server_summary
    return {"model_check": ss.get("model_check"),
            "windows_model_bias": ss.get("windows_model_bias"),
            "tracks_model_bias": ss.get("tracks_model_bias"),
            "windows_out_of_distribution": ss.get("windows_out_of_distribution"),
            "estimates": ss.get("estimates"),
            "track_sigma_check": ss.get("track_sigma_check"),
            "noise_spread": ss.get("noise_spread"),
            "frame_timing": ss.get("frame_timing"),
            "sample_check": ss.get("sample_check")}


def score_image_movie(movie: ImageMovie, live: LiveResult, crlb_cache: dict[Any, float],
                      min_present: int, settings: StreamSettings
                      ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Every metric of one streamed movie against its truth."""
    spec = movie.spec
    max_distance = settings.max_distance_um or 1.0  # the server default when not given
    points, detection = M.label_points(live.tracks, movie.ground_truth, spec.pixel_size_um,
                                       spec.shape_px, spec.n_frames)
    truth_d = M.TruthD.from_table(movie.ground_truth, spec.n_frames)
    win = M.window_table(points, live.estimates, truth_d, spec.frame_interval_s,
                         spec.exposure_s, seed=spec.seed, crlb_cache=crlb_cache)
    row = {
        "detection": detection,
        "localization": M.detection_scores(points, truth_d, movie.ground_truth),
        "tracks": M.track_scores(points, movie.ground_truth, min_frames_present=min_present,
                                 max_gap_frames=LIVE_MAX_GAP_FRAMES),
        "linking_references": M.linking_references(
            live.tracks, movie.ground_truth, max_distance_um=max_distance,
            max_gap_frames=LIVE_MAX_GAP_FRAMES, pixel_size_um=spec.pixel_size_um,
            shape_px=spec.shape_px, n_frames=spec.n_frames, min_frames_present=min_present),
        "windows": M.summarize_windows(win),
        "track_d": M.track_d_scores(points, truth_d, spec.frame_interval_s, spec.exposure_s),
        "changes": M.change_scores(points, live.changes, truth_d),
        "checks": _checks(live),
        "stream": {"frames_per_s": live.summary.get("frames_per_s"),
                   "wall_s": round(live.wall_s, 1), "warnings": live.summary.get("warnings"),
                   "command": " ".join(live.command)},
    }
    return row, win


def run_image_sources(sizes: Sizes, seed: int, work: Path, runner: Runner,
                      log: Any) -> tuple[list[dict[str, Any]], pd.DataFrame,
                                         dict[str, np.ndarray]]:
    """Simulator and deeptrack movies through the live path."""
    from benchmarks.accuracy.deeptrack_movies import deeptrack_movie, deeptrack_version

    renderers: list[tuple[str, Any]] = [("simulator", simulator_movie)]
    try:
        deeptrack_version()
        renderers.append(("deeptrack", deeptrack_movie))
    except ImportError as exc:
        log(f"deeptrack: ABSENT ({exc})")
    rows: list[dict[str, Any]] = []
    wins: list[pd.DataFrame] = []
    examples: dict[str, np.ndarray] = {}
    cache: dict[Any, float] = {}
    min_present = min(100, int(0.8 * sizes.n_frames))
    for spec in movie_specs(sizes, seed):
        for source, render in renderers:
            t0 = time.perf_counter()
            movie = render(spec)
            t_render = time.perf_counter() - t0
            tag = f"{source}-{'changing' if spec.change_fraction else 'constant'}"
            path = write_tiff(work / tag / "movie.tif", movie.frames)
            settings = settings_for(spec)
            live = runner.run(path, work / tag / "live", settings)
            row, win = score_image_movie(movie, live, cache, min_present, settings)
            row.update({"source": source, "data": spec.name, "kind": "images",
                        "changing": spec.change_fraction > 0, "spec": spec.as_dict(),
                        "renderer": movie.info, "render_s": round(t_render, 1),
                        "settings": settings.flags(),
                        "min_frames_present": min_present})
            rows.append(row)
            win["source"] = f"{source}:{spec.name}"
            win["source_kind"] = source
            wins.append(win)
            if not spec.change_fraction:
                examples[source] = movie.frames[min(10, spec.n_frames - 1)]
            log(f"{tag}: rendered in {t_render:.1f} s, streamed in {live.wall_s:.1f} s, "
                f"{row['windows']['n_eligible']} windows scored")
    return rows, M.concat(wins), examples


def run_andi_sources(sizes: Sizes, seed: int, work: Path,
                     log: Any) -> tuple[list[dict[str, Any]], pd.DataFrame, str | None]:
    """andi-datasets trajectories through the track analysis path."""
    from benchmarks.accuracy.andi_tracks import ThirdPartyUnavailable, analyze_andi, generate_andi
    from livespt.server.inference.resident import ModelRegistry

    rows: list[dict[str, Any]] = []
    wins: list[pd.DataFrame] = []
    registry = ModelRegistry(None, "cpu")
    try:
        for kind, label in (("single_state", "constant D (single_state)"),
                            ("multi_state", "two states, 5x (multi_state)")):
            t0 = time.perf_counter()
            try:
                data = generate_andi(kind, sizes.andi_n, sizes.andi_frames, seed + 21,
                                     work / "andi")
            except ThirdPartyUnavailable as exc:
                log(f"andi-datasets: ABSENT ({exc})")
                return [], pd.DataFrame(), str(exc)
            res = analyze_andi(data, seed=seed + 22, model=registry.track_model)
            win = M.window_table(res.points, res.estimates, res.truth_d, res.frame_interval_s,
                                 res.exposure_s, seed=seed)
            row = {
                "source": "andi-datasets", "data": label, "kind": "trajectories",
                "changing": kind == "multi_state", "generator": data.meta,
                "localization": M.detection_scores(res.points, res.truth_d),
                "windows": M.summarize_windows(win),
                "track_d": M.track_d_scores(res.points, res.truth_d, res.frame_interval_s,
                                            res.exposure_s),
                "changes": M.change_scores(res.points, res.changes, res.truth_d),
                "warnings": res.warnings,
                "n_tracks": int(data.positions_um.shape[0]),
                "n_frames": int(data.positions_um.shape[1]),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            win["source"] = f"andi:{label}"
            win["source_kind"] = "andi-datasets"
            wins.append(win)
            log(f"andi {kind}: {row['windows']['n_eligible']} windows in {row['wall_s']} s")
    finally:
        registry.close()
    return rows, M.concat(wins), None


def run_real_source(sizes: Sizes, work: Path, runner: Runner,
                    log: Any) -> tuple[dict[str, Any] | None, str | None, np.ndarray | None,
                                       pd.DataFrame]:
    """The real movie through the live path, scored against its reference D."""
    try:
        from benchmarks.accuracy.real_data import DataUnavailable, load_real_movie
    except ImportError as exc:
        return None, f"benchmarks/accuracy/real_data.py cannot be imported: {exc}", None, \
            pd.DataFrame()
    try:
        real = load_real_movie("bulk_water")
    except DataUnavailable as exc:
        log(f"real movie: ABSENT ({exc})")
        return None, str(exc), None, pd.DataFrame()
    frames = real.frames
    if sizes.real_frames:
        frames = frames[:sizes.real_frames]
    if sizes.real_crop:
        h, w = sizes.real_crop
        frames = frames[:, :h, :w]
    path = write_tiff(work / "real" / "movie.tif", frames)
    settings = StreamSettings(
        pixel_size_um=real.pixel_size_um, frame_interval_s=real.frame_interval_s,
        exposure_s=real.exposure_s, camera_offset_adu=0.0, camera_gain_adu_per_e=1.0,
        radius_um=1.0, max_distance_um=max_distance_for(real.reference_d_um2_s * 2,
                                                        real.frame_interval_s),
        dark_spots=real.dark_particles)
    live = runner.run(path, work / "real" / "live", settings)
    pts = live.tracks.copy()
    pts["particle_id"] = pts["track_id"]
    pts["x_true_um"] = np.nan
    pts["y_true_um"] = np.nan
    n_ids = int(pts["track_id"].max()) + 1 if len(pts) else 0
    truth_d = M.TruthD(np.full((n_ids, frames.shape[0]), real.reference_d_um2_s))
    exposure = real.exposure_s or real.frame_interval_s
    win = M.window_table(pts, live.estimates, truth_d, real.frame_interval_s, exposure)
    long_tracks = M.track_d_scores(pts, truth_d, real.frame_interval_s, exposure,
                                   min_points=50, min_purity=0.0)
    live_d = win["d_um2_s"].to_numpy()
    cve_d = win["d_cve"].to_numpy()
    row = {
        "source": "real", "data": f"{real.name} ({frames.shape[0]} x {frames.shape[1]} x "
                                  f"{frames.shape[2]})",
        "kind": "images", "changing": False,
        "reference_d_um2_s": real.reference_d_um2_s, "reference_source": real.reference_source,
        "license": real.license, "provenance": real.source,
        "caveats": list(real.meta.get("reference_d_caveats", [])),
        "exposure_s": real.exposure_s,
        "windows": M.summarize_windows(win),
        "mean_window_d_um2_s": {"live": float(np.nanmean(live_d)) if live_d.size else None,
                                "cve": float(np.nanmean(cve_d)) if cve_d.size else None},
        "median_window_d_um2_s": {"live": float(np.nanmedian(live_d)) if live_d.size else None,
                                  "cve": float(np.nanmedian(cve_d)) if cve_d.size else None},
        "track_d_long_tracks": long_tracks,
        "changes": M.change_scores(pts, live.changes, truth_d),
        "n_tracks": int(live.tracks["track_id"].nunique()) if len(live.tracks) else 0,
        "settings": settings.flags(),
        "checks": _checks(live),
        "stream": {"frames_per_s": live.summary.get("frames_per_s"),
                   "wall_s": round(live.wall_s, 1), "warnings": live.summary.get("warnings")},
    }
    win["source"] = "real"
    win["source_kind"] = "real"
    log(f"real movie: streamed in {live.wall_s:.1f} s")
    return row, None, frames[min(10, frames.shape[0] - 1)], win


# ------------------------------------------------------------------------ plots
def plot_examples(examples: dict[str, np.ndarray], path: Path) -> None:
    """One frame of each image source, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in ("simulator", "deeptrack", "real") if k in examples]
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        img = examples[name].astype(float)
        crop = img[:96, :96] if name != "real" else img[:160, :160]
        lo, hi = np.percentile(crop, [1, 99.8])
        ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title({"simulator": "our simulator", "deeptrack": "DeepTrack2",
                      "real": "real: bulk_water"}[name], fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _binned(win: pd.DataFrame, col: str, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = win["d_true"].to_numpy()
    e = (win[col].to_numpy() - d) / d
    rmse, bias = np.full(len(edges) - 1, np.nan), np.full(len(edges) - 1, np.nan)
    for k in range(len(edges) - 1):
        m = (d >= edges[k]) & (d < edges[k + 1]) & np.isfinite(e)
        if m.sum() >= 20:
            rmse[k] = np.sqrt(np.mean(e[m] ** 2))
            bias[k] = np.median(e[m])
    return rmse, bias


def plot_windows(wins: pd.DataFrame, path: Path) -> None:
    """Relative RMSE and median relative bias of window D against the true D, per source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("simulator", "deeptrack", "andi-datasets")
             if len(wins) and k in set(wins["source_kind"])]
    if not kinds:
        return
    edges = np.exp(np.linspace(np.log(0.02), np.log(5.0), 9))
    mid = np.sqrt(edges[:-1] * edges[1:])
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.2 * len(kinds), 6.4), squeeze=False,
                             sharex=True)
    for j, kind in enumerate(kinds):
        w = wins[(wins["source_kind"] == kind) & wins["eligible"]]
        live_label = "live (" + ", ".join(sorted(set(w["method"]))) + ")"
        for col, label, style in (("d_um2_s", live_label, "C0-o"),
                                  ("d_cve", "CVE, sigma unknown, same windows", "C1-s"),
                                  ("d_floor", "CVE on true positions + noise", "C2--")):
            rmse, bias = _binned(w, col, edges)
            axes[0, j].plot(mid, rmse, style, label=label, ms=4)
            axes[1, j].plot(mid, bias, style, ms=4)
        d = w["d_true"].to_numpy()
        c = (w["crlb_sd"] / w["d_true"]).to_numpy()
        crlb = [np.sqrt(np.nanmean(c[(d >= a) & (d < b)] ** 2))
                if ((d >= a) & (d < b)).sum() >= 20 else np.nan
                for a, b in itertools.pairwise(edges)]
        axes[0, j].plot(mid, crlb, "k:x", ms=4, label="Cramer-Rao bound (sigma unknown)")
        axes[0, j].set_title({"andi-datasets": "andi-datasets (tracks)",
                              "simulator": "our simulator (movies)",
                              "deeptrack": "DeepTrack2 (movies)"}[kind], fontsize=10)
        axes[1, j].axhline(0, color="0.6", lw=0.8)
        axes[1, j].set_xscale("log")
        axes[1, j].set_xlabel("true D (um$^2$/s)")
        axes[0, j].legend(fontsize=6.5)
    axes[0, 0].set_ylabel("relative RMSE of window D")
    axes[1, 0].set_ylabel("median relative bias")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------ Markdown
def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, int | np.integer):
        return str(int(x))
    return f"{x:.{nd}f}"


def _poisson_p(alarms: int, frames: int, rate_per_1000: float = FA_TARGET_PER_1000) -> float:
    """P(K >= alarms) for K ~ Poisson(rate x frames / 1000): small = above the target."""
    from scipy.stats import poisson

    if frames <= 0:
        return math.nan
    return float(poisson.sf(alarms - 1, rate_per_1000 * frames / 1000.0))


def _jaccard(ch: dict[str, Any]) -> str:
    """Jaccard with its 95 % Wilson interval and the counts it rests on.

    TP / (TP + FP + FN) treated as a proportion over the TP + FP + FN events: with the
    dozen changes of an image movie the interval is wide, and a target can only be
    judged against it.
    """
    tp, fp, fn = (int(ch.get(k) or 0) for k in ("true_positives", "false_positives",
                                                "false_negatives"))
    n = tp + fp + fn
    if n == 0:
        return "n/a"
    z = 1.959964
    p = tp / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    out = (f"{p:.3f} ({max(centre - half, 0.0):.2f}-{min(centre + half, 1.0):.2f}; "
           f"{tp} found, {fn} missed, {fp} extra)")
    n_res = int(ch.get("resolvable_changes") or 0)
    if n_res < tp + fn:
        rtp, rfn, rfp = (int(ch.get(k) or 0) for k in (
            "resolvable_true_positives", "resolvable_false_negatives",
            "resolvable_false_positives"))
        out += (f"; the {n_res} changes with >= 5 steps on both sides: "
                f"{_f(ch.get('jaccard_resolvable'), 3)} ({rtp} found, {rfn} missed, "
                f"{rfp} extra)")
    return out


def _main_table(rows: list[dict[str, Any]]) -> list[str]:
    head = ("| source | data | recall | precision | tracks / particle (/ visit) | purity "
            "| windows scored "
            "| live method (share of all windows) | live rel. RMSE | CVE rel. RMSE (same "
            "windows) | floor: CVE on true + noise | CRLB | live 90 % coverage "
            "| CVE 90 % coverage | track D rel. RMSE "
            "| change Jaccard (95 % interval; counts) | change position RMSE (frames) "
            "| false alarms / 1000 "
            "(no-change tracks; pure) |")
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in rows:
        det = r.get("detection", {})
        trk = r.get("tracks", {})
        w = r["windows"]
        td = r.get("track_d") or r.get("track_d_long_tracks") or {}
        ch = r["changes"]
        real = r["source"] == "real"
        pure = ("n/a (no positions)" if real else
                f"{_f(ch['false_alarms_per_1000_pure'], 2)} ({ch['false_alarms_pure']} in "
                f"{ch['pure_no_change_track_frames']})")
        fa = (f"{_f(ch['false_alarms_per_1000'], 2)} ({ch['false_alarms']} in "
              f"{ch['no_change_track_frames']}); {pure}")
        changing = r.get("changing")
        lines.append("| " + " | ".join([
            r["source"], r["data"], _f(det.get("recall")), _f(det.get("precision")),
            (f"{_f(trk.get('tracks_per_particle'), 2)} ({_f(trk.get('tracks_per_visit'), 2)})"
             if trk else "n/a"), _f(trk.get("purity")),
            str(w["n_eligible"]), _methods(w),
            _f(w["live"]["rel_rmse"]), _f(w["cve"]["rel_rmse"]), _f(w["floor"]["rel_rmse"]),
            _f(w["crlb_rel_rmse"]), _f(w["live"]["coverage_90"]), _f(w["cve"]["coverage_90"]),
            _f(td.get("rel_rmse")),
            _jaccard(ch) if changing else ("(none expected)" if real else "(no changes)"),
            _f(ch["position_rmse_frames"], 1) if changing else "",
            fa,
        ]) + " |")
    return lines


def _methods(w: dict[str, Any]) -> str:
    """Live methods with their share of all windows, largest first."""
    share = w.get("method_share") or {}
    if not share:
        return ", ".join(w["live_methods"]) or "n/a"
    return ", ".join(f"{k} ({v:.0%})" for k, v in sorted(share.items(), key=lambda kv: -kv[1]))


def _bias_table(rows: list[dict[str, Any]]) -> list[str]:
    decades = [f"{lo:g}-{hi:g}" for lo, hi in M.DECADES]
    lines = ["| source | data | " + " | ".join(f"live, D {d}" for d in decades) + " | "
             + " | ".join(f"CVE, D {d}" for d in decades) + " |",
             "| " + " | ".join(["---"] * (2 + 2 * len(decades))) + " |"]
    for r in rows:
        w = r["windows"]
        cells = [r["source"], r["data"]]
        for name in ("live", "cve"):
            for d in decades:
                v = w[name]["median_bias_by_decade"].get(d)
                cells.append("n/a" if v is None else f"{abs(v):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _localization_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| source | data | points paired | RMSE per axis (nm) | RMS reported precision (nm) "
             "| Var(error / precision) | same, D < 0.1 um^2/s | same, D >= 0.1 um^2/s "
             "| isolated, D < 0.1 | isolated, D >= 0.1 | close pairs |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        loc = r.get("localization")
        if not loc or r["kind"] != "images":
            continue
        lines.append(f"| {r['source']} | {r['data']} | {loc['n_points']} | "
                     f"{_f(loc['rmse_um'] * 1000, 1)} | {_f(loc['rms_precision_um'] * 1000, 1)} "
                     f"| {_f(loc['z_variance'], 2)} | {_f(loc.get('z_variance_slow'), 2)} "
                     f"({loc.get('n_points_slow', 0)} points) | "
                     f"{_f(loc.get('z_variance_fast'), 2)} "
                     f"({loc.get('n_points_fast', 0)} points) | "
                     + " | ".join(f"{_f(loc.get(f'z_variance_{k}'), 2)} "
                                  f"({loc.get(f'n_points_{k}', 0)})"
                                  for k in ("isolated_slow", "isolated_fast", "close")) + " |")
    return lines


def _linking_context(trk: dict[str, Any], ref: dict[str, Any]) -> str:
    """One sentence placing the live tracks between the peer and the perfect-detection floor."""
    peer, floor = ref.get("trackpy_on_detections"), ref.get("livespt_on_truth")
    parts = []
    if peer and "error" not in peer:
        verdict = ("worse than" if peer["tracks_per_particle"] < trk["tracks_per_particle"]
                   - 0.05 or peer["purity"] > trk["purity"] + 0.01 else "no worse than")
        parts.append(f" Linking alone is {verdict} trackpy.link on the same detections "
                     f"({peer['tracks_per_particle']:.2f} / {peer['purity']:.3f})")
    if floor and "error" not in floor:
        parts.append(f"; given the TRUE positions our linker gives "
                     f"{floor['tracks_per_particle']:.2f} / {floor['purity']:.3f}: that part "
                     f"is particles passing closer than their step (ambiguous to any "
                     f"frame-to-frame linker), the rest is detection (merged close pairs, "
                     f"missed or split blurred spots)")
    return ("".join(parts) + ".") if parts else ""


def _checks_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| source | data | windows the model answered | windows sent to the CVE by the "
             "model check (`:model-bias`) | model check: whole session flagged (model / CVE "
             "over compared windows) | tracks flagged on their own | track-sigma check: "
             "switched to the sigma-unknown CVE (z; windows sent) | spread of the windows' "
             "noise variance around their track's: SD in um^2 (z; windows) | frames flagged "
             "by the timing check (of tested) | sample check: spots' fitted SD / assumed "
             "(um); search radius (um) against 3 RMS steps of the 95th-percentile track |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        share = r["windows"].get("method_share") or {}
        vit = sum(v for k, v in share.items() if k.startswith("vit:"))
        bias = sum(v for k, v in share.items() if k.endswith(":model-bias"))
        ch = r.get("checks") or {}
        mc = ch.get("model_check") or {}
        ft = ch.get("frame_timing") or {}
        session = ("n/a (track analysis: per request)" if not mc else
                   f"{'yes' if mc.get('session_flagged') else 'no'} "
                   f"({_f(mc.get('model_over_cve'), 2)} over {mc.get('windows_compared')})")
        sc = ch.get("track_sigma_check") or {}
        sigma = ("n/a" if not sc else
                 f"{'yes' if sc.get('session_flagged') else 'no'} ({_f(sc.get('z'), 1)}; "
                 f"{sc.get('windows_sent_to_sigma_unknown_cve')})")
        ns = ch.get("noise_spread") or {}
        spread = ("n/a" if not ns else
                  f"{_f(ns.get('sigma2_sd_um2'), 4)} ({_f(ns.get('z'), 1)}; {ns.get('windows')})"
                  if ns.get("in_use") else f"not used ({ns.get('windows')} windows)")
        timing = ("n/a" if not ft else
                  f"{ft.get('frames_flagged')} of {ft.get('frames_tested')}"
                  + (f" (every {ft['period_frames']}th)" if ft.get("period_frames") else ""))
        lines.append(f"| {r['source']} | {r['data']} | {vit:.1%} | {bias:.1%} | {session} | "
                     f"{ch.get('tracks_model_bias', 'n/a') if ch else 'n/a'} | {sigma} | "
                     f"{spread} | {timing} | {_sample(ch.get('sample_check'))} |")
    return lines


def _sample(sc: dict[str, Any] | None) -> str:
    """The sample check of a session: spot size and search radius, each flagged or not."""
    if not sc:
        return "n/a"
    sp, lk = sc.get("spot_size") or {}, sc.get("search_radius") or {}
    spot = (f"{_f(sp.get('fitted_sd_um'), 3)} / {_f(sp.get('assumed_sd_um'), 3)}"
            + (" SPOT_SIZE" if sp.get("flagged") else "")) if sp.get("decided") else "undecided"
    link = (f"{_f(lk.get('max_distance_um'), 2)} vs {_f(lk.get('suggested_um'), 2)}"
            + (f" LINK_DISTANCE ({lk['flagged']})" if lk.get("flagged") else "")
            ) if lk.get("decided") else "undecided"
    return f"{spot}; {link}"


def _frag(t: dict[str, Any] | None) -> str:
    if not t:
        return "n/a"
    if "error" in t:
        return f"failed ({t['error'][:80]})"
    return (f"{_f(t.get('tracks_per_particle'), 2)} ({_f(t.get('tracks_per_visit'), 2)}) / "
            f"{_f(t.get('purity'))}")


def _linking_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| source | data | particles | visits / particle (the fewest tracks) | live (as "
             "streamed) | trackpy.link on the live detections | LiveSPT linker on the true "
             "positions | trackpy.link on the true positions |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        trk, ref = r.get("tracks"), r.get("linking_references")
        if not trk or not ref:
            continue
        lines.append(f"| {r['source']} | {r['data']} | {trk['particles_long']} | "
                     f"{_f(trk.get('visits_per_particle'), 2)} | {_frag(trk)} | "
                     f"{_frag(ref.get('trackpy_on_detections'))} | "
                     f"{_frag(ref.get('livespt_on_truth'))} | "
                     f"{_frag(ref.get('trackpy_on_truth'))} |")
    return lines


def _losses(rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in rows:
        name = f"{r['source']} / {r['data']}"
        w = r["windows"]
        lv, cv = w["live"]["rel_rmse"], w["cve"]["rel_rmse"]
        if math.isfinite(lv) and math.isfinite(cv) and lv > cv:
            out.append(f"{name}: live windows ({', '.join(w['live_methods'])}) have a larger "
                       f"relative RMSE than the plain sigma-unknown CVE on the same windows "
                       f"({lv:.3f} vs {cv:.3f}).")
        cov = w["live"]["coverage_90"]
        if math.isfinite(cov) and cov < 0.85:
            out.append(f"{name}: the live 90 % intervals cover the true D in only "
                       f"{cov:.1%} of windows.")
        for d, v in w["live"]["median_bias_by_decade"].items():
            if v is not None and abs(v) > 0.10:
                cve_v = w["cve"]["median_bias_by_decade"].get(d)
                out.append(f"{name}: live median bias {v:+.1%} for D in {d} um^2/s (target "
                           f"within 10 %; the sigma-unknown CVE on the same windows: "
                           f"{'n/a' if cve_v is None else format(cve_v, '+.1%')}).")
        loc = r.get("localization")
        if loc and r["kind"] == "images" and math.isfinite(loc["z_variance"]) \
                and loc["z_variance"] > 1.5:
            out.append(f"{name}: `precision_um` is not calibrated: Var(error / precision) = "
                       f"{loc['z_variance']:.2f} (slow particles "
                       f"{_f(loc.get('z_variance_slow'), 2)}, fast "
                       f"{_f(loc.get('z_variance_fast'), 2)}; 1 when calibrated), although the "
                       f"RMSE ({loc['rmse_um'] * 1000:.1f} nm) and the RMS reported precision "
                       f"({loc['rms_precision_um'] * 1000:.1f} nm) are close: the large errors "
                       f"are where the reported precision is small. Isolated slow spots: "
                       f"{_f(loc.get('z_variance_isolated_slow'), 2)}; isolated fast (motion "
                       f"blur, not in the Gaussian fit's bound): "
                       f"{_f(loc.get('z_variance_isolated_fast'), 2)}; close pairs (one "
                       f"spot for two particles): {_f(loc.get('z_variance_close'), 2)}.")
        trk = r.get("tracks")
        if trk and (trk.get("tracks_per_visit", math.nan) > 1.1 or trk["purity"] < 0.98):
            out.append(f"{name}: fragmentation {_f(trk.get('tracks_per_visit'), 2)} tracks per "
                       f"visit of a particle to the field (target <= 1.1), "
                       f"{trk['tracks_per_particle']:.2f} per particle (D < 0.1 um^2/s: "
                       f"{_f(trk.get('tracks_per_particle_slow'), 2)}, D >= 0.1: "
                       f"{_f(trk.get('tracks_per_particle_fast'), 2)}), purity "
                       f"{trk['purity']:.3f} (target >= 0.98); the particles' visits to the "
                       f"field allow {_f(trk.get('visits_per_particle'), 2)}."
                       + _linking_context(trk, r.get("linking_references") or {}))
        ch = r["changes"]
        jac = ch.get("jaccard")
        if r.get("changing") and jac is not None and math.isfinite(jac) and jac < 0.8:
            out.append(f"{name}: change-point Jaccard {_jaccard(ch)} (target >= 0.8 at 5x "
                       f"changes).")
        p = _poisson_p(ch["false_alarms"], ch["no_change_track_frames"])
        if math.isfinite(p) and p < 0.01:
            out.append(f"{name}: {ch['false_alarms']} change alarms on "
                       f"{ch['no_change_track_frames']} track-frames without a true change "
                       f"({ch['false_alarms_per_1000']:.2f} per 1000; P = {p:.1e} under the "
                       f"calibrated 0.5 per 1000).")
    return out


def _movie_description(result: dict[str, Any]) -> str:
    spec = next((r["spec"] for r in result["rows"] if "spec" in r), None)
    if spec is None:
        return "(No image source ran.)"
    h, w = spec["shape_px"]
    dmin, dmax = spec["d_range_um2_s"]
    px, dt = spec["pixel_size_um"], spec["frame_interval_s"]
    settings = next(r["settings"] for r in result["rows"] if "spec" in r)
    return (
        f"Movies: {h} x {w} px of {px} um, {spec['n_frames']} frames, {spec['n_particles']} "
        f"particles (free diffusion: they leave and enter the field), dt = {dt * 1000:g} ms, "
        f"exposure {spec['exposure_s'] * 1000:g} ms, {spec['substeps']} sub-steps, D "
        f"log-uniform in {dmin:g}-{dmax:g} um^2/s (D* = D dt / px^2 from "
        f"{dmin * dt / px**2:.2g} to {dmax * dt / px**2:.2g}), {spec['photons']:g} photons "
        f"per frame, {spec['background_photons']:g} background photons per pixel, gain "
        f"{spec['gain_adu_per_e']:g} ADU/e-, offset {spec['offset_adu']:g} ADU, read noise "
        f"{spec['read_noise_e']:g} e-, NA {spec['numerical_aperture']:g}, "
        f"{spec['wavelength_um'] * 1000:g} nm. *Changing D*: half of the particles change D "
        f"{spec['change_factor']:g}x (up, or down where up would leave the range) once, at a "
        f"frame uniform in 25-75 % of the movie. The simulator and DeepTrack2 render the same "
        f"particles (D, changes, start positions) along independent random paths. "
        f"`livespt stream` flags (as a user would set them: the acquisition and camera as "
        f"they are, `--radius` = sqrt(2) x the PSF SD 0.21 lambda / NA, `--max-distance` = 3 "
        f"RMS 2-D steps of the fastest particle, docs/pipeline.md): `{' '.join(settings)}`."
    )


def write_markdown(path: Path, result: dict[str, Any], figs: dict[str, str]) -> None:
    """The report, in Markdown, with the tables and the plots' relative links."""
    rows = result["rows"]
    env = result["environment"]
    L: list[str] = [
        "# Accuracy on data we did not make",
        "",
        "Generated by `benchmarks/accuracy/report.py`; do not edit by hand. Regenerate with",
        "",
        f"    {COMMAND}",
        "",
        f"({'QUICK size: ' if result['quick'] else ''}{result['runtime_s']:.0f} s on "
        f"{env['cpus']} CPU cores; LiveSPT {env['livespt']} at commit {env['commit']}; "
        f"deeptrack {env['deeptrack']}; andi-datasets {env['andi_datasets']}; "
        f"numpy {env['numpy']}, torch {env['torch']}; streams: {result['stream_mode']}.)",
        "",
        "The live path is scored on four kinds of data side by side: our own simulator, two "
        "simulators we did not write (DeepTrack2 for images, the AnDi challenge's "
        "`andi-datasets` for trajectories) and a real movie. Every row is one data set; the "
        "same metrics are computed for each. Where a number is worse than the reference next "
        "to it, it is listed under *Where we lose*.",
        "",
        "## Data",
        "",
        "| source | made by | path through LiveSPT | truth |",
        "| --- | --- | --- | --- |",
        "| simulator | `livespt.models.simulate` (Gaussian PSF, 10 sub-steps per exposure, "
        "Poisson + read noise) | `livespt stream MOVIE.tif --embedded` | exposure-mean positions,"
        " D per frame |",
        "| deeptrack | DeepTrack2 (PyPI `deeptrack`): `dt.Fluorescence` pupil-function PSF "
        "(NA 1.4, 600 nm: Airy rings), `dt.PointParticle` placement of 10 sub-step emitters "
        "per frame, `dt.Background`, `dt.Poisson`, `dt.Multiply` (gain), `dt.Gaussian` "
        "(offset, read noise), `dt.Clip` | same command | mean of the rendered sub-step "
        "positions, D per frame |",
        "| andi-datasets | AnDi challenge generator (PyPI `andi-datasets`, "
        "`models_phenom.single_state` / `multi_state`, alpha = 1), run in `.venv-thirdparty`; "
        "Gaussian localization noise 20-30 nm added here | `analyze_tracks` (what "
        "`AnalyzeTracks` and `livespt tracks` run) with the resident features "
        "transformer | "
        "andi's positions and per-frame D labels |",
        "| real | trackpy-examples `bulk_water` (1 um latex spheres in water, bright field) via "
        "`benchmarks/accuracy/real_data.py` | `livespt stream --dark-spots` | reference D "
        "only (no positions) |",
        "",
        _movie_description(result),
        "",
    ]
    if "examples" in figs:
        L += [f"![one frame of each simulated movie source]({figs['examples']})", "",
              "(Frame 10 of the constant-D movie, 96 x 96 px; the real movie is not shown: "
              "its frames are not redistributed here.)", ""]
    L += ["## Results", "", *_main_table(rows), "",
          "Window columns are over the windows lying on one true particle whose D is "
          "constant inside the window; *live* is `estimates.csv` as streamed, *CVE* the "
          "sigma-unknown CVE on the same window's tracked positions, *floor* that CVE on the "
          "true positions plus Gaussian noise of each point's reported precision (perfect "
          "detection and linking), *CRLB* sqrt(mean(bound / D^2)) of the exact Cramer-Rao "
          "bound for the window's frames, the true D and the window's measured position "
          "error (an unbiased estimator cannot beat it; a biased one, e.g. a network that "
          "shrinks towards typical D, can). Real movie: every window is scored against the "
          "reference D (one value for all particles).", ""]
    if "windows" in figs:
        L += [f"![relative error of window D against the true D]({figs['windows']})", ""]
    L += ["### |median relative bias| of window D per decade of true D", "",
          *_bias_table(rows), "", "### Localization (image sources)", "",
          *_localization_table(rows), "",
          "Errors are against the exposure-mean position; Var(error / precision) is 1 when "
          "`precision_um` in `tracks.csv` is calibrated. *Isolated*: no other particle "
          "within 0.6 um (about 3 PSF SDs) in that frame; *close*: another within 0.3 um "
          "(one spot for two particles).", "",
          "### The server's own checks", "",
          *_checks_table(rows), "",
          "*Model check* (`server/pipeline/model_check.py`): the model's window D against the "
          "sigma-unknown CVE on the same windows, per track and over the session; where they "
          "disagree beyond the CVE's noise and by more than 25 %, the CVE answers. *Track-"
          "sigma check* (same file): whether the CVE with each track's own noise varies less "
          "than the sigma-unknown CVE on the same windows (z < 0: it does); where it varies "
          "more, the sigma-unknown CVE answers (`cve:sigma-check`). *Noise spread* (same "
          "file): how far the windows' own noise variance strays from their track's, from "
          "the gap between the sigma-known CVE's two moments (squared steps, adjacent "
          "products); the track-sigma windows weigh the moments and widen their intervals "
          "by it (n/a: no window had a track sigma). *Timing "
          "check* (`server/pipeline/frame_timing.py`): frames whose steps are unlike the "
          "tracks' other steps (a dropped or repeated frame, or a stage jump), warned about "
          "and listed in the session summary. *Sample check* "
          "(`server/pipeline/sample_check.py`): the median fitted SD of spots that barely "
          "moved against the SD the spot radius assumes (SPOT_SIZE beyond 1.5x), and the "
          "search radius against the tracks' RMS steps (LINK_DISTANCE); a warning names the "
          "value the data suggest.", "",
          "### Linking, side by side (tracks per particle (per visit) / purity)", "",
          *_linking_table(rows), "",
          "Particles present in >= 100 frames. *Visits*: runs of frames inside the field "
          "separated by absences longer than the linker's memory (2 frames): the fewest "
          "tracks any linker can give. trackpy.link (the peer) runs with the same search "
          "range and memory as the stream. The *true positions* columns link the exposure-"
          "mean positions themselves (perfect detection): what remains there is ambiguity of "
          "the movie (Brownian particles passing closer than their step), not of LiveSPT's "
          "detector.", ""]
    losses = _losses(rows)
    L += ["## Where we lose", ""]
    L += [f"- {x}" for x in losses] if losses else ["- nothing flagged at these sizes."]
    L += [""]
    L += ["## Real movie", ""]
    real = next((r for r in rows if r["source"] == "real"), None)
    if real is None:
        L += [f"**ABSENT: no real movie was scored.** {result['real_absent']}", "",
              "The table above therefore has no real-data row. Run `scripts/get-real-data` "
              "(needs the offline mirror of soft-matter/trackpy-examples) and regenerate.", ""]
    else:
        md = real["median_window_d_um2_s"]
        ltd = real["track_d_long_tracks"]
        bias = [v for v in ltd["median_bias_by_decade"].values() if v is not None]
        wl = real["windows"]
        L += [f"{real['data']}: reference D = {real['reference_d_um2_s']:.3f} um^2/s. "
              f"Median window D: live ({', '.join(wl['live_methods'])}) {_f(md['live'])} "
              f"um^2/s, sigma-unknown CVE on the same windows {_f(md['cve'])} um^2/s"
              + (f" (means {_f(real['mean_window_d_um2_s']['live'])} and "
                 f"{_f(real['mean_window_d_um2_s']['cve'])} um^2/s: the D of a 10-point window "
                 f"is skewed, its median below its mean)"
                 if real.get("mean_window_d_um2_s") else "")
              + "; the "
              f"live 90 % intervals hold the reference in {_f(wl['live']['coverage_90'])} of "
              f"{wl['n_eligible']} windows (CVE: {_f(wl['cve']['coverage_90'])}). Whole-track "
              f"CVE on the {ltd['n_tracks']} tracks of >= 50 points: median "
              f"{'n/a' if not bias else f'{bias[0]:+.1%}'} from the reference, relative RMSE "
              f"{_f(ltd['rel_rmse'])}. {real['changes']['false_alarms']} changes of D were "
              f"reported on {real['changes']['no_change_track_frames']} track-frames where none "
              f"is expected (one D for all particles; drift, polydispersity and mislinks "
              f"included). Exposure: "
              f"{real['exposure_s'] or 'not stated (the frame interval was assumed)'}.", "",
              f"Reference: {real['reference_source']}", "",
              "Caveats of the reference (from the data's meta.json):", ""]
        L += [f"- {c}" for c in real["caveats"]]
        L += ["", f"Flags: `{' '.join(real['settings'])}` (bright-field camera: offset 0, "
              "gain 1; `--radius` sqrt(2) x the fitted spot SD of ~2 px; exposure not "
              "stated, so the frame interval). The reference is one D for every particle; "
              "the spread of real particle sizes and the caveats above add to every error.",
              "", f"License: {real['license']}", f"Source: {real['provenance']}", ""]
    L += [
        "## How the numbers are computed",
        "",
        "- Detection: Hungarian matching of `tracks.csv` points to the truth within 2 px per "
        "frame (`livespt.server.pipeline.scoring.match_detections`: border and close-pair "
        "rules as in the tests).",
        "- Tracks / particle: distinct track ids holding the points of a true particle present "
        f"in >= {result['rows'][0].get('min_frames_present', 100) if rows else 100} frames; "
        "purity: points of each track's majority particle / its points (tracks of >= 2 points).",
        "- Change points: each track's changes against its majority particle's true changes "
        "inside the track (`scoring.match_change_points`, 10 frames, AnDi 2024 Jaccard); where "
        "some true changes have fewer than 5 frame steps to the next change or the track's end "
        "on one side (the detector's `min_segment_steps`: it cannot report them), the Jaccard "
        "of the others is given too (a report matched only to such a change counts neither "
        "way); false "
        "alarms per 1000 track-frames on tracks whose particle does not change within them "
        "(all, and *pure* tracks whose every point is on one particle: the detector's own "
        "calibration, 0.5 per 1000).",
        "- Track D: whole-track sigma-unknown CVE on tracks of >= 20 points, >= 95 % one "
        "particle, constant D.",
        "- Raw numbers: `benchmarks/results/accuracy.json`.",
        "",
        "## Installing the third-party simulators",
        "",
        "- `make install-validation` = `pip install -e '.[validation]'` into `.venv`: "
        "`deeptrack>=2.0.2,<2.1` (2.0.2 coexists with numpy 2.x and torch 2.13).",
        "- `make install-thirdparty` creates `.venv-thirdparty` (its own `.gitignore`) with "
        "`benchmarks/accuracy/requirements-thirdparty.txt` (`andi-datasets==2.1.13`): "
        "andi-datasets 2.1.13 requires `numpy<=1.26.4`, which cannot share `.venv` with "
        "numpy 2.x, so `benchmarks/accuracy/andi_generate.py` runs there and writes .npz files "
        "that the harness reads (`$LIVESPT_THIRDPARTY_PYTHON` overrides the interpreter).",
        "- `make test` installs both (tests/test_thirdparty.py; it skips with the reason when "
        "either is missing).",
        "",
    ]
    path.write_text("\n".join(L))


# ------------------------------------------------------------------------ main
def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


def _andi_version() -> str:
    try:
        from benchmarks.accuracy.andi_tracks import thirdparty_python

        py = thirdparty_python()
        out = subprocess.run([str(py), "-c", "from importlib.metadata import version; "
                              "print(version('andi-datasets'))"], capture_output=True,
                             text=True, check=False, timeout=60)
        return out.stdout.strip() or "absent"
    except Exception:
        return "absent"


def _commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                "server", "models", "livespt"], capture_output=True,
                               text=True, check=False).stdout.strip()
        return (sha or "unknown") + (" + uncommitted changes in server/models" if dirty else "")
    except OSError:
        return "unknown"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating | float):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x


def build(out_md: Path, out_json: Path, *, quick: bool = False, in_process: bool = False,
          seed: int = 0, work: Path | None = None, log: Any = print) -> dict[str, Any]:
    """Generate every data set, stream/analyse it, score it and write the report."""
    warnings.filterwarnings("ignore", module="deeptrack")
    t0 = time.perf_counter()
    sizes = QUICK if quick else DEFAULT
    scratch = None if work else tempfile.TemporaryDirectory(prefix="livespt-accuracy-")
    work = Path(work) if work else Path(scratch.name)  # type: ignore[union-attr]
    runner = Runner(in_process)
    try:
        image_rows, image_wins, examples = run_image_sources(sizes, seed, work, runner, log)
        andi_rows, andi_wins, andi_absent = run_andi_sources(sizes, seed, work, log)
        real_row, real_absent, real_frame, _ = run_real_source(sizes, work, runner, log)
    finally:
        runner.close()
        if scratch is not None:  # movies and stream outputs: kept only with --work
            scratch.cleanup()
    rows = [*image_rows, *andi_rows, *([real_row] if real_row else [])]
    import torch

    result: dict[str, Any] = {
        "command": COMMAND, "quick": quick, "seed": seed,
        "stream_mode": ("one embedded server in the report process (--in-process)"
                        if in_process else "one `livespt stream --embedded` process per movie"),
        "sizes": {"shape_px": list(sizes.shape_px), "n_frames": sizes.n_frames,
                  "n_particles": sizes.n_particles, "andi_n": sizes.andi_n,
                  "andi_frames": sizes.andi_frames},
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "livespt": _version("livespt"), "numpy": np.__version__,
                        "torch": torch.__version__, "deeptrack": _version("deeptrack"),
                        "andi_datasets": _andi_version(), "commit": _commit()},
        "rows": rows, "andi_absent": andi_absent, "real_absent": real_absent,
    }
    figs_dir = out_md.with_suffix("")
    figs_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, str] = {}
    # The real movie's frames are not redistributed (real_data.py: the data is not part of
    # the repository), so the figure shows the simulated sources only.
    del real_frame
    if examples:
        plot_examples(examples, figs_dir / "example_frames.png")
        figs["examples"] = f"{figs_dir.name}/example_frames.png"
    wins = M.concat([image_wins, andi_wins])
    if len(wins):
        plot_windows(wins, figs_dir / "window_error_by_d.png")
        figs["windows"] = f"{figs_dir.name}/window_error_by_d.png"
    result["runtime_s"] = time.perf_counter() - t0
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(_jsonable(result), indent=1))
    out_md.parent.mkdir(parents=True, exist_ok=True)
    write_markdown(out_md, result, figs)
    log(f"wrote {out_md}, {figs_dir}/ and {out_json} in {result['runtime_s']:.0f} s")
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "accuracy.md",
                   help="Markdown report; plots go to the folder of the same name")
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "accuracy.json")
    p.add_argument("--quick", action="store_true", help="small data sets (tests, smoke runs)")
    p.add_argument("--in-process", action="store_true",
                   help="stream through one embedded server in this process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None,
                   help="keep the movies and stream outputs in this folder (default: a "
                        "temporary folder, removed at the end)")
    p.add_argument("--markdown-only", action="store_true",
                   help="rewrite --out from the numbers in --json (no runs; plots kept)")
    a = p.parse_args(argv)
    if a.markdown_only:
        result = json.loads(a.json.read_text())
        figs_dir = a.out.with_suffix("")
        figs = {k: f"{figs_dir.name}/{f}" for k, f in (("examples", "example_frames.png"),
                                                       ("windows", "window_error_by_d.png"))
                if (figs_dir / f).exists()}
        write_markdown(a.out, result, figs)
        return 0
    build(a.out, a.json, quick=a.quick, in_process=a.in_process, seed=a.seed, work=a.work,
          log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
