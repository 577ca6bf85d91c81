"""The diffusion transformer (ViT report, seed 000): inputs, model, training, loading."""

from models.vit.estimator import ModelLoadError, ViTEstimator, ViTPrediction, shipped_weights
from models.vit.inputs import WindowInputs, concat_inputs, prepare
from models.vit.model import DiffusionViT, ViTConfig

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
