"""The ``livespt`` command line.

Each sub-command parses its flags here and delegates to a module that does the
work, so the command line stays a thin, readable map of what the tool can do.
Only commands that exist today are listed; see ``livespt COMMAND --help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from server import __version__


def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a fluorescence movie with ground truth",
        description=(
            "Simulate a single-particle tracking movie (Brownian motion with motion blur, "
            "pixel-integrated Gaussian PSF, shot and read noise) and write DIR/movie.tif "
            "(ImageJ-calibrated: pixel size, frame interval) and DIR/ground_truth.csv "
            "(particle_id, frame, x_um, y_um, d_um2_s, photons; positions are the mean over "
            "the exposure)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--frames", type=int, default=100, help="number of frames")
    p.add_argument("--width", type=int, default=512, help="frame width in pixels")
    p.add_argument("--height", type=int, default=512, help="frame height in pixels")
    p.add_argument("--particles", type=int, default=50, help="number of particles")
    p.add_argument("--pixel-size", type=float, default=0.1, help="pixel size in um")
    p.add_argument("--frame-interval", type=float, default=0.05, help="frame interval in s")
    p.add_argument(
        "--exposure", type=float, default=None, help="exposure in s (default: frame interval)"
    )
    p.add_argument(
        "--d",
        type=float,
        nargs="+",
        default=[0.5],
        metavar="D",
        help="diffusion coefficient(s) in um^2/s; with several values each particle draws one",
    )
    p.add_argument(
        "--d-after",
        type=float,
        default=None,
        help="D in um^2/s that every particle switches to at --change-frame",
    )
    p.add_argument("--change-frame", type=int, default=None, help="frame where D changes")
    level = p.add_mutually_exclusive_group()
    level.add_argument(
        "--snr", type=float, default=None, help="signal-to-noise ratio (see docs/simulator.md)"
    )
    level.add_argument(
        "--photons", type=float, default=None, help="photons per particle per frame"
    )
    p.add_argument("--background", type=float, default=10.0, help="background photons/pixel")
    p.add_argument("--read-noise", type=float, default=1.5, help="read noise in electrons")
    p.add_argument(
        "--psf-sigma", type=float, default=None, help="PSF sigma in um (default from --na)"
    )
    p.add_argument("--wavelength", type=float, default=0.6, help="emission wavelength in um")
    p.add_argument("--na", type=float, default=1.4, help="numerical aperture")
    p.add_argument("--blink-off", type=float, default=0.0, help="per-frame on->off probability")
    p.add_argument("--blink-on", type=float, default=1.0, help="per-frame off->on probability")
    p.add_argument("--bleach", type=float, default=0.0, help="per-frame bleaching probability")
    p.add_argument(
        "--confinement", type=float, default=None, help="confinement radius in um (none)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device for the simulation")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulation + estimation demo: prints a table, writes a plot",
        description=(
            "Simulate tracks with known D, estimate D per track with the CVE and the "
            "optimal-points MSD fit, compare both with the truth and the Cramer-Rao bound, "
            "follow a change of D with a sliding window, and write DIR/demo.png, "
            "DIR/estimates.csv, DIR/summary.json and a small DIR/movie.tif with its "
            "DIR/ground_truth.csv."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--tracks", type=int, default=400, help="tracks per D value")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``livespt`` command."""
    parser = argparse.ArgumentParser(
        prog="livespt",
        description=(
            "LiveSPT: single-particle tracking analysis with diffusion estimates that carry "
            "their uncertainty. Today: a physical simulator and classical estimators; the "
            "live gRPC server is under construction."
        ),
    )
    parser.add_argument("--version", action="version", version=f"livespt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_simulate(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``livespt`` command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "simulate":
            from server.simulate_cmd import run_simulate

            run_simulate(args)
        elif args.command == "demo":
            from server.demo import run_demo

            run_demo(args.out, seed=args.seed, tracks_per_d=args.tracks)
    except ValueError as exc:
        # Bad parameters are the user's to fix: say which, without a traceback.
        print(f"livespt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
