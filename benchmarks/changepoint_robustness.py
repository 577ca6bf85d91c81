"""Change detector off its model: false alarms and power with each confirmation on and off.

The detector is calibrated on Gaussian steps (``server/pipeline/changepoint.py``). This
measures what happens where that does not hold, with the two confirmations an alarm
needs besides the calibrated score (the step medians, ``confirmed_by_medians``, and the
steps' over-dispersion, ``confirmed_by_dispersion``) switched on and off:

* false alarms per 1000 track-frames on 200 stationary tracks x 500 frames (D = 0.2
  um^2/s, dt = exposure = 50 ms, sigma = 30 nm, target 0.5 per 1000) with Gaussian
  steps; a sigma given 10x too small; Student-t (3 d.o.f.) localization noise of the
  same SD; 1 % of positions displaced by N(0, 0.5 um) (mislinks); a frame timing
  irregular by 40 % (each step's interval scaled by a Gamma factor of CV 0.4 shared by
  all tracks);
* power: 200 tracks with a 5x change at frame 250 (found within 10 frames, median delay)
  and with a 2x change (within 20 frames).

Tracks come from ``tests/tracksim.py`` (sub-steps inside each exposure, i.e. motion
blur, plus noise), fixed seeds. Writes ``benchmarks/results/changepoint_robustness.json``.

    .venv/bin/python benchmarks/changepoint_robustness.py   (~4 min per configuration)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from tracksim import simulate_tracks  # noqa: E402

import livespt.server.pipeline.changepoint_bank as bank_module  # noqa: E402
from livespt.server.pipeline.changepoint import ChangeConfig  # noqa: E402
from livespt.server.pipeline.changepoint_bank import ChangeDetectorBank  # noqa: E402

DT = 0.05
N_TRACKS, N_FRAMES = 200, 500


def _run(pos: np.ndarray, sigma_given: float) -> list[Any]:
    bank = ChangeDetectorBank(ChangeConfig(frame_interval_s=DT, exposure_s=DT,
                                           false_alarm_per_1000=0.5))
    ids = np.arange(pos.shape[0])
    events: list[Any] = []
    for f in range(pos.shape[1]):
        events += bank.update_many(ids, f, pos[:, f], np.full(ids.size, sigma_given))
    return events


def _cases() -> dict[str, tuple[np.ndarray, float]]:
    rng = np.random.default_rng(1)
    base = simulate_tracks(N_TRACKS, N_FRAMES, 0.2, DT, sigma_um=0.03, seed=3).positions_um
    out = {"gaussian": (base, 0.03), "sigma given 10x small": (base, 0.003)}
    out["student-t noise (3 d.o.f.)"] = (
        simulate_tracks(N_TRACKS, N_FRAMES, 0.2, DT, seed=3).positions_um
        + rng.standard_t(3, size=base.shape) * 0.03 / np.sqrt(3.0), 0.03)
    jump = base.copy()
    mask = rng.random(base.shape[:2]) < 0.01
    jump[mask] += rng.normal(0.0, 0.5, (int(mask.sum()), 2))
    out["1 % mislinked positions"] = (jump, 0.03)
    v = rng.gamma(1 / 0.16, 0.16, N_FRAMES - 1)
    steps = np.diff(base, axis=1) * np.sqrt(v)[None, :, None]
    out["frame timing irregular by 40 %"] = (
        np.concatenate([base[:, :1], base[:, :1] + np.cumsum(steps, axis=1)], axis=1), 0.03)
    return out


def _power(ratio: float, within: int, seed: int) -> dict[str, float]:
    a = simulate_tracks(N_TRACKS, 250, 0.1, DT, sigma_um=0.03, seed=seed).positions_um
    b = simulate_tracks(N_TRACKS, 250, 0.1 * ratio, DT, sigma_um=0.03,
                        seed=seed + 1).positions_um
    pos = np.concatenate([a, b - b[:, :1] + a[:, -1:]], axis=1)
    hits = [e for e in _run(pos, 0.03) if abs(e.frame - 250) <= within]
    return {"found_fraction": len({e.track_id for e in hits}) / N_TRACKS,
            "median_delay_frames": (float(np.median([e.detected_at_frame - 250 for e in hits]))
                                    if hits else None)}


def measure(medians: bool, dispersion: bool) -> dict[str, Any]:
    """One configuration of the confirmations."""
    saved = (bank_module.confirmed_by_medians, bank_module.confirmed_by_dispersion)
    try:
        if not medians:
            bank_module.confirmed_by_medians = lambda *a, **k: True
        if not dispersion:
            bank_module.confirmed_by_dispersion = lambda *a, **k: True
        fa = {name: 1000.0 * len(_run(p, s)) / (N_TRACKS * N_FRAMES)
              for name, (p, s) in _cases().items()}
        return {"false_alarms_per_1000": fa,
                "change_5x_within_10_frames": _power(5.0, 10, 5),
                "change_2x_within_20_frames": _power(2.0, 20, 7)}
    finally:
        bank_module.confirmed_by_medians, bank_module.confirmed_by_dispersion = saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path,
                   default=REPO / "benchmarks" / "results" / "changepoint_robustness.json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"target_per_1000": 0.5, "tracks": N_TRACKS, "frames": N_FRAMES}
    for name, med, disp in (("no confirmation", False, False), ("medians", True, False),
                            ("medians + dispersion (default)", True, True)):
        result[name] = measure(med, disp)
        print(name, json.dumps(result[name]), flush=True)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
