"""``livespt simulate``: a simulated movie and its ground truth, written to a directory."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from livespt.models.simulate import Camera, MovieConfig, Photophysics, simulate_movie
from livespt.server import __version__
from livespt.server.io import strict_json
from livespt.server.io.tiff import write_movie

DEFAULT_SNR = 10.0

# API field -> command-line flag, so an error names the flag the user typed.
_FLAG_OF_FIELD = {
    "shape_px": "--width/--height",
    "n_frames": "--frames",
    "n_particles": "--particles",
    "pixel_size_um": "--pixel-size",
    "frame_interval_s": "--frame-interval",
    "exposure_s": "--exposure",
    "d_um2_s": "--d/--d-after",
    "change_frames": "--change-frame",
    "psf_sigma_um": "--psf-sigma",
    "wavelength_um": "--wavelength",
    "numerical_aperture": "--na",
    "photons": "--photons",
    "snr": "--snr",
    "background_photons": "--background",
    "read_noise_e": "--read-noise",
    "p_off": "--blink-off",
    "p_on": "--blink-on",
    "p_bleach": "--bleach",
    "confinement_radius_um": "--confinement",
}


def _name_flag(exc: ValueError) -> ValueError:
    """Prefix a model-layer error with the command-line flag of the field it names."""
    msg = str(exc)
    field = msg.split(" ", 1)[0].rstrip(":")
    flag = _FLAG_OF_FIELD.get(field)
    return ValueError(f"{flag} ({msg})") if flag else exc


def movie_config_from_args(args: argparse.Namespace) -> MovieConfig:
    """Translate the ``simulate`` flags into a validated :class:`MovieConfig`.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed flags of ``livespt simulate`` (see ``livespt simulate --help``).

    Returns
    -------
    MovieConfig
        The movie configuration; raises ValueError naming the flag when inconsistent.
    """
    if (args.d_after is None) != (args.change_frame is None):
        raise ValueError("--d-after and --change-frame go together: give both or neither")
    if args.particles < 1:
        raise ValueError(f"--particles must be >= 1, got {args.particles}")
    # Several --d values: each particle draws one, reproducibly from the seed.
    rng = np.random.default_rng(args.seed)
    d_values = np.asarray(args.d, dtype=float)
    d = d_values[0] if d_values.size == 1 else rng.choice(d_values, size=args.particles)
    change_frames: tuple[int, ...] = ()
    if args.d_after is not None:
        before = np.broadcast_to(np.asarray(d, dtype=float), (args.particles,))
        d = np.stack([before, np.full(args.particles, args.d_after)], axis=1)
        change_frames = (args.change_frame,)
    snr = args.snr if args.snr is not None or args.photons is not None else DEFAULT_SNR
    try:
        return _movie_config(args, d, change_frames, snr)
    except ValueError as exc:
        raise _name_flag(exc) from None


def _movie_config(
    args: argparse.Namespace, d: object, change_frames: tuple[int, ...], snr: float | None
) -> MovieConfig:
    return MovieConfig(
        shape_px=(args.height, args.width),
        n_frames=args.frames,
        n_particles=args.particles,
        pixel_size_um=args.pixel_size,
        frame_interval_s=args.frame_interval,
        exposure_s=args.exposure,
        d_um2_s=d,
        change_frames=change_frames,
        psf_sigma_um=args.psf_sigma,
        wavelength_um=args.wavelength,
        numerical_aperture=args.na,
        photons=args.photons,
        snr=snr,
        camera=Camera(background_photons=args.background, read_noise_e=args.read_noise),
        photophysics=Photophysics(p_off=args.blink_off, p_on=args.blink_on, p_bleach=args.bleach),
        confinement_radius_um=args.confinement,
    )


def run_simulate(args: argparse.Namespace) -> Path:
    """Simulate a movie from the command-line flags and write it with its ground truth.

    Writes ``movie.tif`` (uint16, ImageJ calibration), ``ground_truth.csv`` and
    ``simulation.json`` (the effective configuration, so the files can be traced to
    what produced them) into ``args.out``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed flags of ``livespt simulate``.

    Returns
    -------
    Path
        The output directory.
    """
    config = movie_config_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    movie = simulate_movie(config, seed=args.seed, device=args.device)
    elapsed = time.perf_counter() - t0
    write_movie(out / "movie.tif", movie.frames, config.pixel_size_um, config.frame_interval_s)
    movie.ground_truth.to_csv(out / "ground_truth.csv", index=False)
    record = {
        "livespt_version": __version__,
        "seed": args.seed,
        "device": str(args.device),
        "shape_px": list(config.shape_px),
        "n_frames": config.n_frames,
        "n_particles": config.n_particles,
        "pixel_size_um": config.pixel_size_um,
        "frame_interval_s": config.frame_interval_s,
        "exposure_s": config.exposure,
        "psf_sigma_um": config.sigma_um,
        "photons_per_frame": config.photons_per_particle().tolist(),
        "snr": config.snr,
        "d_um2_s": np.asarray(config.d_um2_s, dtype=float).tolist(),
        "change_frames": list(config.change_frames),
        "blur_coefficient": config.blur_coefficient,
        "camera": {
            "background_photons": config.camera.background_photons,
            "read_noise_e": config.camera.read_noise_e,
            "gain_adu_per_e": config.camera.gain_adu_per_e,
            "offset_adu": config.camera.offset_adu,
        },
        "photophysics": {
            "p_off": config.photophysics.p_off,
            "p_on": config.photophysics.p_on,
            "p_bleach": config.photophysics.p_bleach,
        },
        "simulation_s": round(elapsed, 3),
    }
    (out / "simulation.json").write_text(strict_json.dumps(record, indent=2))
    print(
        f"wrote {out / 'movie.tif'} ({config.n_frames} x {config.shape_px[0]} x "
        f"{config.shape_px[1]}, {config.n_particles} particles) and "
        f"{out / 'ground_truth.csv'} ({len(movie.ground_truth)} rows) in {elapsed:.1f} s"
    )
    return out
