"""The ImageJ macro client (fiji_macro/LiveSPT.ijm) run by real ImageJ against a real server.

Debian's ImageJ 1.x under a virtual X server (``.ci/run`` installs ``imagej xvfb xauth``);
skipped with a reason where ImageJ is absent, a failure under CI. The macro drives the
installed ``livespt`` command (this checkout's console script) against a server on
127.0.0.1 started here, on a simulated acquisition with a known D and a change of D.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from imagej_helpers import IJ_JAR, require_imagej

from livespt.models.simulate import MovieConfig, simulate_movie
from livespt.server.io.tiff import write_movie
from livespt.server.service.app import EmbeddedServer, ServerOptions

ROOT = Path(__file__).resolve().parents[1]
MACRO = ROOT / "fiji_macro" / "LiveSPT.ijm"
LIVESPT = Path(sys.executable).with_name("livespt")
PX, DT = 0.1, 0.05


def run_macro(args: str, timeout: float = 240,
              jar: Path = IJ_JAR) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    out = subprocess.run(
        ["xvfb-run", "-a", "timeout", str(int(timeout)), "java", "-jar", str(jar), "-batch",
         str(MACRO), args], capture_output=True, text=True, timeout=timeout + 30)
    return out, time.monotonic() - t0


def last_line(out: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory: pytest.TempPathFactory):
    """10 particles at D = 0.05 um^2/s; half of them change to 0.5 at frame 40 of 100."""
    d = np.column_stack([np.full(10, 0.05), np.where(np.arange(10) % 2 == 0, 0.5, 0.05)])
    cfg = MovieConfig(shape_px=(96, 96), n_frames=100, n_particles=10, pixel_size_um=PX,
                      frame_interval_s=DT, d_um2_s=d, change_frames=(40,), snr=12.0)
    movie = simulate_movie(cfg, seed=8)
    folder = tmp_path_factory.mktemp("acq")
    write_movie(folder / "movie.tif", movie.frames, pixel_size_um=PX, frame_interval_s=DT)
    return movie, folder / "movie.tif"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = EmbeddedServer(ServerOptions(port=0, out_root=tmp_path_factory.mktemp("sessions"),
                                       device="cpu", models=(), detect_workers=0))
    srv.start()
    yield srv
    srv.stop()


def check_results(out_dir: Path, movie) -> pd.DataFrame:
    res = pd.read_csv(out_dir / "results.csv")
    assert list(res.columns) == ["track_id", "n_spots", "d_um2_s", "d_low_um2_s",
                                 "d_high_um2_s", "method", "n_changes"]
    tracks = pd.read_csv(out_dir / "tracks.csv")
    assert res.n_spots.sum() == len(tracks)  # every point of every track, counted
    # The long tracks' latest D against the truth at their end: 0.5 for the particles
    # that changed, 0.05 for the others (nearest true particle at the track's last point).
    gt = movie.ground_truth
    right = total = 0
    for row in res[res.n_spots >= 50].itertuples():
        last = tracks[tracks.track_id == row.track_id].iloc[-1]
        g = gt[gt.frame == last.frame]
        k = int(np.argmin(np.hypot(g.x_um - last.x_um, g.y_um - last.y_um)))
        true_d = float(g.d_um2_s.iloc[k])
        total += 1
        right += int(row.d_low_um2_s <= true_d <= row.d_high_um2_s)
    assert total >= 6 and right >= total - 2, (right, total)
    assert res.n_changes.sum() >= 2  # the changes of D were seen
    png = (out_dir / "overlay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The tracks are drawn: coloured pixels (the movie itself is grey) along the tracks.
    import matplotlib.image

    rgb = matplotlib.image.imread(out_dir / "overlay.png")[..., :3].astype(float)
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.2
    assert coloured.sum() > 2000, coloured.sum()
    return res


def start_writer(frames: np.ndarray, folder: Path, scratch: Path, delay_s: float,
                 stop_file: Path | None = None) -> subprocess.Popen:
    """An acquisition in another process: one calibrated TIFF per frame into ``folder`` at
    20 frames/s after ``delay_s``; then, if given, ``stop_file`` is created 1 s later."""
    folder.mkdir()
    np.save(scratch, frames)
    stop = repr(str(stop_file)) if stop_file is not None else "None"
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import pathlib, time, numpy as np, tifffile
        m = np.load({str(scratch)!r})
        time.sleep({delay_s})
        for i, f in enumerate(m):   # one file per frame, at the acquisition's rate
            tifffile.imwrite({str(folder)!r} + f"/img_{{i}}.tif", f, imagej=True,
                             resolution=(10.0, 10.0), metadata={{"unit": "um", "finterval": 0.05}})
            time.sleep(0.05)
        stop = {stop}
        if stop is not None:
            time.sleep(1.0)
            pathlib.Path(stop).parent.mkdir(exist_ok=True)
            pathlib.Path(stop).touch()
    """)])


