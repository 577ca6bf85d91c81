"""Trajectories from the AnDi challenge's own generator (``andi-datasets``), written as .npz.

This script runs in the SEPARATE environment ``.venv-thirdparty`` (``make
install-thirdparty``): ``andi-datasets`` 2.1.13 pins ``numpy<=1.26.4``, which cannot
coexist with LiveSPT's numpy 2.x. It imports only numpy and ``andi_datasets`` (never
``livespt``), and the harness (:mod:`benchmarks.accuracy.andi_tracks`) reads its output.

``andi_datasets.models_phenom`` works in dimensionless units: positions in pixels, time
in frames, ``D`` in px^2/frame (``<x^2(1 frame)> = 2 D`` per axis). Physical D in um^2/s
is converted with ``D_px = D_um2_s * frame_interval_s / pixel_size_um**2`` and positions
are multiplied by ``pixel_size_um`` on the way out. Points are instantaneous samples (no
exposure, no motion blur) without localization noise: the harness adds the noise.

Kinds
-----
``single_state``
    ``models_phenom().single_state(N=1, T, Ds=[D_px, 0], alphas=[1, 0])`` per
    trajectory (Brownian, constant D), D log-uniform in ``[d_min, d_max]`` um^2/s.
``multi_state``
    ``models_phenom().multi_state(N=1, T, M, Ds=[[D_px, 0], [ratio * D_px, 0]],
    alphas=[[1, 0], [1, 0]])`` per trajectory: two Brownian states whose D differ by
    ``ratio``, Markov switching with probability ``p_switch`` per frame, random
    initial state; the label gives D at each frame (the D of the step from that frame
    to the next), so a change of D happens at frame ``t`` where the label changes.

Output (``--out FILE.npz``): ``positions_um`` (N, T, 2), ``d_um2_s`` (N, T) D of the
step starting at each frame, ``kind``, ``seed``, ``frame_interval_s``,
``pixel_size_um``, ``andi_datasets_version``, ``numpy_version``.

    .venv-thirdparty/bin/python benchmarks/accuracy/andi_generate.py --kind single_state \
        --n 100 --frames 200 --seed 1 --out andi.npz
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np


def generate(kind: str, n: int, frames: int, seed: int, frame_interval_s: float,
             pixel_size_um: float, d_min: float, d_max: float, ratio: float,
             p_switch: float) -> dict[str, np.ndarray]:
    """Trajectories of one kind from ``andi_datasets.models_phenom``, in physical units.

    Parameters
    ----------
    kind : {"single_state", "multi_state"}
        Which andi-datasets model.
    n, frames : int
        Number of trajectories and positions per trajectory.
    seed : int
        Seeds numpy's global generator and ``stochastic``'s (both used by andi-datasets).
    frame_interval_s, pixel_size_um : float
        Scales from andi's frames and pixels to seconds and micrometres.
    d_min, d_max : float
        Range of D (log-uniform), um^2/s; for ``multi_state`` the D of state 0.
    ratio : float
        ``D(state 1) / D(state 0)`` for ``multi_state``.
    p_switch : float
        Probability per frame of leaving the current state (``multi_state``).

    Returns
    -------
    dict of str to ndarray
        ``positions_um`` (n, frames, 2) and ``d_um2_s`` (n, frames).
    """
    import stochastic.random
    from andi_datasets.models_phenom import models_phenom

    # andi-datasets draws from numpy's global generator and stochastic's default one.
    np.random.seed(seed)  # noqa: NPY002
    stochastic.random.use_generator(np.random.default_rng(seed))
    scale_d = frame_interval_s / pixel_size_um**2  # um^2/s -> px^2/frame
    d0 = np.exp(np.random.default_rng([seed, 1]).uniform(np.log(d_min), np.log(d_max), n))
    model = models_phenom()
    pos = np.zeros((n, frames, 2))
    d = np.zeros((n, frames))
    for i in range(n):
        if kind == "single_state":
            traj, labels = model.single_state(N=1, T=frames, Ds=[float(d0[i] * scale_d), 0.0],
                                              alphas=[1.0, 0.0])
        elif kind == "multi_state":
            m = [[1.0 - p_switch, p_switch], [p_switch, 1.0 - p_switch]]
            ds = [[float(d0[i] * scale_d), 0.0], [float(ratio * d0[i] * scale_d), 0.0]]
            traj, labels = model.multi_state(N=1, T=frames, M=m, Ds=ds,
                                             alphas=[[1.0, 0.0], [1.0, 0.0]])
        else:
            raise ValueError(f"--kind must be single_state or multi_state, got {kind!r}")
        # andi's arrays are (T, N, dim) and labels (T, N, [alpha, D, state]).
        pos[i] = traj[:, 0, :2] * pixel_size_um
        d[i] = labels[:, 0, 1] / scale_d
    return {"positions_um": pos, "d_um2_s": d}


def main(argv: list[str] | None = None) -> int:
    """Command line: generate and write one .npz file."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", required=True, choices=["single_state", "multi_state"])
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frame-interval", type=float, default=0.05)
    p.add_argument("--pixel-size", type=float, default=0.1)
    p.add_argument("--d-min", type=float, default=0.02)
    p.add_argument("--d-max", type=float, default=1.0)
    p.add_argument("--ratio", type=float, default=5.0)
    p.add_argument("--p-switch", type=float, default=0.005)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    arrays = generate(a.kind, a.n, a.frames, a.seed, a.frame_interval, a.pixel_size,
                      a.d_min, a.d_max, a.ratio, a.p_switch)
    meta = {"kind": a.kind, "seed": a.seed, "frame_interval_s": a.frame_interval,
            "pixel_size_um": a.pixel_size, "d_min_um2_s": a.d_min, "d_max_um2_s": a.d_max,
            "ratio": a.ratio, "p_switch": a.p_switch,
            "andi_datasets_version": version("andi-datasets"),
            "stochastic_version": version("stochastic"), "numpy_version": np.__version__,
            "python": sys.version.split()[0]}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(a.out, meta_json=np.array(json.dumps(meta)), **arrays)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
