"""The ``livespt`` command line.

Each sub-command parses its flags here and delegates to a module that does the
work, so the command line stays a thin, readable map of what the tool can do.
Only commands that exist today are listed; see ``livespt COMMAND --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from livespt.server import __version__
from livespt.server.cli.connect import add_connection_flags


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
        help="live analysis of a simulated acquisition on an embedded server",
        description=(
            "Start an embedded server, simulate a movie whose particles diffuse slowly, fast, "
            "or switch from slow to fast half way, stream it frame by frame, print updates "
            "and changes of D as they arrive, and end with a table comparing the estimates "
            "with the truth. Writes DIR/tracks.csv, estimates.csv, changes.csv, summary.json, "
            "d_vs_time.png, movie.tif and ground_truth.csv."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", default="demo_out", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed")


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the gRPC analysis server",
        description=(
            "Run the LiveSPT gRPC server (livespt.v1.LiveSpt, with gRPC health checking and "
            "reflection) until SIGINT/SIGTERM; shutdown finishes in-flight frames and flushes "
            "every session's outputs. Each session writes tracks.csv, estimates.csv, "
            "changes.csv and summary.json under --sessions-dir."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address; beyond loopback only with --tls-cert/--tls-key and "
                        "--token-file, or with --insecure")
    p.add_argument("--tls-cert", default=None, metavar="PEM",
                   help="serve TLS with this certificate chain (with --tls-key)")
    p.add_argument("--tls-key", default=None, metavar="PEM", help="the certificate's key")
    p.add_argument("--tls-client-ca", default=None, metavar="PEM",
                   help="mutual TLS: clients must present a certificate signed by this CA")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="bearer tokens, one per line: every call but health checking must "
                        "send 'authorization: Bearer <token>' (else UNAUTHENTICATED)")
    p.add_argument("--insecure", action="store_true",
                   help="allow --host beyond loopback without TLS and a token (logs a "
                        "warning; a trusted network only)")
    p.add_argument("--no-reflection", action="store_true",
                   help="do not offer gRPC server reflection")
    p.add_argument("--keep-sessions", type=int, default=0, metavar="N",
                   help="keep the folders of at most N ended sessions (oldest deleted at start "
                        "and as sessions end); 0: keep all")
    p.add_argument("--keep-days", type=float, default=0.0, metavar="D",
                   help="delete ended sessions' folders older than D days; 0: keep all")
    p.add_argument("--keepalive", type=float, default=60.0, metavar="S",
                   help="ping a connection after S seconds without traffic, and close it "
                        "(ending its streams, their records kept) when no answer comes "
                        "within --keepalive-timeout: finds clients whose machine or network "
                        "vanished; 0: no keepalive")
    p.add_argument("--keepalive-timeout", type=float, default=20.0, metavar="S",
                   help="seconds to wait for the answer to a keepalive ping")
    p.add_argument("--localizer", default="shipped", metavar="WEIGHTS",
                   help="the localizer the Localize call uses: 'shipped' (the installed one, "
                        "if any), 'none', or a weights file from livespt train localizer")
    p.add_argument("--log-level", default="info",
                   choices=("debug", "info", "warning", "error"),
                   help="log lines: sessions started and ended (id, peer, frames, status) at "
                        "info; errors with their stack traces")
    p.add_argument("--log-file", default=None, metavar="FILE",
                   help="append the log to FILE (default: standard error)")
    p.add_argument("--port", type=int, default=50051, help="TCP port (0: any free port)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="compute device")
    p.add_argument("--tracker", default="builtin", choices=("builtin", "trackmate"),
                   help="trackmate: also offer TrackMate to streams that ask for it (trackers "
                        "trackmate and trackmate-lap; a JVM in this process, started by the "
                        "first such stream; needs a Fiji: make fiji); builtin is always "
                        "offered")
    p.add_argument("--fiji-dir", default=None, metavar="DIR",
                   help="Fiji.app for --tracker trackmate (default: where make fiji installs "
                        "it, or $LIVESPT_FIJI_DIR)")
    p.add_argument("--jvm-heap", default="2g", metavar="SIZE",
                   help="maximum heap of the JVM that runs TrackMate (-Xmx), e.g. 512m or 4g")
    p.add_argument("--sessions-dir", default="livespt_sessions",
                   help="folder for the sessions' output directories")
    p.add_argument("--max-sessions", type=int, default=16,
                   help="concurrent streams, counted from their first message")
    p.add_argument("--max-window", dest="max_window_frames", type=int, default=1000,
                   metavar="FRAMES",
                   help="largest window length and stride a client may ask for")
    p.add_argument("--max-gap", dest="max_gap_frames", type=int, default=100,
                   metavar="FRAMES",
                   help="largest linker gap a stream may ask for")
    p.add_argument("--max-name-chars", type=int, default=1024, metavar="N",
                   help="longest stream name")
    p.add_argument("--max-track-points", type=int, default=2_000_000, metavar="N",
                   help="most track points in one AnalyzeTracks call")
    p.add_argument("--stream-idle-timeout", dest="stream_idle_s", type=float, default=300.0,
                   metavar="S",
                   help="end a stream that sends nothing for S seconds, before its config or "
                        "between frames (DEADLINE_EXCEEDED)")
    p.add_argument("--tracks-workers", type=int, default=1, metavar="N",
                   help="worker processes for AnalyzeTracks, at a lower CPU priority than the "
                        "live streams, killed when their caller gives up (0: one thread of "
                        "the server instead)")
    p.add_argument("--detect-workers", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="worker processes for spot detection, shared by all streams "
                        "(0: detect in server threads; default: number of CPUs, at most 8)")
    p.add_argument("--shutdown-grace", type=float, default=10.0,
                   help="seconds running streams may continue after SIGINT/SIGTERM")
    models = p.add_mutually_exclusive_group()
    models.add_argument("--model", action="append", default=None, metavar="WEIGHTS",
                        help="transformer weights (.pt with its .json card) to keep resident; "
                             "repeatable (default: every shipped file in models/weights/)")
    models.add_argument("--no-models", action="store_true",
                        help="load no transformer: every estimate is a CVE (the localizer is "
                             "set by --localizer)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="dynamic batching: most windows per forward pass (default 4096 on CUDA, "
                        "256 on CPU, where larger batches are slower per window)")
    p.add_argument("--max-batch-delay", type=float, default=2.0,
                   help="dynamic batching: longest wait for a batch to fill, ms")


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stream",
        help="stream a movie to a server and save tracks, D estimates and changes",
        description=(
            "Stream MOVIE (TIFF or any format pims reads), or with --follow an acquisition "
            "still being written, frame by frame to a LiveSPT server, show progress and "
            "changes of D live, and write DIR/tracks.csv, DIR/estimates.csv, DIR/changes.csv "
            "(appended as results arrive), DIR/summary.json and DIR/d_vs_time.png."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("movie", nargs="?", default=None,
                   help="movie file (omit with --follow)")
    p.add_argument("--follow", default=None, metavar="PATH",
                   help="an acquisition being written: a folder receiving one TIFF file per "
                        "frame, or a growing TIFF stack; frames are sent as they are complete, "
                        "until --idle-timeout, --stop-file or Ctrl-C (outputs finalized either "
                        "way)")
    p.add_argument("--idle-timeout", type=float, default=10.0, metavar="S",
                   help="with --follow: end after this many seconds without a new frame")
    p.add_argument("--stop-file", default=None, metavar="FILE",
                   help="with --follow: end when this file exists")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for the server to answer at the start")
    p.add_argument("--reconnect-timeout", type=float, default=60.0, metavar="S",
                   help="with --follow: when the server goes away, seconds to wait for it to "
                        "come back; the frames it had not acknowledged are sent again to a "
                        "new session (acknowledged ones never)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="HOST:PORT", help="address of a running server")
    add_connection_flags(p)
    where.add_argument("--embedded", action="store_true",
                       help="start a server inside this process")
    p.add_argument("--pixel-size", type=float, default=None,
                   help="pixel size in um (default: from the TIFF's ImageJ calibration)")
    p.add_argument("--frame-interval", type=float, default=None,
                   help="frame interval in s (default: from the TIFF's ImageJ metadata)")
    p.add_argument("--exposure", type=float, default=None,
                   help="exposure in s (default: the frame interval)")
    p.add_argument("--window", type=int, default=None, help="sliding-window length in frames "
                   "(server default 10)")
    p.add_argument("--camera-offset", type=float, default=None, metavar="ADU",
                   help="camera offset (baseline) in ADU; not given: estimated from the "
                        "movie where possible (a lower bound when the read noise is not "
                        "given), else 100; checked against the first frame")
    p.add_argument("--camera-gain", type=float, default=None, metavar="ADU_PER_E",
                   help="camera gain in ADU per photo-electron (> 0); not given: estimated "
                        "from the movie by photon transfer where the data allow, else 1; "
                        "a given gain the data contradict gets a CAMERA_MODEL warning")
    p.add_argument("--read-noise", type=float, default=None, metavar="E",
                   help="camera read noise in electrons RMS (>= 0); not given: estimated "
                        "when the offset is given, else 0")
    p.add_argument("--camera-estimate", action=argparse.BooleanOptionalAction, default=True,
                   help="estimate the camera values not given from the first 50 frames "
                        "(photon transfer; recorded with their source in summary.json)")
    p.add_argument("--radius", type=float, default=None,
                   help="expected spot radius in um (server default 0.15)")
    p.add_argument("--threshold", type=float, default=None,
                   help="LoG detection threshold (server default; see docs/pipeline.md)")
    p.add_argument("--max-distance", type=float, default=None,
                   help="linking search radius in um (server default 1.0)")
    p.add_argument("--dark-spots", action="store_true",
                   help="dark particles on a light background")
    p.add_argument("--median-filter", action="store_true", help="median pre-filter")
    p.add_argument("--tracker", default="builtin",
                   choices=("builtin", "trackmate", "trackmate-lap"),
                   help="builtin: LiveSPT's detector and online linker (results per frame); "
                        "trackmate: TrackMate's LoG detector and LAP tracker; trackmate-lap: "
                        "LiveSPT's detector, TrackMate's LAP tracker. TrackMate links in "
                        "blocks of 20 frames stitched by spot identity (results up to 20 "
                        "frames late); the server must offer it (--embedded does)")
    p.add_argument("--fiji-dir", default=None, metavar="DIR",
                   help="Fiji.app for --embedded --tracker trackmate (default: where make "
                        "fiji installs it)")
    p.add_argument("--out", default="livespt_out", help="output directory")


def _add_tracks(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tracks",
        help="estimate D and changes of D for the tracks of a TrackMate XML or CSV file",
        description=(
            "Read the tracks of a TrackMate XML file (TrackMate 6-8) or a TrackMate spots-table "
            "CSV export, estimate D per track and per sliding window and find changes of D, "
            "and write DIR/track_estimates.csv, DIR/estimates.csv, DIR/changes.csv, "
            "DIR/summary.json, DIR/d_per_track.png and, for XML input, DIR/annotated.xml (the "
            "original file with D, its 90 % interval, the method and change flags added as "
            "spot and track features TrackMate shows). Units come from the file; the flags "
            "complete or override them. With --movie MOVIE --tracker trackmate and no FILE, "
            "TrackMate (LoG detector, LAP tracker) tracks the movie first and writes its own "
            "DIR/trackmate.xml, which is then analysed."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("file", nargs="?", default=None,
                   help="TrackMate XML (.xml) or spots-table CSV (.csv); omitted with "
                        "--tracker trackmate")
    p.add_argument("--out", default="livespt_tracks", help="output directory")
    p.add_argument("--server", metavar="HOST:PORT", default=None,
                   help="analyse through a running server's AnalyzeTracks (default: in this "
                        "process)")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size in um: needed for positions in pixels; overrides the "
                        "file's calibration")
    p.add_argument("--frame-interval", type=float, default=None, metavar="S",
                   help="frame interval in s; overrides the file's")
    p.add_argument("--exposure", type=float, default=None, metavar="S",
                   help="exposure in s (default: the frame interval, with a warning)")
    add_connection_flags(p)
    p.add_argument("--edges", default=None, metavar="EDGES_CSV",
                   help="CSV input: TrackMate's edges table of the same tracks, to cut them "
                        "at splits and merges as an XML file would be")
    p.add_argument("--all-tracks", action="store_true",
                   help="XML: analyse every track, not only TrackMate's filtered ones")
    p.add_argument("--window", type=int, default=None,
                   help="sliding-window length in positions (default 10)")
    p.add_argument("--false-alarms", type=float, default=0.5,
                   metavar="PER_1000",
                   help="change detector's false alarms per 1000 track-frames")
    p.add_argument("--no-changes", action="store_true", help="do not look for changes of D")
    p.add_argument("--no-models", action="store_true",
                   help="in-process: load no transformer (every estimate is a CVE)")
    p.add_argument("--movie", default=None,
                   help="the movie the tracks come from: a patch is cut around every spot and "
                        "the windows go to the image transformer (in this process)")
    p.add_argument("--dark-spots", action="store_true",
                   help="with --movie: dark particles on a light background")
    tm = p.add_argument_group("tracking the movie with TrackMate (--tracker trackmate)")
    tm.add_argument("--tracker", default=None, choices=("trackmate",),
                    help="track --movie with TrackMate's LoG detector and LAP tracker in this "
                         "process (needs a Fiji: make fiji), then analyse its tracks")
    tm.add_argument("--radius", type=float, default=0.15, metavar="UM",
                    help="spot radius for TrackMate's LoG detector, um")
    tm.add_argument("--threshold", type=float, default=None,
                    help="LoG quality threshold (default: LiveSPT's automatic threshold on the "
                         "first frame)")
    tm.add_argument("--max-distance", type=float, default=1.0, metavar="UM",
                    help="LAP linking and gap-closing search radius, um")
    tm.add_argument("--max-gap", type=int, default=2, metavar="FRAMES",
                    help="most frames a track may skip")
    tm.add_argument("--fiji-dir", default=None, metavar="DIR",
                    help="Fiji.app (default: where make fiji installs it)")


def _add_localize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "localize",
        help="localize molecules with an uncertainty map (DeepSTORM + DDPM)",
        description=(
            "Localize the emitters of every frame of a TIFF movie with the localizer "
            "(DeepSTORM + conditional DDPM): many KDE samples per frame, whose mean and "
            "per-pixel variance are written as DIR/mean.tif and DIR/variance.tif (float32, on "
            "a grid 4x finer than the camera's, ImageJ-calibrated) and whose emitters, with "
            "the standard deviation of their positions over the samples, as "
            "DIR/emitters.csv (frame, x_um, y_um, x_sd_um, y_sd_um, photons, peak); "
            "DIR/summary.json records settings, model and warnings. Runs in this process, "
            "or on a server with --server. See docs/localization.md for what the shipped "
            "localizer was validated on."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("movie", metavar="FRAMES", help="TIFF movie (T, H, W), camera counts")
    p.add_argument("--out", default="livespt_localize", help="output directory")
    p.add_argument("--server", metavar="HOST:PORT", default=None,
                   help="localize on this server (its Localize call) instead of in-process")
    add_connection_flags(p)
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="with --server: seconds to wait for it to answer")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="in-process: a localizer weights file instead of the shipped one")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="camera pixel in the sample, um; not given: the TIFF's calibration")
    p.add_argument("--samples", type=int, default=32, help="KDE samples per frame (2-256)")
    p.add_argument("--sampler", default="fast", choices=("fast", "ancestral"),
                   help="fast: --steps DDIM steps; ancestral: the seed's 100 steps")
    p.add_argument("--steps", type=int, default=20, help="steps of the fast sampler (1-100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples")
    p.add_argument("--threshold", type=float, default=0.3,
                   help="smallest mean KDE value of an emitter (phi's estimate of it), (0, 1]")
    p.add_argument("--camera-offset", type=float, default=None, metavar="ADU",
                   help="camera offset; with --camera-gain, photons are reported")
    p.add_argument("--camera-gain", type=float, default=None, metavar="ADU_PER_E",
                   help="camera gain, ADU per photo-electron")
    p.add_argument("--frames-per-call", type=int, default=16, metavar="N",
                   help="frames localized together (fewer where the maps would pass the "
                        "message limit)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on data simulated on the fly",
        description=(
            "Train the diffusion transformer (MODEL 'vit') on windows simulated on the fly on "
            "the training device, keep the state with the best validation NLL, and write the "
            "weights and their JSON card (architecture, training configuration, simulator "
            "parameters, metrics, sha256, date). Presets: cpu (about 25 min on 2 cores), gpu "
            "(full size, bf16), tiny (a smoke test). MODEL 'localizer' trains the DeepSTORM "
            "network (phi) and then the DDPM on simulated SMLM frames (half of --minutes each) "
            "and writes one weights file (default ./localizer-<preset>.pt) and its JSON card, "
            "for livespt localize --weights and livespt serve --localizer. MODEL 'phi' trains "
            "phi alone (all of --minutes; default ./phi-<preset>.pt); MODEL 'ddpm' trains the "
            "DDPM alone on the phi of --phi-from (a phi or localizer file) and writes a "
            "localizer file."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", choices=("vit", "localizer", "phi", "ddpm"), help="what to train")
    p.add_argument("--preset", default="cpu", choices=("cpu", "gpu", "tiny"),
                   help="training configuration")
    p.add_argument("--variant", default="image+features",
                   choices=("image+features", "image", "features"),
                   help="model inputs (vit only)")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock budget (default: the preset's)")
    p.add_argument("--steps", type=int, default=None, help="step limit (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--phi-from", default=None, metavar="WEIGHTS",
                   help="ddpm (required) and localizer: keep the phi of this file (from "
                        "train phi or train localizer) and train only the DDPM, for all of "
                        "--minutes")
    p.add_argument("--kde-sigma", type=float, default=None, metavar="FINE_PX",
                   help="localizer, phi, ddpm: the KDE targets' kernel SD in fine pixels (1/4 "
                        "camera pixel; default: the preset's, 2). Emitters closer than about "
                        "2 kernel SDs make one peak")
    p.add_argument("--init-from", default=None, metavar="WEIGHTS",
                   help="continue training from this weights file (same architecture; a new "
                        "warm-up and cosine schedule over --minutes)")
    p.add_argument("--out", default=None,
                   help="weights file (default models/weights/vit-<preset>[-<variant>].pt; "
                        "./localizer-<preset>.pt or ./phi-<preset>.pt)")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate models against classical estimators and the Cramer-Rao bound",
        description=(
            "On fresh simulated 10-point windows at SNR 5, 10 and 20: relative RMSE, median "
            "relative bias per D decade and 90 %% interval coverage of each transformer "
            "variant found, the CVE and the optimal-points MSD fit, beside the exact "
            "Cramer-Rao bound; plus the sliding-window D = 3 -> 7 experiment of the ViT "
            "report. Writes OUT/vit_eval.json, OUT/vit_eval.md and plots."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", choices=("vit",), help="what to evaluate")
    p.add_argument("--weights", nargs="*", default=None,
                   help="weight files (default: every shipped models/weights/vit*.pt)")
    p.add_argument("--windows", type=int, default=3000, help="windows per SNR")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--seed", type=int, default=2024, help="random seed")
    p.add_argument("--out", default="docs/vit", help="output directory")


LIMIT_FLAGS = {"max_sessions": "--max-sessions", "max_window_frames": "--max-window",
               "max_gap_frames": "--max-gap", "max_name_chars": "--max-name-chars",
               "max_track_points": "--max-track-points", "stream_idle_s": "--stream-idle-timeout"}
"""``livespt serve``'s limit flags by the :class:`Limits` field each sets (its ``dest``)."""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``livespt`` command."""
    parser = argparse.ArgumentParser(
        prog="livespt",
        description=(
            "LiveSPT: single-particle tracking analysis with diffusion estimates that carry "
            "their uncertainty: a gRPC server analyses frame streams live (detection, "
            "tracking, sliding-window D, changes of D); a physical simulator and classical "
            "estimators underneath."
        ),
    )
    parser.add_argument("--version", action="version", version=f"livespt {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (otherwise one line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(sub)
    _add_stream(sub)
    _add_tracks(sub)
    _add_simulate(sub)
    _add_demo(sub)
    _add_localize(sub)
    _add_train(sub)
    _add_evaluate(sub)
    for command in sub.choices.values():  # also after the command: livespt stream ... --debug
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the traceback of an error (otherwise one line)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``livespt`` command line; return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from livespt.server.inference.resident import BatchingOptions
            from livespt.server.service.app import ServerOptions, serve
            from livespt.server.service.security import TlsFiles, load_tokens
            from livespt.server.service.settings import Limits

            if args.max_batch is not None and args.max_batch < 1:
                raise ValueError(f"--max-batch must be >= 1, got {args.max_batch}")
            if not args.max_batch_delay >= 0:
                raise ValueError(f"--max-batch-delay must be >= 0, got {args.max_batch_delay}")
            if args.keep_sessions < 0 or not args.keep_days >= 0:
                raise ValueError("--keep-sessions and --keep-days must be >= 0 (0: keep all)")
            if not (args.keepalive == 0 or 1 <= args.keepalive <= 86400):
                raise ValueError(f"--keepalive must be 0 (off) or in [1, 86400] s, "
                                 f"got {args.keepalive:g}")
            if not 1 <= args.keepalive_timeout <= 3600:
                raise ValueError(f"--keepalive-timeout must be in [1, 3600] s, "
                                 f"got {args.keepalive_timeout:g}")
            if not 0 <= args.tracks_workers <= 64:
                raise ValueError(f"--tracks-workers must be in [0, 64], got {args.tracks_workers}")
            try:
                limits = Limits(**{name: getattr(args, name) for name in LIMIT_FLAGS})
            except ValueError as exc:  # named by the Limits field: say the flag
                message = str(exc)
                name = message.split(" ", 1)[0]
                if name in LIMIT_FLAGS:
                    message = LIMIT_FLAGS[name] + message[len(name):]
                raise ValueError(message) from None
            if (args.tls_cert is None) != (args.tls_key is None):
                raise ValueError("--tls-cert and --tls-key go together")
            if args.tls_client_ca is not None and args.tls_cert is None:
                raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
            tls = (TlsFiles(Path(args.tls_cert), Path(args.tls_key),
                            Path(args.tls_client_ca) if args.tls_client_ca else None)
                   if args.tls_cert else None)
            tokens = load_tokens(Path(args.token_file)) if args.token_file else ()
            detect_workers = getattr(args, "detect_workers", None)
            if detect_workers is not None and detect_workers < 0:
                raise ValueError(f"--detect-workers must be >= 0, got {detect_workers}")
            extra = {} if detect_workers is None else {"detect_workers": detect_workers}
            models = (() if args.no_models else
                      None if args.model is None else tuple(Path(m) for m in args.model))
            opts = ServerOptions(host=args.host, port=args.port, device=args.device,
                                trackmate=args.tracker == "trackmate",
                                fiji_dir=Path(args.fiji_dir) if args.fiji_dir else None,
                                jvm_max_heap=args.jvm_heap,
                                out_root=Path(args.sessions_dir),
                                limits=limits, tracks_workers=args.tracks_workers,
                                tls=tls, tokens=tokens, insecure=args.insecure,
                                reflection=not args.no_reflection,
                                keep_sessions=args.keep_sessions, keep_days=args.keep_days,
                                keepalive_s=args.keepalive,
                                keepalive_timeout_s=args.keepalive_timeout,
                                localizer=args.localizer,
                                shutdown_grace_s=args.shutdown_grace, models=models,
                                batching=BatchingOptions(args.max_batch,
                                                         args.max_batch_delay),
                                **extra)
            with _server_logging(args.log_level, args.log_file):
                serve(opts)
        elif args.command == "stream":
            from livespt.server.cli.stream import run_stream

            if run_stream(args).get("interrupted"):
                return 130  # stopped by Ctrl-C (the outputs hold the frames sent)
        elif args.command == "tracks":
            from livespt.server.cli.tracks import run_tracks

            run_tracks(args)
        elif args.command == "simulate":
            from livespt.server.cli.simulate import run_simulate

            run_simulate(args)
        elif args.command == "demo":
            from livespt.server.cli.demo import run_demo

            run_demo(args.out, seed=args.seed)
        elif args.command == "localize":
            from livespt.server.cli.localize import run_localize

            run_localize(args)
        elif args.command == "train":
            from livespt.server.cli.train import run_train, run_train_localizer

            if args.model in ("localizer", "phi", "ddpm"):
                run_train_localizer(args)
            else:
                run_train(args)
        elif args.command == "evaluate":
            from livespt.models.vit.evaluate import run_evaluate

            run_evaluate(args)
    except KeyboardInterrupt:
        if getattr(args, "debug", False):
            raise
        print(f"livespt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        print(f"livespt {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2 if _is_users(exc) else 1
    return 0


@contextlib.contextmanager
def _server_logging(level: str, path: str | None) -> Iterator[None]:
    """Set up ``livespt serve``'s log while it runs, then restore the logger.

    Timestamped lines go to ``path`` (appended) or stderr; ``main`` may run in-process
    (as in tests), so nothing is left configured afterwards.
    """
    import logging

    handler: logging.Handler
    try:
        handler = (logging.FileHandler(path, encoding="utf-8") if path
                   else logging.StreamHandler())
    except OSError as exc:
        raise ValueError(f"--log-file {path}: cannot open it ({exc.strerror})") from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("livespt")
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    try:
        yield
    finally:
        root.handlers[:], level_before = saved
        root.setLevel(level_before)
        handler.close()


def _is_users(exc: Exception) -> bool:
    """A bad flag or value (exit status 2), not a fault or an unreachable server (1)."""
    if isinstance(exc, (ValueError, FileNotFoundError, IsADirectoryError, PermissionError)):
        return True
    import grpc

    return isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)) and (
        exc.code() == grpc.StatusCode.INVALID_ARGUMENT)


def _one_line(exc: Exception) -> str:
    """What went wrong, on one line.

    The message of a bad value, the server's status and message, or the type and
    message of anything unexpected (``--debug`` shows its traceback).
    """
    import grpc

    from livespt.server.io.fiji import FijiNotFoundError

    if isinstance(exc, (ValueError, ConnectionError, FijiNotFoundError)):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    elif isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
        text = (f"the server answered {code.name if code is not None else 'an error'}: "
                f"{details}")
    else:
        text = f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    return " ".join(text.split())


if __name__ == "__main__":
    raise SystemExit(main())
