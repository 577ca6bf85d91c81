"""The weights shipped in models/weights/ load and reproduce the metric their card records."""

from __future__ import annotations

import json

import pytest
import torch

from livespt.models.vit import ViTEstimator, shipped_weights
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
        torch.device("cpu"))
    got = evaluate(est.model, val)
    want = card["history"]["best_validation"]
    # Same seed, same simulator, same weights: equal up to float summation order.
    assert got["rel_rmse"] == pytest.approx(want["rel_rmse"], rel=0.02)
    assert got["coverage90"] == pytest.approx(want["coverage90"], abs=0.01)
    assert got["nll"] == pytest.approx(want["nll"], abs=0.02)