def fiji_imagej() -> Path | None:
    """The ImageJ 1.x jar of the Fiji that ``make fiji`` installs, when present."""
    from livespt.server.io.fiji import find_fiji

    fiji = find_fiji()
    jars = sorted(fiji.glob("jars/ij-1.*.jar")) if fiji is not None else []
    return jars[-1] if jars else None


@pytest.mark.parametrize("imagej", ["debian", "fiji"])
def test_macro_analyses_an_image_through_a_server(acquisition, server, tmp_path: Path,
                                                  imagej: str) -> None:
    require_imagej()
    jar = IJ_JAR if imagej == "debian" else fiji_imagej()
    if jar is None:
        pytest.skip("no Fiji (make fiji): the macro runs on Debian's ImageJ only here")
    movie, path = acquisition
    out, _ = run_macro(f"movie={path} out={tmp_path / 'out'} server={server.target} "
                       f"exposure={DT} livespt={LIVESPT}", jar=jar)
    assert last_line(out) == "LIVESPT DONE", out.stdout[-3000:] + out.stderr[-2000:]
    check_results(tmp_path / "out", movie)
    assert "change of D on track" in out.stdout  # one log line per change event


def test_macro_follows_a_live_acquisition(acquisition, server, tmp_path: Path) -> None:
    require_imagej()
    movie, _ = acquisition
    folder = tmp_path / "frames"
    writer = start_writer(movie.frames, folder, tmp_path / "m.npy", delay_s=1.0)
    try:
        out, _ = run_macro(f"movie={folder} follow=1 idle=4 out={tmp_path / 'out'} "
                           f"server={server.target} pixel={PX} interval={DT} exposure={DT} "
                           f"livespt={LIVESPT}")
    finally:
        writer.wait(timeout=60)
    assert last_line(out) == "LIVESPT DONE", out.stdout[-3000:] + out.stderr[-2000:]
    res = check_results(tmp_path / "out", movie)
    assert res.n_spots.sum() == len(pd.read_csv(tmp_path / "out" / "tracks.csv"))


