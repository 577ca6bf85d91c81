"""The wheel built from this repository ships the models and works when installed for real.

A regular (non-editable) ``pip install .`` must give the same server as a checkout: the
weights and their cards are package data, the only top-level name installed is
``livespt``, and ``livespt serve`` run from elsewhere loads the shipped models or, when
a shipped file is missing, stops with one line naming it.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation --no-index``) from
a copy of the working tree, so no ``build/`` folder of the checkout can leak stale files
into it. It is installed (``--no-deps``) into a fresh virtual environment that sees the
dev environment's third-party packages through a plain path line in a ``.pth`` file:
such a line does not run the dev environment's own ``.pth`` files, so its editable
``livespt`` stays invisible, which the test checks.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import grpc
import pytest

from livespt.server.grpc_gen.livespt.v1 import livespt_pb2 as pb
from livespt.server.grpc_gen.livespt.v1 import livespt_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parent.parent
WEIGHT_FILES = {f"{stem}.{ext}" for stem in ("vit-cpu", "vit-cpu-image", "vit-cpu-features",
                                             "localizer/localizer-cpu")
                for ext in ("pt", "json")}
# Junk of a working tree that is not part of the source (caches, environments, outputs).
_TOP_IGNORED = {".git", ".venv", "build", "dist", "demo_out", "out", "livespt_sessions"}
_ANY_IGNORED = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _ignore(folder: str, names: list[str]) -> set[str]:
    top = Path(folder).resolve() == REPO
    return {n for n in names
            if n in _ANY_IGNORED or n.endswith(".egg-info") or (top and n in _TOP_IGNORED)}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built offline from a clean copy of the working tree."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed in this environment (pip install -e '.[dev]')")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=_ignore)
    out = tmp / "dist"
    run = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300, env=_clean_env())
    assert run.returncode == 0, run.stdout + run.stderr
    (whl,) = out.glob("livespt-*.whl")
    return whl


def test_the_wheel_holds_the_weights_and_only_the_livespt_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = z.read(f"{dist_info}/entry_points.txt").decode()
        cards = {n: json.loads(z.read(n)) for n in names
                 if n.startswith("livespt/models/weights/") and n.endswith(".json")}
        infos = {i.filename: i for i in z.infolist()}
    assert {n.split("/")[0] for n in names} == {"livespt", dist_info}
    weights = {n.removeprefix("livespt/models/weights/") for n in names
               if n.startswith("livespt/models/weights/")}
    assert weights == WEIGHT_FILES
    for name in WEIGHT_FILES:  # real files with the checkout's bytes, not links
        info = infos[f"livespt/models/weights/{name}"]
        assert info.file_size == (REPO / "models" / "weights" / name).stat().st_size
        assert (info.external_attr >> 16) & 0o170000 != 0o120000
    assert {c["name"] for c in cards.values()} == {"vit-cpu", "vit-cpu-image",
                                                   "vit-cpu-features", "localizer-cpu"}
    for required in ("livespt/__init__.py", "livespt/models/py.typed", "livespt/server/py.typed",
                     "livespt/server/cli/main.py", "livespt/models/vit/weights.py",
                     "livespt/server/grpc_gen/livespt/v1/livespt_pb2.py",
                     "livespt/server/grpc_gen/livespt/v1/livespt_pb2_grpc.py"):
        assert required in names, required
    assert not any(n.startswith(("livespt/tests/", "livespt/benchmarks/")) for n in names)
    assert re.search(r"^livespt = livespt\.server\.cli\.main:main$", entry_points, re.M), \
        entry_points


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh environment with the wheel installed (non-editable) and the dev dependencies."""
    tmp = tmp_path_factory.mktemp("venv")
    root = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=120)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip()
    # One plain path line: the dev environment's packages (torch, grpc, ...) without
    # running its .pth files, so its editable livespt is not installed into this one.
    (Path(purelib) / "livespt_test_dev_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--disable-pip-version-check", "-q", str(wheel)],
        capture_output=True, text=True, timeout=300, env=_clean_env())
    assert run.returncode == 0, run.stdout + run.stderr
    return root


