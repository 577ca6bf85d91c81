"""The ``livespt`` command line, end to end through real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from livespt.server.cli.main import main
from livespt.server.io.tiff import read_calibration, read_movie, write_movie


def test_console_script_is_installed_and_lists_only_existing_commands() -> None:
    exe = Path(sys.executable).with_name("livespt")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    commands = out.stdout.split("COMMAND", 1)[1].split("options", 1)[0]
    for present in ("serve", "stream", "tracks", "localize", "simulate", "demo", "train",
                    "evaluate"):
        assert f"{present} " in commands
    # --help must tell the truth: commands that do not exist yet are not offered.
    for missing in ("batch", "bench"):
        assert f"    {missing} " not in commands


def test_simulate_writes_calibrated_movie_and_ground_truth(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    rc = main([
        "simulate", "--out", str(out), "--frames", "12", "--width", "64", "--height", "48",
        "--particles", "4", "--pixel-size", "0.13", "--frame-interval", "0.02",
        "--d", "0.2", "--d-after", "1.0", "--change-frame", "5", "--photons", "3000",
        "--background", "2", "--seed", "3",
    ])
    assert rc == 0
    frames, cal = read_movie(out / "movie.tif")
    assert frames.shape == (12, 48, 64) and frames.dtype == np.uint16
    assert cal.pixel_size_um == pytest.approx(0.13)
    assert cal.frame_interval_s == pytest.approx(0.02)

    gt = pd.read_csv(out / "ground_truth.csv")
    assert list(gt.columns[:5]) == ["particle_id", "frame", "x_um", "y_um", "d_um2_s"]
    assert set(gt.loc[gt.frame < 5, "d_um2_s"]) == {0.2}
    assert set(gt.loc[gt.frame >= 5, "d_um2_s"]) == {1.0}
    record = json.loads((out / "simulation.json").read_text())
    assert record["change_frames"] == [5] and record["pixel_size_um"] == 0.13

    # The ground truth points at the light in the file: the background-subtracted
    # centroid of a 7x7 box around each isolated, bright particle sits within a
    # fraction of a pixel of the ground-truth position (pixel centres at j * px).
    px = 0.13
    img = frames.astype(float) - 100.0 - 2.0  # camera offset + background photons
    errors = []
    for row in gt.itertuples():
        cx, cy = row.x_um / px, row.y_um / px
        others = gt[(gt.frame == row.frame) & (gt.particle_id != row.particle_id)]
        isolated = np.all(np.hypot(others.x_um / px - cx, others.y_um / px - cy) > 10)
        j0, i0 = round(cx), round(cy)
        if not isolated or not (4 <= i0 < 44 and 4 <= j0 < 60):
            continue
        box = img[row.frame, i0 - 3 : i0 + 4, j0 - 3 : j0 + 4]
        jj, ii = np.meshgrid(np.arange(j0 - 3, j0 + 4), np.arange(i0 - 3, i0 + 4))
        total = box.sum()
        errors.append(np.hypot((box * jj).sum() / total - cx, (box * ii).sum() / total - cy))
    assert len(errors) >= 10
    assert np.median(errors) < 0.25


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--d", "-1"], "--d"),
        (["--exposure", "0.1", "--frame-interval", "0.05"], "--exposure"),
        (["--pixel-size", "0"], "--pixel-size"),
        (["--d-after", "1"], "--change-frame"),
        (["--particles", "0"], "--particles"),
    ],
)
def test_simulate_bad_flags_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    rc = main(["simulate", "--out", str(tmp_path / "x"), "--frames", "2", *flags])
    assert rc == 2
    err = capsys.readouterr().err
    assert named in err
    assert "Traceback" not in err
    assert not (tmp_path / "x" / "movie.tif").exists()


def test_write_movie_rejects_wrong_dtype_and_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames must be uint16"):
        write_movie(tmp_path / "a.tif", np.zeros((2, 4, 4), np.float32), 0.1, 0.05)
    with pytest.raises(ValueError, match=r"frames must have shape \(T, H, W\)"):
        write_movie(tmp_path / "a.tif", np.zeros((4, 4), np.uint16), 0.1, 0.05)
    with pytest.raises(ValueError, match="pixel_size_um"):
        write_movie(tmp_path / "a.tif", np.zeros((1, 4, 4), np.uint16), -0.1, 0.05)


def test_read_calibration_of_uncalibrated_tiff_is_none(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((3, 4, 4), np.uint16))
    cal = read_calibration(tmp_path / "plain.tif")
    assert cal.pixel_size_um is None and cal.frame_interval_s is None


def test_demo_streams_a_simulated_acquisition_and_compares_with_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["demo", "--out", str(tmp_path)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Estimates against the truth" in printed and "slow->fast" in printed
    for name in ("tracks.csv", "estimates.csv", "changes.csv", "summary.json",
                 "d_vs_time.png", "movie.tif", "ground_truth.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "summary.json").read_text())
    table = pd.DataFrame(summary["truth_table"]).set_index("particles")
    assert summary["frames_acked"] == 160
    # The switching particles' changes are found near the true change frame, and the
    # window estimates separate slow from fast particles.
    assert table.loc["slow->fast", "near true change"] >= 5
    fast, slow = (table.loc[g, "median window D after"] for g in ("fast", "slow"))
    assert fast > 2 * slow
    est = pd.read_csv(tmp_path / "estimates.csv")
    assert (est["d_low_um2_s"] >= 0).all()
    assert (est["d_low_um2_s"] <= est["d_high_um2_s"]).all()


def test_stream_embedded_writes_results_and_reads_calibration(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    assert main(["simulate", "--out", str(sim), "--frames", "30", "--width", "96",
                 "--height", "96", "--particles", "6", "--snr", "15", "--pixel-size", "0.1",
                 "--frame-interval", "0.04"]) == 0
    out = tmp_path / "res"
    # No --pixel-size/--frame-interval: taken from the TIFF's ImageJ calibration.
    assert main(["stream", str(sim / "movie.tif"), "--embedded", "--out", str(out)]) == 0
    for name in ("tracks.csv", "estimates.csv", "changes.csv", "summary.json",
                 "d_vs_time.png"):
        assert (out / name).exists(), name
    tracks = pd.read_csv(out / "tracks.csv")
    assert list(tracks.columns[:4]) == ["track_id", "frame", "x_um", "y_um"]
    assert tracks["frame"].max() == 29
    est = pd.read_csv(out / "estimates.csv")
    assert list(est.columns) == ["track_id", "frame_start", "frame_end", "d_um2_s",
                                 "d_low_um2_s", "d_high_um2_s", "method"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_acked"] == 30
    assert summary["effective_config"]["pixel_size_um"] == pytest.approx(0.1)
    assert summary["effective_config"]["frame_interval_s"] == pytest.approx(0.04)
    assert summary["effective_config"]["tracker"] == "builtin"
    assert summary["server_info"]["device"] == "cpu"
    # The embedded server keeps the shipped transformers resident: live windows use the
    # image model, and the CVE stays available.
    assert summary["server_info"]["estimators"][0] == "cve"
    assert "vit:vit-cpu" in summary["server_info"]["estimators"]
    assert set(est["method"]) == {"vit:vit-cpu"}
    assert summary["livespt_version"] and summary["server_summary"]["frames"] == 30


def test_stream_bad_arguments_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stream", str(tmp_path / "missing.tif"), "--embedded"]) == 2
    assert "MOVIE: no such file" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((5, 16, 16), np.uint16),
                     photometric="minisblack")
    assert main(["stream", str(tmp_path / "plain.tif"), "--embedded"]) == 2
    assert "--pixel-size is required" in capsys.readouterr().err
    # A file that is not what its name says: one line, naming the file and why.
    (tmp_path / "odd.tif").write_text("hello")
    assert main(["stream", str(tmp_path / "odd.tif"), "--embedded"]) == 2
    err = capsys.readouterr().err.strip()
    assert "MOVIE: cannot read" in err and "odd.tif as TIFF: not a TIFF file" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(("flag", "value", "named"), [
    ("--max-distance", "0", "linker.max_distance_um must be > 0"),
    ("--radius", "-0.1", "detector.radius_um must be > 0"),
    ("--window", "0", "window.length must be an integer >= 3"),
    ("--exposure", "0", "--exposure must be > 0"),
])
def test_stream_zero_or_negative_settings_are_refused_not_defaulted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, named: str
) -> None:
    """0 on the wire stands for the server default; 0 on the command line is an error."""
    tifffile.imwrite(tmp_path / "m.tif", np.full((5, 16, 16), 100, np.uint16),
                     photometric="minisblack")
    assert main(["stream", str(tmp_path / "m.tif"), "--embedded", "--pixel-size", "0.1",
                 "--frame-interval", "0.05", "--out", str(tmp_path / "o"), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--detect-workers", "-1"], "--detect-workers"), (["--max-batch", "0"], "--max-batch"),
     (["--max-batch-delay", "-1"], "--max-batch-delay"),
     (["--max-window", "0"], "--max-window must be an integer >= 1, got 0"),
     (["--max-sessions", "0"], "--max-sessions must be an integer >= 1, got 0"),
     (["--stream-idle-timeout", "0"], "--stream-idle-timeout must be > 0, got 0.0"),
     (["--tracks-workers", "-1"], "--tracks-workers must be in [0, 64], got -1"),
     (["--keepalive", "0.5"], "--keepalive must be 0 (off) or in [1, 86400] s, got 0.5"),
     (["--keepalive-timeout", "0"], "--keepalive-timeout must be in [1, 3600] s, got 0")],
)
def test_serve_bad_flags_exit_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    rc = main(["serve", "--port", "0", "--sessions-dir", str(tmp_path), *flags])
    assert rc == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


def test_stream_camera_flags_are_recorded_and_a_default_that_cannot_hold_is_flagged(
    tmp_path: Path,
) -> None:
    # An 8-bit camera read with its baseline near 20 ADU: the default offset (100 ADU)
    # cannot describe it, and the stream says so, naming the field.
    rng = np.random.default_rng(0)
    movie = tmp_path / "m8.tif"
    tifffile.imwrite(movie, (20 + rng.poisson(10, (8, 48, 48))).astype(np.uint8),
                     photometric="minisblack")
    calib = ["--pixel-size", "0.1", "--frame-interval", "0.05"]
    assert main(["stream", str(movie), "--embedded", *calib, "--out", str(tmp_path / "a")]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    camera = summary["effective_config"]["camera"]
    assert camera["offset_adu"] == 100.0 and set(camera["source"].values()) == {"default"}
    flagged = [w for w in summary["warnings"] if w.startswith("CAMERA_MODEL")]
    assert len(flagged) == 2
    assert all("config.detector.camera_offset_adu" in w for w in flagged)
    assert "is above 100% of the pixels" in flagged[0] and "8-bit" in flagged[1]
    # Given, the camera is used as given, recorded as such, and nothing is flagged.
    assert main(["stream", str(movie), "--embedded", *calib, "--camera-offset", "0",
                 "--camera-gain", "2", "--read-noise", "1.5",
                 "--out", str(tmp_path / "b")]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    camera = summary["effective_config"]["camera"]
    assert (camera["offset_adu"], camera["gain_adu_per_e"], camera["read_noise_e"]) == (0, 2, 1.5)
    assert set(camera["source"].values()) == {"given"}
    # nothing about the camera (the exposure was not given: that is said)
    assert [w.split(":")[0] for w in summary["warnings"]] == ["EXPOSURE"]
    server_side = json.loads(
        (Path(summary["server_summary"]["output_dir"]) / "summary.json").read_text())
    assert {k: server_side["camera"][k] for k in camera} == camera


def test_stream_bad_camera_flags_name_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((3, 16, 16), np.uint16),
                     photometric="minisblack")
    for flag, value, field in (("--camera-gain", "0", "camera_gain_adu_per_e"),
                               ("--read-noise", "-1", "read_noise_e")):
        rc = main(["stream", str(tmp_path / "m.tif"), "--embedded", "--pixel-size", "0.1",
                   "--frame-interval", "0.05", flag, value, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert rc == 2 and f"detector.{field}" in err and "Traceback" not in err


def test_a_bad_flag_is_one_line_naming_the_flag_before_any_frame_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    movie = tmp_path / "m.tif"
    tifffile.imwrite(movie, (100 + np.random.default_rng(0).poisson(10, (6, 32, 32)))
                     .astype(np.uint16), photometric="minisblack")
    args = ["stream", str(movie), "--embedded", "--pixel-size", "0.35", "--frame-interval",
            "0.05", "--radius", "0.1", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "livespt stream: error: --radius: detector.radius_um = 0.1 um is 0.286 px")
    assert "camera from" not in out  # refused before the frames were read
    with pytest.raises(ValueError, match=r"--radius: detector\.radius_um"):
        main([*args, "--debug"])  # the traceback, on request


def test_an_unexpected_error_is_one_line_unless_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import livespt.server.cli.simulate as simulate

    def boom(args: object) -> None:
        raise RuntimeError("disk\nfull")

    monkeypatch.setattr(simulate, "run_simulate", boom)
    assert main(["simulate", "--out", "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["livespt simulate: error: unexpected RuntimeError: disk full "
                   "(run with --debug for the traceback)"]
    with pytest.raises(RuntimeError, match="disk"):
        main(["--debug", "simulate", "--out", "x"])


def test_summaries_are_strict_json() -> None:
    """Non-finite numbers become null: summary.json parses in any language."""
    from livespt.server.io import strict_json

    text = strict_json.dumps({"a": float("nan"), "b": np.float32("inf"), "c": [np.int64(3)],
                              "d": (1.5, -float("inf")), "e": np.bool_(True)})
    assert text == '{"a": null, "b": null, "c": [3], "d": [1.5, null], "e": true}'


def test_ctrl_c_ends_a_stream_cleanly_with_its_outputs(tmp_path: Path) -> None:
    """The first Ctrl-C stops sending; the frames sent are analysed, every output is
    written (summary.json says interrupted), one line says where the server's copy is,
    no traceback, exit status 130."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    frames = (100 + np.random.default_rng(0).poisson(10, (3000, 32, 32))).astype(np.uint16)
    tifffile.imwrite(tmp_path / "m.tif", frames, imagej=True, resolution=(10.0, 10.0),
                     metadata={"unit": "um", "finterval": 0.05})
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("livespt")), "stream", str(tmp_path / "m.tif"),
         "--embedded", "--exposure", "0.05", "--camera-offset", "100", "--camera-gain", "1",
         "--read-noise", "1", "--out", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stdout.read(1), "")),
                     daemon=True).start()
    deadline = time.monotonic() + 120
    while "streaming:" not in "".join(seen) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    time.sleep(0.2)
    text = "".join(seen)
    assert "Traceback" not in text, text[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert summary["interrupted"]["by"] == "Ctrl-C"
    sent = summary["interrupted"]["frames_sent"]
    assert 0 < sent < 3000 and summary["frames_acked"] == sent
    assert f"interrupted by Ctrl-C after {sent} of 3000 frames; the server's copy" in text
    assert (tmp_path / "out" / "d_vs_time.png").exists()


def test_no_server_at_the_address_is_one_line_within_seconds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import time

    tifffile.imwrite(tmp_path / "m.tif", np.full((5, 32, 32), 100, np.uint16), imagej=True,
                     resolution=(10.0, 10.0), metadata={"unit": "um", "finterval": 0.05})
    t0 = time.monotonic()
    rc = main(["stream", str(tmp_path / "m.tif"), "--server", "127.0.0.1:1", "--exposure",
               "0.05", "--camera-offset", "100", "--camera-gain", "1", "--read-noise", "1",
               "--out", str(tmp_path / "o")])
    seconds = time.monotonic() - t0
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and seconds < 20
    assert err[-1].startswith("livespt stream: error: no LiveSPT server answered at "
                              "127.0.0.1:1 within 5 s")
    assert "--tls-ca" in err[-1] and "--connect-timeout" in err[-1]
