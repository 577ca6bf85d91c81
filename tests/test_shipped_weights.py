"""The weights shipped in models/weights/ load and reproduce the metric their card records.

The shipped set is what the cards promise: a missing weights file or card, or no card at
all, stops a server that was asked for the shipped models (instead of serving CVE only).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from livespt.models.vit import (
    ModelLoadError,
    ViTEstimator,
    require_shipped_weights,
    shipped_weights,
)
from livespt.models.vit import weights as weights_module
from livespt.models.vit.data import TrainingDistribution
from livespt.models.vit.train import evaluate, validation_set

WEIGHTS = shipped_weights()


def test_weights_are_shipped_for_streams_and_for_tracks() -> None:
    variants = {ViTEstimator.load(p).model.config.variant for p in WEIGHTS}
    assert "image+features" in variants, "no image model shipped: streams would use the CVE"
    assert "features" in variants, "no features model shipped: AnalyzeTracks would use the CVE"


@pytest.mark.parametrize("path", WEIGHTS, ids=[p.stem for p in WEIGHTS])
def test_shipped_weights_reproduce_their_card(path) -> None:
    card = json.loads(path.with_suffix(".json").read_text())
    est = ViTEstimator.load(path)
    n = int(card["training"]["val_windows"])
    val = validation_set(n, TrainingDistribution(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in card["simulator"].items()}),
        torch.device("cpu"), patch_norm=est.model.config.patch_norm)
    got = evaluate(est.model, val)
    want = card["history"]["best_validation"]
    # Same seed, same simulator, same weights: equal up to float summation order.
    assert got["rel_rmse"] == pytest.approx(want["rel_rmse"], rel=0.02)
    assert got["coverage90"] == pytest.approx(want["coverage90"], abs=0.01)
    assert got["nll"] == pytest.approx(want["nll"], abs=0.02)


def _copy_shipped(dst: Path) -> Path:
    dst.mkdir()
    for p in WEIGHTS:
        for f in (p, p.with_suffix(".json")):
            shutil.copy(f, dst / f.name)
    return dst


def test_the_shipped_set_is_what_the_cards_promise(tmp_path: Path) -> None:
    assert [p.name for p in WEIGHTS] == ["vit-cpu-features.pt", "vit-cpu-image.pt",
                                         "vit-cpu.pt"]
    assert require_shipped_weights() == WEIGHTS
    with pytest.raises(ModelLoadError, match=r"no model weights in .*empty"):
        require_shipped_weights(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no model weights in .*empty"):
        require_shipped_weights(tmp_path / "empty")
    folder = _copy_shipped(tmp_path / "weights")
    assert [p.name for p in require_shipped_weights(folder)] == [p.name for p in WEIGHTS]
    (folder / "vit-cpu-image.pt").unlink()  # a card without its weights
    assert folder / "vit-cpu-image.pt" in shipped_weights(folder)
    with pytest.raises(ModelLoadError,
                       match=r"vit-cpu-image\.pt: no such file \(its card vit-cpu-image\.json"):
        require_shipped_weights(folder)
    shutil.copy(WEIGHTS[1], folder)
    (folder / "vit-cpu.json").unlink()  # weights without their card
    with pytest.raises(ModelLoadError, match=r"vit-cpu\.pt: its card vit-cpu\.json is missing"):
        require_shipped_weights(folder)


def test_serving_the_default_set_fails_when_a_shipped_file_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from livespt.server.cli.main import main
    from livespt.server.inference.resident import ModelRegistry

    folder = _copy_shipped(tmp_path / "weights")
    (folder / "vit-cpu-features.pt").unlink()
    monkeypatch.setattr(weights_module, "WEIGHTS_DIR", folder)
    with pytest.raises(ModelLoadError, match=r"vit-cpu-features\.pt: no such file.*--no-models"):
        ModelRegistry(None, "cpu")
    rc = main(["serve", "--port", "0", "--device", "cpu", "--detect-workers", "0",
               "--sessions-dir", str(tmp_path / "sessions")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("livespt serve: error: model weights ") and "--no-models" in err, err
    # An empty folder (an installation without package data) is an error too ...
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(ModelLoadError, match=r"no model weights in .*--no-models"):
        ModelRegistry(None, "cpu")
    # ... while asking for no model, or for named files, does not look at the folder.
    assert ModelRegistry([], "cpu").models == []
    registry = ModelRegistry([WEIGHTS[0]], "cpu")
    try:
        assert [m.estimator.name for m in registry.models] == ["vit-cpu-features"]
    finally:
        registry.close()


def test_loading_the_shipped_models_does_not_import_training_code() -> None:
    # Loading (and serving) the shipped models needs neither the trainer nor its simulator.
    code = ("import sys, livespt.models.vit, livespt.models.vit.estimator, "
            "livespt.server.inference.resident; "
            "livespt.server.inference.resident.ModelRegistry(None, 'cpu').close(); "
            "bad = sorted(m for m in sys.modules if m in ('livespt.models.vit.train', "
            "'livespt.models.vit.data', 'livespt.models.vit.evaluate')); "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
