"""The stream checks the settings that describe the sample: spot radius and search radius.

Spot widths come from the real detector on simulated frames (our simulator and the
PSF sizes a user may meet); steps from Brownian trajectories with the known RMS step,
so every threshold below is set from the known distribution, not tuned to a data set.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.cli.main import main
from livespt.server.io.tiff import write_movie
from livespt.server.pipeline.sample_check import (
    MIN_TRACKS,
    SPOT_MIN_SPOTS,
    TRACK_MIN_STEPS,
    SampleCheck,
)

PX = 0.1
DT = 0.05


def _walks(n: int, frames: int, d_um2_s: float, field_um: float, seed: int) -> np.ndarray:
    """(frames, n, 2) Brownian positions, um, with noise-free steps of per-axis SD sqrt(2 D dt)."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, field_um, (1, n, 2))
    steps = rng.normal(0, math.sqrt(2 * d_um2_s * DT), (frames - 1, n, 2))
    return np.concatenate([start, start + np.cumsum(steps, axis=0)])


def _feed(check: SampleCheck, xy: np.ndarray, width_um: float) -> list[tuple[str, str]]:
    out = []
    ids = np.arange(xy.shape[1])
    for f in range(xy.shape[0]):
        steps = np.full((ids.size, 2), np.nan) if f == 0 else xy[f] - xy[f - 1]
        out += check.add(ids, xy[f], steps, np.full(ids.size, width_um))
    return out


def test_a_search_radius_below_3_rms_steps_is_flagged_with_the_value_the_steps_need() -> None:
    # D = 1 um^2/s at 50 ms: RMS 2-D step sqrt(4 D dt) = 0.447 um, 3 of them 1.34 um.
    xy = _walks(40, 30, 1.0, 30.0, seed=1)
    found = _feed(SampleCheck(radius_um=0.13, max_distance_um=0.8), xy, 0.09)
    (_, msg), = [w for w in found if w[0] == "LINK_DISTANCE"]
    # 2 RMS steps = 0.89 um > 0.8 um: each step is lost with probability exp(-3.2) = 4 %
    assert "linker.max_distance_um = 0.8 um is less than 2 RMS steps for " in msg
    suggested = float(msg.split("give max_distance_um = ")[1].split(" um")[0])
    # 3 x the 95th percentile of 40 RMS steps over 29 steps each (chi with 58 dof: +-9 %)
    assert 1.34 < suggested < 1.34 * 1.35
    # the same particles with a radius of 3 RMS steps (or just below): nothing to say
    for enough in (1.34, 1.5):
        assert not _feed(SampleCheck(radius_um=0.13, max_distance_um=enough), xy, 0.09)


def test_a_search_radius_far_beyond_the_steps_and_the_spacing_is_flagged() -> None:
    # Slow (RMS step 0.063 um), dense (400 in 20 x 20 um: median neighbour distance ~0.5 um).
    xy = _walks(400, 30, 0.02, 20.0, seed=2)
    check = SampleCheck(radius_um=0.13, max_distance_um=2.0)
    (code, msg), = _feed(check, xy, 0.09)
    assert code == "LINK_DISTANCE" and "links may jump between particles" in msg
    link = check.summary()["search_radius"]
    assert link["flagged"] == "too large" and link["median_neighbour_um"] < 0.6
    # a radius of a few steps, or a sparse field where no neighbour is that close: fine
    assert not _feed(SampleCheck(radius_um=0.13, max_distance_um=0.3), xy, 0.09)
    sparse = _walks(40, 30, 0.02, 200.0, seed=3)
    assert not _feed(SampleCheck(radius_um=0.13, max_distance_um=2.0), sparse, 0.09)


def test_tracks_need_steps_and_the_check_waits_for_enough_tracks() -> None:
    check = SampleCheck(radius_um=0.13, max_distance_um=0.1)
    xy = _walks(MIN_TRACKS - 1, 40, 1.0, 30.0, seed=4)
    assert not _feed(check, xy, 0.09)  # too few tracks to decide
    assert not check.link_decided and check.summary()["search_radius"]["tracks"] == MIN_TRACKS - 1
    short = _walks(100, TRACK_MIN_STEPS, 1.0, 30.0, seed=5)  # 4 steps each: none counts
    check = SampleCheck(radius_um=0.13, max_distance_um=0.1)
    assert not _feed(check, short, 0.09) and check.summary()["search_radius"]["tracks"] == 0


@pytest.mark.parametrize(("psf_um", "radius_um", "flagged"),
                         [(0.09, 0.127, False), (0.2, 0.127, True), (0.09, 0.4, True),
                          (0.12, 0.127, False)])
def test_spot_size_from_the_detectors_fitted_widths(
    tmp_path: Path, psf_um: float, radius_um: float, flagged: bool
) -> None:
    """Real detection on simulated slow particles: a radius off by > 1.5x is named."""
    cfg = MovieConfig(shape_px=(128, 128), n_frames=40, n_particles=20, pixel_size_um=PX,
                      frame_interval_s=DT, psf_sigma_um=psf_um, d_um2_s=0.01, snr=10.0)
    movie = write_movie(tmp_path / "m.tif", simulate_movie(cfg, seed=6).frames, PX, DT)
    out = tmp_path / "out"
    assert main(["stream", str(movie), "--embedded", "--out", str(out), "--radius",
                 str(radius_um), "--max-distance", "0.5", "--camera-offset", "100",
                 "--camera-gain", "1", "--read-noise", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    server = json.loads((Path(summary["server_output_dir"]) / "summary.json").read_text())
    spot = server["sample_check"]["spot_size"]
    assert spot["decided"] and spot["slow_spots"] >= SPOT_MIN_SPOTS
    assert spot["fitted_sd_um"] == pytest.approx(psf_um, rel=0.1)
    said = [w for w in summary["warnings"] if w.startswith("SPOT_SIZE: ")]
    assert spot["flagged"] is flagged and len(said) == int(flagged)
    if flagged:
        assert f"detector.radius_um = {radius_um:g} um" in said[0]
        suggested = float(said[0].split("give radius_um = ")[1].split(" um")[0])
        assert suggested == pytest.approx(math.sqrt(2) * psf_um, rel=0.1)


def test_a_spot_radius_the_detector_cannot_use_is_one_readable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = MovieConfig(shape_px=(32, 32), n_frames=4, n_particles=2, pixel_size_um=0.35,
                      frame_interval_s=DT, d_um2_s=0.01, snr=10.0)
    movie = write_movie(tmp_path / "m.tif", simulate_movie(cfg, seed=7).frames, 0.35, DT)
    assert main(["stream", str(movie), "--embedded", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "detector.radius_um = 0.15 um is 0.429 px" in err[0]
    assert "0.175 to 70 um here" in err[0]
