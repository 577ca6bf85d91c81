"""Speed of the simulator against a per-particle numpy/scipy peer, same physics.

Measures
* full-frame movies: frames/s for 512x512 uint16 frames with 50 particles and 10
  sub-steps per exposure (motion blur), shot + read noise, via ``simulate_movie``;
* patch sequences: sequences/s for 10-frame 16x16 patch sequences in batches,
  via ``simulate_patches``;
* peers, on the same trajectories: the rendering a numpy user would write, one
  particle and one sub-step at a time with ``scipy.special.erf``, then numpy
  Poisson/Gaussian noise, in two variants: over the whole frame (straightforward)
  and over a window around each spot (the careful version, same 8*sqrt(2) sigma
  cut-off as ours). Their expected images are checked against ours.

Writes JSON to ``benchmarks/results/simulate.json`` (or ``--out``) and prints it.

    python benchmarks/bench_simulate.py [--device cpu] [--frames 200] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy.special import erf

from livespt.models.simulate import (
    Camera,
    MovieConfig,
    render_expected,
    simulate_movie,
    simulate_patches,
)

SHAPE = (512, 512)
N_PARTICLES = 50
SUBSTEPS = 10
PIXEL_UM = 0.1
SNR = 10.0
D_UM2_S = 0.5


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _peer_render(sub_px: np.ndarray, photons: np.ndarray, shape: tuple[int, int],
                 sigma_px: float, window: bool) -> np.ndarray:
    """Expected photons of one frame, one particle and one sub-step at a time.

    ``sub_px`` (P, S, 2) positions in pixels, ``photons`` (P,) for this frame.
    """
    h, w = shape
    img = np.zeros(shape)
    s2 = math.sqrt(2.0) * sigma_px
    half = math.ceil(8.0 * s2) + 1
    n_sub = sub_px.shape[1]
    for p in range(sub_px.shape[0]):
        for s in range(n_sub):
            x, y = sub_px[p, s]
            if window:
                c0 = int(min(max(math.floor(x) - half, 0), max(w - 2 * half - 1, 0)))
                r0 = int(min(max(math.floor(y) - half, 0), max(h - 2 * half - 1, 0)))
                cols = np.arange(c0, min(w, c0 + 2 * half + 1))
                rows = np.arange(r0, min(h, r0 + 2 * half + 1))
            else:
                cols, rows = np.arange(w), np.arange(h)
            ex = 0.5 * (erf((cols + 0.5 - x) / s2) - erf((cols - 0.5 - x) / s2))
            ey = 0.5 * (erf((rows + 0.5 - y) / s2) - erf((rows - 0.5 - y) / s2))
            img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] += (
                photons[p] / n_sub * np.outer(ey, ex)
            )
    return img


def _peer_expose(img: np.ndarray, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    e = rng.poisson(img + cam.background_photons).astype(np.float64)
    adu = e * cam.gain_adu_per_e + cam.offset_adu
    adu += rng.normal(0.0, cam.gain_adu_per_e * cam.read_noise_e, size=img.shape)
    return np.clip(np.round(adu), 0, cam.max_adu).astype(np.uint16)


def _peer_movie(sub_px: np.ndarray, photons: np.ndarray, cam: Camera, sigma_px: float,
                window: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_frames = sub_px.shape[1]
    frames = np.empty((n_frames, *SHAPE), dtype=np.uint16)
    first = np.zeros(SHAPE)
    for t in range(n_frames):
        img = _peer_render(sub_px[:, t], photons[:, t], SHAPE, sigma_px, window)
        if t == 0:
            first = img
        frames[t] = _peer_expose(img, cam, rng)
    return frames, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    ap.add_argument("--frames", type=int, default=200, help="frames per simulated movie")
    ap.add_argument("--peer-frames", type=int, default=20, help="frames rendered by the peers")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    ap.add_argument("--patch-batch", type=int, default=1024, help="sequences per patch batch")
    ap.add_argument("--patch-batches", type=int, default=10, help="patch batches timed")
    ap.add_argument("--out", default="benchmarks/results/simulate.json", help="output JSON")
    args = ap.parse_args()
    dev = args.device

    cam = Camera()
    cfg = MovieConfig(shape_px=SHAPE, n_frames=args.frames, n_particles=N_PARTICLES,
                      pixel_size_um=PIXEL_UM, d_um2_s=D_UM2_S, substeps=SUBSTEPS, snr=SNR,
                      camera=cam)
    simulate_movie(replace(cfg, n_frames=5), seed=0, device=dev)  # warm-up
    movie_times = _timed(lambda: simulate_movie(cfg, seed=1, device=dev), dev, args.repeats)
    movie_s = statistics.median(movie_times)

    def patches() -> None:
        for k in range(args.patch_batches):
            simulate_patches(args.patch_batch, 10, patch_px=16, pixel_size_um=PIXEL_UM,
                             d_um2_s=D_UM2_S, snr=SNR, camera=cam, substeps=SUBSTEPS,
                             seed=k, device=dev)

    simulate_patches(8, 10, patch_px=16, snr=SNR, device=dev)  # warm-up
    patch_times = _timed(patches, dev, args.repeats)
    patch_s = statistics.median(patch_times)
    n_seq = args.patch_batch * args.patch_batches

    # Peers on the same trajectories and photons as one of our movies.
    peer_cfg = replace(cfg, n_frames=args.peer_frames)
    ref = simulate_movie(peer_cfg, seed=2, device=dev)
    sub_px = ref.trajectories.substeps_um.cpu().numpy() / PIXEL_UM
    photons = ref.photons.cpu().numpy()
    ours_first = render_expected(ref.trajectories.substeps_um[:, :1], ref.photons[:, :1], SHAPE,
                                 PIXEL_UM, cfg.sigma_um)[0].cpu().numpy()
    ours_peer_times = _timed(lambda: simulate_movie(peer_cfg, seed=2, device=dev), dev,
                             args.repeats)
    peers = {}
    for name, window in (("numpy_window", True), ("numpy_full_frame", False)):
        n = args.peer_frames if window else max(2, args.peer_frames // 4)
        t0 = time.perf_counter()
        _, first = _peer_movie(sub_px[:, :n], photons[:, :n], cam, cfg.sigma_px, window, 0)
        el = time.perf_counter() - t0
        peers[name] = {
            "frames": n,
            "seconds": round(el, 3),
            "frames_per_s": round(n / el, 2),
            "max_abs_diff_expected_photons_vs_ours": float(np.abs(first - ours_first).max()),
        }

    ours_fps = args.frames / movie_s
    result = {
        "benchmark": "simulate",
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "device": dev,
            "device_name": (torch.cuda.get_device_name(torch.device(dev))
                            if torch.device(dev).type == "cuda" else "cpu"),
        },
        "setup": {
            "shape_px": list(SHAPE), "n_particles": N_PARTICLES, "substeps": SUBSTEPS,
            "snr": SNR, "d_um2_s": D_UM2_S, "pixel_size_um": PIXEL_UM,
            "psf_sigma_px": round(cfg.sigma_px, 4), "photons": round(float(photons[0, 0]), 2),
            "noise": "Poisson(signal + 10 photons/px) + 1.5 e- read noise, uint16",
        },
        "movie": {
            "frames": args.frames,
            "seconds_median": round(movie_s, 3),
            "seconds_all": [round(t, 3) for t in movie_times],
            "frames_per_s": round(ours_fps, 2),
        },
        "patches": {
            "sequences": n_seq, "frames_per_sequence": 10, "patch_px": 16,
            "batch": args.patch_batch,
            "seconds_median": round(patch_s, 3),
            "sequences_per_s": round(n_seq / patch_s, 1),
        },
        "peers": peers,
        "speedup_vs_peer": {
            name: round(ours_fps / v["frames_per_s"], 1) for name, v in peers.items()
        },
        "ours_frames_per_s_on_peer_movie": round(
            args.peer_frames / statistics.median(ours_peer_times), 2),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