@pytest.mark.parametrize(("case", "message"), [
    ("server down", "no LiveSPT server answered at 127.0.0.1:1"),
    ("uncalibrated", "calibration missing"),
    ("rgb", "RGB images are not supported"),
    ("float", "32-bit float images are not supported"),
    ("no livespt", "livespt not found"),
])
def test_macro_failures_are_one_error_line_within_seconds(acquisition, tmp_path: Path,
                                                          case: str, message: str) -> None:
    require_imagej()
    _, path = acquisition
    extra = f"livespt={LIVESPT}"
    if case == "server down":
        extra += " server=127.0.0.1:1"
    elif case == "uncalibrated":
        path = tmp_path / "plain.tif"
        tifffile.imwrite(path, np.full((5, 32, 32), 100, np.uint16))
    elif case == "rgb":
        path = tmp_path / "rgb.tif"
        tifffile.imwrite(path, np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    elif case == "float":
        path = tmp_path / "float.tif"
        tifffile.imwrite(path, np.zeros((3, 32, 32), np.float32), imagej=True)
    elif case == "no livespt":
        extra = f"livespt={tmp_path / 'nothere' / 'livespt'}"
    out, seconds = run_macro(f"movie={path} out={tmp_path / 'out'} {extra}", timeout=120)
    line = last_line(out)
    assert line.startswith("LIVESPT ERROR: ") and message in line, out.stdout[-2000:]
    assert seconds < 60
    print(f"\n{case}: {line} ({seconds:.1f} s)")


# ---------------------------------------------------------------- the interactive dialog

DRIVER = ROOT / "tests" / "java" / "DialogDriver.java"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/java/DialogDriver.java compiled against ImageJ (it fills the macro's dialog)."""
    require_imagej(javac=True)
    classes = tmp_path_factory.mktemp("driver")
    subprocess.run(["javac", "-cp", str(IJ_JAR), "-d", str(classes), str(DRIVER)], check=True,
                   capture_output=True, timeout=120)
    return classes


def run_dialog(classes: Path, home: Path, image: Path | None, answers: dict[str, str],
               timeout: float = 240) -> tuple[list[str], str]:
    """Run the macro through its dialog in a real ImageJ (driver filling it in).

    Returns the driver's report lines and the whole output. ``home`` holds ImageJ's
    preferences (the remembered values); ``answers`` are the dialog's fields by key and
    ``dir:KEY`` for the folder choosers.
    """
    cmd = ["xvfb-run", "-a", "timeout", str(int(timeout)), "java", f"-Duser.home={home}",
           "-cp", f"{IJ_JAR}:{classes}", "DialogDriver", str(MACRO),
           str(image) if image is not None else "-", str(int(timeout - 20))]
    cmd += [f"{k}={v}" for k, v in answers.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                         env={**os.environ, "HOME": str(home)})
    text = out.stdout + out.stderr
    assert "DRIVER ERROR" not in text and "TIMEOUT" not in text, text[-4000:]
    assert out.stdout.rstrip().endswith("END"), text[-4000:]
    return out.stdout.splitlines(), text


def prefill(lines: list[str]) -> dict[str, str]:
    return dict(ln[len("PREFILL "):].split("=", 1) for ln in lines if ln.startswith("PREFILL "))


def test_macro_dialog_analyses_the_active_image(acquisition, server, driver,
                                                tmp_path: Path) -> None:
    """The dialog as a person meets it: pre-filled from the open image's calibration; the
    output folder from a folder chooser; the overlay and the table visible while it runs
    and after; the values remembered for the next run (a second ImageJ)."""
    movie, path = acquisition
    home = tmp_path / "home"
    home.mkdir()
    lines, text = run_dialog(driver, home, path, {
        "server": server.target, "exposure": str(DT), "livespt": str(LIVESPT),
        "dir:output": str(tmp_path / "out")})
    first = prefill(lines)
    assert first["mode"] == "Analyse the active image"
    assert float(first["pixel"]) == PX and float(first["interval"]) == DT  # from the image
    assert first["server"] == "" and first["window"] == "10"  # nothing remembered yet
    assert "CHOOSER Output folder for the results" in lines
    assert "LIVESPT DONE" in lines, text[-4000:]
    assert not [ln for ln in lines if ln.startswith("MESSAGE")], text[-4000:]
    # Seen while the macro ran, not only at the end:
    assert any(ln.startswith("LIVE_OVERLAY ") for ln in lines), text[-4000:]
    assert any(ln.startswith("LIVE_RESULTS ") for ln in lines), text[-4000:]
    # When done, the overlay and the table stay (and no stray copy of the stack).
    assert "WINDOW LiveSPT overlay" in lines
    assert [ln for ln in lines if ln.startswith("WINDOW ")].count("WINDOW movie.tif") == 1
    res = check_results(tmp_path / "out", movie)
    assert f"RESULTS {len(res)}" in lines
    assert int(next(ln for ln in lines if ln.startswith("OVERLAY ")).split()[1]) > len(res)

    # A second ImageJ, no image open: the dialog shows the last values, and the mode that
    # needs an image says so in a message box and on the Log.
    lines, text = run_dialog(driver, home, None, {"dir:output": str(tmp_path / "out2")})
    second = prefill(lines)
    assert second["server"] == server.target and second["livespt"] == str(LIVESPT)
    assert float(second["exposure"]) == DT and float(second["pixel"]) == PX
    error = "no image is open: open the movie first"
    assert any(ln.startswith("MESSAGE") and error in ln for ln in lines), text[-4000:]
    assert any(ln.startswith("LIVESPT ERROR: ") and error in ln for ln in lines)


def test_macro_dialog_follows_until_stopped(acquisition, server, driver, tmp_path: Path) -> None:
    """Follow mode from the dialog: the acquisition folder from a chooser, the overlay on its
    first frame while frames arrive, and the run ended by the stop file it names."""
    movie, _ = acquisition
    folder = tmp_path / "frames"
    out_dir = tmp_path / "out"
    # The person stops the run: the stop file the macro names, 1 s after the last frame
    # (frames already written are sent before the stream ends).
    writer = start_writer(movie.frames, folder, tmp_path / "m.npy", delay_s=2.0,
                          stop_file=out_dir / "livespt.stop")
    home = tmp_path / "home"
    home.mkdir()
    t0 = time.monotonic()
    try:
        lines, text = run_dialog(driver, home, None, {
            "mode": "Follow a live acquisition", "server": server.target, "pixel": str(PX),
            "interval": str(DT), "exposure": str(DT), "idle": "600", "livespt": str(LIVESPT),
            "dir:acquisition": str(folder), "dir:output": str(out_dir)})
    finally:
        writer.wait(timeout=120)
    seconds = time.monotonic() - t0
    assert "LIVESPT DONE" in lines, text[-4000:]
    assert seconds < 200  # ended by the stop file, not by the 600 s idle time
    assert "CHOOSER Acquisition folder (where the frames are being written)" in lines
    assert any(ln.startswith("LIVE_OVERLAY ") for ln in lines), text[-4000:]
    assert "WINDOW LiveSPT overlay" in lines
    res = check_results(out_dir, movie)
    assert f"RESULTS {len(res)}" in lines
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["frames_acked"] == 100, summary
    assert summary["follow"]["ended_by"].startswith("stop file"), summary["follow"]


def test_macro_installed_as_a_command_takes_recorded_options(acquisition, server,
                                                             tmp_path: Path) -> None:
    """Installed under plugins/Macros, the macro is the command "LiveSPT"; a recorded
    ``run("LiveSPT", "key=value ...")`` answers its dialog and folder chooser (ImageJ's
    macro options, the keys of the unattended arguments)."""
    require_imagej()
    movie, path = acquisition
    plugins = tmp_path / "ij" / "plugins" / "Macros"
    plugins.mkdir(parents=True)
    (plugins / "LiveSPT.ijm").write_text(MACRO.read_text())
    out_dir = tmp_path / "out"
    script = tmp_path / "recorded.ijm"
    script.write_text(f'open("{path}");\n'
                      f'run("LiveSPT", "mode=[Analyse the active image] server={server.target} '
                      f'exposure={DT} livespt=[{LIVESPT}] output=[{out_dir}]");\n')
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run(
        ["xvfb-run", "-a", "timeout", "240", "java", f"-Duser.home={home}",
         f"-Dplugins.dir={tmp_path / 'ij'}", "-jar", str(IJ_JAR), "-batch", str(script)],
        capture_output=True, text=True, timeout=270, env={**os.environ, "HOME": str(home)})
    assert last_line(out) == "LIVESPT DONE", out.stdout[-3000:] + out.stderr[-2000:]
    assert f"--server {server.target}" in out.stdout
    check_results(out_dir, movie)
