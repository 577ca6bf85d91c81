"""The diffusion transformer (ViT report, seed 000): inputs, model, training, loading."""

from livespt.models.vit.estimator import (
    ModelLoadError,
    ViTEstimator,
    ViTPrediction,
    shipped_weights,
)
from livespt.models.vit.inputs import WindowInputs, concat_inputs, prepare
from livespt.models.vit.model import DiffusionViT, ViTConfig

__all__ = [
    "DiffusionViT",
    "ModelLoadError",
    "ViTConfig",
    "ViTEstimator",
    "ViTPrediction",
    "WindowInputs",
    "concat_inputs",
    "prepare",
    "shipped_weights",
]