def _site_packages(venv: Path) -> Path:
    (sp,) = venv.glob("lib/python*/site-packages")
    return sp


def test_the_installed_package_is_self_contained(venv: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, sys\n"
        "import livespt\n"
        "from livespt.models.vit import weights\n"
        "import livespt.server.cli.main, livespt.server.service.app\n"
        "print(json.dumps({\n"
        "    'livespt': livespt.__file__,\n"
        "    'weights_dir': str(weights.WEIGHTS_DIR),\n"
        "    'shipped': [p.name for p in weights.require_shipped_weights()],\n"
        "    'server': importlib.util.find_spec('server') is not None,\n"
        "    'models': importlib.util.find_spec('models') is not None,\n"
        "    'train_imported': 'livespt.models.vit.train' in sys.modules,\n"
        "}))\n")
    run = subprocess.run([venv / "bin" / "python", "-c", probe], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=_clean_env())
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    sp = _site_packages(venv).resolve()
    assert Path(got["livespt"]).resolve().is_relative_to(sp), got  # not the checkout
    assert Path(got["weights_dir"]).resolve() == sp / "livespt" / "models" / "weights"
    assert got["shipped"] == ["vit-cpu-features.pt", "vit-cpu-image.pt", "vit-cpu.pt"]
    assert not got["server"] and not got["models"], "generic top-level names are importable"
    assert not (sp / "server").exists() and not (sp / "models").exists()
    assert not got["train_imported"], "serving imports the training code"


def _serve(venv: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [venv / "bin" / "livespt", "serve", "--port", "0", "--device", "cpu",
         "--detect-workers", "0", "--sessions-dir", str(cwd / "sessions"), *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=_clean_env())


def _server_info(proc: subprocess.Popen[str]) -> tuple[str, pb.ServerInfo]:
    """The server's "listening" line, and its answer to GetServerInfo."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # log lines (stderr) may come first
        m = re.search(r"listening on (127\.0\.0\.1):(\d+) ", line)
        if m:
            break
        seen.append(line)
    assert m, "".join(seen)
    with grpc.insecure_channel(f"{m.group(1)}:{m.group(2)}") as ch:
        # An answered call also means the server's loop runs with its signal handlers.
        return line, pb_grpc.LiveSptStub(ch).GetServerInfo(pb.GetServerInfoRequest(),
                                                           timeout=30)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    return out


def test_installed_serve_loads_the_shipped_models_or_stops_naming_a_missing_one(
    venv: Path, tmp_path: Path
) -> None:
    weights = _site_packages(venv) / "livespt" / "models" / "weights"
    cards = {json.loads(p.read_text())["name"]: json.loads(p.read_text())
             for p in [*weights.glob("*.json"), *weights.glob("localizer/*.json")]}
    assert set(cards) == {"vit-cpu", "vit-cpu-image", "vit-cpu-features", "localizer-cpu"}

    proc = _serve(venv, tmp_path)
    try:
        line, info = _server_info(proc)
        assert "CVE only" not in line and "vit-cpu (image+features)" in line, line
        assert {mi.name for mi in info.models} == set(cards)
        for mi in info.models:
            assert mi.sha256 == cards[mi.name]["sha256"]
        assert {u for mi in info.models for u in mi.used_for} == {"stream", "analyze_tracks",
                                                                    "localize"}
    finally:
        _stop(proc)

    # The installation loses one shipped weights file: start-up stops, one line names it.
    (weights / "vit-cpu-image.pt").unlink()
    run = subprocess.run(
        [venv / "bin" / "livespt", "serve", "--port", "0", "--device", "cpu",
         "--detect-workers", "0", "--sessions-dir", str(tmp_path / "sessions")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_clean_env())
    assert run.returncode != 0
    assert "listening" not in run.stdout
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "vit-cpu-image.pt" in lines[0] and "--no-models" in lines[0], lines[0]

    # Running without models stays possible, and says so.
    proc = _serve(venv, tmp_path, "--no-models")
    try:
        line, info = _server_info(proc)
        assert "models: none, CVE only" in line, line
        # No transformer; the localizer is separate (serve --localizer none drops it).
        assert [mi.kind for mi in info.models] == ["localizer"]
    finally:
        _stop(proc)
