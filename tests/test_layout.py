"""The dependency rules of docs/architecture.md, checked on what Python actually imports.

Each check imports modules in a fresh interpreter and looks at ``sys.modules``,
so an import hidden in a function body that runs at import time, or pulled in
through another module, is caught as well as a top-level one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN_IN_MODELS = ("livespt.server", "grpc", "google.protobuf", "jpype", "scyjava", "imagej")
NO_GRPC = ("grpc", "google.protobuf", "jpype", "scyjava", "imagej")


def _imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, pkgutil, sys\n"
        f"targets = {modules!r}\n"
        "for name in targets:\n"
        "    mod = importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _all_modules(package: str, skip: tuple[str, ...] = ()) -> list[str]:
    code = (
        "import importlib, json, pkgutil\n"
        f"pkg = importlib.import_module({package!r})\n"
        "names = [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.')]\n"
        "print(json.dumps(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True)
    names = json.loads(out.stdout.strip().splitlines()[-1])
    return [package, *(n for n in names if not n.startswith(skip))]


def _offenders(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_models_never_import_server_grpc_or_java() -> None:
    modules = _all_modules("livespt.models")
    assert "livespt.models.vit.estimator" in modules  # the walk found the package's modules
    assert _offenders(_imported_after(modules), FORBIDDEN_IN_MODELS) == []


@pytest.mark.parametrize("module", [
    "livespt.server.pipeline.detect",
    "livespt.server.pipeline.link",
    "livespt.server.pipeline.windows",
    "livespt.server.pipeline.estimate",
    "livespt.server.pipeline.camera",
    "livespt.server.pipeline.changepoint",
    "livespt.server.pipeline.tracks",
    "livespt.server.service.settings",
    "livespt.server.service.session",
    "livespt.server.service.runner",
    "livespt.server.inference.resident",
])
def test_pipeline_sessions_and_models_know_nothing_of_grpc(module: str) -> None:
    assert _offenders(_imported_after([module]), NO_GRPC) == []


def test_inference_does_not_import_training_code() -> None:
    loaded = _imported_after(["livespt.models.vit.estimator", "livespt.server.inference.resident"])
    assert "livespt.models.vit.train" not in loaded


def test_the_live_path_does_not_import_scoring_code() -> None:
    loaded = _imported_after(["livespt.server.service.app"])
    assert "livespt.server.pipeline.scoring" not in loaded


def test_the_detection_workers_load_neither_torch_nor_grpc() -> None:
    # The fork server of the detection pool preloads this module alone (see its docstring).
    loaded = _imported_after(["livespt.server.service.detection_pool"])
    assert _offenders(loaded, ("torch", *NO_GRPC)) == []
